//! Anti-entropy hash trees, as plain data: which leaf a key falls in, what a stored entry
//! hashes to, and where two replicas' trees differ.
//!
//! Each partition has [`LEAVES`] leaves; a key's leaf is the low byte of its hash (the
//! partition uses the top bits, so leaves spread evenly within a partition). A leaf's value is
//! the XOR of the [`entry_hash`]es of the keys in it, so a write updates its leaf in place —
//! XOR out the old entry, XOR in the new — and no tree is ever rebuilt after a write. The
//! partition's root is the XOR of its leaves.
//!
//! Two replicas compare roots of the partitions they share, then the leaves of partitions whose
//! roots differ, then the `(key, entry hash)` lists of leaves that differ, and exchange objects
//! only for keys whose entries differ ([`diff_entries`]). A 64-bit XOR tree can in principle
//! hide a difference (two changes cancelling out); with random 64-bit entry hashes the chance is
//! 2^-64 per comparison, far below the rate of undetected disk errors.

use crate::hash::key_hash;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Leaves per partition.
pub const LEAVES: usize = 256;

/// The leaf of `key` within its partition.
#[inline]
pub fn leaf_of(key: &[u8]) -> u16 {
    (key_hash(key) & (LEAVES as u64 - 1)) as u16
}

/// The hash of one stored entry: the key and its encoded object (the encoding is canonical, so
/// equal objects hash equal on every replica).
#[inline]
pub fn entry_hash(key: &[u8], encoded_object: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(encoded_object, key_hash(key))
}

/// The root of a partition from its leaves.
pub fn root(leaves: &[u64]) -> u64 {
    leaves.iter().fold(0, |a, l| a ^ l)
}

/// Indexes where two leaf vectors differ (a missing side counts as all zeroes).
pub fn diff_leaves(mine: &[u64], theirs: &[u64]) -> Vec<u16> {
    (0..mine.len().max(theirs.len()))
        .filter(|&i| mine.get(i).copied().unwrap_or(0) != theirs.get(i).copied().unwrap_or(0))
        .filter_map(|i| u16::try_from(i).ok())
        .collect()
}

/// How two replicas' entries for the same leaves differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryDiff {
    /// Keys both hold, with different versions: merge both ways.
    pub differ: Vec<Bytes>,
    /// Keys only this replica holds: push.
    pub only_mine: Vec<Bytes>,
    /// Keys only the other replica holds: pull.
    pub only_theirs: Vec<Bytes>,
}

impl EntryDiff {
    /// Keys to fetch from the other replica.
    pub fn to_pull(&self) -> impl Iterator<Item = &Bytes> {
        self.differ.iter().chain(&self.only_theirs)
    }

    /// Keys to send to the other replica (after merging what was pulled).
    pub fn to_push(&self) -> impl Iterator<Item = &Bytes> {
        self.differ.iter().chain(&self.only_mine)
    }

    /// Whether the entries are identical.
    pub fn is_empty(&self) -> bool {
        self.differ.is_empty() && self.only_mine.is_empty() && self.only_theirs.is_empty()
    }
}

/// Compares two replicas' `(key, entry hash)` lists.
pub fn diff_entries(mine: &[(Bytes, u64)], theirs: &[(Bytes, u64)]) -> EntryDiff {
    let theirs_by_key: BTreeMap<&[u8], u64> =
        theirs.iter().map(|(k, h)| (k.as_ref(), *h)).collect();
    let mine_by_key: BTreeMap<&[u8], u64> = mine.iter().map(|(k, h)| (k.as_ref(), *h)).collect();
    let mut d = EntryDiff::default();
    for (k, h) in mine {
        match theirs_by_key.get(k.as_ref()) {
            Some(t) if t == h => {}
            Some(_) => d.differ.push(k.clone()),
            None => d.only_mine.push(k.clone()),
        }
    }
    for (k, _) in theirs {
        if !mine_by_key.contains_key(k.as_ref()) {
            d.only_theirs.push(k.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves_of(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u64> {
        let mut leaves = vec![0u64; LEAVES];
        for (k, v) in entries {
            leaves[leaf_of(k) as usize] ^= entry_hash(k, v);
        }
        leaves
    }

    #[test]
    fn xor_updates_equal_a_rebuild() {
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = (0..100u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 3]))
            .collect();
        let mut leaves = leaves_of(&entries);
        // Overwrite key 7 in place: XOR out the old entry, XOR in the new.
        let k = 7u32.to_be_bytes().to_vec();
        let old = entries.insert(k.clone(), b"new".to_vec()).unwrap();
        let l = leaf_of(&k) as usize;
        leaves[l] ^= entry_hash(&k, &old) ^ entry_hash(&k, b"new");
        assert_eq!(leaves, leaves_of(&entries));
        assert_ne!(root(&leaves), 0);
    }

    proptest! {
        /// The diff finds exactly the keys whose values differ, and only those.
        #[test]
        fn diffs_find_exactly_the_divergent_keys(
            base in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 1..8), prop::collection::vec(any::<u8>(), 0..8), 0..200),
            changes in prop::collection::vec((prop::collection::vec(any::<u8>(), 1..8), prop::option::of(prop::collection::vec(any::<u8>(), 0..8))), 0..20),
        ) {
            let mut theirs = base.clone();
            for (k, v) in &changes {
                match v {
                    Some(v) => { theirs.insert(k.clone(), v.clone()); }
                    None => { theirs.remove(k); }
                }
            }
            let (lm, lt) = (leaves_of(&base), leaves_of(&theirs));
            prop_assert_eq!(root(&lm) == root(&lt), base == theirs);
            let dl = diff_leaves(&lm, &lt);
            let in_leaves = |m: &BTreeMap<Vec<u8>, Vec<u8>>| -> Vec<(Bytes, u64)> {
                m.iter().filter(|(k, _)| dl.contains(&leaf_of(k))).map(|(k, v)| (Bytes::from(k.clone()), entry_hash(k, v))).collect()
            };
            let d = diff_entries(&in_leaves(&base), &in_leaves(&theirs));
            let mut expected: Vec<Vec<u8>> = base.keys().chain(theirs.keys())
                .filter(|k| base.get(*k) != theirs.get(*k)).cloned().collect();
            expected.sort();
            expected.dedup();
            let mut found: Vec<Vec<u8>> = d.differ.iter().chain(&d.only_mine).chain(&d.only_theirs).map(|b| b.to_vec()).collect();
            found.sort();
            prop_assert_eq!(found, expected);
        }
    }
}
