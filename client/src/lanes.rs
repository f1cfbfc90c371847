//! Lanes: the local replica state behind every actor that updates mergeable values.
//!
//! State-based CRDTs (counters with one entry per actor, observed-remove sets whose dots are
//! `(actor, counter)`) assume that each actor is a replica that always holds its own latest
//! state: an update is made *to that state*, so the actor's counter and its per-actor totals
//! follow from it. A client that reads the state back from the store before each update breaks
//! that assumption whenever the read is stale or partial (sloppy quorums, a write that lands
//! late, a wiped replica, two tasks on one client): the update then reuses a dot or restarts a
//! total, and a merge loses an acknowledged update.
//!
//! A *lane* restores the assumption. It is an actor id drawn at random when the lane is made,
//! and the last state that actor wrote. A `modify` takes a lane for the key (one modify at a
//! time per lane), merges the lane's state into what it read, so the actor's whole history is
//! in the state it changes, whatever the read returned, and gives the lane back with the new
//! state only when the write succeeded. A lane whose write failed or whose outcome is unknown
//! is dropped and its actor is never used again; concurrent modifies of one key through one
//! client take different lanes; a client that restarts or evicts a key's lanes starts new
//! actors. Every dot is therefore minted exactly once. See `docs/MERGEABLE.md` for the argument
//! and for how actor entries grow.
//!
//! This module does no I/O. [`Lanes::begin`] is what a modify does between its read and its
//! write (taking a lane and bringing its history in), [`Update::written`] what it does after a
//! successful write; they are the only way to get at a lane, so no two updates share one; [`crate::Client::modify`]
//! is those two calls around the network, and the model test (`tests/mergeable_model.rs`) drives
//! the same two calls against a store that returns arbitrary stale and partial reads.

use crate::codec::{decode_value, encode_value};
use crate::crdt::{ActorId, Merge};
use crate::error::ClientError;
use bytes::Bytes;
use ringkv_shared::VersionVector;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// One actor and the last state it wrote for one key. Not `Clone`: a lane is in exactly one
/// place at a time (parked in the pool, or held by the one modify using it).
#[derive(Debug)]
pub(crate) struct Lane {
    actor: ActorId,
    last: Option<Written>,
}

/// What a lane's actor last wrote.
#[derive(Debug)]
struct Written {
    /// The encoded value.
    value: Bytes,
    /// The object's causal context the write returned.
    clock: VersionVector,
}

impl Lane {
    /// A lane with a new actor and no history.
    pub(crate) fn fresh() -> Self {
        Self {
            actor: ActorId(ringkv_net::ambient::random_u64()),
            last: None,
        }
    }

    /// A lane with a chosen actor and no history (for tests that need fixed ids).
    #[cfg(test)]
    fn with_actor(actor: ActorId) -> Self {
        Self { actor, last: None }
    }

    /// The lane's actor: the id that stamps the updates made through it.
    pub(crate) fn actor(&self) -> ActorId {
        self.actor
    }

    /// Records a successful write of `value`, which returned `clock`.
    pub(crate) fn wrote(&mut self, value: Bytes, clock: VersionVector) {
        self.last = Some(Written { value, clock });
    }

    fn weight(&self) -> usize {
        self.last.as_ref().map_or(0, |w| w.value.len()) + 64
    }
}

/// What [`Lanes::begin`] found when it brought the lane's history in.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The lane's state is merged into the value (a no-op when the read already held it).
    Continued,
    /// The read had seen the lane's last write and found the key deleted: the lane was retired
    /// for a fresh one, so that the old state is not written back over the delete.
    Retired,
}

