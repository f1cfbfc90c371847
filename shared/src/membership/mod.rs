//! A node's view of the cluster, as gossip spreads it, and the deterministic merge of two views.
//!
//! A [`View`] holds
//! - one [`MemberRecord`] per node ever seen: address, [`Status`] and a version the node (or an
//!   operator acting through any node) bumps with every change;
//! - the current [`Ring`] (its epoch orders rings);
//! - the **staged** changes an operator has asked for but not committed;
//! - the committed [`Transition`], if one is under way: the target ring, the handoff transfers
//!   already done, and which nodes have seen the transition;
//! - per node, the highest transition each node has acknowledged seeing.
//!
//! [`View::merge`] is a join: commutative, associative and idempotent (property-tested), so
//! gossip converges whatever order views meet in. Every part is merged by a total order (higher
//! version, then a fixed tie-break) or by set union, never by wall clock or by who sent it.
//!
//! Ownership changes only through a committed transition. Failure detection never touches the
//! view: a node that stops answering stays a member owning its partitions, as in Dynamo.
//!
//! # Layout
//! - `mod.rs`: the types, building and validating a view, and what it says (status, peers,
//!   claimant);
//! - `merge.rs`: [`View::merge`] and the node's [`View::merge_checked`];
//! - `changes.rs`: status and address changes, staging and committing joins and leaves, and the
//!   acknowledgements that end a transition;
//! - `tests.rs`: unit and property tests.

use crate::authority::Authority;
use crate::handoff::Transfer;
use crate::host_name::HostName;
use crate::ids::{ClusterId, NodeId};
use crate::planner::{PlanError, is_planned_step, plan};
use crate::ring::{Member, Ring};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

mod changes;
mod merge;

/// The [`View::swept`] entry of a node that swept a ring it is not a member of: it dropped
/// everything and will never hold data again (a removed node).
pub const SWEPT_FOR_GOOD: u64 = u64::MAX;

/// A member's place in the cluster's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Known (it announced itself or an operator named it), owns nothing yet.
    Joining,
    /// Owns partitions.
    Up,
    /// Staged or committed to leave; owns partitions until its transition completes.
    Leaving,
    /// Left the ring; owns nothing and is no longer gossiped with.
    Removed,
}

impl Status {
    /// The stage's name: `joining`, `up`, `leaving`, `removed` (also a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Up => "up",
            Status::Leaving => "leaving",
            Status::Removed => "removed",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the view knows of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Where the node listens.
    pub addr: SocketAddr,
    /// Its life-cycle status.
    pub status: Status,
    /// Bumped with every change to this record; the higher version wins a merge.
    pub version: u64,
    /// The name the node announces itself by, if any ([`Member::host`]). Last in the record
    /// and left out when absent or in a frame of a version without names.
    #[serde(default, skip_serializing_if = "crate::host_name::omit")]
    pub host: Option<HostName>,
}

impl MemberRecord {
    /// The member this record describes, as the ring and the transports take it.
    pub fn member(&self, id: NodeId) -> Member {
        Member {
            id,
            addr: self.addr,
            host: self.host.clone(),
        }
    }

    /// The record that wins a merge: higher version, then later status, then address order.
    fn wins_over(&self, other: &MemberRecord) -> bool {
        (self.version, self.status, self.addr) > (other.version, other.status, other.addr)
    }
}

/// Changes an operator has staged but not committed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Bumped with every change; the higher version wins a merge.
    pub version: u64,
    /// Nodes to add.
    pub joins: BTreeSet<NodeId>,
    /// Nodes to remove.
    pub leaves: BTreeSet<NodeId>,
    /// Of `leaves`, the nodes to remove by force: dead for good, so the change copies
    /// nothing from them and waits for nothing from them. Not encoded when empty (the shape
    /// of releases before forced removal).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub forced: BTreeSet<NodeId>,
}

impl Staged {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }
}

/// A committed ring change under way: data moves to the target ring's new replicas, then the
/// target becomes the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The ring after the change (its epoch is the current ring's plus one).
    pub target: Ring,
    /// The replication factor the transfers were planned for.
    pub n: u8,
    /// Transfers finished so far.
    pub done: BTreeSet<Transfer>,
    /// Leaving nodes that have handed over every hint they held, after their transfers were
    /// done. The ring switches only when every leaver is here: a hint a leaver took away with
    /// it would be a write lost.
    #[serde(default)]
    pub hints_handed_over: BTreeSet<NodeId>,
    /// The operator's signature over the change ([`crate::authority`]): a node takes a
    /// transition from a peer only with one that verifies.
    #[serde(default)]
    pub authority: Option<Authority>,
}

