//! Dropping the copy of a partition this node no longer replicates.
//!
//! A node that stops replicating a partition keeps nothing of it: a copy kept on disk would be
//! stale the moment the new owners acknowledge a delete, and if the partition ever came back
//! to this node the handoff would merge the new owners' data into it, bringing the deleted keys
//! back. So each partition carries a persisted mark in `meta`, `retired/<partition>`:
//!
//! - present: everything stored for the partition arrived after the node last stopped owning
//!   it (handoff batches and writes of a ring change that gives it back), so the copy is
//!   trustworthy;
//! - absent: the copy may date from when the node owned the partition.
//!
//! [`Store::retire_partition`] drops a partition's objects and sets the mark;
//! [`Store::adopt_partition`] clears it when a ring gives the partition back. Both are
//! idempotent, so a crash part-way is repaired by the next sweep.

use super::keys::Space;
use super::{StorageError, Store, keys};
use ringkv_shared::PartitionId;

const RETIRED_PREFIX: &str = "retired/";

fn mark(partition: PartitionId) -> String {
    format!("{RETIRED_PREFIX}{partition}")
}

impl Store {
    /// Whether `partition` is marked retired (see the module docs).
    pub fn is_retired(&self, partition: PartitionId) -> Result<bool, StorageError> {
        Ok(self.meta.get(mark(partition))?.is_some())
    }

    /// Drops every object of `partition` (and its tombstone records and tree entries), then
    /// marks it retired. Does nothing if it is marked already. Returns how many objects it
    /// removed. Call [`Store::sync_retirements`] before telling anyone.
    pub fn retire_partition(&self, partition: PartitionId) -> Result<u64, StorageError> {
        if self.is_retired(partition)? {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            // In slices, so that a large partition does not hold the scan open.
            let raw_keys: Vec<Vec<u8>> = self
                .objects
                .prefix(partition.to_be_bytes())
                .take(1024)
                .map(|e| e.map(|(k, _)| k.to_vec()))
                .collect::<Result<_, _>>()?;
            if raw_keys.is_empty() {
                break;
            }
            for raw_key in raw_keys {
                let Some((_, key)) = keys::split_object_key(&raw_key) else {
                    continue;
                };
                let _guard = self.lock_for(&raw_key);
                let Some(raw) = self.objects.get(&raw_key)? else {
                    continue;
                };
                self.remove_stored(partition, key, &raw_key, &raw)?;
                removed += 1;
            }
        }
        self.note_change(Space::Meta, mark(partition).as_bytes())?;
        self.meta.insert(mark(partition), [1u8].as_slice())?;
        Ok(removed)
    }

    /// Clears `partition`'s retired mark: a ring makes this node a replica of it again, and
    /// what it holds now (received by handoff) is its copy.
    pub fn adopt_partition(&self, partition: PartitionId) -> Result<(), StorageError> {
        if self.is_retired(partition)? {
            self.note_change(Space::Meta, mark(partition).as_bytes())?;
            self.meta.remove(mark(partition))?;
        }
        Ok(())
    }

    /// Makes every retirement so far durable (one fsync).
    pub fn sync_retirements(&self) -> Result<(), StorageError> {
        self.persist_all()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreOptions};
    use bytes::Bytes;
    use ringkv_shared::{NodeId, VersionVector};

    #[tokio::test]
    async fn a_retired_partition_is_empty_and_its_tree_is_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
        let none = VersionVector::new();
        for i in 0..2500u32 {
            let key = format!("k{i}");
            let p = i % 2;
            let value = Some(Bytes::from(format!("v{i}")));
            store.update(p, key.as_bytes(), &none, value).await.unwrap();
        }
        // A tombstone in the partition that goes.
        let obj = store.get(0, b"k0").unwrap().unwrap();
        store.update(0, b"k0", obj.clock(), None).await.unwrap();
        assert_eq!(store.tombstone_count().unwrap(), 1);
        let kept_root = store.tree_roots(&[1])[0];
        assert_ne!(store.tree_roots(&[0])[0], 0);

        assert!(!store.is_retired(0).unwrap());
        assert_eq!(store.retire_partition(0).unwrap(), 1250);
        store.sync_retirements().unwrap();
        assert!(store.is_retired(0).unwrap());
        assert!(
            store
                .scan_partition(0, None, 10, usize::MAX)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.tree_roots(&[0])[0],
            0,
            "the tree forgot the partition"
        );
        assert_eq!(store.tombstone_count().unwrap(), 0);
        assert_eq!(
            store.tree_roots(&[1])[0],
            kept_root,
            "other partitions untouched"
        );
        assert_eq!(
            store
                .scan_partition(1, None, 2000, usize::MAX)
                .unwrap()
                .len(),
            1250
        );
        assert_eq!(store.retire_partition(0).unwrap(), 0, "idempotent");

        // What arrives afterwards (a handoff giving the partition back) is kept, and survives
        // a restart: the mark says the copy is trustworthy.
        store
            .update(0, b"new", &none, Some(Bytes::from_static(b"n")))
            .await
            .unwrap();
        store.close().unwrap();
        drop(store);
        let store = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
        assert!(store.is_retired(0).unwrap());
        assert_eq!(store.retire_partition(0).unwrap(), 0);
        assert!(store.get(0, b"new").unwrap().is_some());
        store.adopt_partition(0).unwrap();
        assert!(!store.is_retired(0).unwrap());
        assert!(store.get(0, b"new").unwrap().is_some());
    }
}
