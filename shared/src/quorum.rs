//! The quorum engine: a state machine fed with replica replies, without I/O.
//!
//! The same code decides "R answers arrived, these replicas are stale" in the client (direct
//! mode) and in a node (router mode). A driver (`ringkv_net::fanout`) sends the requests,
//! feeds each reply to [`WriteQuorum::record`] or [`ReadQuorum::record`], and acts on the
//! returned [`Progress`]: `Met` means answer the caller now, `Failed` means the quorum can no
//! longer be met whatever the stragglers say, `Pending` means wait.

use crate::error::{ReplicaError, ReplyError};
use crate::ids::NodeId;
use crate::object::Object;
use serde::{Deserialize, Serialize};

/// In which capacity a node answered a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// One of the key's first N owners.
    Owner,
    /// A node further down the preference list, asked in place of an owner; it counts only
    /// when it holds the key or a hint for it.
    StandIn,
}

/// One answer a read was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Answer {
    /// The node that answered.
    pub node: NodeId,
    /// Whether it is an owner of the key or a stand-in.
    pub role: Role,
}

/// Where a quorum stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not decided: more replies are needed and can still arrive.
    Pending,
    /// Enough replicas succeeded.
    Met,
    /// Too many replicas failed for the quorum ever to be met.
    Failed,
}

/// Counts successes and failures of a set of contacted replicas.
#[derive(Clone, Debug)]
struct Tally {
    required: usize,
    contacted: Vec<NodeId>,
    succeeded: Vec<NodeId>,
    errors: Vec<(NodeId, ReplicaError)>,
}