impl Transition {
    /// The nodes this change removes by force, as the operator signed them: nothing is
    /// copied from them and nothing waits for them (they are dead for good).
    pub fn forced(&self) -> &BTreeSet<NodeId> {
        static NONE: BTreeSet<NodeId> = BTreeSet::new();
        self.authority.as_ref().map_or(&NONE, |a| &a.forced)
    }

    /// Every transfer the transition needs, given the ring it starts from: from each old
    /// replica to each new one, except from nodes removed by force (the other old replicas
    /// send their copies instead).
    pub fn transfers(&self, from: &Ring) -> Vec<Transfer> {
        let mut all = crate::handoff::transfers(from, &self.target, self.n.into());
        let forced = self.forced();
        if !forced.is_empty() {
            all.retain(|t| !forced.contains(&t.from));
        }
        all
    }

    /// The transfers not done yet.
    pub fn remaining(&self, from: &Ring) -> Vec<Transfer> {
        self.transfers(from)
            .into_iter()
            .filter(|t| !self.done.contains(t))
            .collect()
    }

    /// The nodes of `from` that the target ring drops.
    pub fn leavers(&self, from: &Ring) -> Vec<NodeId> {
        from.members()
            .map(|m| m.id)
            .filter(|id| self.target.member(*id).is_none())
            .collect()
    }

    /// Leavers that still have to hand over their hints (not those removed by force: what
    /// they held is gone with them).
    pub fn hints_pending(&self, from: &Ring) -> Vec<NodeId> {
        let forced = self.forced();
        self.leavers(from)
            .into_iter()
            .filter(|id| !self.hints_handed_over.contains(id) && !forced.contains(id))
            .collect()
    }
}

/// Why an operator's request cannot be applied to a view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The node is not known to the cluster.
    #[error(
        "node {node} is not known to the cluster; start it with this cluster's seeds, or name its address"
    )]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The node is already in the state asked for, or cannot move to it.
    #[error("node {node} is {status}: {reason}")]
    BadStatus {
        /// The node.
        node: NodeId,
        /// Its status.
        status: Status,
        /// Why the change does not apply.
        reason: &'static str,
    },
    /// Nothing is staged.
    #[error("nothing is staged: stage a join or a leave first, then plan and commit")]
    NothingStaged,
    /// A transition is still under way.
    #[error(
        "ring change to epoch {epoch} is still moving data; wait for it to finish (see `ringkv handoffs`)"
    )]
    Busy {
        /// The target epoch of the running transition.
        epoch: u64,
    },
    /// The planner refused the change.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A removal by force would leave partitions with no replica to copy from.
    #[error(
        "removing {nodes:?} by force leaves partitions {partitions:?} with no other replica to copy their data from: it would be lost. Bring one of their nodes back, or restore it from a backup, and remove the others"
    )]
    NoSurvivingReplica {
        /// The nodes staged for removal by force.
        nodes: Vec<NodeId>,
        /// Partitions (at most the first 16) all of whose replicas would be removed by force.
        partitions: Vec<crate::ring::PartitionId>,
    },
    /// There is no committed change to abort.
    #[error("no ring change is running: there is nothing to abort")]
    NothingToAbort,
    /// The running change removes nodes by force: they may already have dropped their data.
    #[error(
        "the running change removes {nodes:?} by force; it cannot be aborted (a node removed by force drops its data as soon as it hears of it): let it finish, then join a node"
    )]
    AbortForced {
        /// The nodes it removes by force.
        nodes: Vec<NodeId>,
    },
    /// The planner would rebalance the current ring: restoring it cannot be signed as a
    /// planned step.
    #[error("the current ring is not one the planner keeps as it is; the change cannot be aborted")]
    AbortWouldMove,
    /// Only the claimant (the node that completes changes) may abort one, so that an abort
    /// and the change's completion never both happen.
    #[error(
        "only node {claimant}, which completes ring changes, can abort one: ask it (`ringkv abort` does)"
    )]
    NotClaimant {
        /// The claimant.
        claimant: NodeId,
    },
    /// The signed target is not the ring the staged changes lead to now (someone staged or
    /// cleared a change since the plan was signed).
    #[error(
        "the plan changed since it was signed (it now leads to another ring); run `ringkv plan` and commit again"
    )]
    PlanChanged,
}

