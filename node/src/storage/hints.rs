//! The `hints` keyspace: copies this node holds as a stand-in for another owner, until they
//! are handed over.

use super::keys::Space;
use super::read_merge_write::{Target, merge_into, read_object};
use super::{StorageError, Store, keys};
use bytes::Bytes;
use ringkv_shared::encoding::decode_object;
use ringkv_shared::{NodeId, Object, PartitionId};
use tracing::warn;

/// A hint held for another node.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The owner the copy was meant for when it was written (the key's current owners are
    /// where it is delivered).
    pub owner: NodeId,
    /// The key's partition.
    pub partition: PartitionId,
    /// The user key.
    pub key: Bytes,
    /// The object to hand over.
    pub object: Object,
    raw: Vec<u8>,
}

impl Store {
    /// Stores `object` as a hint for `owner` (merged with any hint already held for the key).
    pub async fn put_hint(
        &self,
        owner: NodeId,
        partition: PartitionId,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StorageError> {
        let at = Target::hint(owner, partition, key);
        self.read_modify_write(&self.hints, &at, None, |current| {
            Ok(merge_into(current, object, "hint"))
        })
        .await?;
        Ok(())
    }

    /// Every hint held for `key` (for any of `owners`), merged: a stand-in answers reads with
    /// what it holds for others as well as its own data.
    pub fn hints_for_key(
        &self,
        partition: PartitionId,
        key: &[u8],
        owners: impl Iterator<Item = NodeId>,
    ) -> Result<Option<Object>, StorageError> {
        if self.hint_keys.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let mut merged: Option<Object> = None;
        for owner in owners {
            let raw_key = keys::hint_key(owner, partition, key);
            if let Some(o) = read_object(&self.hints, &raw_key, partition, key)? {
                merged.get_or_insert_with(Object::new).merge(&o);
            }
        }
        Ok(merged)
    }

    /// Up to `limit` hints for any owner, in storage order, starting after the hint `after`
    /// names (its `(owner, partition, key)`), from the start if `None`. Corrupt hints are
    /// reported and removed (they can never be delivered; the write they carried is on the
    /// other nodes that acknowledged it).
    pub fn hints_after(
        &self,
        after: Option<(NodeId, PartitionId, &[u8])>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError> {
        if self.hint_keys.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return Ok(Vec::new());
        }
        let start = match after {
            Some((owner, p, key)) => std::ops::Bound::Excluded(keys::hint_key(owner, p, key)),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in self.hints.range(start, std::ops::Bound::Unbounded) {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw) = entry?;
            let Some((owner, partition, key)) = keys::split_hint_key(&raw_key) else {
                warn!("removing a hint with a malformed key");
                self.remove_hint_key(&raw_key)?;
                continue;
            };
            match decode_object(&raw) {
                Ok(object) => out.push(Hint {
                    owner,
                    partition,
                    key: Bytes::copy_from_slice(key),
                    object,
                    raw: raw.to_vec(),
                }),
                Err(e) => {
                    tracing::error!(%owner, partition, error = %e, "removing a corrupt hint");
                    self.remove_hint_key(&raw_key)?;
                }
            }
        }
        Ok(out)
    }

    /// Removes a delivered hint, unless it changed since it was read (a newer copy arrived
    /// meanwhile; it will be delivered next round). Returns whether it was removed.
    pub fn remove_hint_if_unchanged(&self, hint: &Hint) -> Result<bool, StorageError> {
        let raw_key = keys::hint_key(hint.owner, hint.partition, &hint.key);
        let _guard = self.lock_for(&raw_key);
        match self.hints.get(&raw_key)? {
            Some(now) if now.as_ref() == hint.raw.as_slice() => {
                self.note_change(Space::Hints, &raw_key)?;
                self.hints.remove(raw_key)?;
                self.hint_keys
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn remove_hint_key(&self, raw_key: &[u8]) -> Result<(), StorageError> {
        let _guard = self.lock_for(raw_key);
        if self.hints.get(raw_key)?.is_some() {
            self.note_change(Space::Hints, raw_key)?;
            self.hints.remove(raw_key)?;
            self.hint_keys
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(())
    }

    /// Removes every hint (a node removed by force: the cluster no longer counts what it
    /// holds). Returns how many there were.
    pub fn drop_all_hints(&self) -> Result<u64, StorageError> {
        let keys: Vec<Vec<u8>> = self
            .hints
            .iter()
            .map(|e| e.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()?;
        for key in &keys {
            self.remove_hint_key(key)?;
        }
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(keys.len() as u64)
    }

    /// Hints held for other nodes.
    pub fn hints_pending(&self) -> Result<u64, StorageError> {
        Ok(self.hint_keys.load(std::sync::atomic::Ordering::Acquire))
    }
}
