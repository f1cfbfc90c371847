//! [`MemoryDisk`]: a node's tables as ordered maps in memory, for the simulator.
//!
//! A memory disk belongs to whoever made it (the simulator keeps one per node), not to the
//! store: a node that crashes and restarts opens the same memory disk again and finds what it
//! wrote, as it would find its directory; a wiped node gets a new one. Like a fjall directory
//! it is open in at most one store at a time ([`fjall::Error::Locked`] otherwise), until every
//! handle of that store is dropped.
//!
//! Batches are applied under one lock, so a reader sees all of a batch or none of it. Scans
//! are cursors: each step takes the lock and finds the next key after the last one returned,
//! so a long scan holds nothing between steps and sees writes made meanwhile (as fjall's
//! snapshot would not; no caller depends on either).

use fjall::Slice;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A node's storage held in memory: what survives its crashes, in the simulator. Cheap to
/// clone; clones are the same disk.
#[derive(Clone, Default)]
pub struct MemoryDisk(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Tables by the order they were first opened; a [`MemoryTable`] names its index.
    tables: Mutex<Vec<(String, BTreeMap<Slice, Slice>)>>,
    /// Whether a store has it open.
    held: AtomicBool,
}

impl std::fmt::Debug for MemoryDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.lock();
        let mut d = f.debug_struct("MemoryDisk");
        for (name, map) in tables.iter() {
            d.field(name, &map.len());
        }
        d.finish()
    }
}

impl MemoryDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(String, BTreeMap<Slice, Slice>)>> {
        self.0.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the disk for one store; refused while another store has it open.
    pub(super) fn hold(&self) -> Result<Held, fjall::Error> {
        if self.0.held.swap(true, Ordering::AcqRel) {
            return Err(fjall::Error::Locked);
        }
        Ok(Held(self.clone()))
    }

    /// The table `name`, created empty if it is new.
    pub(super) fn table(&self, name: &str) -> MemoryTable {
        let mut tables = self.lock();
        let id = match tables.iter().position(|(n, _)| n == name) {
            Some(id) => id,
            None => {
                tables.push((name.to_owned(), BTreeMap::new()));
                tables.len() - 1
            }
        };
        MemoryTable {
            disk: self.clone(),
            id,
        }
    }

    /// Applies a batch's writes in order, under one lock.
    pub(super) fn apply(&self, ops: impl IntoIterator<Item = Op>) {
        let mut tables = self.lock();
        for op in ops {
            match op {
                Op::Insert(id, key, value) => {
                    tables[id].1.insert(key, value);
                }
                Op::Remove(id, key) => {
                    tables[id].1.remove(key.as_ref());
                }
            }
        }
    }
}

/// A [`MemoryDisk`] open in a store; dropping it (with the store's last handle) lets another
/// store open the disk.
pub(super) struct Held(MemoryDisk);

impl Held {
    pub(super) fn disk(&self) -> &MemoryDisk {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.0.held.store(false, Ordering::Release);
    }
}

/// One write of a batch: in which table, which key, and the value (or a removal).
pub(super) enum Op {
    Insert(usize, Slice, Slice),
    Remove(usize, Slice),
}

/// One table of a [`MemoryDisk`].
#[derive(Clone)]
pub(super) struct MemoryTable {
    disk: MemoryDisk,
    id: usize,
}

impl MemoryTable {
    pub(super) fn get(&self, key: &[u8]) -> Option<Slice> {
        self.disk.lock()[self.id].1.get(key).cloned()
    }

    pub(super) fn insert(&self, key: &[u8], value: &[u8]) {
        self.disk.apply([self.insert_op(key, value)]);
    }

    pub(super) fn remove(&self, key: &[u8]) {
        self.disk.apply([self.remove_op(key)]);
    }

    pub(super) fn insert_op(&self, key: &[u8], value: &[u8]) -> Op {
        Op::Insert(self.id, Slice::from(key), Slice::from(value))
    }

    pub(super) fn remove_op(&self, key: &[u8]) -> Op {
        Op::Remove(self.id, Slice::from(key))
    }

    pub(super) fn len(&self) -> usize {
        self.disk.lock()[self.id].1.len()
    }

    pub(super) fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Cursor {
        Cursor {
            table: self.clone(),
            from: start.map(Slice::from),
            to: end.map(Slice::from),
            prefix: None,
        }
    }