/// A node's view of the cluster. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Every node ever seen.
    pub members: BTreeMap<NodeId, MemberRecord>,
    /// The current ring.
    pub ring: Ring,
    /// Staged, uncommitted changes.
    pub staged: Staged,
    /// The committed change under way, if any.
    pub transition: Option<Transition>,
    /// Per node, the highest transition target epoch it has seen (grows only).
    pub seen: BTreeMap<NodeId, u64>,
    /// Per node, the highest ring epoch it has **swept** for (grows only): it installed that
    /// ring, dropped its copies of every partition the ring does not give it, and no write it
    /// began under an older ring is still replicating. From then on the node holds no stale
    /// copy from before that ring, so none can come back (see [`View::not_swept`]).
    #[serde(default)]
    pub swept: BTreeMap<NodeId, u64>,
    /// The cluster this view belongs to: set when the cluster is founded, learnt by a newcomer
    /// from the first view it merges, never changed after. `None` only for a newcomer that
    /// has met no cluster yet (and for views written before cluster ids existed).
    #[serde(default)]
    pub cluster: Option<ClusterId>,
    /// The operator's signature over the current ring (the one its transition carried);
    /// `None` for a founding ring, a ring taken because members vouched for it, and rings
    /// made before signatures existed. Lets a node that missed the transition take the ring.
    #[serde(default)]
    pub ring_authority: Option<Authority>,
    /// Nodes removed by force, for good (grows only). Their peers answer nothing of theirs but
    /// gossip (which tells them), and such a node, told, drops its data and stops: the cluster
    /// stopped counting its copies, so it may reap tombstones those copies predate. Not
    /// encoded when empty (the shape of releases before forced removal).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed_by_force: BTreeSet<NodeId>,
}

/// What [`View::merge_checked`] did not take from a peer's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// A ring this node cannot take on its own: no transition it holds leads there, and it
    /// is not one planned step from this node's ring with an operator's signature. With the
    /// signature it came with, if any.
    Ring(Box<Ring>, Option<Authority>),
    /// A committed transition whose target is not one planned step from the ring, or whose
    /// operator's signature does not verify.
    Transition {
        /// Its target epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// Another address for this node (only this node says where it listens). Its
    /// acknowledgements are left out too, silently: peers also remember them from before a
    /// wipe.
    AboutMe,
}

/// A node's own acknowledgements in a view ([`View::own_acknowledgements`]), compared to
/// know when to tell its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnAcknowledgements {
    seen: Option<u64>,
    swept: Option<u64>,
    transition: Option<u64>,
    transfers_done: usize,
    hints_handed_over: bool,
}

/// A view from another cluster, refused before it is merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the view comes from cluster {theirs}, this node belongs to cluster {ours}: two clusters never merge (a seed, a joined address or a data directory of another cluster?)"
)]
pub struct ForeignCluster {
    /// This node's cluster.
    pub ours: ClusterId,
    /// The other view's cluster.
    pub theirs: ClusterId,
}

impl View {
    /// The view of a node that starts an unnamed cluster from a static member list
    /// ([`View::found`] with an empty name).
    pub fn bootstrap(ring: Ring) -> View {
        View::found("", ring)
    }

    /// The view of a node that founds the cluster `name` from a static member list: every
    /// member up, owning the ring, and the cluster id [`ClusterId::founded`] gives (the same
    /// on every founding node, since each derives it from the same config).
    pub fn found(name: &str, ring: Ring) -> View {
        let cluster = Some(ClusterId::founded(name, &ring));
        let members = ring
            .members()
            .map(|m| {
                (
                    m.id,
                    MemberRecord {
                        addr: m.addr,
                        status: Status::Up,
                        version: 1,
                        host: m.host.clone(),
                    },
                )
            })
            .collect();
        View {
            members,
            ring,
            staged: Staged::default(),
            transition: None,
            seen: BTreeMap::new(),
            swept: BTreeMap::new(),
            cluster,
            ring_authority: None,
            removed_by_force: BTreeSet::new(),
        }
    }

