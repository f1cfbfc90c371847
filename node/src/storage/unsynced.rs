//! The simulated disk: what a power cut would take away.
//!
//! Only the simulator turns this on ([`super::StoreOptions::simulated_disk`]). Every change to
//! the database first notes the bytes it replaces, in order. A simulated fsync takes a seeded
//! time (usually well under a millisecond, now and then tens of milliseconds, as virtual disks
//! do) and covers every change noted before it began. The operating system is taken to write
//! back any change older than `writeback` on its own (Linux's dirty-page expiry; under
//! `buffered` the syncer's interval). [`super::Store::simulate_crash`] puts back, newest first, the
//! bytes every uncovered change replaced, and fences the store: its node is gone, and nothing
//! it still had in flight may write.
//!
//! fjall itself keeps everything (it runs on a RAM disk and is never cut off), so this log is
//! the only place that knows what a power cut loses.

use super::engine::Table;
use super::keys::{self, Space};
use super::read_merge_write::decode_stored;
use super::{StorageError, Store};
use fjall::Slice;
use ringkv_shared::{NodeId, Object, PartitionId};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One change not yet on the disk: the bytes it replaced (`None`: the key was absent).
pub(super) struct Change {
    pub(super) space: Space,
    pub(super) raw_key: Vec<u8>,
    pub(super) prior: Option<Slice>,
    at: Instant,
}

#[derive(Default)]
struct State {
    /// Changes not yet covered by an fsync or a write-back, oldest first.
    changes: VecDeque<Change>,
    /// Position of `changes[0]` in the sequence of every change noted.
    first: u64,
    /// Group-commit writes covered by a finished simulated fsync.
    synced_writes: u64,
    /// Simulated fsyncs run.
    fsyncs: u64,
    fenced: bool,
}

/// The unsynced tail of one simulated disk.
pub(super) struct Unsynced {
    state: Mutex<State>,
    writeback: Duration,
}

/// The storage lost power: it refuses to change anything.
pub(super) const FENCED: &str = "the node lost power (simulated)";

impl Unsynced {
    pub(super) fn new(writeback: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            writeback,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the changes the operating system has written back by now.
    fn write_back(&self, state: &mut State) {
        let now = Instant::now();
        while state
            .changes
            .front()
            .is_some_and(|c| c.at + self.writeback <= now)
        {
            state.changes.pop_front();
            state.first += 1;
        }
    }

    /// Notes that `raw_key` in `space`, which holds `prior` now, is about to change. Refused
    /// once the power is gone.
    pub(super) fn note(
        &self,
        space: Space,
        raw_key: &[u8],
        prior: Option<Slice>,
    ) -> Result<(), &'static str> {
        let mut state = self.lock();
        if state.fenced {
            return Err(FENCED);
        }
        self.write_back(&mut state);
        state.changes.push_back(Change {
            space,
            raw_key: raw_key.to_vec(),
            prior,
            at: Instant::now(),
        });
        Ok(())
    }

    /// Whether the power is gone.
    #[cfg(test)]
    pub(super) fn fenced(&self) -> bool {
        self.lock().fenced
    }

    /// Group-commit writes a finished fsync has covered.
    pub(super) fn synced_writes(&self) -> u64 {
        self.lock().synced_writes
    }

    /// Simulated fsyncs run so far.
    pub(super) fn fsyncs(&self) -> u64 {
        self.lock().fsyncs
    }

    /// Runs one simulated fsync that covers every change noted so far and, once it finishes,
    /// group-commit writes up to `written`.
    pub(super) async fn fsync(&self, written: u64) -> Result<(), &'static str> {
        let mark = {
            let state = self.lock();
            if state.fenced {
                return Err(FENCED);
            }
            state.first + state.changes.len() as u64
        };
        tokio::time::sleep(fsync_latency()).await;
        let mut state = self.lock();
        if state.fenced {
            return Err(FENCED);
        }
        while state.first < mark && state.changes.pop_front().is_some() {
            state.first += 1;
        }
        state.synced_writes = state.synced_writes.max(written);
        state.fsyncs += 1;
        Ok(())
    }

    /// An fsync that finishes at once (fjall's `persist(SyncAll)` from synchronous code).
    pub(super) fn sync_all(&self) {
        let mut state = self.lock();
        let n = state.changes.len() as u64;
        state.changes.clear();
        state.first += n;
    }

    /// The bytes `raw_key` in `space` has on the disk, if a change not yet on the disk
    /// replaced them (`Some(None)`: absent on the disk); `None` if what fjall holds is on the
    /// disk.
    pub(super) fn on_disk(&self, space: Space, raw_key: &[u8]) -> Option<Option<Slice>> {
        let mut state = self.lock();
        self.write_back(&mut state);
        state
            .changes
            .iter()
            .find(|c| c.space == space && c.raw_key == raw_key)
            .map(|c| c.prior.clone())
    }

    /// The node dies: the store is fenced from now on. Returns every change not on the disk,
    /// newest first (what a power cut undoes).
    pub(super) fn crash(&self) -> Vec<Change> {
        let mut state = self.lock();
        self.write_back(&mut state);
        state.fenced = true;
        let mut lost: Vec<Change> = state.changes.drain(..).collect();
        lost.reverse();
        lost
    }
}

