//! After the faults: wait for the cluster to converge, read every key the workload touched,
//! and judge the records against what was read.

use crate::cluster::SimCluster;
use crate::workload::Records;
use ringkv_client::crdt::{ORSet, PNCounter};
use ringkv_client::{CallOptions, Client};
use ringkv_node::testing::{history, unique_history};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// Why the cluster has not converged yet, or `None` if it has: every ring member up, one ring
/// epoch everywhere, no ring change under way, every node removed by force that came back
/// stopped (its data dropped), no hint held anywhere, and for every partition the
/// anti-entropy roots of all its replicas equal.
///
/// Without anti-entropy (`replicas_identical == false`) only the first three are required.
pub fn not_converged(cluster: &SimCluster, replicas_identical: bool) -> Option<String> {
    let up = cluster.up();
    let first = cluster.node(*up.first()?)?;
    let ring = first.ring();
    for m in ring.members() {
        let i = m.id.0 as usize - 1;
        let Some(node) = cluster.node(i) else {
            return Some(format!("ring member {} is down", m.id));
        };
        if node.ring().epoch() != ring.epoch() {
            return Some(format!(
                "{} is at ring epoch {}, n{} at {}",
                m.id,
                node.ring().epoch(),
                up[0] + 1,
                ring.epoch()
            ));
        }
        if node.view().transition.is_some() {
            return Some(format!("{} still sees a ring change under way", m.id));
        }
    }
    // A node removed by force that came back (with its old disk) has dropped its data and
    // stopped itself.
    let removed_by_force = first.view().removed_by_force;
    for &i in &up {
        let node = cluster.node(i)?;
        if removed_by_force.contains(&ringkv_shared::NodeId(i as u32 + 1))
            && node.departure().is_none()
        {
            return Some(format!(
                "n{} was removed by force, came back, and has not stopped itself",
                i + 1
            ));
        }
        match node.store().hints_pending() {
            Ok(0) => {}
            Ok(n) => return Some(format!("n{} holds {n} hints", i + 1)),
            Err(e) => return Some(format!("n{} cannot count hints: {e}", i + 1)),
        }
    }
    if !replicas_identical {
        return None;
    }
    for p in 0..ring.partition_count() {
        let roots: Vec<(u32, u64)> = ring
            .replicas(p, 3)
            .iter()
            .filter_map(|id| {
                let node = cluster.node(id.0 as usize - 1)?;
                Some((id.0, node.store().tree_roots(&[p])[0]))
            })
            .collect();
        if roots.windows(2).any(|w| w[0].1 != w[1].1) {
            return Some(format!("partition {p}: replica roots differ {roots:?}"));
        }
    }
    None
}