    /// The view of a node that starts outside any cluster, waiting to be joined: it knows only
    /// itself (as joining) and an epoch-0 ring of itself, which any real cluster's ring
    /// (epoch 1 or more) replaces at the first gossip.
    pub fn newcomer(me: Member, partitions: u32) -> Result<View, crate::ring::RingError> {
        let ring = Ring::from_owners(0, vec![me.clone()], vec![me.id; partitions as usize])?;
        let mut members = BTreeMap::new();
        members.insert(
            me.id,
            MemberRecord {
                addr: me.addr,
                status: Status::Joining,
                version: 1,
                host: me.host.clone(),
            },
        );
        Ok(View {
            members,
            ring,
            staged: Staged::default(),
            transition: None,
            seen: BTreeMap::new(),
            swept: BTreeMap::new(),
            cluster: None,
            ring_authority: None,
            removed_by_force: BTreeSet::new(),
        })
    }

    /// Refuses `other` if it belongs to another cluster than this view. A view of no cluster
    /// yet (a newcomer's) belongs to any, and this view of none accepts any.
    pub fn same_cluster(&self, other: &View) -> Result<(), ForeignCluster> {
        match (self.cluster, other.cluster) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(ForeignCluster { ours, theirs }),
            _ => Ok(()),
        }
    }

    /// Checks a view received from the network or read from disk before it is merged: its
    /// rings have this cluster's partition count, and nothing in it is larger than a real
    /// cluster's (members, staged sets, transfers).
    pub fn validate(&self, partitions: u32) -> Result<(), String> {
        let max = crate::ring::MAX_MEMBERS;
        if self.ring.partition_count() != partitions {
            return Err(format!(
                "ring has {} partitions, this cluster {partitions}",
                self.ring.partition_count()
            ));
        }
        for (what, len) in [
            ("members", self.members.len()),
            ("seen", self.seen.len()),
            ("swept", self.swept.len()),
            ("staged joins", self.staged.joins.len()),
            ("staged leaves", self.staged.leaves.len()),
            ("staged removals by force", self.staged.forced.len()),
            ("nodes removed by force", self.removed_by_force.len()),
        ] {
            if len > max {
                return Err(format!("{len} {what}, at most {max}"));
            }
        }
        if let Some(t) = &self.transition {
            if t.target.partition_count() != partitions {
                return Err("transition target has another partition count".into());
            }
            if t.n == 0 || usize::from(t.n) > crate::ring::MAX_PREFERENCE {
                return Err(format!(
                    "transition replication factor {} is out of range",
                    t.n
                ));
            }
            let most = partitions as usize * usize::from(t.n) * usize::from(t.n);
            if t.done.len() > most {
                return Err(format!(
                    "{} finished transfers, at most {most}",
                    t.done.len()
                ));
            }
        }
        Ok(())
    }

    /// The status of `node`, if known.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.members.get(&node).map(|r| r.status)
    }

    /// Nodes worth gossiping with: every known node but `me` that is not removed.
    pub fn gossip_peers(&self, me: NodeId) -> Vec<Member> {
        self.members
            .iter()
            .filter(|(id, r)| **id != me && r.status != Status::Removed)
            .map(|(id, r)| r.member(*id))
            .collect()
    }

    /// The node that completes transitions: the lowest id among the nodes that own
    /// partitions now (up, or leaving: when every owner leaves at once, a leaver completes),
    /// not removed by force.
    pub fn claimant(&self) -> Option<NodeId> {
        self.members
            .iter()
            .find(|(id, r)| {
                matches!(r.status, Status::Up | Status::Leaving)
                    && self.ring.member(**id).is_some()
                    && !self.removed_by_force.contains(id)
            })
            .map(|(id, _)| *id)
    }
}

/// Whether ring `a` wins over ring `b`: higher epoch, then (for two different rings at one
/// epoch, which only concurrent commits on different nodes can make) the larger encoding.
fn ring_wins(a: &Ring, b: &Ring) -> bool {
    match a.epoch().cmp(&b.epoch()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => ring_order_key(a) > ring_order_key(b),
    }
}

/// A ring as comparable data: owners, then members.
type RingKey = (Vec<u32>, Vec<(u32, SocketAddr)>);

fn ring_order_key(r: &Ring) -> RingKey {
    (
        (0..r.partition_count()).map(|p| r.owner(p).0).collect(),
        r.members().map(|m| (m.id.0, m.addr)).collect(),
    )
}

fn transition_key(t: &Transition) -> (u64, u8, RingKey) {
    (t.target.epoch(), t.n, ring_order_key(&t.target))
}

#[cfg(test)]
mod tests;