/// Brings the lane's history into `value` (the merge of every sibling the read returned, whose
/// causal context is `read_clock`; `found` says whether the read returned any live value)
/// before the change is applied.
///
/// - A lane with no history: nothing to do.
/// - The read has seen the lane's last write (`read_clock` descends the context that write
///   returned) and found no live value: the write was deleted after it. The lane is replaced by
///   a fresh one and `value` is left as read, so the deleted state is not written back.
/// - Otherwise: merge the lane's state in. When the read was stale this adds what it missed;
///   when the read already held it, merging changes nothing (merge is idempotent), so when one
///   of the siblings `read` (encoded) is the lane's last write byte for byte, `value` (their
///   merge) holds it already and the merge is skipped.
pub(crate) fn prepare<T>(
    value: &mut T,
    read_clock: &VersionVector,
    found: bool,
    read: &[Bytes],
    lane: &mut Lane,
) -> Result<Prepared, ClientError>
where
    T: Merge + DeserializeOwned,
{
    let Some(last) = &lane.last else {
        return Ok(Prepared::Continued);
    };
    if !found && read_clock.descends(&last.clock) {
        *lane = Lane::fresh();
        return Ok(Prepared::Retired);
    }
    if !read.contains(&last.value) {
        value.merge(&decode_value::<T>(&last.value)?);
    }
    Ok(Prepared::Continued)
}

/// One update of a mergeable value in progress: the value to change (what the read returned,
/// with the lane's history merged in) and the lane whose actor makes the change. Dropping it
/// without [`Update::written`] drops the lane: its actor is never used again.
#[derive(Debug)]
pub struct Update<T> {
    key: Bytes,
    value: T,
    lane: Lane,
    prepared: Prepared,
}

impl<T: Serialize> Update<T> {
    /// Applies `change` as this update's actor.
    pub fn apply(&mut self, change: impl FnOnce(&mut T, ActorId)) {
        change(&mut self.value, self.lane.actor());
    }

    /// The value as it stands.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The actor making this update.
    pub fn actor(&self) -> ActorId {
        self.lane.actor()
    }

    /// How [`Lanes::begin`] brought the lane's history in.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The value, encoded for the write.
    pub fn encode(&self) -> Result<Bytes, ClientError> {
        encode_value(&self.value)
    }

    /// The write of `encoded` (from [`Update::encode`]) succeeded and returned `clock`: the
    /// lane goes back to `lanes` with that state. Returns the value.
    pub fn written(mut self, lanes: &Lanes, encoded: Bytes, clock: VersionVector) -> T {
        self.lane.wrote(encoded, clock);
        lanes.park(self.key, self.lane);
        self.value
    }
}

/// A bounded pool of parked lanes, by key. Least recently used keys are evicted beyond the
/// byte budget; evicting a key's lanes only means its next modify starts a new actor.
#[derive(Debug)]
pub struct Lanes {
    pool: Mutex<Pool>,
    capacity_bytes: usize,
}

#[derive(Debug, Default)]
struct Pool {
    by_key: HashMap<Bytes, Parked>,
    /// Keys by the tick of their last use, oldest first.
    order: BTreeMap<u64, Bytes>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Parked {
    lanes: Vec<Lane>,
    tick: u64,
}

impl Lanes {
    /// Starts an update of `key` from a read that returned `value` (every sibling merged) with
    /// causal context `read_clock`, `found` saying whether it returned any live value: takes a
    /// lane and brings its history in (see `prepare`).
    ///
    /// `read` is the siblings as read (encoded): when one of them is the lane's last write, the
    /// value already holds the lane's state and it is not decoded again.
    pub fn begin<T>(
        &self,
        key: Bytes,
        mut value: T,
        read_clock: &VersionVector,
        found: bool,
        read: &[Bytes],
    ) -> Result<Update<T>, ClientError>
    where
        T: Merge + Serialize + DeserializeOwned,
    {
        let mut lane = self.take(&key);
        let prepared = prepare(&mut value, read_clock, found, read, &mut lane)?;
        Ok(Update {
            key,
            value,
            lane,
            prepared,
        })
    }

