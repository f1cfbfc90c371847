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

    /// Adds or updates `node`'s address, keeping the name it has (an operator named it, or
    /// it announced itself).
    pub fn announce(&mut self, node: NodeId, addr: SocketAddr) {
        let host = self.members.get(&node).and_then(|r| r.host.clone());
        self.announce_member(&Member {
            id: node,
            addr,
            host,
        });
    }

    /// Adds or updates `member`'s record with its address and name (a node that starts
    /// again at another address, under its name or not, tells the cluster so); returns
    /// whether the record changed.
    pub fn announce_member(&mut self, member: &Member) -> bool {
        match self.members.get_mut(&member.id) {
            Some(r) if r.addr == member.addr && r.host == member.host => false,
            Some(r) => {
                r.addr = member.addr;
                r.host = member.host.clone();
                r.version += 1;
                true
            }
            None => {
                self.members.insert(
                    member.id,
                    MemberRecord {
                        addr: member.addr,
                        status: Status::Joining,
                        version: 1,
                        host: member.host.clone(),
                    },
                );
                true
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
        next.staged.forced.remove(&node);
        next.staged.version += 1;
        next.planned_with(n)?;
        *self = next;
        Ok(())
    }

    /// Stages `node` to be removed by force at the next commit: a member that is dead for
    /// good (its host or disk lost). The change copies its partitions to their new replicas
    /// from the other old replicas (every old replica sends its copy in any change, so a write
    /// W of them acknowledged is on one that survives) and waits for nothing from it.
    ///
    /// Refused, leaving no trace, if the planner cannot honour the removal (fewer than `n`
    /// nodes would remain) or if some partition would have no old replica left to copy from
    /// ([`ChangeError::NoSurvivingReplica`]).
    pub fn stage_remove_forced(&mut self, node: NodeId, n: u8) -> Result<(), ChangeError> {
        let status = self.status(node).ok_or(ChangeError::UnknownNode { node })?;
        if self.ring.member(node).is_none() {
            return Err(ChangeError::BadStatus {
                node,
                status,
                reason: "it owns no partitions; a joining node that never got any is dropped with `ringkv leave`",
            });
        }
        let mut next = self.clone();
        next.staged.leaves.insert(node);
        next.staged.forced.insert(node);
        next.staged.version += 1;
        next.planned_with(n)?;
        let forced = &next.staged.forced;
        let orphaned: Vec<crate::ring::PartitionId> = (0..self.ring.partition_count())
            .filter(|p| {
                self.ring
                    .replicas(*p, n.into())
                    .iter()
                    .all(|r| forced.contains(r))
            })
            .take(16)
            .collect();
        if !orphaned.is_empty() {
            return Err(ChangeError::NoSurvivingReplica {
                nodes: forced.iter().copied().collect(),
                partitions: orphaned,
            });
        }
        *self = next;
        Ok(())
    }

    /// Forgets every staged change.
    pub fn clear_staged(&mut self) {
        if !self.staged.is_empty() {
            self.staged.joins.clear();
            self.staged.leaves.clear();
            self.staged.forced.clear();
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
                out.push(r.member(*id));
            }
        }
        out
    }

    /// Commits the staged changes as `authority` signed them: the planned ring becomes the
    /// transition's target, leavers are marked leaving and the staged set is cleared. Data
    /// starts moving at once.
    ///
    /// `target` is the ring the operator signed, and `authority.forced` the nodes it removes
    /// by force; if the staged changes lead elsewhere now, nothing is committed
    /// ([`ChangeError::PlanChanged`]). The caller has verified the signature
    /// ([`crate::authority::verify_change`]).
    pub fn commit(
        &mut self,
        n: u8,
        target: &Ring,
        authority: Authority,
    ) -> Result<&Transition, ChangeError> {
        let planned = self.planned_with(n)?;
        if planned != *target || authority.forced != self.staged.forced {
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
        self.note_removed_by_force();
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

    /// The ring an abort of the running transition leads to: this view's ring, its owners
    /// unchanged, at the transition's target epoch (so that it replaces the transition
    /// everywhere and a later change needs fresh acknowledgements). It is the ring [`plan`]
    /// makes from this ring for its own members, so any node can check an operator's
    /// signature over it like any other planned step.
    pub fn abort_target(&self, n: u8) -> Result<Ring, ChangeError> {
        let t = self
            .transition
            .as_ref()
            .ok_or(ChangeError::NothingToAbort)?;
        if !t.forced().is_empty() {
            return Err(ChangeError::AbortForced {
                nodes: t.forced().iter().copied().collect(),
            });
        }
        let members: Vec<Member> = self.ring.members().cloned().collect();
        let same = plan(&self.ring, &members, n.into())?;
        let unchanged =
            (0..self.ring.partition_count()).all(|p| same.owner(p) == self.ring.owner(p));
        if !unchanged {
            // The planner keeps a balanced ring as it is; a ring it would rebalance cannot be
            // restored without moving data.
            return Err(ChangeError::AbortWouldMove);
        }
        Ok(same)
    }

    /// Aborts the running transition, as `authority` signed it: the ring becomes `target`
    /// ([`View::abort_target`]: the same owners, one epoch on), leavers are up again, joiners
    /// stay joining. Copies already handed to new replicas are swept by them. Only the
    /// claimant `me` may abort ([`ChangeError::NotClaimant`]): it alone completes a
    /// transition, so an abort and a completion never both happen. The caller has verified
    /// the signature.
    pub fn abort(
        &mut self,
        me: NodeId,
        n: u8,
        target: &Ring,
        authority: Authority,
    ) -> Result<(), ChangeError> {
        let expected = self.abort_target(n)?;
        match self.claimant() {
            Some(c) if c == me => {}
            Some(claimant) => return Err(ChangeError::NotClaimant { claimant }),
            None => return Err(ChangeError::NothingToAbort),
        }
        if expected != *target || !authority.forced.is_empty() {
            return Err(ChangeError::PlanChanged);
        }
        let leavers = self
            .transition
            .as_ref()
            .map(|t| t.leavers(&self.ring))
            .unwrap_or_default();
        for id in leavers {
            self.set_status(id, Status::Up);
        }
        self.ring = expected;
        self.ring_authority = Some(authority);
        self.transition = None;
        Ok(())
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
                    // A node removed by force holds nothing the cluster counts: the operator
                    // declared it lost, and its peers shut it out.
                    Status::Removed => {
                        swept != SWEPT_FOR_GOOD && !self.removed_by_force.contains(id)
                    }
                }
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether every node taking part in the running transition (old and new owners, but
    /// not those it removes by force) has seen it, so that every coordinator already copies
    /// new writes to the new replicas and a scan started now misses nothing.
    pub fn all_seen(&self) -> bool {
        let Some(t) = &self.transition else {
            return false;
        };
        let epoch = t.target.epoch();
        let forced = t.forced();
        self.ring
            .members()
            .chain(t.target.members())
            .filter(|m| !forced.contains(&m.id))
            .all(|m| self.seen.get(&m.id).copied().unwrap_or(0) >= epoch)
    }

    /// Adds the nodes the operator removed by force, in the running transition or in the
    /// change that made the ring, to [`View::removed_by_force`]. Only signed changes this
    /// view holds count ([`View::merge_checked`] takes no peer's list).
    pub(super) fn note_removed_by_force(&mut self) {
        let signed = self
            .ring_authority
            .iter()
            .chain(self.transition.iter().filter_map(|t| t.authority.as_ref()));
        let forced: Vec<NodeId> = signed.flat_map(|a| a.forced.iter().copied()).collect();
        self.removed_by_force.extend(forced);
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
    /// Signs the abort of `view`'s running transition and applies it as node `me` (the
    /// claimant): what `ringkv abort` does with a real key, for the simulator and tests.
    pub fn abort(&self, view: &mut View, me: NodeId, n: u8) -> Result<Ring, ChangeError> {
        let target = view.abort_target(n)?;
        let authority = self.sign(view.cluster, &target, n);
        view.abort(me, n, &target, authority)?;
        Ok(target)
    }

    /// Plans `view`'s staged changes at factor `n`, signs the plan and commits it: what the
    /// admin CLI does with a real key, for the simulator and tests.
    pub fn commit(&self, view: &mut View, n: u8) -> Result<Transition, ChangeError> {
        let target = view.planned_with(n)?;
        let authority = self.sign_forced(view.cluster, &target, n, &view.staged.forced);
        view.commit(n, &target, authority).cloned()
    }
}