/// One simulated fsync's duration, from the seeded RNG: 0.2–2 ms nine times in ten, 2–10 ms
/// most of the rest, and 20–80 ms one time in a hundred (a virtual disk's stall).
fn fsync_latency() -> Duration {
    let r = ringkv_net::ambient::random_u64();
    let micros = match r % 100 {
        0 => 20_000 + (r >> 8) % 60_000,
        1..=9 => 2_000 + (r >> 8) % 8_000,
        _ => 200 + (r >> 8) % 1_800,
    };
    Duration::from_micros(micros)
}

impl Store {
    fn keyspace(&self, space: Space) -> &Table {
        match space {
            Space::Objects => &self.objects,
            Space::Hints => &self.hints,
            Space::Tombstones => &self.tombstones,
            Space::Meta => &self.meta,
        }
    }

    /// On a simulated disk, notes that `raw_key` in `space` is about to change (refused once
    /// the power is gone). Free on a real disk.
    pub(super) fn note_change(&self, space: Space, raw_key: &[u8]) -> Result<(), StorageError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let prior = self.keyspace(space).get(raw_key)?;
        disk.note(space, raw_key, prior)
            .map_err(|reason| StorageError::Sync {
                reason: reason.into(),
            })
    }

    /// fjall's `persist(SyncAll)`, which on a simulated disk also covers every change so far.
    pub(super) fn persist_all(&self) -> Result<(), StorageError> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        if let Some(disk) = &self.disk {
            disk.sync_all();
        }
        Ok(())
    }

    /// Simulation only: the node's process dies, so nothing may change any more (a task it
    /// left running is refused); with `power_cut` the disk also loses every change no fsync
    /// (or write-back) covered, undone newest first. Drop the store and open the directory
    /// again to restart the node. Returns how many changes were lost. Does nothing on a real
    /// disk.
    pub fn simulate_crash(&self, power_cut: bool) -> Result<usize, StorageError> {
        let Some(disk) = &self.disk else {
            return Ok(0);
        };
        let lost = disk.crash();
        if !power_cut {
            return Ok(0);
        }
        for change in &lost {
            let keyspace = self.keyspace(change.space);
            match &change.prior {
                Some(bytes) => keyspace.insert(change.raw_key.as_slice(), bytes.clone())?,
                None => keyspace.remove(change.raw_key.as_slice())?,
            }
        }
        self.db.persist(fjall::PersistMode::Buffer)?;
        Ok(lost.len())
    }

    /// Simulation only: what this node would still hold for `key` after a power cut now — its
    /// replica copy merged with the hints it holds for any of `owners`. On a real disk, what
    /// it holds.
    pub fn durable_copy(
        &self,
        partition: PartitionId,
        key: &[u8],
        owners: impl Iterator<Item = NodeId>,
    ) -> Result<Option<Object>, StorageError> {
        let on_disk = |space: Space, raw_key: &[u8]| -> Result<Option<Object>, StorageError> {
            let raw = match self.disk.as_ref().and_then(|d| d.on_disk(space, raw_key)) {
                Some(prior) => prior,
                None => self.keyspace(space).get(raw_key)?,
            };
            decode_stored(raw.as_deref(), partition, key)
        };
        let mut merged = on_disk(Space::Objects, &keys::object_key(partition, key))?;
        for owner in owners {
            if let Some(hint) = on_disk(Space::Hints, &keys::hint_key(owner, partition, key))? {
                merged.get_or_insert_with(Object::new).merge(&hint);
            }
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(s: &str) -> Option<Slice> {
        Some(Slice::from(s.as_bytes()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_fsync_covers_what_was_noted_before_it_began() {
        let disk = Unsynced::new(Duration::from_secs(5));
        disk.note(Space::Objects, b"a", None).unwrap();
        disk.note(Space::Objects, b"a", slice("1")).unwrap();
        assert_eq!(disk.on_disk(Space::Objects, b"a"), Some(None));
        assert_eq!(disk.on_disk(Space::Hints, b"a"), None, "other keyspace");
        disk.fsync(2).await.unwrap();
        assert_eq!(disk.on_disk(Space::Objects, b"a"), None);
        assert_eq!(disk.synced_writes(), 2);
        disk.note(Space::Meta, b"m", slice("old")).unwrap();
        let lost = disk.crash();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].prior, slice("old"));
        assert!(disk.fenced());
        assert!(disk.note(Space::Meta, b"m", None).is_err());
        assert!(disk.fsync(3).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn power_loss_undoes_newest_first_and_spares_what_was_written_back() {
        let disk = Unsynced::new(Duration::from_secs(5));
        disk.note(Space::Objects, b"old", None).unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        disk.note(Space::Objects, b"k", None).unwrap();
        disk.note(Space::Objects, b"k", slice("1")).unwrap();
        let lost = disk.crash();
        let priors: Vec<_> = lost.iter().map(|c| c.prior.clone()).collect();
        assert_eq!(
            priors,
            vec![slice("1"), None],
            "newest first; `old` was written back"
        );
    }

    /// Each test runs on fjall in a directory and on a memory disk: the simulated disk sits
    /// above the engine, so a power cut must take the same on both.
    mod store {
        use super::super::super::{Durability, MemoryDisk, Store, StoreOptions};
        use bytes::Bytes;
        use ringkv_shared::{NodeId, VersionVector};

        fn options(durability: Durability, memory: Option<MemoryDisk>) -> StoreOptions {
            StoreOptions {
                partitions: 8,
                durability,
                buffered_interval: std::time::Duration::from_millis(10),
                simulated_disk: true,
                memory,
                ..StoreOptions::default()
            }
        }

        /// Both engines: fjall (no memory disk), then a memory disk.
        fn engines() -> [Option<MemoryDisk>; 2] {
            [None, Some(MemoryDisk::new())]
        }

        fn value(s: &'static str) -> Option<Bytes> {
            Some(Bytes::from_static(s.as_bytes()))
        }

        #[tokio::test(start_paused = true)]
        async fn a_power_cut_loses_what_no_fsync_covered_and_nothing_else() {
            for memory in engines() {
                let dir = tempfile::tempdir().unwrap();
                let none = VersionVector::new();
                let store = Store::open(
                    dir.path(),
                    NodeId(1),
                    &options(Durability::Sync, memory.clone()),
                )
                .unwrap();
                let acked = store.update(0, b"acked", &none, value("1")).await.unwrap();
                // Deleted and acknowledged: the tombstone is on the disk too.
                store
                    .update(0, b"acked", acked.clock(), None)
                    .await
                    .unwrap();
                let (_, _ticket) = store
                    .update_staged(0, b"staged", &none, value("2"))
                    .unwrap();
                assert!(store.get(0, b"staged").unwrap().is_some());
                let owners = || (1..=3).map(NodeId);
                assert!(
                    store
                        .durable_copy(0, b"staged", owners())
                        .unwrap()
                        .is_none(),
                    "not on the disk before its fsync"
                );
                assert!(store.durable_copy(0, b"acked", owners()).unwrap().is_some());
                let actor = store.actor();

                assert_eq!(store.simulate_crash(true).unwrap(), 1);
                let late = store.update(0, b"late", &none, value("3")).await;
                assert!(late.is_err(), "a dead node's store refuses writes");
                drop(store);

                let store = Store::open(
                    dir.path(),
                    NodeId(1),
                    &options(Durability::Sync, memory.clone()),
                )
                .unwrap();
                assert!(
                    store.get(0, b"staged").unwrap().is_none(),
                    "the tail is gone"
                );
                assert!(store.get(0, b"late").unwrap().is_none());
                let tombstone = store.get(0, b"acked").unwrap().unwrap();
                assert_eq!(
                    tombstone.values().count(),
                    0,
                    "the acknowledged delete survived"
                );
                assert_eq!(store.tombstone_count().unwrap(), 1);
                assert_ne!(store.actor(), actor, "a new incarnation after a crash");
            }
        }

        #[tokio::test(start_paused = true)]
        async fn under_buffered_a_power_cut_loses_the_last_interval_only() {
            for memory in engines() {
                let dir = tempfile::tempdir().unwrap();
                let none = VersionVector::new();
                let opts = options(Durability::Buffered, memory.clone());
                let store = Store::open(dir.path(), NodeId(1), &opts).unwrap();
                store.update(0, b"old", &none, value("1")).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                store.update(0, b"recent", &none, value("2")).await.unwrap();
                assert_eq!(store.simulate_crash(true).unwrap(), 1);
                drop(store);
                let store = Store::open(dir.path(), NodeId(1), &opts).unwrap();
                assert!(store.get(0, b"old").unwrap().is_some());
                assert!(
                    store.get(0, b"recent").unwrap().is_none(),
                    "acknowledged, but within the interval"
                );
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_process_crash_keeps_everything_and_fences() {
            for memory in engines() {
                let dir = tempfile::tempdir().unwrap();
                let none = VersionVector::new();
                let opts = options(Durability::Sync, memory.clone());
                let store = Store::open(dir.path(), NodeId(1), &opts).unwrap();
                let (_, _ticket) = store
                    .update_staged(0, b"staged", &none, value("2"))
                    .unwrap();
                assert_eq!(store.simulate_crash(false).unwrap(), 0);
                assert!(store.update(0, b"late", &none, value("3")).await.is_err());
                drop(store);
                let store = Store::open(dir.path(), NodeId(1), &opts).unwrap();
                assert!(store.get(0, b"staged").unwrap().is_some());
            }
        }
    }
}
