//! The `tombstones` keyspace: when each pure-tombstone object became one, for the reaper; and
//! removing an object for good.

use super::keys::Space;
use super::read_merge_write::decode_stored;
use super::{StorageError, Store, keys};
use bytes::Bytes;
use ringkv_shared::{Object, PartitionId, VersionVector};

/// Whether an object holds only tombstones (and at least one).
pub(super) fn is_tombstone(o: &Object) -> bool {
    !o.siblings().is_empty() && o.is_deleted()
}

/// The wall clock tombstone ages are measured by (the simulator's under feature `sim`).
pub(super) fn now_ms() -> u64 {
    ringkv_net::ambient::unix_ms()
}

impl Store {
    /// Tombstones older than `grace_ms`, up to `limit`: `(partition, key, since_ms)`.
    pub fn tombstones_older_than(
        &self,
        grace_ms: u64,
        limit: usize,
    ) -> Result<Vec<(PartitionId, Bytes, u64)>, StorageError> {
        let now = now_ms();
        let mut out = Vec::new();
        for entry in self.tombstones.iter() {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw) = entry?;
            let Some((p, key)) = keys::split_object_key(&raw_key) else {
                continue;
            };
            let since = <[u8; 8]>::try_from(raw.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if now.saturating_sub(since) >= grace_ms {
                out.push((p, Bytes::copy_from_slice(key), since));
            }
        }
        Ok(out)
    }

    /// Tombstones this node tracks (pure-tombstone objects not yet reaped).
    pub fn tombstone_count(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for entry in self.tombstones.iter() {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// Removes `key`'s stored object (`raw`, stored under `raw_key`) for good: the object, its
    /// tombstone record and its hash-tree entry. The caller holds the key's lock.
    pub(super) fn remove_stored(
        &self,
        partition: PartitionId,
        key: &[u8],
        raw_key: &[u8],
        raw: &[u8],
    ) -> Result<(), StorageError> {
        self.note_change(Space::Objects, raw_key)?;
        self.note_change(Space::Tombstones, raw_key)?;
        let mut batch = self.db.batch();
        batch.remove(&self.objects, raw_key);
        batch.remove(&self.tombstones, raw_key);
        batch.commit()?;
        self.trees
            .toggle(partition, key, ringkv_shared::merkle::entry_hash(key, raw));
        Ok(())
    }

    /// Removes `key`'s object for good if it is still a pure tombstone with exactly `clock`.
    /// Returns whether it was removed.
    pub async fn reap_if_unchanged(
        &self,
        partition: PartitionId,
        key: &[u8],
        clock: &VersionVector,
    ) -> Result<bool, StorageError> {
        let raw_key = keys::object_key(partition, key);
        let removed = {
            let _guard = self.lock_for(&raw_key);
            let Some(raw) = self.objects.get(&raw_key)? else {
                self.note_change(Space::Tombstones, &raw_key)?;
                self.tombstones.remove(raw_key.clone())?;
                return Ok(false);
            };
            let current = decode_stored(Some(&raw), partition, key)?.unwrap_or_default();
            if !is_tombstone(&current) || current.clock() != clock {
                false
            } else {
                self.remove_stored(partition, key, &raw_key, &raw)?;
                true
            }
        };
        if removed {
            self.durable(self.commit.committed()).await?;
        }
        Ok(removed)
    }
}