    /// A pool holding at most about `capacity_bytes` of lane state (0: no lanes are kept, every
    /// modify uses a new actor).
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            pool: Mutex::new(Pool::default()),
            capacity_bytes,
        }
    }

    /// A parked lane of `key`, or a fresh one. The caller holds it alone until it gives it back
    /// with `Lanes::park` or drops it.
    pub(crate) fn take(&self, key: &Bytes) -> Lane {
        let mut pool = self.lock();
        let pool = &mut *pool;
        let Some(parked) = pool.by_key.get_mut(key) else {
            return Lane::fresh();
        };
        let Some(lane) = parked.lanes.pop() else {
            return Lane::fresh();
        };
        pool.bytes -= lane.weight();
        if parked.lanes.is_empty() {
            pool.order.remove(&parked.tick);
            pool.by_key.remove(key);
        }
        lane
    }

    /// Gives `lane` back after a successful write, evicting the least recently used keys
    /// beyond the budget.
    pub(crate) fn park(&self, key: Bytes, lane: Lane) {
        let weight = lane.weight();
        if weight > self.capacity_bytes {
            return;
        }
        let mut pool = self.lock();
        let pool = &mut *pool;
        pool.tick += 1;
        let tick = pool.tick;
        let parked = pool.by_key.entry(key.clone()).or_insert(Parked {
            lanes: Vec::new(),
            tick,
        });
        pool.order.remove(&parked.tick);
        parked.tick = tick;
        parked.lanes.push(lane);
        pool.order.insert(tick, key);
        pool.bytes += weight;
        while pool.bytes > self.capacity_bytes {
            let Some((_, oldest)) = pool.order.pop_first() else {
                break;
            };
            if let Some(evicted) = pool.by_key.remove(&oldest) {
                pool.bytes -= evicted.lanes.iter().map(Lane::weight).sum::<usize>();
            }
        }
    }

    /// Drops every parked lane of `key` (after this client put or deleted it outright, the
    /// lanes' states must not be merged back into it).
    pub(crate) fn forget(&self, key: &[u8]) {
        let mut pool = self.lock();
        if let Some(parked) = pool.by_key.remove(key) {
            pool.order.remove(&parked.tick);
            pool.bytes -= parked.lanes.iter().map(Lane::weight).sum::<usize>();
        }
    }

    /// How many lanes are parked (for tests and diagnostics).
    pub fn parked(&self) -> usize {
        self.lock().by_key.values().map(|p| p.lanes.len()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // The pool is consistent between statements; a panic elsewhere cannot corrupt it.
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::ORSet;
    use ringkv_shared::ActorId;

    fn clock(entries: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(entries.iter().map(|&(a, c)| (ActorId(a), c)))
    }

    fn set(items: &[&str], actor: ActorId) -> ORSet<String> {
        let mut s = ORSet::new();
        for i in items {
            s.add((*i).to_string(), actor);
        }
        s
    }

    #[test]
    fn a_stale_read_gets_the_lanes_history_merged_in() {
        let mut lane = Lane::with_actor(ActorId(7));
        let mine = set(&["a", "b"], lane.actor());
        lane.wrote(encode_value(&mine).unwrap(), clock(&[(1, 2)]));
        // The read saw nothing of that write.
        let mut read: ORSet<String> = ORSet::new();
        assert_eq!(
            prepare(&mut read, &clock(&[(1, 1)]), false, &[], &mut lane).unwrap(),
            Prepared::Continued
        );
        assert_eq!(read, mine);
        // The next add gets a new dot: (7, 3), never (7, 1) again.
        read.add("c".into(), lane.actor());
        let mut other = mine.clone();
        other.merge(&read);
        assert_eq!(other.len(), 3);
    }

    #[test]
    fn a_read_that_saw_the_write_deleted_retires_the_lane() {
        let mut lane = Lane::with_actor(ActorId(7));
        lane.wrote(
            encode_value(&set(&["a"], ActorId(7))).unwrap(),
            clock(&[(1, 2)]),
        );
        let mut read: ORSet<String> = ORSet::new();
        assert_eq!(
            prepare(&mut read, &clock(&[(1, 3)]), false, &[], &mut lane).unwrap(),
            Prepared::Retired
        );
        assert!(read.is_empty(), "the deleted state is not written back");
        assert_ne!(lane.actor(), ActorId(7), "a new actor, so no dot is reused");
    }

    #[test]
    fn a_fresh_read_that_holds_the_lanes_state_continues() {
        let mut lane = Lane::with_actor(ActorId(7));
        let mine = set(&["a"], ActorId(7));
        lane.wrote(encode_value(&mine).unwrap(), clock(&[(1, 2)]));
        let mut read = mine.clone();
        read.add("x".into(), ActorId(8));
        let expect = read.clone();
        assert_eq!(
            prepare(&mut read, &clock(&[(1, 3)]), true, &[], &mut lane).unwrap(),
            Prepared::Continued
        );
        assert_eq!(read, expect);
        assert_eq!(lane.actor(), ActorId(7));
    }

    /// A read that returned the lane's last write as a sibling already holds its state: the
    /// lane is not decoded again (here it could not be: its bytes are a sibling's, but the
    /// stored state they stand for was merged from the read).
    #[test]
    fn a_read_holding_the_lanes_last_write_does_not_decode_it_again() {
        let mut lane = Lane::with_actor(ActorId(7));
        let last = Bytes::from_static(b"\x01\xc1");
        lane.wrote(last.clone(), clock(&[(1, 1)]));
        let mut read: ORSet<String> = set(&["a"], ActorId(8));
        let expect = read.clone();
        assert_eq!(
            prepare(&mut read, &clock(&[(1, 1)]), true, &[last], &mut lane).unwrap(),
            Prepared::Continued
        );
        assert_eq!(read, expect);
        // The same lane with a read that did not return its write must decode it (and fails).
        assert!(prepare(&mut read, &clock(&[(1, 1)]), true, &[], &mut lane).is_err());
    }

    #[test]
    fn an_undecodable_lane_state_is_an_error() {
        let mut lane = Lane::with_actor(ActorId(7));
        lane.wrote(Bytes::from_static(b"\x01\xc1"), clock(&[(1, 1)]));
        let mut read: ORSet<String> = ORSet::new();
        assert!(matches!(
            prepare(&mut read, &clock(&[]), true, &[], &mut lane),
            Err(ClientError::Codec { .. })
        ));
    }

    #[test]
    fn the_pool_hands_each_lane_to_one_taker_and_evicts_by_age() {
        let lanes = Lanes::new(1_000);
        let k = Bytes::from_static(b"k");
        let a = lanes.take(&k);
        let b = lanes.take(&k);
        assert_ne!(
            a.actor(),
            b.actor(),
            "concurrent takers get distinct actors"
        );
        let (ida, idb) = (a.actor(), b.actor());
        lanes.park(k.clone(), a);
        lanes.park(k.clone(), b);
        assert_eq!(lanes.parked(), 2);
        let mut back = [lanes.take(&k).actor(), lanes.take(&k).actor()];
        back.sort();
        let mut expect = [ida, idb];
        expect.sort();
        assert_eq!(back, expect);
        assert_eq!(lanes.parked(), 0);
        // Eviction: 20 keys of ~100 bytes do not fit in 1,000.
        for i in 0..20u8 {
            let mut lane = lanes.take(&Bytes::from(vec![i]));
            lane.wrote(Bytes::from(vec![0; 36]), VersionVector::new());
            lanes.park(Bytes::from(vec![i]), lane);
        }
        assert!(lanes.parked() <= 10);
        assert!(lanes.take(&Bytes::from(vec![19u8])).last.is_some());
        assert!(
            lanes.take(&Bytes::from(vec![0u8])).last.is_none(),
            "oldest evicted"
        );
        lanes.forget(b"\x12");
        assert!(lanes.take(&Bytes::from(vec![18u8])).last.is_none());
    }
}
