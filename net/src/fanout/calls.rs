//! The call machinery the drivers share: one task per replica call, classified replies,
//! stragglers drained in the background until the deadline.

use crate::transport::{Transport, TransportError};
use ringkv_shared::error::ReplicaError;
use ringkv_shared::ids::NodeId;
use ringkv_shared::object::Object;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::quorum::Progress;
use ringkv_shared::ring::Member;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span};

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
pub(super) fn split_down<T: Transport>(
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

pub(super) type Calls = JoinSet<(NodeId, Result<Response, ReplicaError>)>;

pub(super) fn spawn_call<T: Transport>(
    calls: &mut Calls,
    transport: &T,
    member: &Member,
    request: &Request,
) {
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

pub(super) fn spawn_calls<T: Transport>(
    transport: &T,
    targets: &[Member],
    request: &Request,
) -> Calls {
    let mut set = JoinSet::new();
    for m in targets {
        spawn_call(&mut set, transport, m, request);
    }
    set
}

/// Feeds completed calls to `on_reply` until it stops answering `Pending`, the calls run out,
/// or the deadline passes. Returns the last progress.
pub(super) async fn drive(
    calls: &mut Calls,
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
pub(super) fn detach(mut calls: Calls, deadline: Instant) {
    if calls.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let drain = async { while calls.join_next().await.is_some() {} };
        let _ = tokio::time::timeout_at(deadline, drain).await;
    });
}

pub(super) fn expect_object(resp: Response) -> Result<Object, ReplicaError> {
    match resp {
        Response::Object(o) => Ok(o),
        other => Err(ReplicaError::UnexpectedReply {
            reply: other.kind().into(),
        }),
    }
}

pub(super) fn expect_written(resp: Response) -> Result<(), ReplicaError> {
    match resp {
        Response::Written => Ok(()),
        other => Err(ReplicaError::UnexpectedReply {
            reply: other.kind().into(),
        }),
    }
}
