//! The node's side of membership: the persisted, installed cluster view, gossip rounds, and
//! the operator's requests (`ringkv join`, `leave`, `plan`, `commit`).
//!
//! The decisions are [`ringkv_shared::membership`]'s; this module stores the view, installs
//! its ring for the request path, and carries views over the network.

use crate::background::every;
use crate::state::NodeState;
use rand::seq::IndexedRandom;
use ringkv_net::transport::{Transport, TransportError};
use ringkv_shared::encoding::{decode_view, encode_view};
use ringkv_shared::membership::{Status, View};
use ringkv_shared::proto::{AdminReply, AdminRequest, NodeStatus, Request, Response};
use ringkv_shared::{Member, ReplyError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The metadata record holding the persisted view.
pub(crate) const VIEW_RECORD: &str = "view";

impl NodeState {
    /// Applies `f` to the view. If the view changed, it is written to disk (synced) and its
    /// ring and transition are installed for the request path before this returns.
    pub(crate) fn update_view<R>(&self, f: impl FnOnce(&mut View) -> R) -> R {
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let before = view.clone();
        let out = f(&mut view);
        if *view != before {
            if let Err(e) = self.store.meta_put(VIEW_RECORD, &encode_view(&view)) {
                warn!(error = %e, "cannot persist the cluster view; it will be gossiped again");
            }
            if view.ring != before.ring {
                info!(node = %self.id, epoch = view.ring.epoch(), "installing a new ring");
                self.ring.store(Arc::new(view.ring.clone()));
                self.sweep_wanted.notify_one();
            }
            if view.members.len() != before.members.len() {
                self.known_nodes
                    .store(Arc::new(view.members.keys().copied().collect()));
            }
            if view.transition != before.transition {
                self.transition.store(view.transition.clone().map(Arc::new));
            }
        }
        out
    }

    /// A copy of the current view.
    pub(crate) fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why a node has no view to start with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// Its storage could not be read.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// No ring can be built from the configured members.
    #[error(transparent)]
    Ring(#[from] ringkv_shared::ring::RingError),
}

/// The view a node starts with: the persisted one if there is one (a restarted node rejoins as
/// it was, without being joined again), else a new cluster's from `members`, else a newcomer's.
pub(crate) fn initial_view(
    store: &crate::storage::Store,
    me: Member,
    partitions: u32,
    founders: Vec<Member>,
) -> Result<View, StartError> {
    if let Some(bytes) = store.meta_get(VIEW_RECORD)? {
        match decode_view(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.validate(partitions)?;
                Ok(v)
            }) {
            Ok(view) => return Ok(view),
            Err(e) => {
                warn!(error = %e, "the persisted cluster view is unreadable; starting from the config and relearning it by gossip")
            }
        }
    }
    if founders.is_empty() {
        Ok(View::newcomer(me, partitions)?)
    } else {
        Ok(View::bootstrap(ringkv_shared::Ring::balanced(
            partitions, founders,
        )?))
    }
}

/// Merges a peer's view into ours and returns ours (the gossip answer).
pub(crate) fn on_gossip(state: &NodeState, theirs: &View) -> Response {
    if let Err(reason) = check_view(state, theirs) {
        return Response::Error(ReplyError::InvalidInput { reason });
    }
    state.update_view(|v| v.merge(theirs));
    Response::View(Box::new(state.view()))
}

/// Refuses a view that cannot belong to this cluster.
fn check_view(state: &NodeState, view: &View) -> Result<(), String> {
    view.validate(state.ring.load().partition_count())
}

/// Gossips about once per interval until `stop`.
pub(crate) async fn run(state: Arc<NodeState>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.background.gossip_interval_ms);
    every(interval, stop, || {
        let state = state.clone();
        async move {
            gossip_round(&state).await;
        }
    })
    .await;
}

/// One round: acknowledge a transition seen since the last round, complete a finished
/// transition if this node is the claimant, then exchange views with one random live peer (or
/// a seed, if there is none).
pub(crate) async fn gossip_round(state: &Arc<NodeState>) {
    let me = state.id;
    // Acknowledge a transition one round after it arrived: by then every write this node
    // started before seeing it has had a round to finish, so a scan that begins once every
    // node acknowledged it misses none of them.
    //
    // Two more conditions make "every write" hold: no write this node began without knowing
    // the transition is still replicating (however long its deadline), and this node has
    // dropped its stale copies for the ring in force (a handoff to it must not land in a
    // partition it is about to drop). See `in_flight` and `sweep`.
    let noticed = state.transition.load().as_ref().map(|t| t.target.epoch());
    let previous = state
        .noticed_transition
        .swap(noticed.unwrap_or(0), std::sync::atomic::Ordering::AcqRel);
    if let Some(epoch) = noticed.filter(|e| *e == previous)
        && crate::sweep::has_swept(state, state.ring.load().epoch())
        && !state.in_flight.any_before_transition(epoch)
    {
        state.update_view(|v| v.mark_seen(me));
    }
    crate::sweep::report(state);
    let switched = state.update_view(|v| v.claimant() == Some(me) && v.complete_if_done());
    if switched {
        info!(node = %me, epoch = state.ring.load().epoch(), "every handoff is done: the new ring is in force");
    }
    let view = state.view();
    let peers = view.gossip_peers(me);
    if switched {
        // Everyone should route by the new ring at once, not after a few rounds; the nodes
        // just removed too, so that they drop their data and report it (`sweep`).
        let mut told = peers.clone();
        told.extend(
            view.members
                .iter()
                .filter(|(id, r)| {
                    **id != me
                        && r.status == Status::Removed
                        && view.swept.get(id) != Some(&ringkv_shared::membership::SWEPT_FOR_GOOD)
                })
                .map(|(id, r)| Member {
                    id: *id,
                    addr: r.addr,
                }),
        );
        broadcast(state, &told).await;
        return;
    }
    let live: Vec<&Member> = peers.iter().filter(|m| !state.quic.is_down(m.id)).collect();
    let target = live.choose(&mut rand::rng()).map(|m| (*m).clone());
    let round = state
        .gossip_rounds
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let own_addr = view.members.get(&me).map(|r| r.addr);
    let seeds: Vec<std::net::SocketAddr> = state
        .seeds
        .iter()
        .copied()
        .filter(|s| Some(*s) != own_addr)
        .collect();
    match target {
        Some(peer) => {
            let _ = exchange(state, Peer::Member(&peer)).await;
            // Every tenth round also talks to a seed: two groups of nodes that each know only
            // themselves (a logically partitioned cluster) meet through the seeds.
            let seed = round
                .is_multiple_of(10)
                .then(|| seeds.choose(&mut rand::rng()).copied())
                .flatten();
            if let Some(seed) = seed {
                let _ = exchange(state, Peer::Addr(seed)).await;
            }
        }
        None => {
            for seed in seeds {
                if exchange(state, Peer::Addr(seed)).await.is_ok() {
                    break;
                }
            }
        }
    }
}

