//! One key's read-merge-write: read under the key's stripe lock, apply a change, commit the
//! result with its tombstone record and hash-tree entry in one batch (skipped when nothing
//! changed), and hand back the durability ticket to wait for.

use super::engine::Table;
use super::keys::Space;
use super::{LOCK_STRIPES, StorageError, Store, Ticket, is_tombstone, keys, now_ms};
use ringkv_shared::encoding::{decode_object, encode_object};
use ringkv_shared::limits::ObjectCap;
use ringkv_shared::{NodeId, Object, PartitionId};
use tracing::warn;

/// Where a read-modify-write happens: the raw storage key and, for messages, the user key.
pub(super) struct Target<'a> {
    raw: Vec<u8>,
    partition: PartitionId,
    key: &'a [u8],
    /// Whether the anti-entropy tree covers this entry (replica data does, hints do not).
    in_tree: bool,
}

impl<'a> Target<'a> {
    pub(super) fn object(partition: PartitionId, key: &'a [u8]) -> Self {
        Self {
            raw: keys::object_key(partition, key),
            partition,
            key,
            in_tree: true,
        }
    }

    pub(super) fn hint(owner: NodeId, partition: PartitionId, key: &'a [u8]) -> Self {
        Self {
            raw: keys::hint_key(owner, partition, key),
            partition,
            key,
            in_tree: false,
        }
    }
}

/// `incoming` merged into what is stored. A stored copy that fails its checksum is replaced
/// (and reported): the other replicas hold the rest, and anti-entropy or read repair brings it
/// back.
pub(super) fn merge_into(
    current: Result<Option<Object>, StorageError>,
    incoming: &Object,
    what: &str,
) -> Object {
    let mut merged = match current {
        Ok(Some(o)) => o,
        Ok(None) => Object::new(),
        Err(e) => {
            warn!(error = %e, "replacing a corrupt {what} with the incoming copy");
            Object::new()
        }
    };
    merged.merge(incoming);
    merged
}

pub(super) fn read_object(
    keyspace: &Table,
    raw_key: &[u8],
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Object>, StorageError> {
    decode_stored(keyspace.get(raw_key)?.as_deref(), partition, key)
}

pub(super) fn decode_stored(
    raw: Option<&[u8]>,
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Object>, StorageError> {
    raw.map(|bytes| {
        decode_object(bytes).map_err(|source| StorageError::Corrupt {
            partition,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    })
    .transpose()
}

/// Whether `object`, `size` bytes encoded, is within `cap`.
fn within(object: &Object, size: usize, cap: ObjectCap) -> Result<(), StorageError> {
    if object.siblings().len() > cap.siblings {
        return Err(StorageError::TooManySiblings {
            count: object.siblings().len(),
            max: cap.siblings,
        });
    }
    if size > cap.bytes {
        return Err(StorageError::ObjectTooLarge {
            size,
            max: cap.bytes,
        });
    }
    Ok(())
}

impl Store {
    pub(super) fn lock_for(&self, raw_key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (ringkv_shared::hash::key_hash(raw_key) as usize) % LOCK_STRIPES;
        self.locks[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn read_modify_write(
        &self,
        keyspace: &Table,
        at: &Target<'_>,
        cap: Option<ObjectCap>,
        f: impl FnOnce(Result<Option<Object>, StorageError>) -> Result<Object, StorageError>,
    ) -> Result<(Object, bool), StorageError> {
        let (next, wrote, ticket) = self.stage(keyspace, at, cap, f)?;
        self.durable(ticket).await?;
        Ok((next, wrote))
    }

    /// Reads, applies `f`, and commits the result (skipping unchanged objects) under the key's
    /// stripe lock; returns what to wait for before acknowledging. An unchanged object may
    /// equal a write still waiting for its fsync, so it gets a ticket covering everything
    /// committed so far.
    ///
    /// The result is checked against `cap` (a coordinated write's, `Limits::write_cap`) or,
    /// for a merge (`None`), the store's merge cap; past it nothing is written, the stored
    /// copy stays, and a refused merge is counted ([`StoreStats::merges_refused`]).
    ///
    /// [`StoreStats::merges_refused`]: super::StoreStats::merges_refused
    pub(super) fn stage(
        &self,
        keyspace: &Table,
        at: &Target<'_>,
        cap: Option<ObjectCap>,
        f: impl FnOnce(Result<Option<Object>, StorageError>) -> Result<Object, StorageError>,
    ) -> Result<(Object, bool, Ticket), StorageError> {
        let storage_key = &at.raw;
        self.commit
            .healthy()
            .map_err(|reason| StorageError::Sync { reason })?;
        let (next, wrote) = {
            let _guard = self.lock_for(storage_key);
            let old_raw = keyspace.get(storage_key)?;
            let current = decode_stored(old_raw.as_deref(), at.partition, at.key);
            let unchanged_from = current.as_ref().ok().and_then(|c| c.clone());
            let next = f(current)?;
            if unchanged_from.as_ref() == Some(&next) {
                (next, false)
            } else {
                let encoded = encode_object(&next);
                if let Err(e) = within(&next, encoded.len(), cap.unwrap_or(self.merge_cap)) {
                    if cap.is_none() {
                        self.merges_refused
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warn!(partition = at.partition, key = %String::from_utf8_lossy(at.key), error = %e, "refused a merge: the key needs resolving by the application");
                    }
                    return Err(e);
                }
                let new_hash = at
                    .in_tree
                    .then(|| ringkv_shared::merkle::entry_hash(at.key, &encoded));
                let new_hint_key = !at.in_tree && old_raw.is_none();
                let space = if at.in_tree {
                    Space::Objects
                } else {
                    Space::Hints
                };
                self.note_change(space, storage_key)?;
                let mut batch = self.db.batch();
                batch.insert(keyspace, storage_key, encoded);
                if at.in_tree {
                    let was_tombstone = unchanged_from.as_ref().is_some_and(is_tombstone);
                    if is_tombstone(&next) != was_tombstone {
                        self.note_change(Space::Tombstones, storage_key)?;
                    }
                    if is_tombstone(&next) && !was_tombstone {
                        batch.insert(&self.tombstones, storage_key, now_ms().to_be_bytes());
                    } else if !is_tombstone(&next) && was_tombstone {
                        batch.remove(&self.tombstones, storage_key);
                    }
                }
                batch.commit()?;
                if new_hint_key {
                    self.hint_keys
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                if let Some(new_hash) = new_hash {
                    let old_hash =
                        old_raw.map_or(0, |b| ringkv_shared::merkle::entry_hash(at.key, &b));
                    self.trees.toggle(at.partition, at.key, old_hash ^ new_hash);
                }
                (next, true)
            }
        };
        let ticket = if wrote {
            self.commit.committed()
        } else {
            self.commit.barrier()
        };
        Ok((next, wrote, ticket))
    }
}
