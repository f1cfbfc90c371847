//! Gossip: rounds that exchange cluster views with a random live peer (push-pull), the
//! answer to a peer's gossip, and the broadcast after an operator's change or a ring switch.
//!
//! Merging is [`ringkv_shared::membership::View::merge`]'s; a round also acknowledges
//! transitions and completes them when this node is the claimant.

use crate::background::every;
use crate::host_addr::HostAddr;
use crate::ring_vouches::Vouch;
use crate::state::NodeState;
use ringkv_net::transport::{Transport, TransportError};
use ringkv_shared::authority::{Authority, verify_change};
use ringkv_shared::membership::{ForeignCluster, Status, Unverified, View};
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::roles::Role;
use ringkv_shared::{Member, ReplyError};
use ringkv_shared::{NodeId, Ring};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Why a gossip exchange with a peer did not merge its view.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GossipError {
    /// The peer's view cannot belong to this cluster (another partition count, a malformed
    /// ring); it was not merged.
    #[error("{reason}")]
    ForeignView {
        /// What is wrong with it.
        reason: String,
    },
    /// The peer belongs to another cluster; its view was not merged.
    #[error("{addr}: {foreign}")]
    ForeignCluster {
        /// The peer.
        addr: SocketAddr,
        /// Both clusters.
        foreign: ForeignCluster,
    },
    /// The peer answered with an error.
    #[error("{error}")]
    Refused {
        /// Its answer.
        error: ReplyError,
    },
    /// The peer answered with a reply that is not a view.
    #[error("unexpected reply {reply}")]
    UnexpectedReply {
        /// The reply's kind.
        reply: &'static str,
    },
    /// The TLS handshake failed: the peer's certificate, or ours, is not signed by the CA the
    /// other side trusts.
    #[error(
        "{addr} refused the connection ({reason}): is its certificate signed by this cluster's CA?"
    )]
    TlsRefused {
        /// The peer.
        addr: SocketAddr,
        /// The handshake failure.
        reason: String,
    },
    /// The peer could not be reached, or the connection broke.
    #[error("{addr}: {error}")]
    Unreachable {
        /// The peer.
        addr: SocketAddr,
        /// What the transport said.
        error: TransportError,
    },
    /// The peer did not answer in time.
    #[error("{addr} did not answer within {} s", deadline.as_secs())]
    Silent {
        /// The peer.
        addr: SocketAddr,
        /// How long it was given.
        deadline: Duration,
    },
}

/// Merges a peer's view into ours and returns ours (the gossip answer). A view of another
/// cluster is refused, naming both clusters, and ours is not sent.
///
/// The sender is the node its certificate names (`role`); what it may not say is not merged
/// (see [`merge_from_peer`]).
pub(crate) fn on_gossip(state: &NodeState, role: &Role, theirs: &View) -> Response {
    if let Err(reason) = check_view(state, theirs) {
        return Response::Error(ReplyError::InvalidInput { reason });
    }
    let sender = match role {
        Role::Node(id) => Some(*id),
        Role::Admin | Role::Client => None,
    };
    if let Err(foreign) = merge_from_peer(state, theirs, sender) {
        warn!(%foreign, "refused gossip from another cluster");
        return Response::Error(ReplyError::InvalidInput {
            reason: foreign.to_string(),
        });
    }
    Response::View(Box::new(state.view()))
}

