//! Quorum reads: who is asked, when a stand-in or a hedge is brought in, read repair.

use super::calls::{Calls, detach, drive, expect_object, split_down, start_call, start_calls};
use crate::transport::Transport;
use bytes::Bytes;
use ringkv_shared::error::{ReplicaError, ReplyError};
use ringkv_shared::hedge::Hedger;
use ringkv_shared::ids::NodeId;
use ringkv_shared::object::Object;
use ringkv_shared::proto::Request;
use ringkv_shared::quorum::{Answer, Progress, ReadQuorum};
use ringkv_shared::ring::Member;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span};

/// One quorum read: the key, whom to ask, and how many answers make it.
#[derive(Clone, Debug)]
pub struct ReadPlan {
    /// The key read.
    pub key: Bytes,
    /// The key's preference list: its `n` owners first, then the stand-ins in order.
    pub preference: Vec<Member>,
    /// How many of `preference` own the key (N).
    pub n: usize,
    /// How many answers with evidence the read waits for (R).
    pub required: usize,
    /// The read's deadline, from its start; stragglers and repair are bounded by it too.
    pub timeout: Duration,
    /// What happens to owners that answered with less.
    pub repair: Repair,
    /// Told how many stale owners each read repair reaches (a node's metrics), if set.
    pub on_repair: Option<RepairCount>,
}

/// A count of stale owners read repair went to: a node's `ringkv_read_repairs_total`.
#[derive(Clone)]
pub struct RepairCount(pub std::sync::Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for RepairCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepairCount")
    }
}

/// Read repair: how owners that answered a read with less than the merge are brought up to
/// date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Not at all (anti-entropy will).
    Off,
    /// The merged object is written to each stale owner (`Request::Write`): what a node
    /// coordinating a read does, since only nodes may write replicas.
    Write,
    /// One owner that answered with the most is asked to repair the key itself
    /// (`Request::Repair`): what a client does. The owner reads every replica and writes the
    /// merge, so that a client never holds the power to write replicas.
    AskOwner,
}

/// What a quorum read found.
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    /// The merge of every answer received before returning.
    pub object: Object,
    /// Distinct versions among those answers (1 when replicas agreed).
    pub versions: usize,
    /// The answers merged into `object`, in arrival order, each marked owner or stand-in.
    /// Stand-ins appear only when they held the key or a hint for it.
    pub answers: Vec<Answer>,
}

/// The nodes a read asks: the first `n` of the preference list that are not suspected down
/// (stand-ins further down the list fill in for suspected owners, as they may hold hints),
/// then, if fewer than `n` are left, suspected ones as a last resort.
pub fn read_targets<T: Transport>(transport: &T, preference: &[Member], n: usize) -> Vec<Member> {
    let mut targets: Vec<Member> = preference
        .iter()
        .filter(|m| !transport.is_down(m.id))
        .take(n)
        .cloned()
        .collect();
    for m in preference {
        if targets.len() >= n {
            break;
        }
        if !targets.iter().any(|t| t.id == m.id) {
            targets.push(m.clone());
        }
    }
    targets
}

/// Reads `key` from its preference list, returning once `required` nodes answered.
///
/// The first `n` nodes that are not suspected down are asked ([`read_targets`]). When one of
/// them fails, the next node of the preference list not asked yet is asked in its place (a
/// stand-in may hold hints for an owner that is down), as sloppy writes do.
///
/// Only evidence counts toward `required` (see [`ReadQuorum`]): an owner's answer, or a
/// stand-in's answer that holds the key or a hint. A stand-in that holds nothing is recorded as
/// [`ReplicaError::HoldsNothing`] and replaced like a failed node; when no node is left to ask,
/// the read fails with `QuorumFailed` naming every node and what it answered, rather than
/// returning a "not found" that nobody who would know has said.
///
/// After returning, a background task waits for the remaining answers (until `timeout` from the
/// start) and, unless `repair` is [`Repair::Off`], brings every owner (the first `n` of the
/// list) that answered with less up to date — read repair, by writing the merge to it or by
/// asking an up-to-date owner to ([`Repair`]). Stand-ins are not repaired: they hold hints, not
/// replicas.
pub async fn read<T: Transport>(transport: &T, plan: ReadPlan) -> Result<ReadOutcome, ReplyError> {
    read_hedged(transport, plan, None).await
}

/// [`read_hedged`] with the delay a [`Hedger`] gives (none: ask all N), recording the read's
/// latency in it when the read succeeds, so that a percentile policy follows the load. The
/// client's and the router's reads both go through here.
pub async fn read_with_hedger<T: Transport>(
    transport: &T,
    plan: ReadPlan,
    hedger: Option<&Hedger>,
) -> Result<ReadOutcome, ReplyError> {
    let started = Instant::now();
    let delay = hedger.and_then(Hedger::delay);
    let read = read_hedged(transport, plan, delay).await;
    if let (Some(h), Ok(_)) = (hedger, &read) {
        h.record(started.elapsed());
    }
    read
}

