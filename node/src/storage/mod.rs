//! A node's storage: objects, and node metadata, in one fjall database (or, in the simulator,
//! in a [`MemoryDisk`]).
//!
//! Keyspaces:
//! - `objects`: partition (u32, big-endian) ++ user key → [`ringkv_shared::encoding::encode_object`] bytes
//!   (format byte, checksum, body).
//! - `hints`: owner node id (u32, big-endian) ++ partition ++ user key → encoded object: copies
//!   this node holds as a stand-in for an owner that was down, until they are handed over.
//! - `tombstones`: partition ++ user key → when (ms since the epoch) this node's object for the
//!   key became a pure tombstone; the reaper's work list, updated in the same batch as the
//!   object.
//! - `meta`: the storage format version, the release that last opened the directory, the
//!   node id the directory belongs to, this storage
//!   incarnation's [`ActorId`], a clean-shutdown marker, the persisted cluster view, handoff
//!   cursors, and which partitions are retired (`retire`: copies dropped when the node stopped
//!   replicating them).
//!
//! **Incarnations.** A node whose directory is new, or whose last run did not end with a clean
//! [`Store::close`], draws a fresh actor id. Under `buffered` or `none` durability a crash can
//! lose the node's last writes while its replicas keep them; stamping new writes with the old
//! actor could then reuse a dot the replicas already hold for another value, and a merge would
//! lose one of the two (Riak's KV679). A new incarnation cannot collide.
//!
//! Every write is a read-merge-write of one key under a striped lock, committed as one fjall
//! batch, skipped when it would change nothing, and acknowledged per the [`Durability`] policy.
//!
//! # Layout
//!
//! One file per keyspace, each adding its methods to [`Store`]:
//!
//! - `open` — opening and closing: format, node id, partition count, incarnation, the
//!   clean-shutdown marker.
//! - `migrate` — storage format migrations, run when a directory of an older format opens.
//! - `backup` — [`Store::backup_to`], a point-in-time copy of a running store, and
//!   [`restore`], a data directory made from one.
//! - `objects` — the `objects` keyspace: reads, replica merges, coordinated updates, and the
//!   anti-entropy view (tree roots, leaves, leaf entries).
//! - `hints` — the `hints` keyspace: [`Hint`]s held for other owners, scanned with a cursor.
//! - `tombstones` — the `tombstones` keyspace: the reaper's work list, removal for good.
//! - `retire` — partitions this node stopped replicating: dropped, marked, adopted again.
//! - `transfer` — partition scans and batched merges for handoff; small metadata records.
//! - `read_merge_write` — the one write path all of them use: stripe lock, merge, one batch,
//!   durability ticket.
//! - `durability` — the [`Durability`] policies and group commit.
//! - `engine` — the ordered key-value engine the rest is written against: fjall, or memory.
//! - `memory` — [`MemoryDisk`]: tables in memory that outlive a node's restarts (simulator).
//! - `unsynced` — the simulator's disk: the changes a power cut would undo.
//! - `trees` — the in-memory anti-entropy hash trees, one per partition.
//! - `keys` — the byte layout of storage keys.
//! - `error` — [`StorageError`].

mod backup;
mod durability;
mod engine;
mod error;
mod hints;
mod keys;
mod memory;
mod migrate;
mod objects;
mod open;
mod read_merge_write;
mod retire;
mod tombstones;
mod transfer;
mod trees;
mod unsynced;

pub use backup::{BackupSummary, RestoreSummary, restore};
pub use durability::{Durability, Ticket};
pub use error::StorageError;
pub use hints::Hint;
pub use memory::MemoryDisk;

use durability::GroupCommit;
use engine::{Engine, Table};
use read_merge_write::decode_stored;
use ringkv_shared::ActorId;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tombstones::{is_tombstone, now_ms};

/// The on-disk layout version this build writes; it also reads (and migrates) every older
/// one (see `migrate`).
pub const STORAGE_FORMAT: u8 = 2;

const LOCK_STRIPES: usize = 1024;

/// Storage counters, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches committed (writes that changed an object).
    pub writes: u64,
    /// fsyncs run by the syncer (under `sync`, writes per fsync is the group-commit factor).
    pub fsyncs: u64,
    /// Merges refused because the object would exceed the merge cap (see `Limits::merge_cap`).
    pub merges_refused: u64,
}

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The cluster's partition count Q (fixed at creation; a directory made with another Q
    /// is refused).
    pub partitions: u32,
    /// The durability policy.
    pub durability: Durability,
    /// Background fsync interval under [`Durability::Buffered`].
    pub buffered_interval: Duration,
    /// fjall block cache, in bytes.
    pub cache_bytes: u64,
    /// Under [`Durability::Sync`]: how long the syncer lets more writes gather before an fsync
    /// when the previous fsync covered several (writes are concurrent). Zero fsyncs at once.
    pub group_commit_gather: Duration,
    /// Only the simulator sets this: fsyncs are simulated on the caller's runtime (no syncer
    /// thread), and every change is logged until a simulated fsync covers it, so that
    /// [`Store::simulate_crash`] can undo what a power cut would lose.
    pub simulated_disk: bool,
    /// Keep the data on this memory disk instead of fjall in the directory (the simulator:
    /// the caller keeps the disk across the node's restarts). Nothing is written to the
    /// directory, which only names the store.
    pub memory: Option<MemoryDisk>,
    /// The most a coordinated write may leave an object with (`Limits::write_cap`).
    pub write_cap: ringkv_shared::limits::ObjectCap,
    /// The most a merge may leave an object with (`Limits::merge_cap`); a merge past it is
    /// refused and the stored copy kept.
    pub merge_cap: ringkv_shared::limits::ObjectCap,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            partitions: ringkv_shared::ring::DEFAULT_PARTITIONS,
            durability: Durability::Sync,
            buffered_interval: Duration::from_millis(10),
            cache_bytes: 64 << 20,
            group_commit_gather: DEFAULT_GROUP_COMMIT_GATHER,
            simulated_disk: false,
            memory: None,
            write_cap: ringkv_shared::Limits::default().write_cap(),
            merge_cap: ringkv_shared::Limits::default().merge_cap(),
        }
    }
}

/// The default [`StoreOptions::group_commit_gather`]: with 32 operations in flight on three
/// nodes sharing a disk it about doubled the writes each fsync covers (1.5 to 2.9) and raised
/// throughput by a quarter (docs/BENCHMARKS.md); a lone write never waits it.
pub const DEFAULT_GROUP_COMMIT_GATHER: Duration = Duration::from_micros(500);

/// One node's storage.
pub struct Store {
    db: Engine,
    objects: Table,
    hints: Table,
    /// Hint keys held, maintained under the stripe locks: reads skip the hints keyspace
    /// entirely while it is zero (the common case).
    hint_keys: std::sync::atomic::AtomicU64,
    tombstones: Table,
    meta: Table,
    trees: trees::Trees,
    actor: ActorId,
    locks: Box<[Mutex<()>]>,
    commit: GroupCommit,
    /// The simulated disk's unsynced tail (`None` on a real disk).
    disk: Option<std::sync::Arc<unsynced::Unsynced>>,
    path: PathBuf,
    write_cap: ringkv_shared::limits::ObjectCap,
    merge_cap: ringkv_shared::limits::ObjectCap,
    /// Merges refused because the result would exceed `merge_cap`.
    merges_refused: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