/// Merges what this node can verify of `theirs`, sent by node `sender` (if known), if it
/// belongs to this node's cluster (checked under the view's lock, so a newcomer that learns
/// its cluster from one view refuses another cluster's at once).
///
/// What the view may not say is left out ([`View::merge_checked`]): a ring or transition
/// that is not a planned step, anything about this node that only it says. A ring this node
/// cannot verify because it fell behind is taken once enough of that ring's members sent it
/// ([`vouch`]).
fn merge_from_peer(
    state: &NodeState,
    theirs: &View,
    sender: Option<NodeId>,
) -> Result<(), ForeignCluster> {
    // Most rounds find the peer's view equal to this node's: nothing to merge (the checked
    // merge of an equal view is a no-op, `the_checked_merge_of_an_equal_view_is_a_no_op`).
    if *state.view.lock().unwrap_or_else(|p| p.into_inner()) == *theirs {
        return Ok(());
    }
    let refused = state.update_view(|v| {
        v.same_cluster(theirs)?;
        let verifier = state.ring_changes.load();
        Ok(v.merge_checked(
            theirs,
            state.id,
            sender,
            state.replication,
            verifier.as_ref().as_ref(),
        )
        .1)
    })?;
    for part in refused {
        match part {
            Unverified::Ring(ring, authority) => {
                vouch(state, *ring, authority, sender, &theirs.removed_by_force)
            }
            Unverified::Transition { epoch, reason } => {
                warn!(sender = ?sender, epoch, %reason, "refused a ring change from a peer")
            }
            Unverified::AboutMe => {
                warn!(sender = ?sender, "refused another address for this node in a peer's view")
            }
        }
    }
    Ok(())
}

/// Counts `sender` for `ring`, a ring this node could not verify as a step from its own (see
/// `ring_vouches`), and takes the ring once enough of its members sent it. Only a ring an
/// operator signed counts: members vouch that the cluster reached it, the signature that an
/// operator made it, so that two stolen node certificates cannot make a ring of their own.
fn vouch(
    state: &NodeState,
    ring: Ring,
    authority: Option<Authority>,
    sender: Option<NodeId>,
    removed: &std::collections::BTreeSet<NodeId>,
) {
    let epoch = ring.epoch();
    let cluster = state.view().cluster;
    let verifier = state.ring_changes.load();
    if let Err(e) = verify_change(
        verifier.as_ref().as_ref(),
        cluster,
        &ring,
        state.replication,
        authority.as_ref(),
    ) {
        warn!(epoch, ?sender, reason = %e, "refused a ring from a peer");
        return;
    }
    let decided = state
        .ring_vouches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .vouch(state.id, ring, sender, removed);
    match decided {
        Vouch::NotCounted | Vouch::Superseded => {
            debug!(epoch, ?sender, "an unverified ring not counted")
        }
        Vouch::Waiting { by } => {
            info!(epoch, vouched = ?by, "a ring this node cannot verify; waiting for another member to send it")
        }
        Vouch::Take {
            ring,
            by,
            removed_by_force,
        } => {
            let adopted = state.update_view(|view| {
                let adopted = view.adopt_ring(&ring, authority);
                // What every voucher says was removed by force: this node may have missed
                // the signed change that did it along with the ring.
                view.removed_by_force.extend(removed_by_force);
                adopted
            });
            if adopted {
                info!(
                    epoch,
                    ?by,
                    "took a ring this node could not verify: members vouched for it"
                );
            }
        }
    }
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
    crate::departure::check(state).await;
    let switched = state.update_view(|v| v.claimant() == Some(me) && v.complete_if_done());
    if switched {
        info!(node = %me, epoch = state.ring.load().epoch(), "every handoff is done: the new ring is in force");
    }
    let view = state.view();
    let peers = view.gossip_peers(me);
    if !switched && tell_own_changes(state, &view, &peers).await {
        return;
    }
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
                .map(|(id, r)| r.member(*id)),
        );
        broadcast(state, &told).await;
        return;
    }
    let live: Vec<&Member> = peers.iter().filter(|m| !state.wire.is_down(m.id)).collect();
    let target = ringkv_net::ambient::choose(&live).map(|m| (*m).clone());
    let round = state
        .gossip_rounds
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let own_addr = view.members.get(&me).map(|r| r.addr);
    let seeds: Vec<&HostAddr> = state
        .seeds
        .iter()
        .filter(|s| Some(s.addr) != own_addr)
        .collect();
    match target {
        Some(peer) => {
            let _ = exchange(state, Peer::Member(&peer)).await;
            // Every tenth round also talks to a seed: two groups of nodes that each know only
            // themselves (a logically partitioned cluster) meet through the seeds.
            let seed = round
                .is_multiple_of(10)
                .then(|| ringkv_net::ambient::choose(&seeds).copied())
                .flatten();
            if let Some(seed) = seed {
                let _ = exchange(state, Peer::Addr(seed_address(seed).await)).await;
            }
        }
        None => {
            for seed in seeds {
                if exchange(state, Peer::Addr(seed_address(seed).await))
                    .await
                    .is_ok()
                {
                    break;
                }
            }
        }
    }
}

