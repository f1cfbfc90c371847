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

use crate::handoff::Transfer;
use crate::ids::{ClusterId, NodeId};
use crate::planner::{PlanError, is_planned_step, plan};
use crate::ring::{Member, Ring};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

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

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Joining => "joining",
            Status::Up => "up",
            Status::Leaving => "leaving",
            Status::Removed => "removed",
        })
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
}

impl MemberRecord {
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
}

impl Transition {
    /// Every transfer the transition needs, given the ring it starts from.
    pub fn transfers(&self, from: &Ring) -> Vec<Transfer> {
        crate::handoff::transfers(from, &self.target, self.n.into())
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

    /// Leavers that still have to hand over their hints.
    pub fn hints_pending(&self, from: &Ring) -> Vec<NodeId> {
        self.leavers(from)
            .into_iter()
            .filter(|id| !self.hints_handed_over.contains(id))
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
}

/// What [`View::merge_checked`] did not take from a peer's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// A ring this node cannot verify: no transition it holds leads there, and it is not one
    /// planned step from this node's ring.
    Ring(Box<Ring>),
    /// A committed transition whose target is not one planned step from the ring.
    Transition {
        /// Its target epoch.
        epoch: u64,
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

    /// Merges `other` into this view. Returns whether this view changed.
    ///
    /// Callers first refuse a view of another cluster ([`View::same_cluster`]); this view
    /// learns the cluster id if it has none. (Given two ids, the merge keeps the higher, so
    /// that it stays commutative even when misused.)
    pub fn merge(&mut self, other: &View) -> bool {
        let before = self.clone();
        self.cluster = self.cluster.max(other.cluster);
        for (id, theirs) in &other.members {
            match self.members.get_mut(id) {
                Some(mine) if !theirs.wins_over(mine) => {}
                Some(mine) => *mine = theirs.clone(),
                None => {
                    self.members.insert(*id, theirs.clone());
                }
            }
        }
        if ring_wins(&other.ring, &self.ring) {
            self.ring = other.ring.clone();
        }
        if (
            other.staged.version,
            &other.staged.joins,
            &other.staged.leaves,
        ) > (self.staged.version, &self.staged.joins, &self.staged.leaves)
        {
            self.staged = other.staged.clone();
        }
        self.transition = match (self.transition.take(), &other.transition) {
            (None, None) => None,
            (Some(t), None) => Some(t),
            (None, Some(t)) => Some(t.clone()),
            (Some(mut a), Some(b)) => {
                if a.target == b.target && a.n == b.n {
                    a.done.extend(b.done.iter().copied());
                    a.hints_handed_over
                        .extend(b.hints_handed_over.iter().copied());
                    Some(a)
                } else if transition_key(b) > transition_key(&a) {
                    Some(b.clone())
                } else {
                    Some(a)
                }
            }
        };
        for (id, epoch) in &other.seen {
            let e = self.seen.entry(*id).or_default();
            *e = (*e).max(*epoch);
        }
        for (id, epoch) in &other.swept {
            let e = self.swept.entry(*id).or_default();
            *e = (*e).max(*epoch);
        }
        self.normalize();
        *self != before
    }

    /// Merges what this node can verify of `other` (a view a peer sent; this node is `me`,
    /// its cluster's replication factor `n`), and returns whether this view changed and what
    /// it did not take. The caller has refused another cluster's view first.
    ///
    /// Not taken, because a node holding a valid certificate could forge it:
    /// - a **ring** that wins over this view's, unless this view has none yet (a newcomer's
    ///   epoch-0 ring), or it is the target of the transition this view holds (verified when
    ///   taken), or it is one planned step from this view's ring ([`is_planned_step`]);
    /// - a **transition** this view does not hold, unless its target is one planned step from
    ///   the ring;
    /// - what `other` says about `me`: acknowledgements (`seen`, `swept`, hints handed over)
    ///   only `me` makes, and another address for `me` (this view's record then wins, with a
    ///   higher version, so that the correct address spreads back);
    /// - acknowledgements of any node but `sender` (the node whose certificate sent `other`,
    ///   `None` for an operator or a peer not known yet): `seen`, `swept`, transfers done
    ///   (made by their sending node) and hints handed over. A node speaks only for itself;
    ///   a node's own acknowledgements reach every other node directly (a node tells all its
    ///   peers when one of its own changes), never by hearsay that a stolen certificate could
    ///   forge to start a handoff early, switch the ring before data moved, or reap a
    ///   tombstone a replica still needs.
    ///
    /// A node that fell more than a step behind (wiped, or down across a whole change it was
    /// not part of) cannot verify the cluster's ring alone; [`View::adopt_ring`] takes it once
    /// enough members vouch for it (the node's gossip layer counts them).
    pub fn merge_checked(
        &mut self,
        other: &View,
        me: NodeId,
        sender: Option<NodeId>,
        n: u8,
    ) -> (bool, Vec<Unverified>) {
        let mut theirs = other.clone();
        self.keep_only_senders_acknowledgements(&mut theirs, sender);
        let mut refused = Vec::new();
        if ring_wins(&theirs.ring, &self.ring) && !self.can_adopt(&theirs.ring, n) {
            refused.push(Unverified::Ring(Box::new(theirs.ring.clone())));
            theirs.ring = self.ring.clone();
        }
        let ring_after = if ring_wins(&theirs.ring, &self.ring) {
            theirs.ring.clone()
        } else {
            self.ring.clone()
        };
        if let Some(t) = &theirs.transition {
            let held = self
                .transition
                .as_ref()
                .is_some_and(|mine| mine.target == t.target && mine.n == t.n);
            if !held
                && t.target.epoch() > ring_after.epoch()
                && !is_planned_step(&ring_after, &t.target, t.n.into())
            {
                refused.push(Unverified::Transition {
                    epoch: t.target.epoch(),
                });
                theirs.transition = None;
            }
        }
        // This node's acknowledgements are its own to make. Peers legitimately remember
        // higher ones (made before this node's data directory was wiped), so leaving theirs
        // out is not reported.
        for (theirs_map, mine_map) in [
            (&mut theirs.seen, &self.seen),
            (&mut theirs.swept, &self.swept),
        ] {
            match mine_map.get(&me) {
                Some(v) => theirs_map.insert(me, *v),
                None => theirs_map.remove(&me),
            };
        }
        if let Some(t) = &mut theirs.transition {
            let mine_too = self
                .transition
                .as_ref()
                .is_some_and(|m| m.target == t.target && m.hints_handed_over.contains(&me));
            if !mine_too {
                // Also remembered legitimately past a wipe or a power cut; this node marks it
                // again once its hints are handed over.
                t.hints_handed_over.remove(&me);
            }
        }
        let mut about_me = false;
        if let (Some(mine), Some(record)) = (self.members.get(&me), theirs.members.get_mut(&me))
            && record.addr != mine.addr
        {
            if record.wins_over(mine) {
                // Their record would win: keep its status, put this node's address back, one
                // version higher so that the correction spreads back to every node.
                about_me = true;
                record.addr = mine.addr;
                record.version = record.version.saturating_add(1);
            } else {
                *record = mine.clone();
            }
        }
        if about_me {
            refused.push(Unverified::AboutMe);
        }
        (self.merge(&theirs), refused)
    }

    /// Replaces, in `theirs`, every acknowledgement of a node other than `sender` with this
    /// view's (see [`View::merge_checked`]).
    fn keep_only_senders_acknowledgements(&self, theirs: &mut View, sender: Option<NodeId>) {
        let others = |id: &NodeId| Some(*id) != sender;
        for (theirs_map, mine_map) in [
            (&mut theirs.seen, &self.seen),
            (&mut theirs.swept, &self.swept),
        ] {
            theirs_map.retain(|id, _| !others(id));
            theirs_map.extend(mine_map.iter().filter(|(id, _)| others(id)));
        }
        if let Some(t) = &mut theirs.transition {
            let mine = self
                .transition
                .as_ref()
                .filter(|m| m.target == t.target && m.n == t.n);
            t.done.retain(|tr| !others(&tr.from));
            t.hints_handed_over.retain(|id| !others(id));
            if let Some(m) = mine {
                t.done.extend(m.done.iter().filter(|tr| others(&tr.from)));
                t.hints_handed_over
                    .extend(m.hints_handed_over.iter().filter(|id| others(id)));
            }
        }
    }

    /// What `me` itself has acknowledged in this view: `seen`, `swept`, the transfers it sent
    /// and whether it handed over its hints. When this changes, `me` tells every peer directly
    /// (peers take a node's acknowledgements from no one else; see [`View::merge_checked`]).
    pub fn own_acknowledgements(&self, me: NodeId) -> OwnAcknowledgements {
        let t = self.transition.as_ref();
        OwnAcknowledgements {
            seen: self.seen.get(&me).copied(),
            swept: self.swept.get(&me).copied(),
            transition: t.map(|t| t.target.epoch()),
            transfers_done: t.map_or(0, |t| t.done.iter().filter(|tr| tr.from == me).count()),
            hints_handed_over: t.is_some_and(|t| t.hints_handed_over.contains(&me)),
        }
    }

    /// Whether this view can take `ring` on its own (see [`View::merge_checked`]).
    fn can_adopt(&self, ring: &Ring, n: u8) -> bool {
        self.ring.epoch() == 0
            || self
                .transition
                .as_ref()
                .is_some_and(|t| t.target == *ring || is_planned_step(&self.ring, ring, t.n.into()))
            || is_planned_step(&self.ring, ring, n.into())
    }

    /// Takes `ring` if it wins over this view's, without verifying it: for a ring enough
    /// members vouched for (see [`View::merge_checked`]). Returns whether the ring changed.
    pub fn adopt_ring(&mut self, ring: &Ring) -> bool {
        if !ring_wins(ring, &self.ring) {
            return false;
        }
        self.ring = ring.clone();
        self.normalize();
        true
    }

    /// Drops a transition the ring has already reached (or passed).
    fn normalize(&mut self) {
        if self
            .transition
            .as_ref()
            .is_some_and(|t| t.target.epoch() <= self.ring.epoch())
        {
            self.transition = None;
        }
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
            .map(|(id, r)| Member {
                id: *id,
                addr: r.addr,
            })
            .collect()
    }

    /// The node that completes transitions: the lowest id among the nodes that own
    /// partitions now (up, or leaving: when every owner leaves at once, a leaver completes).
    pub fn claimant(&self) -> Option<NodeId> {
        self.members
            .iter()
            .find(|(id, r)| {
                matches!(r.status, Status::Up | Status::Leaving) && self.ring.member(**id).is_some()
            })
            .map(|(id, _)| *id)
    }

    /// Sets `node`'s status, bumping its record's version.
    pub fn set_status(&mut self, node: NodeId, status: Status) {
        if let Some(r) = self.members.get_mut(&node)
            && r.status != status
        {
            r.status = status;
            r.version += 1;
        }
    }

    /// Adds or updates `node`'s address (an operator named it, or it announced itself).
    pub fn announce(&mut self, node: NodeId, addr: SocketAddr) {
        match self.members.get_mut(&node) {
            Some(r) if r.addr == addr => {}
            Some(r) => {
                r.addr = addr;
                r.version += 1;
            }
            None => {
                self.members.insert(
                    node,
                    MemberRecord {
                        addr,
                        status: Status::Joining,
                        version: 1,
                    },
                );
            }
        }
    }

    /// Stages `node` to join at the next commit.
    pub fn stage_join(&mut self, node: NodeId) -> Result<(), ChangeError> {
        let status = self.status(node).ok_or(ChangeError::UnknownNode { node })?;
        if self.ring.member(node).is_some() {
            return Err(ChangeError::BadStatus {
                node,
                status,
                reason: "it already owns partitions",
            });
        }
        if status == Status::Removed {
            return Err(ChangeError::BadStatus {
                node,
                status,
                reason: "a removed node rejoins under a new id with an empty data directory",
            });
        }
        self.staged.joins.insert(node);
        self.staged.version += 1;
        Ok(())
    }

    /// Stages `node` to leave at the next commit, refusing a leave that would leave fewer
    /// than `n` nodes.
    pub fn stage_leave(&mut self, node: NodeId, n: u8) -> Result<(), ChangeError> {
        let status = self.status(node).ok_or(ChangeError::UnknownNode { node })?;
        if self.ring.member(node).is_none() {
            if self.staged.joins.remove(&node) {
                self.staged.version += 1;
                return Ok(());
            }
            return Err(ChangeError::BadStatus {
                node,
                status,
                reason: "it owns no partitions",
            });
        }
        // Refuse now, not at commit, a leave that the planner could never honour; a refused
        // leave leaves no trace.
        let mut next = self.clone();
        next.staged.leaves.insert(node);
        next.staged.version += 1;
        next.planned_with(n)?;
        *self = next;
        Ok(())
    }

    /// Forgets every staged change.
    pub fn clear_staged(&mut self) {
        if !self.staged.is_empty() {
            self.staged.joins.clear();
            self.staged.leaves.clear();
            self.staged.version += 1;
        }
    }

    /// The members the ring will have after the staged changes.
    fn members_after(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .ring
            .members()
            .filter(|m| !self.staged.leaves.contains(&m.id))
            .cloned()
            .collect();
        for id in &self.staged.joins {
            if let Some(r) = self.members.get(id) {
                out.push(Member {
                    id: *id,
                    addr: r.addr,
                });
            }
        }
        out
    }

    /// Commits the staged changes: the planned ring becomes the transition's target, leavers
    /// are marked leaving and the staged set is cleared. Data starts moving at once.
    pub fn commit(&mut self, n: u8) -> Result<&Transition, ChangeError> {
        let target = self.planned_with(n)?;
        for id in self.staged.leaves.clone() {
            self.set_status(id, Status::Leaving);
        }
        self.clear_staged();
        self.transition = Some(Transition {
            target,
            n,
            done: BTreeSet::new(),
            hints_handed_over: BTreeSet::new(),
        });
        Ok(self.transition.as_ref().expect("just set"))
    }

    /// The ring the staged changes would lead to with replication factor `n` (what
    /// `ringkv plan` shows).
    pub fn planned_with(&self, n: u8) -> Result<Ring, ChangeError> {
        if self.staged.is_empty() {
            return Err(ChangeError::NothingStaged);
        }
        if let Some(t) = &self.transition {
            return Err(ChangeError::Busy {
                epoch: t.target.epoch(),
            });
        }
        Ok(plan(&self.ring, &self.members_after(), n.into())?)
    }

    /// Records that `node` finished `transfer`.
    pub fn mark_done(&mut self, transfer: Transfer) -> bool {
        match &mut self.transition {
            Some(t) => t.done.insert(transfer),
            None => false,
        }
    }

    /// Records that leaver `node` has handed over its hints.
    pub fn mark_hints_handed_over(&mut self, node: NodeId) -> bool {
        match &mut self.transition {
            Some(t) => t.hints_handed_over.insert(node),
            None => false,
        }
    }

    /// Records that `node` has seen the running transition.
    pub fn mark_seen(&mut self, node: NodeId) -> bool {
        let Some(t) = &self.transition else {
            return false;
        };
        let epoch = t.target.epoch();
        let e = self.seen.entry(node).or_default();
        if *e < epoch {
            *e = epoch;
            true
        } else {
            false
        }
    }

    /// Records that `node` swept for ring `epoch` (see [`View::swept`]).
    pub fn mark_swept(&mut self, node: NodeId, epoch: u64) -> bool {
        let e = self.swept.entry(node).or_default();
        if *e < epoch {
            *e = epoch;
            true
        } else {
            false
        }
    }

    /// The nodes that may still hold a copy of some partition from before the current ring
    /// (empty when none can): every known node that has not swept for the current ring.
    ///
    /// A node that owned a partition once and does not own it in the current ring drops its
    /// copy when it installs that ring; until it has, its copy may predate deletes the current
    /// owners acknowledged and reaped since, and would bring them back if served, spread or
    /// handed back. Removed nodes count too, until they report [`SWEPT_FOR_GOOD`]: a node that
    /// left drops everything when it learns of its removal. Joining nodes never owned anything
    /// (what they hold came from handoffs and writes of the transition). A tombstone may be
    /// reaped only when this is empty.
    pub fn not_swept(&self) -> Vec<NodeId> {
        let epoch = self.ring.epoch();
        self.members
            .iter()
            .filter(|(id, r)| {
                let swept = self.swept.get(id).copied().unwrap_or(0);
                match r.status {
                    Status::Joining => false,
                    Status::Up | Status::Leaving => swept < epoch,
                    Status::Removed => swept != SWEPT_FOR_GOOD,
                }
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether every node taking part in the running transition (old and new owners) has
    /// seen it, so that every coordinator already copies new writes to the new replicas and
    /// a scan started now misses nothing.
    pub fn all_seen(&self) -> bool {
        let Some(t) = &self.transition else {
            return false;
        };
        let epoch = t.target.epoch();
        self.ring
            .members()
            .chain(t.target.members())
            .all(|m| self.seen.get(&m.id).copied().unwrap_or(0) >= epoch)
    }

    /// If every transfer is done, switches to the target ring: joiners become up, leavers
    /// removed. Returns whether it switched. Only the claimant calls this.
    pub fn complete_if_done(&mut self) -> bool {
        let Some(t) = &self.transition else {
            return false;
        };
        if !t.remaining(&self.ring).is_empty() || !t.hints_pending(&self.ring).is_empty() {
            return false;
        }
        let target = t.target.clone();
        let old: Vec<NodeId> = self.ring.members().map(|m| m.id).collect();
        for m in target.members() {
            self.set_status(m.id, Status::Up);
        }
        for id in old {
            if target.member(id).is_none() {
                self.set_status(id, Status::Removed);
            }
        }
        self.ring = target;
        self.transition = None;
        true
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn member(i: u32) -> Member {
        Member {
            id: NodeId(i),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        }
    }

    fn cluster(n: u32) -> View {
        View::bootstrap(Ring::balanced(64, (1..=n).map(member).collect()).unwrap())
    }

    /// A view after a random sequence of the operations nodes and operators apply.
    fn arb_view() -> impl Strategy<Value = View> {
        proptest::collection::vec((0u8..9, 1u32..7), 0..12).prop_map(|ops| {
            let mut v = cluster(3);
            for (op, i) in ops {
                let id = NodeId(i);
                match op {
                    0 => v.announce(id, member(i).addr),
                    1 => {
                        let _ = v.stage_join(id);
                    }
                    2 => {
                        let _ = v.stage_leave(id, 3);
                    }
                    3 => {
                        let _ = v.commit(3);
                    }
                    4 => {
                        v.mark_seen(id);
                    }
                    5 => {
                        if let Some(t) = v
                            .transition
                            .as_ref()
                            .and_then(|t| t.remaining(&v.ring).first().copied())
                        {
                            v.mark_done(t);
                        }
                        v.mark_hints_handed_over(id);
                    }
                    6 => {
                        v.complete_if_done();
                    }
                    7 => {
                        let epoch = v.ring.epoch();
                        v.mark_swept(id, epoch);
                    }
                    _ => v.set_status(id, Status::Leaving),
                }
            }
            v
        })
    }

    fn merged(a: &View, b: &View) -> View {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(a in arb_view(), b in arb_view(), c in arb_view()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
            prop_assert_eq!(merged(&a, &a), a.clone());
            let ab = merged(&a, &b);
            prop_assert!(!merged(&ab, &a).merge(&b));
        }
    }

    #[test]
    fn a_join_runs_from_staging_to_the_new_ring() {
        let mut v = cluster(3);
        v.announce(NodeId(4), member(4).addr);
        assert_eq!(v.status(NodeId(4)), Some(Status::Joining));
        assert_eq!(v.commit(3).unwrap_err(), ChangeError::NothingStaged);
        v.stage_join(NodeId(4)).unwrap();
        let planned = v.planned_with(3).unwrap();
        assert_eq!(planned.epoch(), 2);
        let t = v.commit(3).unwrap().clone();
        assert!(v.staged.is_empty());
        assert!(matches!(
            v.stage_join(NodeId(5)),
            Err(ChangeError::UnknownNode { .. })
        ));
        v.announce(NodeId(5), member(5).addr);
        v.stage_join(NodeId(5)).unwrap();
        assert!(matches!(v.commit(3), Err(ChangeError::Busy { epoch: 2 })));
        assert!(!v.complete_if_done(), "transfers are outstanding");
        assert!(!v.all_seen());
        for i in 1..=4 {
            v.mark_seen(NodeId(i));
        }
        assert!(v.all_seen());
        for tr in t.transfers(&v.ring) {
            v.mark_done(tr);
        }
        assert!(v.complete_if_done());
        assert_eq!(v.ring.epoch(), 2);
        assert_eq!(v.status(NodeId(4)), Some(Status::Up));
        assert!(v.transition.is_none());
    }

    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let mut v = cluster(3);
        let before = v.clone();
        assert!(matches!(
            v.stage_leave(NodeId(2), 3),
            Err(ChangeError::Plan(PlanError::TooFewNodes { nodes: 2, n: 3 }))
        ));
        assert_eq!(v.staged.joins, before.staged.joins);
        assert_eq!(v.staged.leaves, before.staged.leaves);
        assert!(matches!(
            v.stage_join(NodeId(1)),
            Err(ChangeError::BadStatus { .. })
        ));
        assert!(matches!(
            v.stage_leave(NodeId(9), 3),
            Err(ChangeError::UnknownNode { .. })
        ));
        assert_eq!(v.commit(3).unwrap_err(), ChangeError::NothingStaged);
        assert_eq!(v.ring, before.ring);
    }

    #[test]
    fn a_leave_removes_the_node_when_done() {
        let mut v = cluster(4);
        v.stage_leave(NodeId(4), 3).unwrap();
        let t = v.commit(3).unwrap().clone();
        assert_eq!(v.status(NodeId(4)), Some(Status::Leaving));
        for tr in t.transfers(&v.ring) {
            v.mark_done(tr);
        }
        assert!(
            !v.complete_if_done(),
            "the leaver has not handed over its hints"
        );
        assert!(v.mark_hints_handed_over(NodeId(4)));
        assert!(v.complete_if_done());
        assert_eq!(v.status(NodeId(4)), Some(Status::Removed));
        assert!(v.ring.member(NodeId(4)).is_none());
        assert!(!v.gossip_peers(NodeId(1)).iter().any(|m| m.id == NodeId(4)));
    }

    #[test]
    fn reaping_waits_until_every_former_owner_swept() {
        let mut v = cluster(4);
        assert_eq!(v.not_swept().len(), 4, "nobody reported the first ring");
        for i in 1..=4 {
            v.mark_swept(NodeId(i), 1);
        }
        assert!(v.not_swept().is_empty());
        v.announce(NodeId(5), member(5).addr);
        assert!(
            v.not_swept().is_empty(),
            "a joining node never owned anything"
        );
        v.stage_leave(NodeId(4), 3).unwrap();
        let t = v.commit(3).unwrap().clone();
        for tr in t.transfers(&v.ring) {
            v.mark_done(tr);
        }
        v.mark_hints_handed_over(NodeId(4));
        assert!(v.complete_if_done());
        assert_eq!(v.status(NodeId(4)), Some(Status::Removed));
        let mut missing = v.not_swept();
        missing.sort();
        assert_eq!(missing, vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
        for i in 1..=3 {
            v.mark_swept(NodeId(i), 2);
        }
        assert_eq!(
            v.not_swept(),
            vec![NodeId(4)],
            "the leaver has not dropped its copies"
        );
        v.mark_swept(NodeId(4), 2);
        assert_eq!(
            v.not_swept(),
            vec![NodeId(4)],
            "a removed node must report that it holds nothing"
        );
        v.mark_swept(NodeId(4), SWEPT_FOR_GOOD);
        assert!(v.not_swept().is_empty());
        // Sweeps only grow, and merge by the maximum.
        let mut other = v.clone();
        assert!(!other.mark_swept(NodeId(1), 1));
        other.mark_swept(NodeId(1), 7);
        v.merge(&other);
        assert_eq!(v.swept[&NodeId(1)], 7);
    }

    #[test]
    fn founding_nodes_agree_on_the_cluster_id_and_other_clusters_are_refused() {
        let ring = Ring::balanced(64, (1..=3).map(member).collect()).unwrap();
        let (a, b) = (
            View::found("prod", ring.clone()),
            View::found("prod", ring.clone()),
        );
        assert_eq!(a.cluster, b.cluster, "every founder derives the same id");
        assert!(a.cluster.is_some());
        // Same hosts, another name; same name, other hosts or another partition count.
        let staging = View::found("staging", ring.clone());
        let elsewhere = View::found(
            "prod",
            Ring::balanced(64, (2..=4).map(member).collect()).unwrap(),
        );
        let smaller = View::found(
            "prod",
            Ring::balanced(32, (1..=3).map(member).collect()).unwrap(),
        );
        for other in [&staging, &elsewhere, &smaller] {
            assert_ne!(other.cluster, a.cluster);
            let refused = a.same_cluster(other).unwrap_err();
            assert_eq!(
                (refused.ours, refused.theirs),
                (a.cluster.unwrap(), other.cluster.unwrap())
            );
            let message = refused.to_string();
            assert!(
                message.contains(&a.cluster.unwrap().to_string()),
                "{message}"
            );
            assert!(
                message.contains(&other.cluster.unwrap().to_string()),
                "{message}"
            );
        }
        // A newcomer belongs to any cluster until it merges one, then to that one only.
        let mut fresh = View::newcomer(member(9), 64).unwrap();
        assert_eq!(fresh.cluster, None);
        assert!(fresh.same_cluster(&a).is_ok() && a.same_cluster(&fresh).is_ok());
        fresh.merge(&a);
        assert_eq!(fresh.cluster, a.cluster);
        assert!(fresh.same_cluster(&staging).is_err());
        // The id survives the round trip through disk and wire.
        let decoded = crate::encoding::decode_view(&crate::encoding::encode_view(&fresh)).unwrap();
        assert_eq!(decoded.cluster, a.cluster);
    }

    #[test]
    fn a_forging_peer_cannot_move_the_ring_or_speak_for_this_node() {
        let me = NodeId(1);
        let mine = cluster(3);
        let owners = |r: &Ring| {
            (0..r.partition_count())
                .map(|p| r.owner(p))
                .collect::<Vec<_>>()
        };
        let list = |r: &Ring| r.members().cloned().collect::<Vec<_>>();
        let forged_ring = |epoch: u64, list: Vec<Member>| {
            let mut v = mine.clone();
            v.ring = Ring::from_owners(epoch, list, owners(&mine.ring)).unwrap();
            v
        };
        // The overflow attack, and n3 moved to an address of the sender's choosing.
        let mut moved = list(&mine.ring);
        moved[2].addr = SocketAddr::from(([10, 6, 6, 6], 7003));
        for theirs in [
            forged_ring(u64::MAX, list(&mine.ring)),
            forged_ring(2, moved),
        ] {
            let mut v = mine.clone();
            let (changed, refused) = v.merge_checked(&theirs, me, Some(NodeId(2)), 3);
            assert!(!changed, "{:?}", v.ring);
            assert!(matches!(refused[..], [Unverified::Ring(_)]), "{refused:?}");
            assert_eq!(v.ring, mine.ring);
            // Members vouching is the gossip layer's call; taking it is explicit.
            assert!(v.clone().adopt_ring(&theirs.ring));
        }
        // A transition whose target the planner would not make is refused; a real one is taken.
        let mut joined = mine.clone();
        joined.announce(NodeId(4), member(4).addr);
        let mut real = joined.clone();
        real.stage_join(NodeId(4)).unwrap();
        real.commit(3).unwrap();
        let mut fake = real.clone();
        let t = fake.transition.as_mut().unwrap();
        t.target = Ring::from_owners(2, list(&t.target), vec![NodeId(4); 64]).unwrap();
        let mut v = joined.clone();
        let (_, refused) = v.merge_checked(&fake, me, Some(NodeId(2)), 3);
        assert_eq!(refused, vec![Unverified::Transition { epoch: 2 }]);
        assert_eq!(v.transition, None);
        let (_, refused) = v.merge_checked(&real, me, Some(NodeId(2)), 3);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(v.transition, real.transition);
        // The ring that transition leads to is taken, as is a planned step from one's own ring
        // (a node that missed the transition but not the ring before it).
        let mut done = real.clone();
        done.ring = real.transition.clone().unwrap().target;
        done.transition = None;
        for mut v in [v.clone(), joined.clone()] {
            let (_, refused) = v.merge_checked(&done, me, Some(NodeId(2)), 3);
            assert!(refused.is_empty(), "{refused:?}");
            assert_eq!(v.ring, done.ring);
        }
        // Acknowledgements only this node makes, and this node's address.
        let mut lies = real.clone();
        lies.seen.insert(me, 2);
        lies.swept.insert(me, 9);
        lies.transition
            .as_mut()
            .unwrap()
            .hints_handed_over
            .insert(me);
        let record = lies.members.get_mut(&me).unwrap();
        record.addr = SocketAddr::from(([10, 6, 6, 6], 7001));
        record.version = 40;
        let mut v = real.clone();
        let (_, refused) = v.merge_checked(&lies, me, Some(NodeId(2)), 3);
        assert_eq!(refused, vec![Unverified::AboutMe], "the address");
        assert_eq!((v.seen.get(&me), v.swept.get(&me)), (None, None));
        assert!(
            !v.transition
                .as_ref()
                .unwrap()
                .hints_handed_over
                .contains(&me)
        );
        let record = &v.members[&me];
        assert_eq!(record.addr, member(1).addr);
        assert!(
            record.version > 40,
            "this node's own record wins back everywhere"
        );
        // What a peer acknowledges for itself is merged; what it says another node
        // acknowledged is not (that node tells this one itself).
        let mut other = real.clone();
        other.mark_seen(NodeId(2));
        let mut v = real.clone();
        assert!(v.merge_checked(&other, me, Some(NodeId(2)), 3).0);
        assert_eq!(v.seen.get(&NodeId(2)), Some(&2));
        let mut v = real.clone();
        let (changed, _) = v.merge_checked(&other, me, Some(NodeId(3)), 3);
        assert!(!changed, "n3 cannot say that n2 saw the transition");
        assert_eq!(v.seen.get(&NodeId(2)), None);
        let (changed, _) = v.merge_checked(&other, me, None, 3);
        assert!(!changed, "nor can an operator or a peer not known yet");
        // A newcomer takes the cluster's ring from a seed (a peer not known yet): it has
        // nothing to check it against.
        let mut fresh = View::newcomer(member(9), 64).unwrap();
        let (_, refused) = fresh.merge_checked(&mine, NodeId(9), None, 3);
        assert!(refused.is_empty());
        assert_eq!(fresh.ring, mine.ring);
    }

    #[test]
    fn a_node_acknowledges_only_its_own_transfers_and_hints() {
        let me = NodeId(1);
        let mut v = cluster(3);
        v.announce(NodeId(4), member(4).addr);
        v.stage_join(NodeId(4)).unwrap();
        v.commit(3).unwrap();
        let t = v.transition.clone().unwrap();
        let remaining = t.remaining(&v.ring);
        let by = |id: u32| {
            remaining
                .iter()
                .copied()
                .filter(move |tr| tr.from == NodeId(id))
        };
        assert!(
            by(2).next().is_some() && by(3).next().is_some(),
            "{remaining:?}"
        );
        // n2 says every transfer is done and every node handed its hints over.
        let mut claims = v.clone();
        for tr in &remaining {
            claims.mark_done(*tr);
        }
        for id in 1..=4 {
            claims.mark_hints_handed_over(NodeId(id));
        }
        let mut mine = v.clone();
        mine.merge_checked(&claims, me, Some(NodeId(2)), 3);
        let got = mine.transition.as_ref().unwrap();
        assert_eq!(
            got.done,
            by(2).collect::<BTreeSet<_>>(),
            "only n2's own transfers"
        );
        assert_eq!(
            got.hints_handed_over,
            BTreeSet::from([NodeId(2)]),
            "only n2's own hints"
        );
        // What this node already holds of n3's stays when n2 leaves it out.
        let mut from_n3 = v.clone();
        for tr in by(3) {
            from_n3.mark_done(tr);
        }
        mine.merge_checked(&from_n3, me, Some(NodeId(3)), 3);
        mine.merge_checked(&v, me, Some(NodeId(2)), 3);
        assert_eq!(
            mine.transition.as_ref().unwrap().done,
            by(2).chain(by(3)).collect::<BTreeSet<_>>()
        );
        assert!(
            mine.own_acknowledgements(NodeId(3)) != v.own_acknowledgements(NodeId(3)),
            "a node's own acknowledgements tell when it changed them"
        );
    }

    #[test]
    fn newcomers_adopt_the_clusters_ring() {
        let mut fresh = View::newcomer(member(9), 64).unwrap();
        let c = cluster(3);
        assert!(fresh.merge(&c));
        assert_eq!(fresh.ring, c.ring);
        assert_eq!(fresh.status(NodeId(9)), Some(Status::Joining));
        let mut back = c.clone();
        back.merge(&fresh);
        assert_eq!(
            back.ring, c.ring,
            "an epoch-0 ring never replaces the cluster's"
        );
        assert_eq!(back.status(NodeId(9)), Some(Status::Joining));
    }

    /// Rounds of push-pull gossip (each node exchanges with one random peer per round) until
    /// every node holds the view one node changed.
    fn rounds_to_converge(nodes: u32, seed: u64) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = cluster(nodes);
        let mut views = vec![base.clone(); nodes as usize];
        let mut changed = base;
        changed.announce(NodeId(nodes + 1), member(nodes + 1).addr);
        changed.stage_join(NodeId(nodes + 1)).unwrap();
        changed.commit(3).unwrap();
        views[0] = changed.clone();
        for round in 1..=100 {
            for i in 0..views.len() {
                let mut j = rng.random_range(0..views.len() - 1);
                if j >= i {
                    j += 1;
                }
                let (a, b) = (views[i].clone(), views[j].clone());
                views[i].merge(&b);
                views[j].merge(&a);
            }
            if views.iter().all(|v| v == &changed) {
                return round;
            }
        }
        panic!("no convergence in 100 rounds (seed {seed})");
    }

    #[test]
    fn gossip_converges_in_logarithmic_rounds() {
        let seed: u64 = std::env::var("RINGKV_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7);
        let rounds: Vec<usize> = (seed..seed + 20)
            .map(|s| rounds_to_converge(100, s))
            .collect();
        let worst = rounds.iter().copied().max().unwrap_or(0);
        let mean = rounds.iter().sum::<usize>() as f64 / rounds.len() as f64;
        println!("100 nodes: mean {mean:.1}, worst {worst} rounds over 20 seeds from {seed}");
        // Push-pull epidemics with every node starting an exchange each round reach n nodes
        // in O(log n) rounds: about log3(100) + ln ln(100), 5 to 6 for 100 nodes.
        assert!(
            worst <= 10,
            "took {worst} rounds (seeds {seed}..{})",
            seed + 20
        );
        assert!(rounds_to_converge(5, seed) <= 6);
    }
}
