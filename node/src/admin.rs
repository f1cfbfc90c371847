//! Operators' requests (`ringkv status`, `join`, `leave`, `remove --force`, `replace`, `plan`,
//! `commit`, `abort`, `clear`): staged in
//! the view, then spread by an immediate broadcast; and `ringkv backup`, a copy of this node's
//! storage made on its own host.

use crate::gossip::{Peer, broadcast, exchange};
use crate::state::NodeState;
use ringkv_shared::ReplyError;
use ringkv_shared::proto::{AdminReply, AdminRequest, NodeStatus, Response};
use std::sync::Arc;
use tracing::{info, warn};

/// Serves an operator's request.
pub(crate) async fn admin(state: &Arc<NodeState>, request: AdminRequest) -> Response {
    let n = state.replication;
    let invalid = |reason: String| Response::Error(ReplyError::InvalidInput { reason });
    let reply = match request {
        AdminRequest::Status => {
            let sending = state
                .sending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(t, p)| (*t, *p))
                .collect();
            return Response::Admin(AdminReply::Status(Box::new(NodeStatus {
                node: state.id,
                n,
                view: state.view(),
                sending,
            })));
        }
        AdminRequest::Join { node, addr } => {
            let node = match joiner(state, node, addr).await {
                Ok(node) => node,
                Err(reason) => return invalid(reason),
            };
            match state.update_view(|v| v.stage_join(node)) {
                Ok(()) => {
                    format!("node {node} staged to join; see `ringkv plan`, then `ringkv commit`")
                }
                Err(e) => return invalid(e.to_string()),
            }
        }
        AdminRequest::RemoveForced { node } => {
            match state.update_view(|v| v.stage_remove_forced(node, n)) {
                Ok(()) => {
                    warn!(node = %state.id, removed = %node, "a node is staged to be removed by force");
                    format!(
                        "node {node} staged to be removed by force: its partitions will be copied from their other replicas, and nothing will wait for it. It must never come back with its data: wipe its data directory before starting that host again. See `ringkv plan`, then confirm with `ringkv commit --forced {node}`"
                    )
                }
                Err(e) => return invalid(e.to_string()),
            }
        }
        AdminRequest::Replace { dead, node, addr } => {
            let new = match joiner(state, node, addr).await {
                Ok(node) => node,
                Err(reason) => return invalid(reason),
            };
            let staged = state.update_view(|v| {
                let mut next = v.clone();
                next.stage_join(new)?;
                next.stage_remove_forced(dead, n)?;
                *v = next;
                Ok::<(), ringkv_shared::membership::ChangeError>(())
            });
            match staged {
                Ok(()) => {
                    warn!(node = %state.id, %dead, %new, "a dead node is staged to be replaced");
                    format!(
                        "node {dead} staged to be removed by force and node {new} to join in its place; see `ringkv plan`, then confirm with `ringkv commit --forced {dead}`"
                    )
                }
                Err(e) => return invalid(e.to_string()),
            }
        }
        AdminRequest::Leave { node } => match state.update_view(|v| v.stage_leave(node, n)) {
            Ok(()) => {
                format!("node {node} staged to leave; see `ringkv plan`, then `ringkv commit`")
            }
            Err(e) => return invalid(e.to_string()),
        },
        AdminRequest::Plan => {
            let view = state.view();
            return match view.planned_with(n) {
                Ok(target) => {
                    let mut transfers =
                        ringkv_shared::handoff::transfers(&view.ring, &target, n.into());
                    // Nothing is copied from a node removed by force.
                    transfers.retain(|t| !view.staged.forced.contains(&t.from));
                    Response::Admin(AdminReply::Plan {
                        current: Box::new(view.ring.clone()),
                        target: Box::new(target),
                        transfers,
                    })
                }
                Err(e) => invalid(e.to_string()),
            };
        }
        AdminRequest::Commit => {
            return invalid(
                "a ring change must be signed by an operator: commit with `ringkv commit` from this release (it signs the plan with the key of its --cert, an admin certificate)"
                    .to_string(),
            );
        }
        AdminRequest::CommitSigned { target, authority } => {
            let committed = state.update_view(|v| {
                signed_by_operator(state, v, &target, &authority)
                    .map_err(|e| format!("refused the commit: {e}"))?;
                v.commit(n, &target, authority)
                    .map(|t| t.target.epoch())
                    .map_err(|e| e.to_string())
            });
            match committed {
                Ok(epoch) => {
                    info!(node = %state.id, epoch, "ring change committed; handoffs start once every node has seen it");
                    format!(
                        "committed: data moves to the new owners, then the ring becomes epoch {epoch}; follow with `ringkv handoffs`"
                    )
                }
                Err(e) => {
                    warn!(node = %state.id, reason = %e, "refused a ring change commit");
                    return invalid(e);
                }
            }
        }
        AdminRequest::AbortSigned { target, authority } => {
            let aborted = state.update_view(|v| {
                signed_by_operator(state, v, &target, &authority)
                    .map_err(|e| format!("refused the abort: {e}"))?;
                v.abort(state.id, n, &target, authority)
                    .map_err(|e| e.to_string())
            });
            match aborted {
                Ok(()) => {
                    warn!(node = %state.id, epoch = target.epoch(), "ring change aborted by an operator; the owners stay as they were");
                    format!(
                        "aborted: the owners stay as they were, as ring epoch {}; copies already handed to new owners are dropped by them",
                        target.epoch()
                    )
                }
                Err(e) => {
                    warn!(node = %state.id, reason = %e, "refused an abort");
                    return invalid(e);
                }
            }
        }
        AdminRequest::Clear => {
            state.update_view(|v| v.clear_staged());
            "staged changes cleared".to_string()
        }
        AdminRequest::Backup { dir } => return backup(state, dir).await,
    };
    // Spread an operator's change at once rather than over a few rounds.
    let peers = state.view().gossip_peers(state.id);
    broadcast(state, &peers).await;
    Response::Admin(AdminReply::Done { message: reply })
}

