//! The client workloads and what they record for the checkers.
//!
//! Every client task runs a mix of operations until the workload ends:
//! - **unique keys**: a key written once with its own name as value, later perhaps deleted
//!   with the context of a read that saw it (`ringkv_node::testing::unique_history`);
//! - **plain sets**: read, union the siblings, add an element, write back with the read's
//!   context (`ringkv_node::testing::history`, the fault suite's set workload); half of them
//!   then add two more elements without reading, on the contexts the writes returned (G16);
//! - **mergeable sets**: `Client::modify` adding an element to an `ORSet`;
//! - **counters**: `Client::modify` incrementing a `PNCounter` by one.
//!
//! The first client is shared by two tasks (a `Client` used concurrently is a case the
//! guarantees must hold for). Each operation's outcome is what the client said:
//! acknowledged, failed (not applied), or unknown (may have been applied).

use crate::cluster::Disks;
use bytes::Bytes;
use ringkv_client::crdt::{ORSet, PNCounter};
use ringkv_client::{CallOptions, Client, ClientError, Context};
use ringkv_net::sim::SimNet;
use ringkv_node::testing::history::{Op, Outcome, encode_union};
use ringkv_node::testing::unique_history::{KeyOp, value_of};
use ringkv_shared::quorum::{Answer, Role};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What a counter's increments were told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterRecord {
    /// Increments acknowledged.
    pub acked: i64,
    /// Increments whose outcome is unknown.
    pub unknown: i64,
}

/// Everything the workload did, for the checkers.
#[derive(Debug, Default)]
pub struct Records {
    /// Plain-set adds.
    pub sets: Vec<Op>,
    /// `modify` set adds.
    pub modify_sets: Vec<Op>,
    /// Unique-key writes and deletes.
    pub unique: Vec<KeyOp>,
    /// Counter increments, per key.
    pub counters: BTreeMap<String, CounterRecord>,
    /// Operations attempted.
    pub ops: u64,
    /// Reads that said "not found" on the word of a stand-in (G8), with what they were.
    pub empty_standin_reads: Vec<String>,
    /// Unique-key writes acknowledged while fewer than W disks held them (a power cut of the
    /// rest at that moment would have lost an acknowledged write).
    pub undurable_acks: Vec<String>,
}

/// The records, shared by the client tasks.
pub type SharedRecords = Arc<Mutex<Records>>;

/// What a client's answer says about whether an operation took effect.
pub fn outcome<T>(r: &Result<T, ClientError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) if e.may_have_been_applied() => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

/// One client task's settings.
pub struct Task {
    /// Names the task's keys and elements.
    pub name: String,
    /// The client (shared with other tasks for some).
    pub client: Client,
    /// The network (for its seeded RNG and the event log).
    pub net: SimNet,
    /// Where to record.
    pub records: SharedRecords,
    /// When to stop.
    pub until: Instant,
    /// Mean pause between operations.
    pub think: Duration,
    /// Keys per shared kind.
    pub shared_keys: usize,
    /// The nodes' disks, when acknowledged writes must be durable at once (`sync`).
    pub disks: Option<Disks>,
}

/// The write quorum the clients use (the client default).
const W: usize = 2;

/// G8: a read of a key that was never deleted said "not found" while a stand-in was among the
/// answers it counted. Such a stand-in held nothing (a stand-in holding the key or a hint
/// would have made the key found), so the read counted an empty stand-in toward R.
fn check_standins(records: &SharedRecords, key: &str, found: bool, answers: &[Answer]) {
    if !found && answers.iter().any(|a| a.role == Role::StandIn) {
        lock(records)
            .empty_standin_reads
            .push(format!("{key}: not found from {answers:?}"));
    }
}

fn lock(records: &SharedRecords) -> std::sync::MutexGuard<'_, Records> {
    records.lock().unwrap_or_else(|p| p.into_inner())
}