/// Pushes this node's view to every peer at once (after an operator's change or a ring
/// switch), merging their answers.
pub(crate) async fn broadcast(state: &Arc<NodeState>, peers: &[Member]) {
    let mut calls = tokio::task::JoinSet::new();
    for peer in peers {
        let (s, peer) = (state.clone(), peer.clone());
        calls.spawn(async move { exchange(&s, Peer::Member(&peer)).await });
    }
    while calls.join_next().await.is_some() {}
}

/// Whom a gossip exchange goes to.
#[derive(Clone, Copy)]
pub(crate) enum Peer<'a> {
    /// A member of the view (its id feeds the failure detector).
    Member(&'a Member),
    /// An address whose node id is not known yet: a seed, or a node an operator names.
    Addr(std::net::SocketAddr),
}

impl Peer<'_> {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Peer::Member(m) => m.addr,
            Peer::Addr(a) => *a,
        }
    }

    /// Members answer within a round; a node named by address gets longer (it may be
    /// starting).
    fn timeout(&self) -> Duration {
        match self {
            Peer::Member(_) => Duration::from_secs(2),
            Peer::Addr(_) => Duration::from_secs(3),
        }
    }
}

/// Sends this node's view to `peer` and merges the view it answers with (push-pull). Returns
/// the peer's view.
pub(crate) async fn exchange(state: &Arc<NodeState>, peer: Peer<'_>) -> Result<View, String> {
    let request = Request::Gossip {
        view: Box::new(state.view()),
    };
    let addr = peer.addr();
    let call = async {
        match peer {
            Peer::Member(m) => state.quic.call(m, request).await,
            Peer::Addr(a) => state.quic.call_addr(a, request).await,
        }
    };
    let result = match tokio::time::timeout(peer.timeout(), call).await {
        Ok(Ok(Response::View(theirs))) => check_view(state, &theirs).map(|()| {
            state.update_view(|v| v.merge(&theirs));
            *theirs
        }),
        Ok(Ok(Response::Error(e))) => Err(e.to_string()),
        Ok(Ok(other)) => Err(format!("unexpected reply {}", other.kind())),
        Ok(Err(TransportError::Refused { reason, .. })) => Err(format!(
            "{addr} refused the connection ({reason}): is its certificate signed by this cluster's CA?"
        )),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!(
            "{addr} did not answer within {} s",
            peer.timeout().as_secs()
        )),
    };
    if let Err(reason) = &result {
        debug!(%addr, %reason, "gossip exchange failed");
    }
    result
}

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
            let node = match (node, addr) {
                (_, Some(addr)) => {
                    let theirs = match exchange(state, Peer::Addr(addr)).await {
                        Ok(v) => v,
                        Err(reason) => return invalid(format!("cannot join {addr}: {reason}")),
                    };
                    match theirs.members.iter().find(|(_, r)| r.addr == addr) {
                        Some((id, _)) => *id,
                        None => {
                            return invalid(format!(
                                "{addr} answered but does not list itself at that address"
                            ));
                        }
                    }
                }
                (Some(id), None) => id,
                (None, None) => return invalid("name the node to join by id or address".into()),
            };
            match state.update_view(|v| v.stage_join(node)) {
                Ok(()) => {
                    format!("node {node} staged to join; see `ringkv plan`, then `ringkv commit`")
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
                    let transfers =
                        ringkv_shared::handoff::transfers(&view.ring, &target, n.into());
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
            match state.update_view(|v| v.commit(n).map(|t| t.target.epoch())) {
                Ok(epoch) => {
                    info!(node = %state.id, epoch, "ring change committed; handoffs start once every node has seen it");
                    format!(
                        "committed: data moves to the new owners, then the ring becomes epoch {epoch}; follow with `ringkv handoffs`"
                    )
                }
                Err(e) => return invalid(e.to_string()),
            }
        }
        AdminRequest::Clear => {
            state.update_view(|v| v.clear_staged());
            "staged changes cleared".to_string()
        }
    };
    // Spread an operator's change at once rather than over a few rounds.
    let peers = state.view().gossip_peers(state.id);
    broadcast(state, &peers).await;
    Response::Admin(AdminReply::Done { message: reply })
}
