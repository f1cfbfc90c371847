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
//! - **Replicas known down** (per [`Transport::is_down`]) are not contacted and are reported as
//!   [`ReplicaError::MarkedDown`] if the quorum fails.

use crate::dvv::VersionVector;
use crate::error::{ReplicaError, ReplyError};
use crate::ids::NodeId;
use crate::object::Object;
use crate::proto::{Quorum, Request, Response};
use crate::quorum::{Progress, ReadQuorum, WriteQuorum};
use crate::ring::Member;
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
    /// Replicas whose answer was merged into `object`.
    pub answered: Vec<NodeId>,
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

/// Splits `targets` into the replicas to contact and those known down.
fn split_down<T: Transport>(transport: &T, targets: Vec<Member>) -> (Vec<Member>, Vec<NodeId>) {
    let (up, down): (Vec<Member>, Vec<Member>) =
        targets.into_iter().partition(|m| !transport.is_down(m.id));
    (up, down.into_iter().map(|m| m.id).collect())
}

fn spawn_calls<T: Transport>(
    transport: &T,
    targets: &[Member],
    request: &Request,
) -> JoinSet<(NodeId, Result<Response, ReplicaError>)> {
    let mut set = JoinSet::new();
    for m in targets {
        let t = transport.clone();
        let m = m.clone();
        let req = request.clone();
        let span = debug_span!("replica_call", node = %m.id, op = req.kind());
        set.spawn(
            async move {
                let r = classify(t.call(&m, req).await);
                (m.id, r)
            }
            .instrument(span),
        );
    }
    set
}

/// Reads `key` from the `targets`, returning once `required` answered.
///
/// After returning, a background task waits for the remaining answers (until `timeout` from the
/// start) and writes the merged object back to every replica that answered with less — read
/// repair — unless `repair` is false.
pub async fn read<T: Transport>(
    transport: &T,
    key: Bytes,
    targets: Vec<Member>,
    required: usize,
    timeout: Duration,
    repair: bool,
) -> Result<ReadOutcome, ReplyError> {
    let deadline = Instant::now() + timeout;
    let (up, down) = split_down(transport, targets.clone());
    let mut quorum = ReadQuorum::new(required, targets.iter().map(|m| m.id).collect());
    for id in down {
        quorum.record(id, Err(ReplicaError::MarkedDown));
    }
    let mut calls = spawn_calls(transport, &up, &Request::Read { key: key.clone() });
    let progress = drive(&mut calls, deadline, quorum.progress(), |node, r| {
        quorum.record(node, r.and_then(expect_object))
    })
    .await;
    if progress != Progress::Met {
        return Err(quorum.into_error());
    }
    let outcome = ReadOutcome {
        object: quorum.merged().clone(),
        versions: quorum.distinct_versions(),
        answered: quorum.replied().collect(),
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
                let stale = quorum.stale();
                if stale.is_empty() {
                    return;
                }
                let object = quorum.merged().clone();
                debug!(stale = ?stale, "read repair");
                let stale_members: Vec<Member> = targets
                    .into_iter()
                    .filter(|m| stale.contains(&m.id))
                    .collect();
                let writes = spawn_calls(&t, &stale_members, &Request::Write { key, object });
                detach(writes, Instant::now() + timeout);
            }
            .instrument(debug_span!("read_repair")),
        );
    } else {
        detach(calls, deadline);
    }
    Ok(outcome)
}

/// Writes `object` for `key` to `targets` until `required` replicas hold it, counting the
/// replicas in `already_acked` (a coordinator that stored it locally) as done.
///
/// Returns the replicas that acknowledged before returning.
pub async fn replicate<T: Transport>(
    transport: &T,
    key: Bytes,
    object: Object,
    already_acked: Vec<NodeId>,
    targets: Vec<Member>,
    required: usize,
    timeout: Duration,
) -> Result<Vec<NodeId>, ReplyError> {
    let deadline = Instant::now() + timeout;
    let (up, down) = split_down(transport, targets.clone());
    let contacted = already_acked
        .iter()
        .copied()
        .chain(targets.iter().map(|m| m.id))
        .collect();
    let mut quorum = WriteQuorum::new(required, contacted);
    for id in already_acked {
        quorum.record(id, Ok(()));
    }
    for id in down {
        quorum.record(id, Err(ReplicaError::MarkedDown));
    }
    let mut calls = spawn_calls(transport, &up, &Request::Write { key, object });
    let progress = drive(&mut calls, deadline, quorum.progress(), |node, r| {
        quorum.record(node, r.and_then(expect_written))
    })
    .await;
    detach(calls, deadline);
    match progress {
        Progress::Met => Ok(quorum.acked().to_vec()),
        _ => Err(quorum.into_error()),
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

/// Has one of `replicas` coordinate a write: the first that is not known down stamps the dot,
/// stores and replicates to the others until `quorum.required` hold it.
///
/// A coordinator that cannot be connected to has certainly not applied the write, so the next
/// replica is tried. Once a coordinator has the request, its answer is final: a reply error
/// (e.g. `QuorumFailed`) is returned as it is, and silence or a broken connection is
/// [`ReplyError::OutcomeUnknown`]. Returns the object's causal context after the write.
pub async fn coordinate_put<T: Transport>(
    transport: &T,
    key: Bytes,
    context: VersionVector,
    value: Option<Bytes>,
    replicas: &[Member],
    quorum: Quorum,
) -> Result<VersionVector, ReplyError> {
    let start = Instant::now();
    let deadline = start + quorum.timeout();
    // Healthy replicas first, in preference order; known-down ones last, as a final resort.
    let mut order: Vec<&Member> = replicas
        .iter()
        .filter(|m| !transport.is_down(m.id))
        .collect();
    order.extend(replicas.iter().filter(|m| transport.is_down(m.id)));
    let mut errors = Vec::new();
    for coordinator in order {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let request = Request::Put {
            key: key.clone(),
            context: context.clone(),
            value: value.clone(),
            replicas: replicas
                .iter()
                .map(|m| m.id)
                .filter(|id| *id != coordinator.id)
                .collect(),
            quorum: Quorum {
                timeout_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
                ..quorum
            }
            .for_coordinator(),
        };
        let call = transport.call(coordinator, request);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(Response::Put { clock })) => return Ok(clock),
            Ok(Ok(Response::Error(e))) => return Err(e),
            Ok(Ok(other)) => {
                return Err(ReplyError::OutcomeUnknown {
                    node: coordinator.id,
                    reason: format!("unexpected reply {}", other.kind()),
                });
            }
            Ok(Err(
                TransportError::Connect { reason, .. } | TransportError::Refused { reason, .. },
            )) => {
                debug!(node = %coordinator.id, %reason, "coordinator unreachable, trying the next replica");
                errors.push((coordinator.id, ReplicaError::Unreachable { reason }));
            }
            Ok(Err(TransportError::RequestTooLarge { reason })) => {
                return Err(ReplyError::InvalidInput { reason });
            }
            Ok(Err(e)) => {
                return Err(ReplyError::OutcomeUnknown {
                    node: coordinator.id,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ReplyError::OutcomeUnknown {
                    node: coordinator.id,
                    reason: format!("no answer within {:?}", start.elapsed()),
                });
            }
        }
    }
    Err(ReplyError::QuorumFailed {
        required: quorum.required,
        succeeded: 0,
        errors,
    })
}