impl Task {
    /// Runs operations until `until`.
    pub async fn run(self) {
        let mut mine: Vec<usize> = Vec::new();
        let mut i = 0u64;
        while Instant::now() < self.until {
            i += 1;
            let roll = self.net.random_u64();
            let shared = (roll >> 8) as usize % self.shared_keys;
            match roll % 10 {
                0..=2 => self.insert(i, &mut mine).await,
                3 => self.delete(&mut mine, roll >> 16).await,
                4 | 5 => self.set_add(shared, i, roll & (1 << 40) != 0).await,
                6 | 7 => self.modify_add(shared, i).await,
                _ => self.increment(shared).await,
            }
            lock(&self.records).ops += 1;
            let think = self.think.as_micros() as u64;
            let pause = think / 2 + self.net.random_u64() % (think + 1);
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        self.net.record(format_args!("{} {what}", self.name));
    }

    async fn insert(&self, i: u64, mine: &mut Vec<usize>) {
        let key = format!("u-{}-{i}", self.name);
        let crashes = self.disks.as_ref().map(Disks::crashes);
        let r = self
            .client
            .put(key.clone(), value_of(&key), &Context::empty())
            .await;
        let write = outcome(&r);
        self.log(format_args!("insert {key} -> {write:?} {}", err(&r)));
        // At the moment of the acknowledgement, W disks hold the write (unless a node crashed
        // meanwhile: its disk cannot be read then).
        if let Some(disks) = &self.disks
            && write == Outcome::Ok
            && crashes == Some(disks.crashes())
        {
            let copies = disks.durable_copies(key.as_bytes(), &value_of(&key));
            if copies < W {
                self.log(format_args!("insert {key}: acknowledged on {copies} disks"));
                lock(&self.records)
                    .undurable_acks
                    .push(format!("{key} on {copies} disks"));
            }
        }
        let mut records = lock(&self.records);
        records.unique.push(KeyOp {
            key,
            write,
            delete: None,
        });
        if write == Outcome::Ok {
            mine.push(records.unique.len() - 1);
        }
    }

    async fn delete(&self, mine: &mut Vec<usize>, pick: u64) {
        if mine.is_empty() {
            return;
        }
        let at = mine.swap_remove(pick as usize % mine.len());
        let key = lock(&self.records).unique[at].key.clone();
        let read = self.client.get(key.clone()).await;
        let Ok(read) = read else {
            self.log(format_args!("delete {key}: read failed {}", err(&read)));
            return;
        };
        // Never deleted yet: it was acknowledged and this is its one delete.
        check_standins(&self.records, &key, !read.is_not_found(), &read.answers);
        if !read.values.iter().any(|v| v.as_ref() == value_of(&key)) {
            self.log(format_args!("delete {key}: read did not see it, skipped"));
            return;
        }
        let r = self.client.delete(key.clone(), &read.context).await;
        let delete = outcome(&r);
        self.log(format_args!("delete {key} -> {delete:?} {}", err(&r)));
        lock(&self.records).unique[at].delete = Some(delete);
    }

    /// Adds an element by a read and a write; with `chain`, then two more without reading
    /// (see [`Task::set_chain`]).
    async fn set_add(&self, k: usize, i: u64, chain: bool) {
        let key = format!("s-{k}");
        let element = format!("{}-{i}", self.name);
        let read = self.client.get(key.clone()).await;
        let Ok(read) = read else {
            self.log(format_args!(
                "set-add {key} {element}: read failed {}",
                err(&read)
            ));
            return;
        };
        check_standins(&self.records, &key, !read.is_not_found(), &read.answers);
        let r = self
            .client
            .put(
                key.clone(),
                Bytes::from(encode_union(&read.values, &[&element])),
                &read.context,
            )
            .await;
        self.record_set_write("set-add", &key, &element, &r);
        if let (true, Ok(next)) = (chain, r) {
            self.set_chain(key, &read.values, next, &element).await;
        }
    }

    /// G16: after a write, writes twice more without a read. First `<element>b` (into the
    /// union of the versions `read` returned, with `element` added as the write did) with the
    /// context the write returned (covering the read's versions and the write's own), then
    /// `<element>c` into the union of the versions `put_returning` handed back, with the
    /// context it returned. Neither may drop an element another writer added meanwhile.
    async fn set_chain(&self, key: String, read: &[Bytes], next: Context, element: &str) {
        let b = format!("{element}b");
        let with_b = encode_union(read, &[element, &b]);
        let r = self
            .client
            .put_returning(
                key.clone(),
                Bytes::from(with_b),
                &next,
                CallOptions::default(),
            )
            .await;
        self.record_set_write("set-chain", &key, &b, &r);
        let Ok(body) = r else { return };
        let c = format!("{element}c");
        let with_c = encode_union(&body.values, &[&c]);
        let r = self
            .client
            .put(key.clone(), Bytes::from(with_c), &body.context)
            .await;
        self.record_set_write("set-chain", &key, &c, &r);
    }

    /// Logs a plain-set write that added `element` and records it for the set checker.
    fn record_set_write<T>(
        &self,
        what: &str,
        key: &str,
        element: &str,
        r: &Result<T, ClientError>,
    ) {
        let o = outcome(r);
        self.log(format_args!("{what} {key} {element} -> {o:?} {}", err(r)));
        lock(&self.records).sets.push(Op {
            key: key.to_string(),
            element: element.to_string(),
            outcome: o,
        });
    }

    async fn modify_add(&self, k: usize, i: u64) {
        let key = format!("m-{k}");
        let element = format!("{}-{i}", self.name);
        let e = element.clone();
        let r = self
            .client
            .modify::<ORSet<String>, _>(key.clone(), move |set, actor| set.add(e, actor))
            .await;
        let o = outcome(&r);
        self.log(format_args!(
            "modify-add {key} {element} -> {o:?} {}",
            err(&r)
        ));
        if let Ok(m) = &r {
            check_standins(&self.records, &key, m.siblings > 0, &m.answers);
        }
        lock(&self.records).modify_sets.push(Op {
            key,
            element,
            outcome: o,
        });
    }

    async fn increment(&self, k: usize) {
        let key = format!("c-{k}");
        let r = self
            .client
            .modify::<PNCounter, _>(key.clone(), |c, actor| c.add(actor, 1))
            .await;
        let o = outcome(&r);
        self.log(format_args!("increment {key} -> {o:?} {}", err(&r)));
        if let Ok(m) = &r {
            check_standins(&self.records, &key, m.siblings > 0, &m.answers);
        }
        let mut records = lock(&self.records);
        let c = records.counters.entry(key).or_default();
        match o {
            Outcome::Ok => c.acked += 1,
            Outcome::Unknown => c.unknown += 1,
            Outcome::Failed => {}
        }
    }
}

fn err<T>(r: &Result<T, ClientError>) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => format!("({e})"),
    }
}