    pub(super) fn prefix(&self, prefix: &[u8]) -> Cursor {
        let prefix = Slice::from(prefix);
        Cursor {
            table: self.clone(),
            from: Bound::Included(prefix.clone()),
            to: Bound::Unbounded,
            prefix: Some(prefix),
        }
    }
}

/// A forward scan of a [`MemoryTable`]: each step finds the first key after the last one.
pub(super) struct Cursor {
    table: MemoryTable,
    from: Bound<Slice>,
    to: Bound<Slice>,
    /// Stop at the first key without this prefix.
    prefix: Option<Slice>,
}

impl Iterator for Cursor {
    type Item = (Slice, Slice);

    fn next(&mut self) -> Option<Self::Item> {
        if is_empty(&self.from, &self.to) {
            return None;
        }
        let tables = self.table.disk.lock();
        let map = &tables[self.table.id].1;
        let bounds = (as_bytes(&self.from), as_bytes(&self.to));
        let (key, value) = map.range::<[u8], _>(bounds).next()?;
        if self
            .prefix
            .as_ref()
            .is_some_and(|p| !key.starts_with(p.as_ref()))
        {
            self.to = Bound::Excluded(key.clone());
            self.from = Bound::Excluded(key.clone());
            return None;
        }
        let entry = (key.clone(), value.clone());
        drop(tables);
        self.from = Bound::Excluded(entry.0.clone());
        Some(entry)
    }
}

fn as_bytes(bound: &Bound<Slice>) -> Bound<&[u8]> {
    bound.as_ref().map(|s| s.as_ref())
}

/// Whether no key lies between `from` and `to` (where `BTreeMap::range` would panic, or
/// find nothing).
fn is_empty(from: &Bound<Slice>, to: &Bound<Slice>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cursor: Cursor) -> Vec<Vec<u8>> {
        cursor.map(|(k, _)| k.to_vec()).collect()
    }

    #[test]
    fn scans_by_prefix_and_range_in_key_order() {
        let disk = MemoryDisk::new();
        let t = disk.table("t");
        for k in [&b"b2"[..], b"a1", b"b1", b"c", b"b", b"ba"] {
            t.insert(k, b"v");
        }
        assert_eq!(keys(t.prefix(b"b")), [&b"b"[..], b"b1", b"b2", b"ba"]);
        assert_eq!(keys(t.prefix(b"z")), Vec::<Vec<u8>>::new());
        assert_eq!(
            keys(t.range(
                Bound::Excluded(b"b".to_vec()),
                Bound::Excluded(b"c".to_vec())
            )),
            [&b"b1"[..], b"b2", b"ba"]
        );
        assert_eq!(
            keys(t.range(
                Bound::Included(b"c".to_vec()),
                Bound::Excluded(b"c".to_vec())
            )),
            Vec::<Vec<u8>>::new(),
            "an empty range is empty, not a panic"
        );
        assert_eq!(
            keys(t.range(
                Bound::Excluded(b"d".to_vec()),
                Bound::Included(b"a".to_vec())
            )),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn a_batch_applies_in_order_across_tables() {
        let disk = MemoryDisk::new();
        let (a, b) = (disk.table("a"), disk.table("b"));
        disk.apply(vec![
            a.insert_op(b"k", b"1"),
            b.insert_op(b"k", b"2"),
            a.remove_op(b"k"),
            a.insert_op(b"j", b"3"),
        ]);
        assert_eq!(a.get(b"k"), None);
        assert_eq!(a.get(b"j").as_deref(), Some(&b"3"[..]));
        assert_eq!(b.get(b"k").as_deref(), Some(&b"2"[..]));
        assert_eq!(disk.table("a").len(), 1, "a table is found again by name");
    }

    #[test]
    fn one_store_at_a_time_and_the_data_outlives_it() {
        let disk = MemoryDisk::new();
        let held = disk.hold().unwrap();
        assert!(matches!(disk.hold(), Err(fjall::Error::Locked)));
        held.disk().table("t").insert(b"k", b"v");
        drop(held);
        let again = disk.hold().unwrap();
        assert_eq!(
            again.disk().table("t").get(b"k").as_deref(),
            Some(&b"v"[..])
        );
    }
}
