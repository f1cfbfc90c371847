//! Request dispatch: one request in, one reply out.

use crate::state::NodeState;
use crate::{anti_entropy, coordinator, reaper, replica, router};
use ringkv_shared::proto::{Reply, Request, Response};
use ringkv_shared::roles::{self, Role};
use std::sync::Arc;
use tracing::{Instrument, debug_span, warn};

/// Serves one request from a peer whose certificate names `role`. Never panics on input:
/// every failure becomes a [`Response::Error`].
///
/// Every request is admitted here, once: against the sender's role ([`roles::permits`]: a
/// client may not write replicas, enumerate keys, gossip or administer), then against the
/// limits ([`Request::check_limits`]); handlers take their keys and values as checked. Calls a
/// node makes to itself (`node_transport::NodeTransport`) carry keys a request admitted here.
pub(crate) async fn handle(state: &Arc<NodeState>, role: &Role, request: Request) -> Reply {
    let op = request.kind();
    let started = std::time::Instant::now();
    let span = debug_span!("request", node = %state.id, op);
    let body = async {
        if !roles::permits(role, &request) {
            warn!(op, role = %role.name(), "refused: the sender's certificate does not allow it");
            return Response::Error(ringkv_shared::ReplyError::Forbidden {
                request: op.into(),
                role: role.name(),
            });
        }
        // A node removed by force is told so by gossip, and answered nothing else: the cluster
        // no longer counts its copies, so none may spread.
        if let Role::Node(id) = role
            && !matches!(request, Request::Gossip { .. })
            && state.shut_out.load().contains(id)
        {
            warn!(op, node = %id, "refused: the sender was removed from the cluster by force");
            return Response::Error(ringkv_shared::ReplyError::Forbidden {
                request: op.into(),
                role: format!("{} (removed from the cluster by force)", role.name()),
            });
        }
        // Admission: every key, value and batch size against the limits, once, here.
        if let Err(reason) = request.check_limits(&state.limits) {
            return Response::Error(ringkv_shared::ReplyError::InvalidInput { reason });
        }
        // Handlers that call other nodes (coordinating, routing, handoff, admin) have futures
        // of kilobytes; boxed, they do not make every request's future (and the task and box
        // it is moved into) that large: replica reads and writes are most requests.
        match request {
            Request::Ping => Response::Pong { node: state.id },
            Request::GetRing => Response::Ring((**state.ring.load()).clone()),
            Request::Read { key } => replica::read(state, key),
            Request::Write {
                key,
                object,
                hint_for,
            } => replica::write(state, key, object, hint_for).await,
            Request::Put {
                key,
                context,
                value,
                quorum,
                return_body,
            } => {
                Box::pin(coordinator::put(
                    state,
                    key,
                    context,
                    value,
                    quorum.capped(),
                    return_body,
                ))
                .await
            }
            Request::Stats => Response::Stats(crate::stats::collect(state)),
            Request::AeRoots { epoch, partitions } => anti_entropy::roots(state, epoch, partitions),
            Request::AeLeaves { partition } => anti_entropy::leaves(state, partition),
            Request::AeEntries { partition, leaves } => {
                anti_entropy::entries(state, partition, leaves)
            }
            Request::ReadMany { keys } => anti_entropy::read_many(state, keys),
            Request::WriteMany { epoch, items } => {
                Box::pin(anti_entropy::write_many(state, epoch, items)).await
            }
            Request::HintsFor { key } => reaper::hints_for(state, key),
            Request::Reap { key, clock } => Box::pin(reaper::reap(state, key, clock)).await,
            Request::RouteGet { key, quorum } => {
                Box::pin(router::get(state, key, quorum.capped())).await
            }
            Request::RoutePut {
                key,
                context,
                value,
                quorum,
                return_body,
            } => {
                Box::pin(router::put(
                    state,
                    key,
                    context,
                    value,
                    quorum.capped(),
                    return_body,
                ))
                .await
            }
            Request::Gossip { view } => crate::gossip::on_gossip(state, role, &view),
            Request::Handoff {
                epoch,
                transfer,
                items,
            } => {
                Box::pin(crate::partition_handoff::receive(
                    state, epoch, transfer, items,
                ))
                .await
            }
            Request::Admin(request) => Box::pin(crate::admin::admin(state, request)).await,
            Request::Repair { key } => router::repair(state, key),
            Request::Batch { .. } => Response::Error(ringkv_shared::ReplyError::Malformed {
                reason: "a batch header is only valid as the first frame of a stream".into(),
            }),
        }
    }
    .instrument(span)
    .await;
    state.metrics.served(
        op,
        crate::metrics::outcome(&body),
        started.elapsed().as_secs_f64(),
    );
    Reply {
        epoch: state.ring.load().epoch(),
        body,
    }
}
