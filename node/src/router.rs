//! Router mode: this node accepts a client operation for any key and coordinates it, as a node
//! behind a load balancer does in Dynamo.
//!
//! Reads fan out from here to the key's N replicas (this node included if it is one) and
//! return after R, with read repair; with `router.read_hedge_us` or `read_hedge_percentile`
//! set, to R of them first and one more per hedge delay. Writes are coordinated here if this node is a replica;
//! otherwise they are forwarded to the first healthy replica, because only a replica holding
//! the key can stamp a dot that follows what it stored.

use crate::coordinator;
use crate::node_transport::NodeTransport;
use crate::state::NodeState;
use bytes::Bytes;
use ringkv_net::fanout;
use ringkv_shared::proto::{Quorum, Response};
use ringkv_shared::{ReplyError, VersionVector};
use std::sync::Arc;

/// A quorum read coordinated here.
pub(crate) async fn get(state: &Arc<NodeState>, key: Bytes, quorum: Quorum) -> Response {
    if let Err(reason) = quorum.validate() {
        return Response::Error(ReplyError::InvalidInput { reason });
    }
    let quorum = quorum.for_coordinator();
    let ring = state.ring.load_full();
    let preference = ring.preference_members(&key);
    let peers = NodeTransport(state.clone());
    let plan = fanout::ReadPlan {
        key,
        preference,
        n: quorum.n.into(),
        required: quorum.required.into(),
        timeout: quorum.timeout(),
        repair: fanout::Repair::Write,
        on_repair: Some(fanout::RepairCount({
            let repairs = state.metrics.read_repairs.clone();
            std::sync::Arc::new(move |stale| {
                repairs.inc_by(stale);
            })
        })),
    };
    match fanout::read_with_hedger(&peers, plan, state.read_hedge.as_ref()).await {
        Ok(outcome) => Response::Read {
            object: outcome.object,
            answers: outcome.answers,
        },
        Err(e) => Response::Error(e),
    }
}

/// Read repair a client asked for ([`ringkv_shared::proto::Request::Repair`]): this owner
/// reads `key` from every owner, in the background, and writes the merge to those that
/// answer with less ([`fanout::repair_owners`]). Answers at once; the client does not wait
/// for the repair.
///
/// At most [`MAX_REPAIRS_IN_FLIGHT`] run at once, each until its last read and write is
/// over: a request past that is refused (`Unavailable`, counted in `repairs_refused`) and
/// anti-entropy repairs the key, so a client that sends repairs without end cannot make a
/// node start reads without end.
pub(crate) fn repair(state: &Arc<NodeState>, key: Bytes) -> Response {
    let ring = state.ring.load_full();
    let preference = ring.preference_members(&key);
    let n = usize::from(state.replication).min(preference.len());
    if !preference[..n].iter().any(|m| m.id == state.id) {
        return Response::Error(ReplyError::NotReplica {
            node: state.id,
            partition: ring.partition_of(&key),
        });
    }
    let Ok(running) = state.repairs.clone().try_acquire_owned() else {
        crate::metrics::Metrics::add(&state.metrics.repairs_refused, 1);
        return Response::Error(ReplyError::Unavailable {
            reason: format!(
                "{MAX_REPAIRS_IN_FLIGHT} read repairs are running here; anti-entropy will repair this key"
            ),
        });
    };
    let peers = NodeTransport(state.clone());
    let mut owners = preference;
    owners.truncate(n);
    let counted = state.clone();
    tokio::spawn(async move {
        let _running = running;
        let stale = fanout::repair_owners(&peers, key, &owners, REPAIR_TIMEOUT).await;
        crate::metrics::Metrics::add(&counted.metrics.read_repairs, stale.len() as u64);
    });
    Response::Written
}

/// The most read repairs a node runs at once for clients.
pub const MAX_REPAIRS_IN_FLIGHT: usize = 256;

/// How long an owner asked to repair a key waits for the replicas' answers.
const REPAIR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A write coordinated here (or by the first healthy replica, if this node is not one).
pub(crate) async fn put(
    state: &Arc<NodeState>,
    key: Bytes,
    context: VersionVector,
    value: Option<Bytes>,
    quorum: Quorum,
    return_body: bool,
) -> Response {
    if let Err(reason) = quorum.validate() {
        return Response::Error(ReplyError::InvalidInput { reason });
    }
    let quorum = quorum.for_coordinator();
    let ring = state.ring.load_full();
    let replicas = ring
        .replicas(ring.partition_of(&key), quorum.n.into())
        .to_vec();
    if replicas.contains(&state.id) {
        return coordinator::put(state, key, context, value, quorum, return_body).await;
    }
    let members = ring.members_of(&replicas);
    let write = fanout::DelegatedPut {
        key,
        context,
        value,
        quorum,
        return_body,
    };
    match fanout::delegate_put(&NodeTransport(state.clone()), write, &members).await {
        Ok(reply) => Response::Put(reply),
        Err(e) => Response::Error(e),
    }
}