/// Checks that `authority` is an operator's signature over the change of `view`'s cluster
/// to `target` at this cluster's replication factor.
fn signed_by_operator(
    state: &NodeState,
    view: &ringkv_shared::membership::View,
    target: &ringkv_shared::Ring,
    authority: &ringkv_shared::authority::Authority,
) -> Result<(), ringkv_shared::authority::AuthorityError> {
    let verifier = state.ring_changes.load();
    ringkv_shared::authority::verify_change(
        verifier.as_ref().as_ref(),
        view.cluster,
        target,
        state.replication,
        Some(authority),
    )
}

/// The node an operator names to join: by id, or by address (asked who it is; its
/// certificate must be the cluster's).
async fn joiner(
    state: &Arc<NodeState>,
    node: Option<ringkv_shared::NodeId>,
    addr: Option<std::net::SocketAddr>,
) -> Result<ringkv_shared::NodeId, String> {
    match (node, addr) {
        (_, Some(addr)) => {
            let theirs = exchange(state, Peer::Addr(addr))
                .await
                .map_err(|reason| format!("cannot join {addr}: {reason}"))?;
            theirs
                .members
                .iter()
                .find(|(_, r)| r.addr == addr)
                .map(|(id, _)| *id)
                .ok_or_else(|| format!("{addr} answered but does not list itself at that address"))
        }
        (Some(id), None) => Ok(id),
        (None, None) => Err("name the node to join by id or address".into()),
    }
}

/// `ringkv backup DIR`: copies this node's storage into `dir` on its host (see
/// [`crate::storage::Store::backup_to`]), off the request threads; writes go on meanwhile.
async fn backup(state: &Arc<NodeState>, dir: String) -> Response {
    let path = std::path::PathBuf::from(&dir);
    if !path.is_absolute() {
        return Response::Error(ReplyError::InvalidInput {
            reason: format!(
                "the backup directory must be an absolute path on the node's host, not {dir:?}"
            ),
        });
    }
    let worker = state.clone();
    let started = std::time::Instant::now();
    let copied = tokio::task::spawn_blocking(move || worker.store.backup_to(&path)).await;
    match copied {
        Ok(Ok(summary)) => {
            info!(node = %state.id, %dir, %summary, secs = started.elapsed().as_secs_f64(), "backup taken");
            Response::Admin(AdminReply::Done {
                message: format!(
                    "node {} backed up into {dir} on its host in {:.1} s: {summary}; restore with `ringkv-node restore --config <its config> --from {dir}`",
                    state.id,
                    started.elapsed().as_secs_f64()
                ),
            })
        }
        Ok(Err(e)) => {
            warn!(node = %state.id, %dir, error = %e, "backup failed");
            Response::Error(ReplyError::InvalidInput {
                reason: format!("backup into {dir} failed: {e}"),
            })
        }
        Err(e) => Response::Error(ReplyError::Unavailable {
            reason: format!("the backup task failed: {e}"),
        }),
    }
}
