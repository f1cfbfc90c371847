//! Key hashing: the one function that places a key on the ring.
//!
//! Keys hash with XXH3-64 (seed 0). XXH3's output is specified and stable across versions and
//! platforms, which matters more than anything else here: a hash that changed between releases
//! would silently move every key to another partition. It is also fast (about 1 ns per short
//! key) and passes SMHasher, so partitions fill evenly.

/// The 64-bit ring position of a key.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A 64-bit checksum of stored or transmitted bytes (XXH3-64 with a distinct seed, so a checksum
/// never equals a key's ring position by construction).
#[inline]
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, 0x7269_6e67_6b76_0001)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values: if these change, every key moves partition. Never update them.
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(key_hash(b"cart:42"), key_hash(b"cart:42"));
        assert_ne!(key_hash(b"cart:42"), key_hash(b"cart:43"));
    }

    #[test]
    fn checksum_differs_from_key_hash() {
        assert_ne!(checksum(b"abc"), key_hash(b"abc"));
    }
}
