//! The mergeable-values workload of the fault suite and its checks: `ORSet` adds through
//! `modify` from several client instances and from tasks sharing one `Client`, `PNCounter`
//! increments, and cart adds through the shopping-cart HTTP service; every outcome recorded.
//!
//! Judged after the faults healed, from each owner's own copy (every sibling of every replica
//! merged): no acknowledged add missing and no failed add present (the set checker of
//! `ringkv_node::testing::history`), the counter and each cart quantity at least what was
//! acknowledged and at most acknowledged plus unknown.

use crate::support::faults::FaultCluster;
use anyhow::{Context as _, Result, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::crdt::{Merge, ORMap, ORSet, PNCounter};
use ringkv::typed::decode_value;
use ringkv::{CallOptions, Client};
use ringkv_node::testing::history::{self, Op, Outcome};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// The keys the workload writes.
pub const SET_KEYS: [&str; 2] = ["orset-0", "orset-1"];
/// The counter's key.
pub const COUNTER_KEY: &str = "counter-0";
/// The cart's id (stored under `cart:fault`).
pub const CART: &str = "fault";
const CART_ITEMS: [&str; 3] = ["book", "lamp", "mug"];

/// Every key the workload writes, for convergence checks.
pub fn keys() -> Vec<String> {
    SET_KEYS
        .iter()
        .map(|k| k.to_string())
        .chain([COUNTER_KEY.to_string(), format!("cart:{CART}")])
        .collect()
}

/// Acknowledged and unknown amounts of one counted thing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub acked: i64,
    pub unknown: i64,
    pub failed: i64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acked += other.acked;
        self.unknown += other.unknown;
        self.failed += other.failed;
    }

    fn check(&self, what: &str, value: i64) -> Result<()> {
        ensure!(
            value >= self.acked && value <= self.acked + self.unknown,
            "{what}: {value}, but {} acknowledged and {} unknown",
            self.acked,
            self.unknown
        );
        Ok(())
    }
}

/// What the workload recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    pub set_ops: Vec<Op>,
    pub counter: Tally,
    pub cart: BTreeMap<String, Tally>,
}

fn outcome(result: &Result<(), ringkv::ClientError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) if e.may_have_been_applied() => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

fn opts() -> CallOptions {
    CallOptions::default().timeout(Duration::from_secs(1))
}

async fn pause_after_error(o: Outcome) {
    if o != Outcome::Ok {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs until `stop`: one `ORSet` adder per client in `instances`, `shared_tasks` more adders
/// and two counter tasks on clones of the first instance, and two cart tasks through `cart`.
pub async fn workload(
    instances: Vec<Client>,
    shared_tasks: usize,
    cart: Router,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Result<Recorded> {
    let shared = instances.first().context("no client")?.clone();
    let mut adders: Vec<Client> = instances;
    adders.extend((0..shared_tasks).map(|_| shared.clone()));
    let mut sets = tokio::task::JoinSet::new();
    for (w, client) in adders.into_iter().enumerate() {
        let stop = stop.clone();
        sets.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0xC0DE + w as u64));
            let mut ops = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = SET_KEYS[rng.random_range(0..SET_KEYS.len())];
                let element = format!("m{w}-{seq}");
                seq += 1;
                let r = client
                    .modify_with(key, opts(), |s: &mut ORSet<String>, me| {
                        s.add(element.clone(), me)
                    })
                    .await
                    .map(|_| ());
                let o = outcome(&r);
                ops.push(Op {
                    key: key.into(),
                    element,
                    outcome: o,
                });
                pause_after_error(o).await;
            }
            ops
        });
    }
    let mut counters = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (client, stop) = (shared.clone(), stop.clone());
        counters.spawn(async move {
            let mut t = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .modify_with(COUNTER_KEY, opts(), |c: &mut PNCounter, me| c.add(me, 1))
                    .await
                    .map(|_| ());
                let o = outcome(&r);
                match o {
                    Outcome::Ok => t.acked += 1,
                    Outcome::Unknown => t.unknown += 1,
                    Outcome::Failed => t.failed += 1,
                }
                pause_after_error(o).await;
            }
            t
        });
    }
    let mut carts = tokio::task::JoinSet::new();
    for c in 0..2 {
        let (app, stop) = (cart.clone(), stop.clone());
        carts.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0xCA27 + c));
            let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let item = CART_ITEMS[rng.random_range(0..CART_ITEMS.len())];
                let t = tallies.entry(item.to_string()).or_default();
                // 200: acknowledged; anything else (503 with the client's error): maybe applied.
                match post_item(&app, item).await {
                    Ok(StatusCode::OK) => t.acked += 1,
                    _ => {
                        t.unknown += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            tallies
        });
    }
    let mut recorded = Recorded::default();
    while let Some(ops) = sets.join_next().await {
        recorded.set_ops.extend(ops?);
    }
    while let Some(t) = counters.join_next().await {
        recorded.counter.add(t?);
    }
    while let Some(t) = carts.join_next().await {
        for (item, t) in t? {
            recorded.cart.entry(item).or_default().add(t);
        }
    }
    Ok(recorded)
}

async fn post_item(app: &Router, item: &str) -> Result<StatusCode> {
    let body = serde_json::json!({"item": item, "quantity": 1});
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/carts/{CART}/items"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body)?))?;
    Ok(app.clone().oneshot(req).await?.status())
}

/// Every sibling on every owner of `key` (their own copies), merged as `T`.
pub async fn final_value<T>(cluster: &FaultCluster, client: &Client, key: &str) -> Result<T>
where
    T: Merge + Default + DeserializeOwned,
{
    let mut value = T::default();
    for i in cluster.replicas(client, key) {
        for sibling in cluster.local_object(i, key).await?.values() {
            value.merge(
                &decode_value::<T>(sibling)
                    .with_context(|| format!("a sibling of {key} on node index {i}"))?,
            );
        }
    }
    Ok(value)
}

/// Judges `recorded` against the owners' copies; returns a one-line summary.
pub async fn check(cluster: &FaultCluster, client: &Client, recorded: &Recorded) -> Result<String> {
    let mut finals = BTreeMap::new();
    for key in SET_KEYS {
        let set: ORSet<String> = final_value(cluster, client, key).await?;
        finals.insert(
            key.to_string(),
            set.iter().cloned().collect::<BTreeSet<_>>(),
        );
    }
    let report = history::check(&recorded.set_ops, &finals);
    ensure!(report.is_valid(), "ORSet adds: {report:?}");
    ensure!(report.acknowledged > 0, "no ORSet add was acknowledged");
    let counter: PNCounter = final_value(cluster, client, COUNTER_KEY).await?;
    recorded.counter.check("counter", counter.value())?;
    let cart: ORMap<String, PNCounter> =
        final_value(cluster, client, &format!("cart:{CART}")).await?;
    for (item, t) in &recorded.cart {
        t.check(
            &format!("cart item {item}"),
            cart.get(item).map_or(0, PNCounter::value),
        )?;
    }
    let cart_acked: i64 = recorded.cart.values().map(|t| t.acked).sum();
    Ok(format!(
        "ORSet: {}; counter {} ({} acknowledged, {} unknown); cart adds {} acknowledged, all present",
        report.summary(),
        counter.value(),
        recorded.counter.acked,
        recorded.counter.unknown,
        cart_acked
    ))
}
