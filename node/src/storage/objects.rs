//! The `objects` keyspace: a replica's copies, their merges and coordinated updates, and the
//! anti-entropy view of them.

use super::read_merge_write::{Target, merge_into, read_object};
use super::{StorageError, Store, Ticket, keys};
use bytes::Bytes;
use ringkv_shared::{Object, PartitionId, VersionVector};

impl Store {
    /// The object stored for `key`, or `None` if there is none.
    pub fn get(&self, partition: PartitionId, key: &[u8]) -> Result<Option<Object>, StorageError> {
        read_object(
            &self.objects,
            &keys::object_key(partition, key),
            partition,
            key,
        )
    }

    /// Merges `incoming` into the stored object (replica synchronisation) and returns the
    /// result. A stored object that fails its checksum is replaced by `incoming` (logged): the
    /// co-replicas hold the rest, and anti-entropy or read repair brings it back.
    pub async fn merge(
        &self,
        partition: PartitionId,
        key: &[u8],
        incoming: &Object,
    ) -> Result<Object, StorageError> {
        Ok(self.merge_reporting(partition, key, incoming).await?.0)
    }

    /// [`Store::merge`], also telling whether the stored object changed.
    pub async fn merge_reporting(
        &self,
        partition: PartitionId,
        key: &[u8],
        incoming: &Object,
    ) -> Result<(Object, bool), StorageError> {
        let at = Target::object(partition, key);
        self.read_modify_write(&self.objects, &at, None, |current| {
            Ok(merge_into(current, incoming, "object"))
        })
        .await
    }

    /// Applies a client write coordinated here: drops siblings covered by `context`, stamps
    /// `value` (or a tombstone) with this node's next dot, and returns the new object once it is
    /// as durable as the policy requires. Refused if the result would exceed the store's write
    /// cap (`Limits::write_cap`: bytes and siblings).
    pub async fn update(
        &self,
        partition: PartitionId,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
    ) -> Result<Object, StorageError> {
        let (object, ticket) = self.update_staged(partition, key, context, value)?;
        self.durable(ticket).await?;
        Ok(object)
    }

    /// [`Store::update`] up to the commit: the write is in the journal, and the returned
    /// [`Ticket`] must be waited for ([`Store::durable`]) before it is acknowledged. A
    /// coordinator replicates meanwhile, so its own fsync and the replicas' overlap; if it
    /// crashes before the fsync, nothing was acknowledged, and its next incarnation cannot
    /// reuse the dot.
    pub fn update_staged(
        &self,
        partition: PartitionId,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
    ) -> Result<(Object, Ticket), StorageError> {
        let actor = self.actor;
        let at = Target::object(partition, key);
        let (object, _, ticket) =
            self.stage(&self.objects, &at, Some(self.write_cap), |current| {
                // A corrupt object is not overwritten by a coordinated write: its dots are unknown,
                // and stamping without them could reuse one.
                let mut obj = current?.unwrap_or_default();
                obj.update(context, value, actor)
                    .map_err(|e| StorageError::Version {
                        key: String::from_utf8_lossy(key).into_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(obj)
            })?;
        Ok((object, ticket))
    }

    /// Waits until the write behind `ticket` is as durable as the policy requires.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StorageError> {
        self.commit
            .durable(ticket)
            .await
            .map_err(|reason| StorageError::Sync { reason })
    }

    /// Roots of the anti-entropy trees of `partitions` (0 for an empty partition).
    pub fn tree_roots(&self, partitions: &[PartitionId]) -> Vec<u64> {
        partitions.iter().map(|p| self.trees.root(*p)).collect()
    }

    /// Every leaf of a partition's tree (empty if the partition is out of range).
    pub fn tree_leaves(&self, partition: PartitionId) -> Vec<u64> {
        self.trees.leaves(partition)
    }

    /// `(key, entry hash)` of every stored key of `partition` that falls in `leaves`.
    pub fn leaf_entries(
        &self,
        partition: PartitionId,
        leaves: &[u16],
    ) -> Result<Vec<(Bytes, u64)>, StorageError> {
        let wanted: std::collections::BTreeSet<u16> = leaves.iter().copied().collect();
        let mut out = Vec::new();
        for entry in self.objects.prefix(partition.to_be_bytes()) {
            let (raw_key, raw) = entry?;
            let Some((_, key)) = keys::split_object_key(&raw_key) else {
                continue;
            };
            if wanted.contains(&ringkv_shared::merkle::leaf_of(key)) {
                out.push((
                    Bytes::copy_from_slice(key),
                    ringkv_shared::merkle::entry_hash(key, &raw),
                ));
            }
        }
        Ok(out)
    }
}
