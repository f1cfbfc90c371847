//! The ordered key-value engine under [`super::Store`]: fjall on a real disk, or a
//! [`MemoryDisk`] (ordered maps in memory) for the simulator.
//!
//! The store uses a small part of fjall: four keyspaces ([`Table`]s) with point reads and
//! writes, batches that commit atomically across them ([`Batch`]), forward scans by prefix or
//! range ([`Scan`]) and `persist`. This module is that part as an enum, so that one store
//! implementation runs on either engine with one `match` per call and no allocation for it.
//! Errors stay fjall's ([`fjall::Error`]), so [`super::StorageError`] is the same on both.
//!
//! Why a second engine: in the simulator fjall's journal writes, memtable skiplists,
//! directory set-up and flush threads were half of the CPU time of a seed; what the simulator
//! checks is the protocol above the store, and the store's own logic (merge, batches,
//! tombstone records, hash trees, the simulated disk's power cuts) is the same code on both.
//! fjall itself is covered by the storage, crash and real-process tests, and by a simulator
//! scenario that still runs on it (`storage = "fjall"`).

use super::memory::{MemoryDisk, MemoryTable};
use fjall::{PersistMode, Slice};
use std::ops::Bound;

/// An open database: fjall's, or a memory disk held for as long as the store is open.
#[derive(Clone)]
pub(super) enum Engine {
    Fjall(fjall::Database),
    Memory(std::sync::Arc<super::memory::Held>),
}

/// One keyspace of an [`Engine`].
#[derive(Clone)]
pub(super) enum Table {
    Fjall(fjall::Keyspace),
    Memory(MemoryTable),
}

/// Writes to one or more tables that commit together.
pub(super) enum Batch {
    Fjall(fjall::OwnedWriteBatch),
    Memory(MemoryDisk, Vec<super::memory::Op>),
}

/// A forward scan of one table, in key order.
pub(super) enum Scan {
    Fjall(fjall::Iter),
    Memory(super::memory::Cursor),
}

impl Engine {
    /// Opens `name` as a table of this engine (created if absent).
    pub(super) fn table(&self, name: &str) -> Result<Table, fjall::Error> {
        match self {
            Engine::Fjall(db) => Ok(Table::Fjall(
                db.keyspace(name, fjall::KeyspaceCreateOptions::default)?,
            )),
            Engine::Memory(held) => Ok(Table::Memory(held.disk().table(name))),
        }
    }

    /// A new, empty batch.
    pub(super) fn batch(&self) -> Batch {
        match self {
            Engine::Fjall(db) => Batch::Fjall(db.batch()),
            Engine::Memory(held) => Batch::Memory(held.disk().clone(), Vec::new()),
        }
    }

    /// Hands committed writes to the OS (`Buffer`) or the disk (`SyncAll`). A memory disk
    /// has nothing to do: what it holds survives a restart of the node, as a disk's would,
    /// and what a power cut takes is the simulated disk's business (`unsynced`).
    pub(super) fn persist(&self, mode: PersistMode) -> Result<(), fjall::Error> {
        match self {
            Engine::Fjall(db) => db.persist(mode),
            Engine::Memory(_) => Ok(()),
        }
    }

    /// Bytes on disk (journal and tables); a memory disk takes none.
    pub(super) fn disk_space(&self) -> Result<u64, fjall::Error> {
        match self {
            Engine::Fjall(db) => db.disk_space(),
            Engine::Memory(_) => Ok(0),
        }
    }
}

impl Table {
    /// The value stored under `key`.
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Slice>, fjall::Error> {
        match self {
            Table::Fjall(ks) => ks.get(key),
            Table::Memory(t) => Ok(t.get(key.as_ref())),
        }
    }

    /// Stores `value` under `key` on its own (not in a batch).
    pub(super) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), fjall::Error> {
        match self {
            Table::Fjall(ks) => ks.insert(key.as_ref(), value.as_ref()),
            Table::Memory(t) => {
                t.insert(key.as_ref(), value.as_ref());
                Ok(())
            }
        }
    }

    /// Removes `key` on its own (not in a batch).
    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), fjall::Error> {
        match self {
            Table::Fjall(ks) => ks.remove(key.as_ref()),
            Table::Memory(t) => {
                t.remove(key.as_ref());
                Ok(())
            }
        }
    }

    /// Every entry, in key order.
    pub(super) fn iter(&self) -> Scan {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub(super) fn prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        match self {
            Table::Fjall(ks) => Scan::Fjall(ks.prefix(prefix)),
            Table::Memory(t) => Scan::Memory(t.prefix(prefix.as_ref())),
        }
    }

    /// The entries from `start` to `end`, in key order.
    pub(super) fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan {
        match self {
            Table::Fjall(ks) => Scan::Fjall(ks.range::<Vec<u8>, _>((start, end))),
            Table::Memory(t) => Scan::Memory(t.range(start, end)),
        }
    }

    /// How many entries there are (fjall's is an estimate).
    pub(super) fn approximate_len(&self) -> usize {
        match self {
            Table::Fjall(ks) => ks.approximate_len(),
            Table::Memory(t) => t.len(),
        }
    }
}

impl Batch {
    /// Adds storing `value` under `key` in `table`.
    pub(super) fn insert(&mut self, table: &Table, key: &[u8], value: impl AsRef<[u8]>) {
        match (self, table) {
            (Batch::Fjall(b), Table::Fjall(ks)) => b.insert(ks, key, value.as_ref()),
            (Batch::Memory(_, ops), Table::Memory(t)) => ops.push(t.insert_op(key, value.as_ref())),
            _ => unreachable!("a batch and its tables come from one engine"),
        }
    }

    /// Adds removing `key` from `table`.
    pub(super) fn remove(&mut self, table: &Table, key: &[u8]) {
        match (self, table) {
            (Batch::Fjall(b), Table::Fjall(ks)) => b.remove(ks, key),
            (Batch::Memory(_, ops), Table::Memory(t)) => ops.push(t.remove_op(key)),
            _ => unreachable!("a batch and its tables come from one engine"),
        }
    }

    /// Applies every write at once: a reader sees all of them or none.
    pub(super) fn commit(self) -> Result<(), fjall::Error> {
        match self {
            Batch::Fjall(b) => b.commit(),
            Batch::Memory(disk, ops) => {
                disk.apply(ops);
                Ok(())
            }
        }
    }
}

impl Iterator for Scan {
    type Item = Result<(Slice, Slice), fjall::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Scan::Fjall(it) => it.next().map(fjall::Guard::into_inner),
            Scan::Memory(cursor) => cursor.next().map(Ok),
        }
    }
}
