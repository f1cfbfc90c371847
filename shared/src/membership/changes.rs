//! Changing a view: member status and addresses, staged joins and leaves, the commit, and the
//! acknowledgements that carry a transition to its end.

use super::*;

impl View {
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

    /// Commits the staged changes as `authority` signed them: the planned ring becomes the
    /// transition's target, leavers are marked leaving and the staged set is cleared. Data
    /// starts moving at once.
    ///
    /// `target` is the ring the operator signed; if the staged changes lead elsewhere now,
    /// nothing is committed ([`ChangeError::PlanChanged`]). The caller has verified the
    /// signature ([`crate::authority::verify_change`]).
    pub fn commit(
        &mut self,
        n: u8,
        target: &Ring,
        authority: Authority,
    ) -> Result<&Transition, ChangeError> {
        let planned = self.planned_with(n)?;
        if planned != *target {
            return Err(ChangeError::PlanChanged);
        }
        for id in self.staged.leaves.clone() {
            self.set_status(id, Status::Leaving);
        }
        self.clear_staged();
        self.transition = Some(Transition {
            target: planned,
            n,
            done: BTreeSet::new(),
            hints_handed_over: BTreeSet::new(),
            authority: Some(authority),
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
        let authority = t.authority.clone();
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
        self.ring_authority = authority;
        self.transition = None;
        true
    }
}

impl crate::authority::SimulatedOperator {
    /// Plans `view`'s staged changes at factor `n`, signs the plan and commits it: what the
    /// admin CLI does with a real key, for the simulator and tests.
    pub fn commit(&self, view: &mut View, n: u8) -> Result<Transition, ChangeError> {
        let target = view.planned_with(n)?;
        let authority = self.sign(view.cluster, &target, n);
        view.commit(n, &target, authority).cloned()
    }
}