/// Where a seed is now: a seed given by name is resolved again each time (the address it had
/// when the config was read if it no longer resolves).
async fn seed_address(seed: &HostAddr) -> SocketAddr {
    let Some(name) = &seed.name else {
        return seed.addr;
    };
    match ringkv_net::quic::resolve_host(name.as_str()).await {
        Ok(addrs) => addrs[0],
        Err(reason) => {
            debug!(seed = %name, %reason, "seed name did not resolve; using its address at start");
            seed.addr
        }
    }
}

/// Pushes this node's view to every live peer when its own acknowledgements changed since it
/// last did (and at its first round): peers take a node's acknowledgements only from that
/// node ([`View::merge_checked`]), so they must not wait for random gossip to bring them.
/// A peer that is down then learns them from this node's later rounds. Returns whether it
/// pushed.
async fn tell_own_changes(state: &Arc<NodeState>, view: &View, peers: &[Member]) -> bool {
    let own = view.own_acknowledgements(state.id);
    let changed = {
        let mut told = state.told_peers.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *told != Some(own);
        *told = Some(own);
        changed
    };
    if !changed {
        return false;
    }
    let live: Vec<Member> = peers
        .iter()
        .filter(|m| !state.wire.is_down(m.id))
        .cloned()
        .collect();
    debug!(node = %state.id, peers = live.len(), "telling every live peer this node's own acknowledgements");
    broadcast(state, &live).await;
    !live.is_empty()
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
    Addr(SocketAddr),
}

impl Peer<'_> {
    /// The peer's node id, if it is a member.
    fn id(&self) -> Option<NodeId> {
        match self {
            Peer::Member(m) => Some(m.id),
            Peer::Addr(_) => None,
        }
    }

    fn addr(&self) -> SocketAddr {
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
pub(crate) async fn exchange(state: &Arc<NodeState>, peer: Peer<'_>) -> Result<View, GossipError> {
    let request = Request::Gossip {
        view: Box::new(state.view()),
    };
    let addr = peer.addr();
    let call = async {
        match peer {
            Peer::Member(m) => state.wire.call(m, request).await,
            Peer::Addr(a) => state.wire.call_addr(a, request).await,
        }
    };
    let result = match tokio::time::timeout(peer.timeout(), call).await {
        Ok(Ok(Response::View(theirs))) => match check_view(state, &theirs) {
            Ok(()) => match merge_from_peer(state, &theirs, peer.id()) {
                Ok(()) => Ok(*theirs),
                Err(foreign) => Err(GossipError::ForeignCluster { addr, foreign }),
            },
            Err(reason) => Err(GossipError::ForeignView { reason }),
        },
        Ok(Ok(Response::Error(error))) => Err(GossipError::Refused { error }),
        Ok(Ok(other)) => Err(GossipError::UnexpectedReply {
            reply: other.kind(),
        }),
        Ok(Err(TransportError::Refused { reason, .. })) => {
            Err(GossipError::TlsRefused { addr, reason })
        }
        Ok(Err(error)) => Err(GossipError::Unreachable { addr, error }),
        Err(_) => Err(GossipError::Silent {
            addr,
            deadline: peer.timeout(),
        }),
    };
    match &result {
        // A peer of another cluster, or one refusing our view (another cluster's, or our
        // certificate's role), is a misconfiguration an operator must see, not churn.
        Err(error @ (GossipError::ForeignCluster { .. } | GossipError::Refused { .. })) => {
            warn!(%addr, %error, "gossip exchange refused")
        }
        Err(error) => debug!(%addr, %error, "gossip exchange failed"),
        Ok(_) => {}
    }
    result
}