/// Polls [`not_converged`] every simulated second for up to `bound`. Returns how long it took,
/// or the last reason it had not.
pub async fn wait_converged(
    cluster: &SimCluster,
    bound: Duration,
    replicas_identical: bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let why = not_converged(cluster, replicas_identical);
        match why {
            None => return Ok(started.elapsed()),
            Some(why) if started.elapsed() >= bound => {
                return Err(format!(
                    "not converged {} s after healing: {why}",
                    bound.as_secs()
                ));
            }
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Durability without anti-entropy: every acknowledged unique-key write that was not deleted
/// is held by at least `w` of its owners once hints are delivered (a hint leaves its holder only
/// after the owner acknowledged it). Reads nothing through the request path, so no read
/// repair adds copies first.
pub fn owner_copies(cluster: &SimCluster, records: &Records, w: usize) -> Vec<String> {
    let Some(node) = cluster.up().first().and_then(|&i| cluster.node(i)) else {
        return vec!["no node is up to check owner copies".into()];
    };
    let ring = node.ring();
    let mut short = Vec::new();
    for op in &records.unique {
        if op.write != history::Outcome::Ok || op.delete.is_some() {
            continue;
        }
        let key = op.key.as_bytes();
        let p = ring.partition_of(key);
        let want = unique_history::value_of(&op.key);
        let holders: Vec<u32> = ring
            .replicas(p, 3)
            .iter()
            .filter(|id| {
                cluster
                    .node(id.0 as usize - 1)
                    .and_then(|n| n.store().get(p, key).ok().flatten())
                    .is_some_and(|o| o.values().any(|v| v.as_ref() == want))
            })
            .map(|id| id.0)
            .collect();
        if holders.len() < w {
            short.push(format!("{} on owners {holders:?}", op.key));
        }
    }
    match short.first() {
        None => Vec::new(),
        Some(first) => vec![format!(
            "{} acknowledged writes are on fewer than W={w} owners after hints were delivered, first {first}",
            short.len()
        )],
    }
}

/// Reads every key the records name through `client` (R = N) and lists each violation.
pub async fn judge(client: &Client, records: &Records) -> Vec<String> {
    let opts = CallOptions::default()
        .quorum(3)
        .timeout(Duration::from_secs(10));
    let mut violations = Vec::new();
    if let Some(first) = records.undurable_acks.first() {
        violations.push(format!(
            "durability: {} writes were acknowledged while on fewer than W disks, first {first}",
            records.undurable_acks.len()
        ));
    }
    if let Some(first) = records.empty_standin_reads.first() {
        violations.push(format!(
            "G8: {} reads said not found on the word of empty stand-ins, first {first}",
            records.empty_standin_reads.len()
        ));
    }

    // Plain sets: the union of the siblings' sets.
    let keys: BTreeSet<&str> = records.sets.iter().map(|o| o.key.as_str()).collect();
    let mut finals = BTreeMap::new();
    for key in keys {
        match client.get_with(key.to_string(), opts).await {
            Ok(v) => {
                finals.insert(key.to_string(), history::union_of_sets(&v.values));
            }
            Err(e) => violations.push(format!("final read of {key} failed: {e}")),
        }
    }
    violations.extend(set_verdict("plain sets", &records.sets, &finals));

    // Mergeable sets through `modify`.
    let keys: BTreeSet<&str> = records.modify_sets.iter().map(|o| o.key.as_str()).collect();
    let mut finals = BTreeMap::new();
    for key in keys {
        match client
            .get_merged_with::<ORSet<String>>(key.to_string(), opts)
            .await
        {
            Ok(m) => {
                finals.insert(key.to_string(), m.value.iter().cloned().collect());
            }
            Err(e) => violations.push(format!("final read of {key} failed: {e}")),
        }
    }
    violations.extend(set_verdict("modify sets", &records.modify_sets, &finals));

    // Counters: every acknowledged increment counted, nothing beyond the unknown ones.
    for (key, c) in &records.counters {
        match client
            .get_merged_with::<PNCounter>(key.to_string(), opts)
            .await
        {
            Ok(m) => {
                let value = m.value.value();
                if value < c.acked || value > c.acked + c.unknown {
                    violations.push(format!(
                        "counter {key} reads {value}; {} increments acknowledged, {} unknown",
                        c.acked, c.unknown
                    ));
                }
            }
            Err(e) => violations.push(format!("final read of {key} failed: {e}")),
        }
    }

    // Unique keys: lost, resurrected, phantom, failed-but-present.
    let mut live = BTreeMap::new();
    for op in &records.unique {
        match client.get_with(op.key.clone(), opts).await {
            Ok(v) if !v.values.is_empty() => {
                live.insert(
                    op.key.clone(),
                    v.values.iter().map(|b| b.to_vec()).collect::<Vec<_>>(),
                );
            }
            Ok(_) => {}
            Err(e) => violations.push(format!("final read of {} failed: {e}", op.key)),
        }
    }
    let report = unique_history::check(&records.unique, &live);
    if !report.is_valid() {
        violations.push(format!(
            "unique keys: {}; lost {:?} resurrected {:?} phantom {:?} failed-but-present {:?} duplicated {:?}",
            report.summary(),
            report.lost.first(),
            report.resurrected.first(),
            report.phantom.first(),
            report.failed_but_present.first(),
            report.duplicated.first()
        ));
    }
    violations
}

/// The set checker's verdict on `ops` against the sets read at the end, if it found anything.
fn set_verdict(
    label: &str,
    ops: &[history::Op],
    finals: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    let report = history::check(ops, finals);
    (!report.is_valid()).then(|| {
        format!(
            "{label}: {} lost {:?} phantom {:?} failed-but-present {:?}",
            report.summary(),
            report.lost.first(),
            report.phantom.first(),
            report.failed_but_present.first()
        )
    })
}
