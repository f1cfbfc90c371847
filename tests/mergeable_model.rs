//! Model test of mergeable values: the worst reads and writes an eventually consistent store
//! allows, driven through the same calls [`ringkv::Client::modify`] makes
//! ([`Lanes::begin`], [`Update::written`]), with the real sibling sets ([`Object`]).
//!
//! The store is three replicas. A read returns the merge of an arbitrary subset of every state
//! any replica has ever held (stale, partial, or empty, as a read served by stand-ins or a
//! wiped replica is). A write is acknowledged (stored at its coordinator and one more replica,
//! W=2, copies delivered to the third later, in any order, some twice), fails (stored nowhere),
//! or has an unknown outcome (stored at its coordinator at some later step, possibly twice, or
//! never). Several clients, each with several concurrent tasks, interleave at random; replicas
//! are sometimes wiped (and refilled from a survivor, as anti-entropy does).
//!
//! After every write has settled and replicas have merged, for each type:
//! - `ORSet`: every add acknowledged (or landed) and not removed is present; every
//!   acknowledged remove of a seen element stays removed; nothing failed or never-landed is
//!   present.
//! - `PNCounter`: the value is exactly the sum of the increments that landed (acknowledged,
//!   plus unknown ones that were stored), so at least the acknowledged sum.
//! - `ORMap<u8, PNCounter>` (a cart): an item never removed has exactly the quantity added by
//!   the writes that landed; an item removed has at least what acknowledged adds written after
//!   the read of every remove that landed added (no remove can have seen them), and at most
//!   everything that landed.
//!
//! The seed of a failing case is printed by proptest; `MODEL_STEPS` sets the history length.

use bytes::Bytes;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv::crdt::{ActorId, Merge, ORMap, ORSet, PNCounter};
use ringkv::lanes::{Lanes, Update};
use ringkv::shared::{Object, VersionVector};
use ringkv::typed::decode_value;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, BTreeSet};

const REPLICAS: usize = 3;
const CLIENTS: usize = 3;
const TASKS_PER_CLIENT: usize = 3;

/// One operation of a workload, chosen after the read (so removes pick what was seen).
trait Workload {
    type Value: Merge + Default + Clone + Serialize + DeserializeOwned + std::fmt::Debug;
    type Op: Clone + std::fmt::Debug;
    /// Chooses an operation given what this update sees.
    fn choose(&mut self, rng: &mut StdRng, seen: &Self::Value) -> Self::Op;
    /// Applies it as `actor`.
    fn apply(op: &Self::Op, value: &mut Self::Value, actor: ActorId);
    /// Checks the final value against the history.
    fn check(&self, history: &[Record<Self::Op>], value: &Self::Value) -> Result<(), String>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    Failed,
    /// Unknown to the client; `landed` says whether the store applied it in the end.
    Unknown {
        landed: bool,
    },
}

#[derive(Clone, Debug)]
struct Record<Op> {
    op: Op,
    outcome: Outcome,
    /// Step at which the read was made, and at which the write was acknowledged.
    began: usize,
    ended: usize,
}

impl<Op> Record<Op> {
    fn landed(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Acked | Outcome::Unknown { landed: true }
        )
    }
}

/// A task between its read and its write.
struct InFlight<V, Op> {
    update: Update<V>,
    op: Op,
    context: VersionVector,
    began: usize,
}

struct Store {
    replicas: Vec<Object>,
    /// Each replica's storage incarnation (a wiped replica gets a new one, as nodes do).
    actors: Vec<ActorId>,
    /// Every state any replica ever held: what a stale read may return.
    snapshots: Vec<Object>,
    /// Copies on their way to replicas.
    copies: Vec<(usize, Object)>,
    /// Writes with an unknown outcome that will be applied at a coordinator later:
    /// (record index, coordinator, context, value, times).
    late: Vec<(usize, usize, VersionVector, Bytes, u8)>,
}

impl Store {
    fn new() -> Self {
        Self {
            replicas: vec![Object::new(); REPLICAS],
            actors: (0..REPLICAS as u64).map(|r| ActorId(1_000 + r)).collect(),
            snapshots: vec![Object::new()],
            copies: Vec::new(),
            late: Vec::new(),
        }
    }

