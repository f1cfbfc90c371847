//! The call machinery the drivers share: replica calls polled together in the caller's task,
//! classified replies, stragglers drained in the background until the deadline.

use crate::transport::{Transport, TransportError};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ringkv_shared::error::ReplicaError;
use ringkv_shared::ids::NodeId;
use ringkv_shared::object::Object;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::quorum::Progress;
use ringkv_shared::ring::Member;
use std::future::Future;
use std::pin::Pin;
use tokio::time::Instant;
use tracing::{Instrument, debug_span};

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

/// The timer passed to [`Calls::next_before`] fired first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// One replica call in flight: the node called and its classified reply.
type Call = Pin<Box<dyn Future<Output = (NodeId, Result<Response, ReplicaError>)> + Send>>;

/// The replica calls of one operation, in flight together.
///
/// The calls are polled by whichever task awaits [`Calls::join_next`], not spawned: a reply
/// wakes that task directly, with no task to spawn, schedule and join per call. While nobody
/// awaits, nothing progresses, so an operation that returns before every call answered hands
/// its `Calls` to a background task ([`detach`]) rather than dropping it. Dropping cancels the
/// calls still in flight, as aborting spawned ones would.
#[derive(Default)]
pub(crate) struct Calls {
    in_flight: FuturesUnordered<Call>,
}

impl Calls {
    /// No calls.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a call.
    pub(crate) fn push(
        &mut self,
        call: impl Future<Output = (NodeId, Result<Response, ReplicaError>)> + Send + 'static,
    ) {
        self.in_flight.push(Box::pin(call));
    }

    /// The next call to finish, or `None` when none is left.
    pub(crate) async fn join_next(&mut self) -> Option<(NodeId, Result<Response, ReplicaError>)> {
        self.in_flight.next().await
    }

    /// The next call to finish before `timer` fires: `Ok(None)` when none is left,
    /// `Err(Elapsed)` when the timer fired first. One timer serves a whole loop of these,
    /// where a `timeout_at` per reply would register and cancel one each time.
    pub(crate) async fn next_before(
        &mut self,
        timer: Pin<&mut tokio::time::Sleep>,
    ) -> Result<Option<(NodeId, Result<Response, ReplicaError>)>, Elapsed> {
        tokio::select! {
            biased;
            next = self.join_next() => Ok(next),
            () = timer => Err(Elapsed),
        }
    }

    /// Whether every call has finished.
    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

pub(super) fn start_call<T: Transport>(
    calls: &mut Calls,
    transport: &T,
    member: &Member,
    request: &Request,
) {
    let t = transport.clone();
    let m = member.clone();
    let req = request.clone();
    let span = debug_span!("replica_call", node = %m.id, op = req.kind());
    calls.push(
        async move {
            let r = classify(t.call(&m, req).await);
            (m.id, r)
        }
        .instrument(span),
    );
}

pub(super) fn start_calls<T: Transport>(
    transport: &T,
    targets: &[Member],
    request: &Request,
) -> Calls {
    let mut set = Calls::new();
    for m in targets {
        start_call(&mut set, transport, m, request);
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
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    while progress == Progress::Pending {
        match calls.next_before(timer.as_mut()).await {
            Ok(Some((node, result))) => progress = on_reply(node, result),
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
