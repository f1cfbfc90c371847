//! The unique-key workload of the fault suite: every key written once with a value only it
//! has, and about half of them deleted later (a random earlier key, read first for its
//! context), so deletes meet keys written under an older ring. Judged by
//! `ringkv_node::testing::unique_history` from the final owners' own copies.

use crate::support::faults::FaultCluster;
use anyhow::Result;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::{CallOptions, Client, Context};
use ringkv_node::testing::history::Outcome;
use ringkv_node::testing::unique_history::{KeyOp, value_of};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn outcome<T>(result: &Result<T, ringkv::ClientError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) if e.may_have_been_applied() => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

/// Runs `tasks` tasks on `client` until `stop`: each writes a new key or deletes one of its
/// acknowledged keys, half and half. Returns every key's history.
pub async fn workload(
    client: Client,
    tasks: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Result<Vec<KeyOp>> {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (client, stop) = (client.clone(), stop.clone());
        set.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1000 + t as u64));
            let opts = CallOptions::default().timeout(Duration::from_secs(1));
            let mut ops: Vec<KeyOp> = Vec::new();
            // Indices into `ops` of acknowledged keys not yet deleted.
            let mut deletable: Vec<usize> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if deletable.len() > 8 && rng.random_bool(0.5) {
                    let i = deletable.swap_remove(rng.random_range(0..deletable.len()));
                    let key = ops[i].key.clone();
                    let Ok(read) = client.get_with(key.clone(), opts).await else {
                        deletable.push(i);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    // An acknowledged key read as absent is lost; the checker reports it.
                    if read.values.is_empty() {
                        continue;
                    }
                    let deleted = client.delete_with(key, &read.context, opts).await;
                    ops[i].delete = Some(outcome(&deleted));
                    if deleted.is_err() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
                let key = format!("u{t}-{}", ops.len());
                let written = client
                    .put_with(key.clone(), value_of(&key), &Context::empty(), opts)
                    .await;
                let write = outcome(&written);
                if write == Outcome::Ok {
                    deletable.push(ops.len());
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ops.push(KeyOp {
                    key,
                    write,
                    delete: None,
                });
            }
            ops
        });
    }
    let mut all = Vec::new();
    while let Some(ops) = set.join_next().await {
        all.extend(ops?);
    }
    Ok(all)
}

/// For every key of `history` that a final owner holds live in its own storage: the live
/// siblings of the owner holding the most.
pub async fn live_values(
    cluster: &FaultCluster,
    client: &Client,
    history: &[KeyOp],
) -> Result<BTreeMap<String, Vec<Vec<u8>>>> {
    let held = cluster
        .own_objects_of_owners(client, &keys(history))
        .await?;
    let mut live = BTreeMap::new();
    for op in history {
        let most = cluster
            .replicas(client, &op.key)
            .iter()
            .filter_map(|i| held.get(i)?.get(&op.key))
            .map(|o| o.values().map(|v| v.to_vec()).collect::<Vec<_>>())
            .max_by_key(Vec::len)
            .unwrap_or_default();
        if !most.is_empty() {
            live.insert(op.key.clone(), most);
        }
    }
    Ok(live)
}

/// The keys of a history, for convergence checks.
pub fn keys(history: &[KeyOp]) -> Vec<String> {
    history.iter().map(|op| op.key.clone()).collect()
}