    fn read(&self, rng: &mut StdRng) -> Object {
        let mut out = Object::new();
        let fresh = rng.random_bool(0.3);
        for (i, s) in self.snapshots.iter().enumerate() {
            // Mostly recent states, sometimes old ones, sometimes nothing at all.
            let recent = i + 8 >= self.snapshots.len();
            let p = if fresh && recent { 0.7 } else { 0.08 };
            if rng.random_bool(p) {
                out.merge(s);
            }
        }
        out
    }

    /// Applies a client write at `coordinator` as a replica does; returns the object.
    fn coordinate(&mut self, coordinator: usize, context: &VersionVector, value: Bytes) -> Object {
        let obj = &mut self.replicas[coordinator];
        obj.update(context, Some(value), self.actors[coordinator])
            .expect("a fresh counter");
        let stored = obj.clone();
        self.snapshots.push(stored.clone());
        stored
    }

    /// Queues copies of `object` to every replica but `from` (some twice); they arrive in any
    /// order, at any later step (as replication, hints and anti-entropy eventually deliver).
    fn spread(&mut self, rng: &mut StdRng, from: usize, object: &Object) {
        for to in 0..REPLICAS {
            if to != from {
                for _ in 0..rng.random_range(1..=2) {
                    self.copies.push((to, object.clone()));
                }
            }
        }
    }

    /// W=2: the write is merged at one more replica before it is acknowledged.
    fn second_copy(&mut self, rng: &mut StdRng, from: usize, object: &Object) {
        let to = (from + rng.random_range(1..REPLICAS)) % REPLICAS;
        self.replicas[to].merge(object);
        self.snapshots.push(self.replicas[to].clone());
    }

    fn deliver_one(&mut self, rng: &mut StdRng) {
        if self.copies.is_empty() {
            return;
        }
        let i = rng.random_range(0..self.copies.len());
        let (to, object) = self.copies.swap_remove(i);
        self.replicas[to].merge(&object);
        self.snapshots.push(self.replicas[to].clone());
    }

    fn settle(&mut self) -> Object {
        for (_, o) in std::mem::take(&mut self.copies) {
            for r in &mut self.replicas {
                r.merge(&o);
            }
        }
        let mut all = Object::new();
        for r in &self.replicas {
            all.merge(r);
        }
        all
    }
}

fn merged_value<V: Merge + Default + DeserializeOwned>(object: &Object) -> V {
    let mut v = V::default();
    for sibling in object.values() {
        v.merge(&decode_value::<V>(sibling).expect("a sibling this model wrote decodes"));
    }
    v
}

