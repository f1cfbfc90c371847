//! How objects are laid out in fjall: partition (u32, big-endian) then the user key, so one
//! partition is one contiguous range scan (for handoff and anti-entropy).

use ringkv_shared::PartitionId;

/// The storage key of `key` in `partition`.
pub(crate) fn object_key(partition: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Splits a storage key back into partition and user key.
#[allow(dead_code)]
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
    }
}
