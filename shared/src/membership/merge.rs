//! Merging views: the plain join gossip converges by, and the checked merge a node runs on
//! what a peer sent (only what it can verify, only the sender's own acknowledgements).

use super::*;
use crate::authority::{ChangeVerifier, verify_change};

impl View {
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
            self.ring_authority = other.ring_authority.clone();
        } else if other.ring == self.ring && other.ring_authority > self.ring_authority {
            self.ring_authority = other.ring_authority.clone();
        }
        if (
            other.staged.version,
            &other.staged.joins,
            &other.staged.leaves,
            &other.staged.forced,
        ) > (
            self.staged.version,
            &self.staged.joins,
            &self.staged.leaves,
            &self.staged.forced,
        ) {
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
                    a.authority = a.authority.max(b.authority.clone());
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
        self.removed_by_force
            .extend(other.removed_by_force.iter().copied());
        self.normalize();
        *self != before
    }

    /// Merges what this node can verify of `other` (a view a peer sent; this node is `me`,
    /// its cluster's replication factor `n`), and returns whether this view changed and what
    /// it did not take. The caller has refused another cluster's view first.
    ///
    /// Not taken, because a node holding a valid certificate could forge it:
    /// - a **ring** that wins over this view's, unless it is the target of the transition this
    ///   view holds (verified when taken), or it is one planned step from this view's ring
    ///   ([`is_planned_step`]) and carries an operator's signature that `verifier` accepts;
    ///   a newcomer (epoch-0 ring) takes a founding (epoch-1) ring, or a signed one;
    /// - a **transition** this view does not hold, unless its target is one planned step from
    ///   the ring and it carries an operator's signature `verifier` accepts
    ///   ([`crate::authority`]); nor a signature other than the one this view holds for its
    ///   own transition or ring;
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
    /// enough members vouch for it and its operator's signature verifies (the node's gossip
    /// layer checks both).
    pub fn merge_checked(
        &mut self,
        other: &View,
        me: NodeId,
        sender: Option<NodeId>,
        n: u8,
        verifier: &dyn ChangeVerifier,
    ) -> (bool, Vec<Unverified>) {
        let mut theirs = other.clone();
        self.keep_only_senders_acknowledgements(&mut theirs, sender);
        // Who was removed by force is taken only from a signed change this view verifies
        // (`note_removed_by_force`): a peer's list could shut a healthy node out.
        theirs.removed_by_force = self.removed_by_force.clone();
        let cluster = self.cluster.or(other.cluster);
        let mut refused = Vec::new();
        if ring_wins(&theirs.ring, &self.ring) {
            match self.adoptable(
                &theirs.ring,
                theirs.ring_authority.as_ref(),
                n,
                cluster,
                verifier,
            ) {
                Some(authority) => theirs.ring_authority = authority,
                None => {
                    refused.push(Unverified::Ring(
                        Box::new(theirs.ring.clone()),
                        theirs.ring_authority.clone(),
                    ));
                    theirs.ring = self.ring.clone();
                    theirs.ring_authority = self.ring_authority.clone();
                }
            }
        } else if theirs.ring == self.ring {
            // The same ring: its signature is this view's, unless this view has none and
            // theirs verifies.
            let keep_theirs = self.ring_authority.is_none()
                && theirs.ring_authority.as_ref().is_some_and(|a| {
                    verify_change(verifier, cluster, &self.ring, a.n, Some(a)).is_ok()
                });
            if !keep_theirs {
                theirs.ring_authority = self.ring_authority.clone();
            }
        }
        let ring_after = if ring_wins(&theirs.ring, &self.ring) {
            theirs.ring.clone()
        } else {
            self.ring.clone()
        };
        if let Some(t) = &mut theirs.transition {
            let held = self
                .transition
                .as_ref()
                .filter(|mine| mine.target == t.target && mine.n == t.n);
            if let Some(mine) = held {
                t.authority = mine.authority.clone();
            } else if t.target.epoch() > ring_after.epoch() {
                let why = if !is_planned_step(&ring_after, &t.target, t.n.into()) {
                    Some("not a planned step from this node's ring".to_string())
                } else {
                    verify_change(verifier, cluster, &t.target, t.n, t.authority.as_ref())
                        .err()
                        .map(|e| e.to_string())
                };
                if let Some(reason) = why {
                    refused.push(Unverified::Transition {
                        epoch: t.target.epoch(),
                        reason,
                    });
                    theirs.transition = None;
                }
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
            && (record.addr != mine.addr || record.host != mine.host)
        {
            if record.wins_over(mine) {
                // Their record would win: keep its status, put this node's address and name
                // back, one version higher so that the correction spreads back to every node.
                about_me = true;
                record.addr = mine.addr;
                record.host = mine.host.clone();
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

    /// Whether this view can take `ring` (signed by `authority`, if at all) on its own (see
    /// [`View::merge_checked`]): `Some` with the signature to keep with it, `None` if not.
    fn adoptable(
        &self,
        ring: &Ring,
        authority: Option<&Authority>,
        n: u8,
        cluster: Option<ClusterId>,
        verifier: &dyn ChangeVerifier,
    ) -> Option<Option<Authority>> {
        let held = self.transition.as_ref();
        if let Some(t) = held.filter(|t| t.target == *ring) {
            return Some(t.authority.clone());
        }
        let signed = authority
            .filter(|a| verify_change(verifier, cluster, ring, a.n, Some(a)).is_ok())
            .cloned();
        if self.ring.epoch() == 0 {
            // A newcomer: the founding ring is the config's (no one signs it), any later one
            // an operator's.
            return match (ring.epoch(), signed) {
                (_, Some(a)) => Some(Some(a)),
                (1, None) => Some(None),
                _ => None,
            };
        }
        let a = signed?;
        (a.n == n && is_planned_step(&self.ring, ring, n.into())).then_some(Some(a))
    }

    /// Takes `ring`, signed by `authority`, if it wins over this view's, without checking
    /// that it is a step from this view's ring: for a ring enough members vouched for (see
    /// [`View::merge_checked`]) whose signature the caller verified. Returns whether the
    /// ring changed.
    pub fn adopt_ring(&mut self, ring: &Ring, authority: Option<Authority>) -> bool {
        if !ring_wins(ring, &self.ring) {
            return false;
        }
        self.ring = ring.clone();
        self.ring_authority = authority;
        self.normalize();
        true
    }

    /// Drops a transition the ring has already reached (or passed), and notes the nodes the
    /// signed changes held remove by force.
    fn normalize(&mut self) {
        self.note_removed_by_force();
        if self
            .transition
            .as_ref()
            .is_some_and(|t| t.target.epoch() <= self.ring.epoch())
        {
            self.transition = None;
        }
    }
}