fn run<W: Workload>(seed: u64, steps: usize, mut workload: W) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let key = Bytes::from_static(b"k");
    let lanes: Vec<Lanes> = (0..CLIENTS).map(|_| Lanes::new(1 << 20)).collect();
    let mut tasks: Vec<Option<InFlight<W::Value, W::Op>>> =
        (0..CLIENTS * TASKS_PER_CLIENT).map(|_| None).collect();
    let mut store = Store::new();
    let mut history: Vec<Record<W::Op>> = Vec::new();
    for step in 0..steps {
        match rng.random_range(0..100) {
            0..=44 => {
                let t = rng.random_range(0..tasks.len());
                let client = t / TASKS_PER_CLIENT;
                match tasks[t].take() {
                    None => {
                        // Read, then begin the update exactly as `modify` does.
                        let read = store.read(&mut rng);
                        let value: W::Value = merged_value(&read);
                        let mut update = lanes[client]
                            .begin(
                                key.clone(),
                                value,
                                read.clock(),
                                read.values().next().is_some(),
                                &read.values().cloned().collect::<Vec<_>>(),
                            )
                            .map_err(|e| format!("begin: {e}"))?;
                        let op = workload.choose(&mut rng, update.value());
                        update.apply(|v, actor| W::apply(&op, v, actor));
                        tasks[t] = Some(InFlight {
                            update,
                            op,
                            context: read.clock().clone(),
                            began: step,
                        });
                    }
                    Some(flight) => {
                        let encoded = flight.update.encode().map_err(|e| e.to_string())?;
                        let coordinator = rng.random_range(0..REPLICAS);
                        let index = history.len();
                        let outcome = match rng.random_range(0..10) {
                            0..=5 => {
                                let stored =
                                    store.coordinate(coordinator, &flight.context, encoded.clone());
                                store.second_copy(&mut rng, coordinator, &stored);
                                store.spread(&mut rng, coordinator, &stored);
                                flight.update.written(
                                    &lanes[client],
                                    encoded,
                                    stored.clock().clone(),
                                );
                                Outcome::Acked
                            }
                            6..=7 => Outcome::Failed,
                            _ => {
                                // Lands later (once or twice), or never.
                                if rng.random_bool(0.7) {
                                    let times = rng.random_range(1..=2);
                                    store.late.push((
                                        index,
                                        coordinator,
                                        flight.context.clone(),
                                        encoded,
                                        times,
                                    ));
                                }
                                Outcome::Unknown { landed: false }
                            }
                        };
                        history.push(Record {
                            op: flight.op,
                            outcome,
                            began: flight.began,
                            ended: step,
                        });
                    }
                }
            }
            45..=84 => store.deliver_one(&mut rng),
            85..=96 => {
                if !store.late.is_empty() {
                    let i = rng.random_range(0..store.late.len());
                    let (index, coordinator, context, value, times) = store.late[i].clone();
                    let stored = store.coordinate(coordinator, &context, value);
                    store.spread(&mut rng, coordinator, &stored);
                    history[index].outcome = Outcome::Unknown { landed: true };
                    if times > 1 {
                        store.late[i].4 -= 1;
                    } else {
                        store.late.swap_remove(i);
                    }
                }
            }
            _ => {
                // A replica loses its disk; it comes back empty and is refilled by copies.
                let r = rng.random_range(0..REPLICAS);
                let survivor = (r + 1) % REPLICAS;
                store.replicas[r] = Object::new();
                store.actors[r] = ActorId(store.actors[r].0 + 100);
                let copy = store.replicas[survivor].clone();
                store.copies.push((r, copy));
            }
        }
    }
    // Unfinished tasks never wrote; late writes still pending never land.
    let final_value: W::Value = merged_value(&store.settle());
    workload
        .check(&history, &final_value)
        .map_err(|e| format!("seed {seed}: {e}\nfinal value: {final_value:?}"))
}

