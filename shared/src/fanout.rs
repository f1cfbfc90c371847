//! Quorum drivers: send to replicas over a [`Transport`], feed the [`crate::quorum`] engine,
//! return as soon as it decides.
//!
//! Both drivers share one contract:
//!
//! - **When they return.** As soon as the quorum is met (`Ok`), as soon as it can no longer be
//!   met (`Err(QuorumFailed)` naming every replica that failed and why), or at the deadline
//!   (`Err(QuorumFailed)` with the silent replicas named as `TimedOut`).
//! - **Stragglers.** Requests still in flight when the call returns are not cancelled: a
//!   background task keeps them until the deadline, so a write still reaches every replica it
//!   was sent to, and a late read answer still takes part in read repair.
//! - **Replicas known down** (per [`Transport::is_down`]) are not contacted while the quorum
//!   can be met without them, and are then reported as [`ReplicaError::MarkedDown`] if it
//!   fails. When it cannot be met without them they are contacted anyway: a local suspicion
//!   steers requests around a node, it never fails a request that node could serve, and the
//!   request doubles as the probe that clears the suspicion.

use crate::dvv::VersionVector;
use crate::error::{ReplicaError, ReplyError};
use crate::hedge::Hedger;
use crate::ids::NodeId;
use crate::object::Object;
use crate::proto::{Quorum, Request, Response};
use crate::quorum::{Answer, Progress, ReadQuorum};
use crate::ring::Member;
use crate::sloppy::{Placement, SloppyWrite};
use crate::transport::{Transport, TransportError};
use bytes::Bytes;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span};

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

/// Turns a transport result into the quorum engine's vocabulary.
pub fn classify(result: Result<Response, TransportError>) -> Result<Response, ReplicaError> {
    match result {
        Ok(Response::Error(error)) => Err(ReplicaError::Refused {
            error: Box::new(error),
        }),
        Ok(resp) => Ok(resp),
        Err(e) => Err(ReplicaError::Unreachable {
            reason: e.to_string(),
        }),
    }
}

/// Splits `targets` into the replicas to contact and those to skip: replicas known down are
/// skipped only if `required` can be met without them.
fn split_down<T: Transport>(
    transport: &T,
    targets: Vec<Member>,
    required: usize,
) -> (Vec<Member>, Vec<NodeId>) {
    let (up, down): (Vec<Member>, Vec<Member>) =
        targets.into_iter().partition(|m| !transport.is_down(m.id));
    if up.len() < required {
        let mut all = up;
        all.extend(down);
        return (all, Vec::new());
    }
    (up, down.into_iter().map(|m| m.id).collect())
}

type Calls = JoinSet<(NodeId, Result<Response, ReplicaError>)>;

fn spawn_call<T: Transport>(calls: &mut Calls, transport: &T, member: &Member, request: &Request) {
    let t = transport.clone();
    let m = member.clone();
    let req = request.clone();
    let span = debug_span!("replica_call", node = %m.id, op = req.kind());
    calls.spawn(
        async move {
            let r = classify(t.call(&m, req).await);
            (m.id, r)
        }
        .instrument(span),
    );
}

