//! The anti-entropy trees of every partition, kept in memory and updated on every write.
//!
//! Leaves are atomics, so a write's update (one `fetch_xor`, done under the key's stripe lock
//! right after its batch commits) never blocks readers of other keys. The trees are rebuilt
//! from a scan of the objects keyspace when the store opens; they are not persisted.

use super::engine::Table;
use ringkv_shared::PartitionId;
use ringkv_shared::merkle::{LEAVES, entry_hash, leaf_of, root};
use std::sync::atomic::{AtomicU64, Ordering};

use super::keys::split_object_key;

pub(crate) struct Trees {
    partitions: u32,
    leaves: Box<[AtomicU64]>,
}

impl Trees {
    /// Builds the trees from every stored object.
    pub(super) fn build(objects: &Table, partitions: u32) -> Result<Self, String> {
        let trees = Trees {
            partitions,
            leaves: (0..partitions as usize * LEAVES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        for entry in objects.iter() {
            let (raw_key, raw) = entry.map_err(|e| format!("scanning objects: {e}"))?;
            let (p, key) = split_object_key(&raw_key).ok_or("an object key is malformed")?;
            if p >= partitions {
                return Err(format!(
                    "it holds partition {p}, but the config has only {partitions} partitions"
                ));
            }
            trees.toggle(p, key, entry_hash(key, &raw));
        }
        Ok(trees)
    }

    /// XORs `hash` into the leaf of `key` in `partition`.
    pub(crate) fn toggle(&self, partition: PartitionId, key: &[u8], hash: u64) {
        if partition < self.partitions {
            let i = partition as usize * LEAVES + leaf_of(key) as usize;
            self.leaves[i].fetch_xor(hash, Ordering::Relaxed);
        }
    }

    pub(crate) fn leaves(&self, partition: PartitionId) -> Vec<u64> {
        if partition >= self.partitions {
            return Vec::new();
        }
        let start = partition as usize * LEAVES;
        self.leaves[start..start + LEAVES]
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn root(&self, partition: PartitionId) -> u64 {
        root(&self.leaves(partition))
    }
}
