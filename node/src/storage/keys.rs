//! How objects are laid out in fjall: partition (u32, big-endian) then the user key, so one
//! partition is one contiguous range scan (for handoff and anti-entropy).

use ringkv_shared::PartitionId;

/// Which keyspace a storage key belongs to (the simulated disk logs changes by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Objects,
    Hints,
    Tombstones,
    Meta,
}

/// The storage key of `key` in `partition`.
pub(crate) fn object_key(partition: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The hints keyspace key of `key` held for `owner`: owner first, so that one owner's hints
/// are one prefix scan.
pub(crate) fn hint_key(
    owner: ringkv_shared::NodeId,
    partition: PartitionId,
    key: &[u8],
) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&owner.0.to_be_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Splits a hints key into owner, partition and user key.
pub(crate) fn split_hint_key(k: &[u8]) -> Option<(ringkv_shared::NodeId, PartitionId, &[u8])> {
    let (owner, rest) = k.split_at_checked(4)?;
    let owner = u32::from_be_bytes(owner.try_into().ok()?);
    let (p, key) = split_object_key(rest)?;
    Some((ringkv_shared::NodeId(owner), p, key))
}

/// Splits a storage key back into partition and user key.
pub(crate) fn split_object_key(k: &[u8]) -> Option<(PartitionId, &[u8])> {
    let (p, key) = k.split_at_checked(4)?;
    let p: [u8; 4] = p.try_into().ok()?;
    Some((PartitionId::from_be_bytes(p), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_partition_then_key() {
        let a = object_key(1, b"zzz");
        let b = object_key(2, b"aaa");
        assert!(a < b);
        assert_eq!(split_object_key(&a), Some((1, b"zzz".as_slice())));
        assert_eq!(split_object_key(&[0, 1]), None);
        let h = hint_key(ringkv_shared::NodeId(7), 3, b"k");
        assert_eq!(
            split_hint_key(&h),
            Some((ringkv_shared::NodeId(7), 3, b"k".as_slice()))
        );
    }
}