fn steps() -> usize {
    std::env::var("MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
}

// ---- ORSet: adds of unique elements, removes of seen ones ----

#[derive(Default)]
struct SetWorkload {
    next: u32,
}

#[derive(Clone, Debug)]
enum SetOp {
    Add(u32),
    Remove(u32),
}

impl Workload for SetWorkload {
    type Value = ORSet<u32>;
    type Op = SetOp;
    fn choose(&mut self, rng: &mut StdRng, seen: &ORSet<u32>) -> SetOp {
        if !seen.is_empty() && rng.random_bool(0.2) {
            let items: Vec<u32> = seen.iter().copied().collect();
            SetOp::Remove(items[rng.random_range(0..items.len())])
        } else {
            self.next += 1;
            SetOp::Add(self.next)
        }
    }
    fn apply(op: &SetOp, value: &mut ORSet<u32>, actor: ActorId) {
        match op {
            SetOp::Add(e) => value.add(*e, actor),
            SetOp::Remove(e) => {
                value.remove(e, actor);
            }
        }
    }
    fn check(&self, history: &[Record<SetOp>], value: &ORSet<u32>) -> Result<(), String> {
        let removed_landed: BTreeSet<u32> = history
            .iter()
            .filter(|r| r.landed())
            .filter_map(|r| match r.op {
                SetOp::Remove(e) => Some(e),
                SetOp::Add(_) => None,
            })
            .collect();
        for r in history {
            let bad = match (&r.op, r.outcome) {
                (SetOp::Add(e), Outcome::Acked) if !removed_landed.contains(e) => {
                    (!value.contains(e)).then(|| format!("acknowledged add of {e} lost"))
                }
                (SetOp::Add(e), Outcome::Failed | Outcome::Unknown { landed: false }) => value
                    .contains(e)
                    .then(|| format!("add of {e} that never landed is present")),
                (SetOp::Remove(e), Outcome::Acked) => value
                    .contains(e)
                    .then(|| format!("acknowledged remove of {e} undone")),
                _ => None,
            };
            if let Some(bad) = bad {
                return Err(bad);
            }
        }
        Ok(())
    }
}

// ---- PNCounter: increments ----

#[derive(Default)]
struct CounterWorkload;

impl Workload for CounterWorkload {
    type Value = PNCounter;
    type Op = i64;
    fn choose(&mut self, rng: &mut StdRng, _: &PNCounter) -> i64 {
        rng.random_range(1..=5)
    }
    fn apply(op: &i64, value: &mut PNCounter, actor: ActorId) {
        value.add(actor, *op);
    }
    fn check(&self, history: &[Record<i64>], value: &PNCounter) -> Result<(), String> {
        let landed: i64 = history.iter().filter(|r| r.landed()).map(|r| r.op).sum();
        let acked: i64 = history
            .iter()
            .filter(|r| r.outcome == Outcome::Acked)
            .map(|r| r.op)
            .sum();
        if value.value() != landed {
            return Err(format!(
                "counter {} but increments that landed sum to {landed} (acknowledged {acked})",
                value.value()
            ));
        }
        Ok(())
    }
}

// ---- A cart: ORMap<item, PNCounter> with adds and removes ----

type Cart = ORMap<u8, PNCounter>;

#[derive(Default)]
struct CartWorkload;

#[derive(Clone, Debug)]
enum CartOp {
    Add(u8, i64),
    Remove(u8),
}

impl Workload for CartWorkload {
    type Value = Cart;
    type Op = CartOp;
    fn choose(&mut self, rng: &mut StdRng, seen: &Cart) -> CartOp {
        let item = rng.random_range(0..4u8);
        if seen.contains(&item) && rng.random_bool(0.15) {
            CartOp::Remove(item)
        } else {
            CartOp::Add(item, rng.random_range(1..=3))
        }
    }
    fn apply(op: &CartOp, value: &mut Cart, actor: ActorId) {
        match *op {
            CartOp::Add(item, qty) => value.update(item, actor, |q| q.add(actor, qty)),
            CartOp::Remove(item) => {
                value.remove(&item, actor);
            }
        }
    }
    fn check(&self, history: &[Record<CartOp>], value: &Cart) -> Result<(), String> {
        let mut items: BTreeMap<u8, Vec<&Record<CartOp>>> = BTreeMap::new();
        for r in history {
            let item = match r.op {
                CartOp::Add(i, _) | CartOp::Remove(i) => i,
            };
            items.entry(item).or_default().push(r);
        }
        for (item, records) in items {
            let qty = value.get(&item).map_or(0, PNCounter::value);
            let added = |r: &&Record<CartOp>| match r.op {
                CartOp::Add(_, q) => q,
                CartOp::Remove(_) => 0,
            };
            let landed: i64 = records.iter().filter(|r| r.landed()).map(added).sum();
            let removes: Vec<&&Record<CartOp>> = records
                .iter()
                .filter(|r| matches!(r.op, CartOp::Remove(_)) && r.landed())
                .collect();
            if removes.is_empty() {
                if qty != landed {
                    return Err(format!(
                        "item {item} never removed: quantity {qty}, adds that landed {landed}"
                    ));
                }
                continue;
            }
            // The last read any landed remove made: adds written after it were seen by none.
            let last_remove_read = removes.iter().map(|r| r.began).max();
            let after: i64 = records
                .iter()
                .filter(|r| r.outcome == Outcome::Acked)
                .filter(|r| last_remove_read.is_some_and(|t| r.ended > t))
                .map(added)
                .sum();
            if qty < after || qty > landed {
                return Err(format!(
                    "item {item}: quantity {qty}, but acknowledged adds no remove saw sum to \
                     {after} and all adds that landed to {landed}"
                ));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn orset_adds_survive_any_read(seed in any::<u64>()) {
        run(seed, steps(), SetWorkload::default()).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn counter_increments_survive_any_read(seed in any::<u64>()) {
        run(seed, steps(), CounterWorkload).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cart_quantities_survive_any_read(seed in any::<u64>()) {
        run(seed, steps(), CartWorkload).map_err(TestCaseError::fail)?;
    }
}