/// [`read`], optionally hedged: with `hedge: Some(delay)` only `required` of the healthy
/// targets are asked at first, and one more (the remaining targets first, then stand-ins) each
/// time `delay` passes without a quorum or an asked node fails. A read then costs R requests
/// instead of N when replicas are quick, at the price of read repair reaching only the nodes
/// asked (anti-entropy still reaches the rest). `None` asks all N at once, as Dynamo does.
pub async fn read_hedged<T: Transport>(
    transport: &T,
    plan: ReadPlan,
    hedge: Option<Duration>,
) -> Result<ReadOutcome, ReplyError> {
    let ReadPlan {
        key,
        preference,
        n,
        required,
        timeout,
        repair,
        on_repair,
    } = plan;
    let deadline = Instant::now() + timeout;
    let n = n.min(preference.len());
    let owners: Vec<NodeId> = preference[..n].iter().map(|m| m.id).collect();
    let targets = read_targets(transport, &preference, n);
    let (mut up, down) = split_down(transport, targets.clone(), required);
    // Hedged: the healthy targets beyond the first R wait, first in line among the spares.
    let held: Vec<Member> = match hedge {
        Some(_) if up.len() > required => up.split_off(required),
        _ => Vec::new(),
    };
    let mut spares: std::collections::VecDeque<Member> = held
        .iter()
        .cloned()
        .chain(
            preference
                .iter()
                .filter(|m| !targets.iter().any(|t| t.id == m.id))
                .cloned(),
        )
        .collect();
    let first: Vec<NodeId> = targets
        .iter()
        .map(|m| m.id)
        .filter(|id| !held.iter().any(|h| h.id == *id))
        .collect();
    let mut quorum = ReadQuorum::new(required, first, owners.clone());
    for id in down {
        quorum.record(id, Err(ReplicaError::MarkedDown));
    }
    let request = Request::Read { key: key.clone() };
    let mut calls = start_calls(transport, &up, &request);
    let mut progress = quorum.progress();
    let mut hedge_at = hedge.map(|d| Instant::now() + d);
    // A failure before the quorum is decided brings in the next spare, if any; with spares
    // left, a quorum that looks impossible is not yet.
    let mut substitute = |quorum: &mut ReadQuorum, calls: &mut Calls| {
        if let Some(spare) = spares.pop_front() {
            quorum.contact(spare.id);
            start_call(calls, transport, &spare, &request);
            true
        } else {
            false
        }
    };
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    while progress != Progress::Met {
        if progress == Progress::Failed && !substitute(&mut quorum, &mut calls) {
            break;
        }
        let wake = hedge_at.map_or(deadline, |h| h.min(deadline));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        match calls.next_before(timer.as_mut()).await {
            Ok(Some((node, result))) => {
                // Counted as a failure: an error, or a stand-in that holds nothing.
                let before = quorum.failures();
                progress = quorum.record(node, result.and_then(expect_object));
                let failed = quorum.failures() > before;
                if failed && progress == Progress::Pending {
                    substitute(&mut quorum, &mut calls);
                }
            }
            Ok(None) => {
                if !substitute(&mut quorum, &mut calls) {
                    break;
                }
            }
            Err(_) if Instant::now() < deadline => {
                // The hedge delay passed without a quorum: ask one more node.
                hedge_at = match (hedge, substitute(&mut quorum, &mut calls)) {
                    (Some(d), true) => Some(Instant::now() + d),
                    _ => None,
                };
            }
            Err(_) => break,
        }
    }
    if progress != Progress::Met {
        return Err(quorum.into_error());
    }
    let outcome = ReadOutcome {
        object: quorum.merged().clone(),
        versions: quorum.distinct_versions(),
        answers: quorum.answers(),
    };
    if repair != Repair::Off {
        let t = transport.clone();
        tokio::spawn(
            async move {
                // Stragglers get until the deadline; the repair writes get one more timeout.
                drive(&mut calls, deadline, Progress::Pending, |node, r| {
                    quorum.record(node, r.and_then(expect_object));
                    Progress::Pending
                })
                .await;
                let stale: Vec<NodeId> = quorum
                    .stale()
                    .into_iter()
                    .filter(|n| owners.contains(n))
                    .collect();
                if stale.is_empty() {
                    return;
                }
                debug!(stale = ?stale, "read repair");
                if let Some(count) = &on_repair {
                    (count.0)(stale.len() as u64);
                }
                let calls = match repair {
                    // One owner: one that answered with the merge if any did (it holds the
                    // newest), else one that answered. It reads every replica itself.
                    Repair::AskOwner => {
                        let answered: Vec<NodeId> =
                            quorum.answers().iter().map(|a| a.node).collect();
                        let mut by_fitness: Vec<Member> = preference
                            .into_iter()
                            .filter(|m| owners.contains(&m.id))
                            .collect();
                        by_fitness
                            .sort_by_key(|m| (stale.contains(&m.id), !answered.contains(&m.id)));
                        by_fitness.truncate(1);
                        start_calls(&t, &by_fitness, &Request::Repair { key })
                    }
                    _ => super::repair::write_merge(&t, key, &quorum, &preference, &stale),
                };
                detach(calls, Instant::now() + timeout);
            }
            .instrument(debug_span!("read_repair")),
        );
    } else {
        detach(calls, deadline);
    }
    Ok(outcome)
}