impl Tally {
    fn new(required: usize, contacted: Vec<NodeId>) -> Self {
        Self {
            required,
            contacted,
            succeeded: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn answered(&self, node: NodeId) -> bool {
        self.succeeded.contains(&node) || self.errors.iter().any(|(n, _)| *n == node)
    }

    /// Records a reply; a second reply from the same node, or one from a node never
    /// contacted, is ignored (duplicated or misrouted messages must not count twice).
    fn record(&mut self, node: NodeId, ok: Result<(), ReplicaError>) -> bool {
        if !self.contacted.contains(&node) || self.answered(node) {
            return false;
        }
        match ok {
            Ok(()) => self.succeeded.push(node),
            Err(e) => self.errors.push((node, e)),
        }
        true
    }

    fn progress(&self) -> Progress {
        if self.succeeded.len() >= self.required {
            Progress::Met
        } else if self.contacted.len() - self.errors.len() < self.required {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    fn pending(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.contacted
            .iter()
            .copied()
            .filter(|n| !self.answered(*n))
    }

    fn into_error(self) -> ReplyError {
        // Replicas still pending when the quorum became impossible were not waited for;
        // otherwise the deadline cut them off.
        let straggler = if self.progress() == Progress::Failed {
            ReplicaError::NotAwaited
        } else {
            ReplicaError::TimedOut
        };
        let mut errors = self.errors;
        errors.extend(
            self.contacted
                .iter()
                .filter(|n| !self.succeeded.contains(n) && !errors.iter().any(|(m, _)| m == *n))
                .map(|n| (*n, straggler.clone()))
                .collect::<Vec<_>>(),
        );
        ReplyError::QuorumFailed {
            required: clamp(self.required),
            succeeded: clamp(self.succeeded.len()),
            errors,
        }
    }
}

fn clamp(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// A write quorum: `required` acknowledgements out of the contacted replicas.
#[derive(Clone, Debug)]
pub struct WriteQuorum {
    tally: Tally,
}

impl WriteQuorum {
    /// A quorum needing `required` acks from `contacted` (replicas known down may be listed in
    /// `contacted` and recorded as failed right away).
    pub fn new(required: usize, contacted: Vec<NodeId>) -> Self {
        Self {
            tally: Tally::new(required, contacted),
        }
    }

    /// Records one replica's answer and returns where the quorum stands.
    pub fn record(&mut self, node: NodeId, result: Result<(), ReplicaError>) -> Progress {
        self.tally.record(node, result);
        self.progress()
    }

    /// Where the quorum stands.
    pub fn progress(&self) -> Progress {
        self.tally.progress()
    }

    /// Replicas that acknowledged.
    pub fn acked(&self) -> &[NodeId] {
        &self.tally.succeeded
    }

    /// Replicas that have not answered yet.
    pub fn pending(&self) -> Vec<NodeId> {
        self.tally.pending().collect()
    }

    /// The error to report when the quorum was not met: every replica that did not succeed is
    /// named; stragglers as [`ReplicaError::NotAwaited`] if the quorum had already failed, or
    /// [`ReplicaError::TimedOut`] if the deadline cut them off.
    pub fn into_error(self) -> ReplyError {
        self.tally.into_error()
    }
}

/// A read quorum: `required` answers, merged into one object, remembering who answered what
/// so that stale replicas can be repaired.
///
/// **Absence is evidence only from an owner.** An owner's empty answer ("never written")
/// counts toward `required`. A stand-in's empty answer does not: a node outside the key's
/// first N owners that holds neither the key nor a hint for it knows nothing about the key,
/// so it is recorded as [`ReplicaError::HoldsNothing`] and the driver asks another node in
/// its place (or waits for the owners). A stand-in that holds the key or a hint answers with
/// a non-empty object and counts like an owner. This is Riak's `notfound_ok = false` for
/// stand-ins and `notfound_ok = true` for owners.
#[derive(Clone, Debug)]
pub struct ReadQuorum {
    tally: Tally,
    owners: Vec<NodeId>,
    replies: Vec<(NodeId, Object)>,
    merged: Object,
}

impl ReadQuorum {
    /// A quorum needing `required` answers from `contacted`, where `owners` are the key's
    /// first N owners (every other node is a stand-in).
    pub fn new(required: usize, contacted: Vec<NodeId>, owners: Vec<NodeId>) -> Self {
        Self {
            tally: Tally::new(required, contacted),
            owners,
            replies: Vec::new(),
            merged: Object::new(),
        }
    }

    /// The capacity `node` answers in.
    pub fn role(&self, node: NodeId) -> Role {
        if self.owners.contains(&node) {
            Role::Owner
        } else {
            Role::StandIn
        }
    }

    /// Adds a node to those contacted (a substitute for one that failed).
    pub fn contact(&mut self, node: NodeId) {
        if !self.tally.contacted.contains(&node) {
            self.tally.contacted.push(node);
        }
    }

    /// Records one replica's answer (its object; empty if it holds nothing for the key) and
    /// returns where the quorum stands. Answers after the quorum was met still count for
    /// [`Self::stale`].
    pub fn record(&mut self, node: NodeId, result: Result<Object, ReplicaError>) -> Progress {
        let result = match result {
            Ok(object) if object.is_empty() && self.role(node) == Role::StandIn => {
                Err(ReplicaError::HoldsNothing)
            }
            other => other,
        };
        match result {
            Ok(object) => {
                if self.tally.record(node, Ok(())) {
                    self.merged.merge(&object);
                    self.replies.push((node, object));
                }
            }
            Err(e) => {
                self.tally.record(node, Err(e));
            }
        }
        self.progress()
    }

    /// Where the quorum stands.
    pub fn progress(&self) -> Progress {
        self.tally.progress()
    }

    /// The merge of every answer so far.
    pub fn merged(&self) -> &Object {
        &self.merged
    }

    /// Replicas that answered with something less than the merged object: they need the
    /// merged object written back (read repair).
    pub fn stale(&self) -> Vec<NodeId> {
        self.replies
            .iter()
            .filter(|(_, o)| !o.dominates(&self.merged))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Replicas whose object was received.
    pub fn replied(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replies.iter().map(|(n, _)| *n)
    }

    /// How many contacted nodes have failed so far (errors, and stand-ins that held nothing).
    pub fn failures(&self) -> usize {
        self.tally.errors.len()
    }

    /// The answers counted so far, each with its role, in arrival order.
    pub fn answers(&self) -> Vec<Answer> {
        self.replied()
            .map(|node| Answer {
                node,
                role: self.role(node),
            })
            .collect()
    }

    /// How many distinct versions the answers held (1 when every replica agreed). Dynamo
    /// reports this to show how rarely divergence reaches readers.
    pub fn distinct_versions(&self) -> usize {
        let mut distinct: Vec<&Object> = Vec::new();
        for (_, o) in &self.replies {
            if !distinct.contains(&o) {
                distinct.push(o);
            }
        }
        distinct.len()
    }

    /// Replicas that have not answered yet.
    pub fn pending(&self) -> Vec<NodeId> {
        self.tally.pending().collect()
    }

    /// The error to report when the quorum was not met.
    pub fn into_error(self) -> ReplyError {
        self.tally.into_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dvv::VersionVector;
    use crate::ids::ActorId;
    use bytes::Bytes;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn write_quorum_meets_and_fails() {
        let mut q = WriteQuorum::new(2, ids(&[1, 2, 3]));
        assert_eq!(q.record(NodeId(1), Ok(())), Progress::Pending);
        assert_eq!(
            q.record(NodeId(1), Ok(())),
            Progress::Pending,
            "duplicates do not count"
        );
        assert_eq!(
            q.record(NodeId(9), Ok(())),
            Progress::Pending,
            "strangers do not count"
        );
        assert_eq!(q.record(NodeId(2), Ok(())), Progress::Met);

        let mut q = WriteQuorum::new(3, ids(&[1, 2, 3]));
        assert_eq!(q.record(NodeId(1), Ok(())), Progress::Pending);
        assert_eq!(
            q.record(NodeId(3), Err(ReplicaError::TimedOut)),
            Progress::Failed
        );
        match q.into_error() {
            ReplyError::QuorumFailed {
                required,
                succeeded,
                errors,
            } => {
                assert_eq!((required, succeeded), (3, 1));
                assert_eq!(
                    errors,
                    vec![
                        (NodeId(3), ReplicaError::TimedOut),
                        (NodeId(2), ReplicaError::NotAwaited)
                    ],
                    "failed first, then stragglers"
                );
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn too_few_contacted_fails_immediately() {
        assert_eq!(
            WriteQuorum::new(3, ids(&[1, 2])).progress(),
            Progress::Failed
        );
    }

    #[test]
    fn read_quorum_merges_and_finds_stale() {
        let mut newer = Object::new();
        newer
            .update(
                &VersionVector::new(),
                Some(Bytes::from_static(b"v1")),
                ActorId(1),
            )
            .unwrap();
        let old = newer.clone();
        let ctx = newer.clock().clone();
        newer
            .update(&ctx, Some(Bytes::from_static(b"v2")), ActorId(1))
            .unwrap();

        let mut q = ReadQuorum::new(2, ids(&[1, 2, 3]), ids(&[1, 2, 3]));
        assert_eq!(q.record(NodeId(1), Ok(newer.clone())), Progress::Pending);
        assert_eq!(q.record(NodeId(2), Ok(old)), Progress::Met);
        assert_eq!(q.record(NodeId(3), Ok(Object::new())), Progress::Met);
        assert_eq!(q.merged(), &newer);
        assert_eq!(q.stale(), ids(&[2, 3]));
        assert_eq!(q.distinct_versions(), 3);
    }

    /// A stand-in that holds nothing is no evidence: with R=2, one owner's answer plus two
    /// empty stand-ins is not a quorum, and the error names what each said. A stand-in holding
    /// a hint counts, and an owner's empty answer counts.
    #[test]
    fn empty_standins_do_not_count_toward_r() {
        let mut held = Object::new();
        held.update(
            &VersionVector::new(),
            Some(Bytes::from_static(b"v")),
            ActorId(1),
        )
        .unwrap();
        // Owners 1, 2, 3; 4 and 5 stand in for the suspected 2 and 3.
        let mut q = ReadQuorum::new(2, ids(&[1, 4, 5]), ids(&[1, 2, 3]));
        assert_eq!(q.record(NodeId(1), Ok(held.clone())), Progress::Pending);
        assert_eq!(q.record(NodeId(4), Ok(Object::new())), Progress::Pending);
        assert_eq!(q.record(NodeId(5), Ok(Object::new())), Progress::Failed);
        assert_eq!(
            q.answers(),
            vec![Answer {
                node: NodeId(1),
                role: Role::Owner
            }]
        );
        match q.into_error() {
            ReplyError::QuorumFailed {
                succeeded, errors, ..
            } => {
                assert_eq!(succeeded, 1);
                assert_eq!(
                    errors,
                    vec![
                        (NodeId(4), ReplicaError::HoldsNothing),
                        (NodeId(5), ReplicaError::HoldsNothing)
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }

        let mut q = ReadQuorum::new(2, ids(&[1, 4]), ids(&[1, 2, 3]));
        assert_eq!(q.record(NodeId(1), Ok(Object::new())), Progress::Pending);
        assert_eq!(q.record(NodeId(4), Ok(held.clone())), Progress::Met);
        assert_eq!(
            q.answers(),
            vec![
                Answer {
                    node: NodeId(1),
                    role: Role::Owner
                },
                Answer {
                    node: NodeId(4),
                    role: Role::StandIn
                }
            ]
        );
        assert_eq!(q.merged(), &held);
    }

    /// Random reply orders, drops and duplicates: the engine decides `Met` exactly when
    /// `required` distinct contacted replicas succeeded, and `Failed` exactly when that can no
    /// longer happen.
    #[test]
    fn decisions_match_counts_under_random_delivery() {
        use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
        let seed: u64 = rand::random();
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..2000 {
            let n = rng.random_range(1..=5u32);
            let required = rng.random_range(1..=n as usize);
            let contacted: Vec<NodeId> = (1..=n).map(NodeId).collect();
            let mut q = WriteQuorum::new(required, contacted.clone());
            let mut msgs: Vec<(NodeId, bool)> = contacted
                .iter()
                .flat_map(|&c| {
                    std::iter::repeat_n((c, rng.random_bool(0.6)), rng.random_range(0..3))
                })
                .collect();
            msgs.shuffle(&mut rng);
            let (mut ok, mut bad) = (Vec::new(), Vec::new());
            for (node, good) in msgs {
                let fresh = !ok.contains(&node) && !bad.contains(&node);
                let p = q.record(
                    node,
                    if good {
                        Ok(())
                    } else {
                        Err(ReplicaError::TimedOut)
                    },
                );
                if fresh {
                    if good { ok.push(node) } else { bad.push(node) }
                }
                let expect = if ok.len() >= required {
                    Progress::Met
                } else if n as usize - bad.len() < required {
                    Progress::Failed
                } else {
                    Progress::Pending
                };
                assert_eq!(p, expect, "seed {seed}");
            }
        }
    }
}
