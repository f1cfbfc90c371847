//! What partition handoff and membership need from storage: a partition scan that resumes
//! after a key, a batched merge that waits for one fsync, and small metadata records (the
//! persisted cluster view, handoff cursors).

use super::keys::Space;
use super::{StorageError, Store, decode_stored, keys};
use bytes::Bytes;
use ringkv_shared::{Object, PartitionId};
use std::ops::Bound;
use tracing::warn;

impl Store {
    /// Up to `limit` objects of `partition`, and no more than `max_bytes` of them encoded
    /// (but always at least one), in key order, starting after `after` (from the
    /// start if `None`). Objects that fail their checksum are skipped and reported: the other
    /// old replicas send their copies, and anti-entropy repairs the rest.
    pub fn scan_partition(
        &self,
        partition: PartitionId,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Bytes, Object)>, StorageError> {
        let start = match after {
            Some(k) => Bound::Excluded(keys::object_key(partition, k)),
            None => Bound::Included(partition.to_be_bytes().to_vec()),
        };
        let end = match partition.checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in self.objects.range(start, end) {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw) = entry?;
            let Some((_, key)) = keys::split_object_key(&raw_key) else {
                continue;
            };
            let size = key.len() + raw.len();
            if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            match decode_stored(Some(&raw), partition, key) {
                Ok(Some(object)) => out.push((Bytes::copy_from_slice(key), object)),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "skipping a corrupt object in a partition scan"),
            }
        }
        Ok(out)
    }

    /// Merges every item into storage (as [`Store::merge`] does one) and waits for one
    /// durability ticket covering them all. Returns how many objects changed.
    pub async fn merge_many(
        &self,
        items: &[(PartitionId, Bytes, Object)],
    ) -> Result<u64, StorageError> {
        let mut changed = 0;
        let mut last = None;
        for (partition, key, object) in items {
            let at = super::read_merge_write::Target::object(*partition, key);
            let (_, wrote, ticket) = self.stage(&self.objects, &at, None, |current| {
                Ok(super::read_merge_write::merge_into(
                    current, object, "object",
                ))
            })?;
            changed += u64::from(wrote);
            last = Some(ticket);
        }
        if let Some(ticket) = last {
            self.durable(ticket).await?;
        }
        Ok(changed)
    }

    /// A metadata record (`None` if absent).
    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(name)?.map(|v| v.to_vec()))
    }

    /// Writes a metadata record and hands it to the operating system before returning (it
    /// survives a crash of the process, not of the host: callers keep only records that can
    /// be lost to a power cut, like the gossiped view and handoff cursors, which are relearned
    /// or redone).
    pub fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.note_change(Space::Meta, name.as_bytes())?;
        self.meta.insert(name, value)?;
        self.db.persist(fjall::PersistMode::Buffer)?;
        Ok(())
    }

    /// Removes metadata records whose names start with `prefix`.
    pub fn meta_remove_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let names: Vec<Vec<u8>> = self
            .meta
            .prefix(prefix)
            .map(|e| e.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()?;
        for n in names {
            self.note_change(Space::Meta, &n)?;
            self.meta.remove(n)?;
        }
        Ok(())
    }
}

impl Store {
    /// Fault injection for tests: flips one bit in the stored bytes of `key`, bypassing every
    /// check and the hash trees, as bit rot on the disk would. Returns whether the key existed.
    #[doc(hidden)]
    pub fn corrupt_for_testing(
        &self,
        partition: PartitionId,
        key: &[u8],
    ) -> Result<bool, StorageError> {
        let raw_key = keys::object_key(partition, key);
        let Some(raw) = self.objects.get(&raw_key)? else {
            return Ok(false);
        };
        let mut bytes = raw.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        self.objects.insert(raw_key, bytes)?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(true)
    }
}