fn spawn_calls<T: Transport>(transport: &T, targets: &[Member], request: &Request) -> Calls {
    let mut set = JoinSet::new();
    for m in targets {
        spawn_call(&mut set, transport, m, request);
    }
    set
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
/// start) and, if `repair` is set, writes the merged object back to every owner (the first `n`
/// of the list) that answered with less — read repair. Stand-ins are not repaired: they hold
/// hints, not replicas.
pub async fn read<T: Transport>(
    transport: &T,
    key: Bytes,
    preference: Vec<Member>,
    n: usize,
    required: usize,
    timeout: Duration,
    repair: bool,
) -> Result<ReadOutcome, ReplyError> {
    read_hedged(
        transport, key, preference, n, required, timeout, repair, None,
    )
    .await
}

/// [`read_hedged`] with the delay a [`Hedger`] gives (none: ask all N), recording the read's
/// latency in it when the read succeeds, so that a percentile policy follows the load. The
/// client's and the router's reads both go through here.
#[allow(clippy::too_many_arguments)]
pub async fn read_with_hedger<T: Transport>(
    transport: &T,
    key: Bytes,
    preference: Vec<Member>,
    n: usize,
    required: usize,
    timeout: Duration,
    repair: bool,
    hedger: Option<&Hedger>,
) -> Result<ReadOutcome, ReplyError> {
    let started = Instant::now();
    let delay = hedger.and_then(Hedger::delay);
    let read = read_hedged(
        transport, key, preference, n, required, timeout, repair, delay,
    )
    .await;
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
#[allow(clippy::too_many_arguments)]
pub async fn read_hedged<T: Transport>(
    transport: &T,
    key: Bytes,
    preference: Vec<Member>,
    n: usize,
    required: usize,
    timeout: Duration,
    repair: bool,
    hedge: Option<Duration>,
) -> Result<ReadOutcome, ReplyError> {
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
    let mut calls = spawn_calls(transport, &up, &request);
    let mut progress = quorum.progress();
    let mut hedge_at = hedge.map(|d| Instant::now() + d);
    // A failure before the quorum is decided brings in the next spare, if any; with spares
    // left, a quorum that looks impossible is not yet.
    let mut substitute = |quorum: &mut ReadQuorum, calls: &mut Calls| {
        if let Some(spare) = spares.pop_front() {
            quorum.contact(spare.id);
            spawn_call(calls, transport, &spare, &request);
            true
        } else {
            false
        }
    };
    while progress != Progress::Met {
        if progress == Progress::Failed && !substitute(&mut quorum, &mut calls) {
            break;
        }
        let wake = hedge_at.map_or(deadline, |h| h.min(deadline));
        match tokio::time::timeout_at(wake, calls.join_next()).await {
            Ok(Some(Ok((node, result)))) => {
                // Counted as a failure: an error, or a stand-in that holds nothing.
                let before = quorum.failures();
                progress = quorum.record(node, result.and_then(expect_object));
                let failed = quorum.failures() > before;
                if failed && progress == Progress::Pending {
                    substitute(&mut quorum, &mut calls);
                }
            }
            Ok(Some(Err(join_error))) => {
                debug!(%join_error, "replica call task ended without a reply")
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
    if repair {
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
                let object = quorum.merged().clone();
                debug!(stale = ?stale, "read repair");
                let stale_members: Vec<Member> = preference
                    .into_iter()
                    .filter(|m| stale.contains(&m.id))
                    .collect();
                let writes = spawn_calls(
                    &t,
                    &stale_members,
                    &Request::Write {
                        key,
                        object,
                        hint_for: None,
                    },
                );
                detach(writes, Instant::now() + timeout);
            }
            .instrument(debug_span!("read_repair")),
        );
    } else {
        detach(calls, deadline);
    }
    Ok(outcome)
}

/// Replicates a write the coordinator `local` has stored: sends copies to the key's other
/// owners (the first `n` of `preference`), redirecting the copy of a suspected or failing owner
/// to the next stand-in with a hint (see [`crate::sloppy`]), until `required` distinct nodes,
/// `local` included, hold it.
///
/// Returns the nodes that acknowledged before returning. Copies still in flight keep going in
/// the background until they settle or the deadline passes; then `on_settled` is called with
/// the owners whose copy found no home, for which the coordinator keeps hints itself.
#[allow(clippy::too_many_arguments)]
pub async fn replicate<T, F, Fut>(
    transport: &T,
    key: Bytes,
    object: Object,
    local: NodeId,
    preference: Vec<Member>,
    n: usize,
    required: usize,
    timeout: Duration,
    on_settled: F,
) -> Result<Vec<NodeId>, ReplyError>
where
    T: Transport,
    F: FnOnce(Vec<NodeId>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + timeout;
    let n = n.min(preference.len());
    let owners: Vec<NodeId> = preference[..n].iter().map(|m| m.id).collect();
    let standins: Vec<NodeId> = preference[n..].iter().map(|m| m.id).collect();
    let (mut write, first) = SloppyWrite::new(required, &owners, &standins, local, |id| {
        transport.is_down(id)
    });
    let sender = CopySender {
        transport: transport.clone(),
        key,
        object,
        members: preference,
    };
    let mut calls = JoinSet::new();
    sender.send_all(&mut calls, first);
    let mut progress = write.progress();
    while progress == Progress::Pending {
        match tokio::time::timeout_at(deadline, calls.join_next()).await {
            Ok(Some(Ok((node, result)))) => {
                let (p, more) = write.record(node, result.and_then(expect_written));
                sender.send_all(&mut calls, more);
                progress = p;
            }
            Ok(Some(Err(join_error))) => {
                debug!(%join_error, "replica call task ended without a reply")
            }
            Ok(None) | Err(_) => break,
        }
    }
    let result = match progress {
        Progress::Met => Ok(write.acked().to_vec()),
        _ => Err(write.clone().into_error()),
    };
    tokio::spawn(
        async move {
            while !write.settled() {
                match tokio::time::timeout_at(deadline, calls.join_next()).await {
                    Ok(Some(Ok((node, result)))) => {
                        let (_, more) = write.record(node, result.and_then(expect_written));
                        sender.send_all(&mut calls, more);
                    }
                    Ok(Some(Err(_))) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            drop(calls);
            let unplaced = write.unplaced();
            if !unplaced.is_empty() {
                debug!(
                    ?unplaced,
                    "copies without a home; the coordinator keeps hints"
                );
            }
            on_settled(unplaced).await;
        }
        .instrument(debug_span!("replicate_stragglers")),
    );
    result
}

/// Sends copies of one write as [`crate::sloppy`] places them.
struct CopySender<T> {
    transport: T,
    key: Bytes,
    object: Object,
    members: Vec<Member>,
}

impl<T: Transport> CopySender<T> {
    fn send_all(
        &self,
        calls: &mut JoinSet<(NodeId, Result<Response, ReplicaError>)>,
        placements: Vec<Placement>,
    ) {
        for p in placements {
            let Some(member) = self.members.iter().find(|m| m.id == p.to).cloned() else {
                continue;
            };
            let t = self.transport.clone();
            let request = Request::Write {
                key: self.key.clone(),
                object: self.object.clone(),
                hint_for: p.hint_for,
            };
            let span =
                debug_span!("replica_call", node = %p.to, op = "write", hint_for = ?p.hint_for);
            calls.spawn(
                async move {
                    let r = classify(t.call(&member, request).await);
                    (member.id, r)
                }
                .instrument(span),
            );
        }
    }
}

/// Feeds completed calls to `on_reply` until it stops answering `Pending`, the calls run out,
/// or the deadline passes. Returns the last progress.
async fn drive(
    calls: &mut JoinSet<(NodeId, Result<Response, ReplicaError>)>,
    deadline: Instant,
    mut progress: Progress,
    mut on_reply: impl FnMut(NodeId, Result<Response, ReplicaError>) -> Progress,
) -> Progress {
    while progress == Progress::Pending {
        match tokio::time::timeout_at(deadline, calls.join_next()).await {
            Ok(Some(Ok((node, result)))) => progress = on_reply(node, result),
            Ok(Some(Err(join_error))) => {
                // A replica call panicked or was cancelled: it simply never answers.
                debug!(%join_error, "replica call task ended without a reply");
            }
            Ok(None) | Err(_) => break,
        }
    }
    progress
}

/// Lets in-flight calls finish in the background until the operation's deadline, then
/// cancels whatever is left.
fn detach(mut calls: JoinSet<(NodeId, Result<Response, ReplicaError>)>, deadline: Instant) {
    if calls.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let drain = async { while calls.join_next().await.is_some() {} };
        let _ = tokio::time::timeout_at(deadline, drain).await;
    });
}

fn expect_object(resp: Response) -> Result<Object, ReplicaError> {
    match resp {
        Response::Object(o) => Ok(o),
        other => Err(ReplicaError::UnexpectedReply {
            reply: other.kind().into(),
        }),
    }
}

fn expect_written(resp: Response) -> Result<(), ReplicaError> {
    match resp {
        Response::Written => Ok(()),
        other => Err(ReplicaError::UnexpectedReply {
            reply: other.kind().into(),
        }),
    }
}

/// Sends one request to the first of `candidates` that can be reached, and returns its answer.
///
/// This is the failover rule shared by direct-mode writes (try the key's replicas in order)
/// and router mode (try random nodes). A candidate that cannot be connected to has certainly
/// not acted on the request, so the next one is tried. Once a candidate has the request its
/// answer is final: a reply error is returned as it is, and silence or a broken connection is
/// [`ReplyError::OutcomeUnknown`] for a write (it may have been applied; no second candidate
/// is tried, which could apply it twice) or a `QuorumFailed` naming the candidate for a read.
/// `make` builds the request for a candidate given the time left before `deadline`.
pub async fn first_reachable<T: Transport>(
    transport: &T,
    candidates: &[&Member],
    required: u8,
    deadline: Instant,
    mut make: impl FnMut(&Member, Duration) -> Request,
) -> Result<Response, ReplyError> {
    let mut errors = Vec::new();
    for &candidate in candidates {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let request = make(candidate, remaining);
        let is_write = request.is_write();
        let unknown = |error: ReplicaError, errors: Vec<(NodeId, ReplicaError)>| {
            if is_write {
                ReplyError::OutcomeUnknown {
                    node: candidate.id,
                    reason: error.to_string(),
                }
            } else {
                let mut errors = errors;
                errors.push((candidate.id, error));
                ReplyError::QuorumFailed {
                    required,
                    succeeded: 0,
                    errors,
                }
            }
        };
        match tokio::time::timeout_at(deadline, transport.call(candidate, request)).await {
            Ok(Ok(Response::Error(e))) => return Err(e),
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(
                TransportError::Connect { reason, .. } | TransportError::Refused { reason, .. },
            )) => {
                debug!(node = %candidate.id, %reason, "unreachable, trying the next candidate");
                errors.push((candidate.id, ReplicaError::Unreachable { reason }));
            }
            Ok(Err(TransportError::RequestTooLarge { reason })) => {
                return Err(ReplyError::InvalidInput { reason });
            }
            Ok(Err(e)) => {
                return Err(unknown(
                    ReplicaError::Unreachable {
                        reason: e.to_string(),
                    },
                    errors,
                ));
            }
            Err(_) => return Err(unknown(ReplicaError::TimedOut, errors)),
        }
    }
    Err(ReplyError::QuorumFailed {
        required,
        succeeded: 0,
        errors,
    })
}

/// Has one of the key's owners (`replicas`, the first N of its preference list, in the order
/// to try them) coordinate a write: the first that is not known down stamps the dot, stores and replicates until
/// `quorum.required` nodes hold it (failover as in [`first_reachable`]). Returns the object's
/// causal context after the write.
pub async fn coordinate_put<T: Transport>(
    transport: &T,
    key: Bytes,
    context: VersionVector,
    value: Option<Bytes>,
    replicas: &[Member],
    quorum: Quorum,
) -> Result<VersionVector, ReplyError> {
    let deadline = Instant::now() + quorum.timeout();
    // Healthy owners first, in the order given; known-down ones last, as a final resort.
    let mut order: Vec<&Member> = replicas
        .iter()
        .filter(|m| !transport.is_down(m.id))
        .collect();
    order.extend(replicas.iter().filter(|m| transport.is_down(m.id)));
    let response = first_reachable(
        transport,
        &order,
        quorum.required,
        deadline,
        |_, remaining| Request::Put {
            key: key.clone(),
            context: context.clone(),
            value: value.clone(),
            quorum: Quorum {
                timeout_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
                ..quorum
            }
            .for_coordinator(),
        },
    )
    .await?;
    match response {
        Response::Put { clock } => Ok(clock),
        other => Err(ReplyError::OutcomeUnknown {
            node: replicas.first().map_or(NodeId(0), |m| m.id),
            reason: format!("unexpected reply {}", other.kind()),
        }),
    }
}

#[cfg(test)]
mod tests {
    //! The drivers against a simulated transport on a paused clock: replicas that answer after
    //! a delay, never answer, refuse, or cannot be reached.
    use super::*;
    use crate::ids::ActorId;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Copy, Debug)]
    enum Behaviour {
        Answer { delay_ms: u64 },
        Silent,
        Refuse,
        Unreachable,
    }

    #[derive(Clone, Default)]
    struct Sim {
        behaviour: Arc<Mutex<HashMap<NodeId, Behaviour>>>,
        stored: Arc<Mutex<HashMap<NodeId, Object>>>,
        writes: Arc<Mutex<Vec<NodeId>>>,
        puts: Arc<Mutex<Vec<NodeId>>>,
        reads: Arc<Mutex<Vec<NodeId>>>,
        hinted: Arc<Mutex<Vec<(NodeId, NodeId)>>>,
        suspected: Arc<Mutex<Vec<NodeId>>>,
    }

    impl Sim {
        fn with(behaviour: &[(u32, Behaviour)]) -> Self {
            let sim = Sim::default();
            for &(id, b) in behaviour {
                sim.behaviour.lock().unwrap().insert(NodeId(id), b);
            }
            sim
        }
        fn store(&self, id: u32, o: Object) {
            self.stored.lock().unwrap().insert(NodeId(id), o);
        }
    }

    impl Transport for Sim {
        async fn call(&self, to: &Member, request: Request) -> Result<Response, TransportError> {
            let b = self.behaviour.lock().unwrap().get(&to.id).copied();
            match b.unwrap_or(Behaviour::Answer { delay_ms: 0 }) {
                Behaviour::Answer { delay_ms } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    Ok(match request {
                        Request::Read { .. } => {
                            self.reads.lock().unwrap().push(to.id);
                            Response::Object(
                                self.stored
                                    .lock()
                                    .unwrap()
                                    .get(&to.id)
                                    .cloned()
                                    .unwrap_or_default(),
                            )
                        }
                        Request::Write {
                            object, hint_for, ..
                        } => {
                            if let Some(owner) = hint_for {
                                self.hinted.lock().unwrap().push((to.id, owner));
                            }
                            self.stored
                                .lock()
                                .unwrap()
                                .entry(to.id)
                                .or_default()
                                .merge(&object);
                            self.writes.lock().unwrap().push(to.id);
                            Response::Written
                        }
                        Request::Put { .. } => {
                            self.puts.lock().unwrap().push(to.id);
                            Response::Put {
                                clock: VersionVector::new(),
                            }
                        }
                        _ => Response::Pong { node: to.id },
                    })
                }
                Behaviour::Silent => std::future::pending().await,
                Behaviour::Refuse => Ok(Response::Error(ReplyError::Unavailable {
                    reason: "refusing".into(),
                })),
                Behaviour::Unreachable => Err(TransportError::Connect {
                    addr: to.addr,
                    reason: "refused".into(),
                }),
            }
        }

        fn is_down(&self, node: NodeId) -> bool {
            self.suspected.lock().unwrap().contains(&node)
        }
    }

    fn members(n: u32) -> Vec<Member> {
        (1..=n)
            .map(|i| Member {
                id: NodeId(i),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            })
            .collect()
    }

    fn nodes(out: &ReadOutcome) -> Vec<NodeId> {
        out.answers.iter().map(|a| a.node).collect()
    }

    fn written(v: &str) -> Object {
        let mut o = Object::new();
        o.update(
            &VersionVector::new(),
            Some(Bytes::copy_from_slice(v.as_bytes())),
            ActorId(1),
        );
        o
    }

    const TIMEOUT: Duration = Duration::from_millis(100);

    #[tokio::test(start_paused = true)]
    async fn read_returns_after_r_and_repairs_stale_replicas_later() {
        let sim = Sim::with(&[
            (1, Behaviour::Answer { delay_ms: 1 }),
            (2, Behaviour::Answer { delay_ms: 2 }),
            (3, Behaviour::Answer { delay_ms: 50 }),
        ]);
        let newer = written("v1");
        sim.store(1, newer.clone());
        sim.store(2, newer.clone());
        // Replica 3 holds nothing: it is stale, but answers only after the quorum was met.
        let start = Instant::now();
        let out = read(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            true,
        )
        .await
        .unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(2),
            "returns at the R-th answer"
        );
        assert_eq!(out.object, newer);
        assert_eq!(nodes(&out), vec![NodeId(1), NodeId(2)]);
        assert!(sim.writes.lock().unwrap().is_empty());
        // Replica 3 answers at 50 ms; the repair write to it takes its 50 ms too.
        tokio::time::sleep(Duration::from_millis(97)).await; // t = 99 ms
        assert!(
            sim.writes.lock().unwrap().is_empty(),
            "no repair before replica 3 could take it"
        );
        tokio::time::sleep(Duration::from_millis(2)).await; // t = 101 ms
        assert_eq!(
            *sim.writes.lock().unwrap(),
            vec![NodeId(3)],
            "the late, stale replica is repaired"
        );
        assert_eq!(sim.stored.lock().unwrap()[&NodeId(3)], newer);
    }

    /// A simulated cluster with these behaviours where `holders` store `object`.
    fn holding(object: &Object, behaviour: &[(u32, Behaviour)], holders: &[u32]) -> Sim {
        let sim = Sim::with(behaviour);
        for &i in holders {
            sim.store(i, object.clone());
        }
        sim
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedged_read_asks_r_nodes_and_a_third_only_when_one_is_slow() {
        let newer = written("v1");
        // Quick replicas: two requests, not three.
        let quick = Behaviour::Answer { delay_ms: 1 };
        let sim = holding(&newer, &[(1, quick), (2, quick), (3, quick)], &[1, 2, 3]);
        let hedge = Some(Duration::from_millis(5));
        let out = read_hedged(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            true,
            hedge,
        )
        .await
        .unwrap();
        assert_eq!(out.object, newer);
        tokio::time::sleep(TIMEOUT).await;
        let mut asked = sim.reads.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, vec![NodeId(1), NodeId(2)]);

        // Replica 2 is slow: after the hedge delay replica 3 is asked and answers first.
        let slow = Behaviour::Answer { delay_ms: 80 };
        let sim = holding(&newer, &[(1, quick), (2, slow), (3, quick)], &[1, 2, 3]);
        let start = Instant::now();
        let out = read_hedged(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            true,
            hedge,
        )
        .await
        .unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(6),
            "hedge at 5 ms, answer at 6 ms"
        );
        assert_eq!(nodes(&out), vec![NodeId(1), NodeId(3)]);

        // A failing replica is replaced at once, without waiting for the hedge delay.
        let sim = holding(
            &newer,
            &[(1, quick), (2, Behaviour::Refuse), (3, quick)],
            &[1, 3],
        );
        let start = Instant::now();
        read_hedged(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            true,
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silent_replicas_time_out_at_the_deadline_and_are_named() {
        let sim = Sim::with(&[(2, Behaviour::Silent), (3, Behaviour::Silent)]);
        let start = Instant::now();
        let err = read(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(start.elapsed(), TIMEOUT);
        assert_eq!(
            err,
            ReplyError::QuorumFailed {
                required: 2,
                succeeded: 1,
                errors: vec![
                    (NodeId(2), ReplicaError::TimedOut),
                    (NodeId(3), ReplicaError::TimedOut)
                ],
            }
        );
    }

    /// Runs `replicate` from coordinator n1 over `members(total)`; returns the result and a
    /// handle on the owners reported unplaced once everything settled.
    async fn replicate_from_n1(
        sim: &Sim,
        total: u32,
        n: usize,
        w: usize,
    ) -> (
        Result<Vec<NodeId>, ReplyError>,
        Arc<Mutex<Option<Vec<NodeId>>>>,
    ) {
        let settled: Arc<Mutex<Option<Vec<NodeId>>>> = Arc::default();
        let report = settled.clone();
        let result = replicate(
            sim,
            Bytes::from_static(b"k"),
            written("v"),
            NodeId(1),
            members(total),
            n,
            w,
            TIMEOUT,
            move |unplaced| async move {
                *report.lock().unwrap() = Some(unplaced);
            },
        )
        .await;
        (result, settled)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_make_the_quorum_impossible_return_at_once() {
        let sim = Sim::with(&[(2, Behaviour::Refuse), (3, Behaviour::Silent)]);
        let start = Instant::now();
        let (result, settled) = replicate_from_n1(&sim, 3, 3, 3).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no waiting for the silent one"
        );
        let err = result.unwrap_err();
        let ReplyError::QuorumFailed {
            succeeded, errors, ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(succeeded, 1, "the coordinator itself");
        assert!(
            matches!(errors[0], (NodeId(2), ReplicaError::Refused { .. })),
            "{errors:?}"
        );
        assert_eq!(errors[1], (NodeId(3), ReplicaError::NotAwaited));
        // Past the deadline both owners are still without a copy: the coordinator keeps hints.
        tokio::time::sleep(TIMEOUT + Duration::from_millis(1)).await;
        assert_eq!(
            settled.lock().unwrap().clone(),
            Some(vec![NodeId(2), NodeId(3)])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn replicate_counts_the_coordinator_and_keeps_writing_to_stragglers() {
        let sim = Sim::with(&[
            (2, Behaviour::Answer { delay_ms: 5 }),
            (3, Behaviour::Answer { delay_ms: 40 }),
        ]);
        let (result, settled) = replicate_from_n1(&sim, 3, 3, 2).await;
        assert_eq!(result.unwrap(), vec![NodeId(1), NodeId(2)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *sim.writes.lock().unwrap(),
            vec![NodeId(2), NodeId(3)],
            "the straggler still got the write"
        );
        assert_eq!(
            settled.lock().unwrap().clone(),
            Some(vec![]),
            "every owner has its copy"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_owner_is_replaced_by_a_standin_that_counts_toward_w() {
        let sim = Sim::with(&[(3, Behaviour::Unreachable)]);
        sim.suspected.lock().unwrap().push(NodeId(2));
        let (result, settled) = replicate_from_n1(&sim, 5, 3, 3).await;
        let mut acked = result.unwrap();
        acked.sort();
        assert_eq!(
            acked,
            vec![NodeId(1), NodeId(4), NodeId(5)],
            "W=3 met with two stand-ins"
        );
        let mut hinted = sim.hinted.lock().unwrap().clone();
        hinted.sort();
        assert_eq!(hinted, vec![(NodeId(4), NodeId(2)), (NodeId(5), NodeId(3))]);
        tokio::time::sleep(TIMEOUT + Duration::from_millis(1)).await;
        assert_eq!(settled.lock().unwrap().clone(), Some(vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_standin_left_the_coordinator_keeps_the_hint() {
        // 3 nodes, N=3: nowhere to redirect n3's copy. W=2 is met; n3 is reported unplaced.
        let sim = Sim::with(&[(3, Behaviour::Unreachable)]);
        let (result, settled) = replicate_from_n1(&sim, 3, 3, 2).await;
        assert_eq!(result.unwrap(), vec![NodeId(1), NodeId(2)]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(settled.lock().unwrap().clone(), Some(vec![NodeId(3)]));
    }

    #[tokio::test(start_paused = true)]
    async fn coordinate_put_fails_over_only_when_nothing_was_applied() {
        let q = Quorum {
            n: 3,
            required: 2,
            timeout_ms: 100,
        };
        // First replica unreachable (certainly not applied): the next one coordinates.
        let sim = Sim::with(&[(1, Behaviour::Unreachable)]);
        coordinate_put(
            &sim,
            Bytes::from_static(b"k"),
            VersionVector::new(),
            None,
            &members(3),
            q,
        )
        .await
        .unwrap();
        assert_eq!(*sim.puts.lock().unwrap(), vec![NodeId(2)]);

        // First replica silent: the outcome is unknown, and no second coordinator is tried
        // (that could apply the write twice).
        let sim = Sim::with(&[(1, Behaviour::Silent)]);
        let err = coordinate_put(
            &sim,
            Bytes::from_static(b"k"),
            VersionVector::new(),
            None,
            &members(3),
            q,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                ReplyError::OutcomeUnknown {
                    node: NodeId(1),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(sim.puts.lock().unwrap().is_empty());

        // Every replica unreachable: failed, not applied, each one named.
        let sim = Sim::with(&[
            (1, Behaviour::Unreachable),
            (2, Behaviour::Unreachable),
            (3, Behaviour::Unreachable),
        ]);
        let err = coordinate_put(
            &sim,
            Bytes::from_static(b"k"),
            VersionVector::new(),
            None,
            &members(3),
            q,
        )
        .await
        .unwrap_err();
        let ReplyError::QuorumFailed {
            succeeded: 0,
            errors,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(errors.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn suspected_replicas_are_skipped_only_while_the_quorum_can_do_without_them() {
        let sim = Sim::default();
        sim.suspected.lock().unwrap().push(NodeId(3));
        read(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            *sim.reads.lock().unwrap(),
            vec![NodeId(1), NodeId(2)],
            "n3 steered around"
        );
        sim.reads.lock().unwrap().clear();
        // R=3 needs n3: it is asked (and answers) instead of the read failing unasked.
        read(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            3,
            TIMEOUT,
            false,
        )
        .await
        .unwrap();
        let mut asked = sim.reads.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, vec![NodeId(1), NodeId(2), NodeId(3)]);
    }

    /// The bridge partition: owners n2 and n3 are suspected and cut off, stand-ins n4 and n5
    /// hold nothing. Their "not found" is no evidence: the read asks the suspected owners after
    /// all, waits for them until the deadline, and fails naming who said what, instead of
    /// returning the key as empty.
    #[tokio::test(start_paused = true)]
    async fn empty_standins_never_make_a_read_return_not_found() {
        let sim = Sim::with(&[(2, Behaviour::Silent), (3, Behaviour::Silent)]);
        sim.suspected.lock().unwrap().extend([NodeId(2), NodeId(3)]);
        sim.store(1, written("v"));
        let start = Instant::now();
        let err = read(
            &sim,
            Bytes::from_static(b"k"),
            members(5),
            3,
            2,
            TIMEOUT,
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(
            start.elapsed(),
            TIMEOUT,
            "waits for the owners until the deadline"
        );
        let ReplyError::QuorumFailed {
            succeeded: 1,
            mut errors,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        errors.sort_by_key(|(n, _)| *n);
        assert_eq!(
            errors,
            vec![
                (NodeId(2), ReplicaError::TimedOut),
                (NodeId(3), ReplicaError::TimedOut),
                (NodeId(4), ReplicaError::HoldsNothing),
                (NodeId(5), ReplicaError::HoldsNothing),
            ]
        );
        // When an owner answers after all, its answer counts (empty or not).
        let sim = Sim::with(&[(3, Behaviour::Silent)]);
        sim.suspected.lock().unwrap().extend([NodeId(2), NodeId(3)]);
        sim.store(1, written("v"));
        let out = read(
            &sim,
            Bytes::from_static(b"k"),
            members(5),
            3,
            2,
            TIMEOUT,
            true,
        )
        .await
        .unwrap();
        assert_eq!(out.object, written("v"));
        let mut answered = nodes(&out);
        answered.sort();
        assert_eq!(answered, vec![NodeId(1), NodeId(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_replaces_failed_owners_with_the_next_nodes_of_the_list() {
        // Owners n2 and n3 fail during the read; stand-in n4 holds a hint and answers.
        let sim = Sim::with(&[(2, Behaviour::Unreachable), (3, Behaviour::Refuse)]);
        sim.store(1, written("v"));
        sim.store(4, written("v"));
        let out = read(
            &sim,
            Bytes::from_static(b"k"),
            members(5),
            3,
            2,
            TIMEOUT,
            true,
        )
        .await
        .unwrap();
        let mut answered = nodes(&out);
        answered.sort();
        assert_eq!(answered, vec![NodeId(1), NodeId(4)]);
        // Without spares the same failures fail the read, naming both owners.
        let err = read(
            &sim,
            Bytes::from_static(b"k"),
            members(3),
            3,
            2,
            TIMEOUT,
            true,
        )
        .await
        .unwrap_err();
        let ReplyError::QuorumFailed {
            succeeded: 1,
            errors,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(errors.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_router_on_a_read_is_a_named_timeout_not_an_unknown_write() {
        let sim = Sim::with(&[(1, Behaviour::Unreachable), (2, Behaviour::Silent)]);
        let ms = members(3);
        let order: Vec<&Member> = ms.iter().collect();
        let q = Quorum {
            n: 3,
            required: 2,
            timeout_ms: 100,
        };
        let deadline = Instant::now() + q.timeout();
        let err = first_reachable(&sim, &order, 2, deadline, |_, _| Request::RouteGet {
            key: Bytes::from_static(b"k"),
            quorum: q,
        })
        .await
        .unwrap_err();
        let ReplyError::QuorumFailed {
            required: 2,
            succeeded: 0,
            errors,
        } = err
        else {
            panic!("{err:?}")
        };
        assert!(
            matches!(errors[0], (NodeId(1), ReplicaError::Unreachable { .. })),
            "{errors:?}"
        );
        assert_eq!(errors[1], (NodeId(2), ReplicaError::TimedOut));
        assert_eq!(
            errors.len(),
            2,
            "node 3 was never tried: node 2 may still answer"
        );
    }

    /// Random behaviours from a printed seed: a read succeeds exactly when at least R replicas
    /// answer before the deadline, and then it returns at the R-th fastest answer.
    #[tokio::test(start_paused = true)]
    async fn seeded_random_replica_behaviour() {
        let seed: u64 = std::env::var("RINGKV_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..300 {
            let n = rng.random_range(1..=5u32);
            let r = rng.random_range(1..=n as usize);
            let mut plan = Vec::new();
            let mut in_time = Vec::new();
            for id in 1..=n {
                let b = match rng.random_range(0..4) {
                    0 => Behaviour::Silent,
                    1 => Behaviour::Refuse,
                    2 => Behaviour::Unreachable,
                    // Multiples of 7 ms never coincide with the 100 ms deadline.
                    _ => Behaviour::Answer {
                        delay_ms: 7 * rng.random_range(0..30),
                    },
                };
                if let Behaviour::Answer { delay_ms } = b
                    && delay_ms < 100
                {
                    in_time.push(delay_ms);
                }
                plan.push((id, b));
            }
            in_time.sort_unstable();
            let sim = Sim::with(&plan);
            let start = Instant::now();
            let result = read(
                &sim,
                Bytes::from_static(b"k"),
                members(n),
                n as usize,
                r,
                TIMEOUT,
                false,
            )
            .await;
            let ctx = format!("seed {seed} round {round}: n={n} r={r} plan={plan:?}");
            if in_time.len() >= r {
                assert!(result.is_ok(), "{ctx}: {result:?}");
                assert_eq!(
                    start.elapsed(),
                    Duration::from_millis(in_time[r - 1]),
                    "{ctx}"
                );
            } else {
                assert!(result.is_err(), "{ctx}");
                assert!(start.elapsed() <= TIMEOUT, "{ctx}");
            }
        }
    }
}
