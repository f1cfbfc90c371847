//! Ring changes signed by an operator: what is signed, and the check every node makes.
//!
//! A node certificate lets its holder gossip, and gossip carries the ring and the committed
//! transition. Without more, a stolen node certificate could gossip a join or a leave the
//! planner would make and every node would start moving data to it. So a ring change counts
//! only with an [`Authority`]: an operator's signature, made by the admin CLI with the key of
//! an `ringkv://admin/...` certificate, over [`change_message`] (the cluster, the target ring
//! and the replication factor). Nodes check it with a [`ChangeVerifier`] before they take a
//! transition or a ring from a peer ([`crate::membership::View::merge_checked`]).
//!
//! This module holds no cryptography: the message, the signed record and the verifier's
//! contract. `ringkv-net` verifies X.509 signatures against the cluster CA; the simulator uses
//! [`SimulatedOperator`], a keyed digest, because it tests the protocol, not the cryptography.

use crate::ids::{ClusterId, NodeId};
use crate::ring::Ring;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Version of [`change_message`]'s encoding; part of the message, so that a signature made
/// for one encoding never verifies under another.
pub const CHANGE_MESSAGE_VERSION: u8 = 1;

/// Version of [`change_message`]'s encoding for a change that removes nodes by force (it
/// signs the set of them too).
pub const FORCED_CHANGE_MESSAGE_VERSION: u8 = 2;

/// Domain separation: the signed bytes start with this, so that an operator's signature over
/// a ring change cannot be replayed as anything else the key signs (a TLS handshake).
const CONTEXT: &[u8] = b"ringkv ring change\0";

/// An operator's signature over a ring change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Authority {
    /// The replication factor the change was planned for (part of the signed message).
    pub n: u8,
    /// The TLS signature scheme (`rustls::SignatureScheme` as its IANA number).
    pub scheme: u16,
    /// The signer's certificate, DER.
    pub signer: Vec<u8>,
    /// The signature over [`change_message`].
    pub signature: Vec<u8>,
    /// Nodes the change removes by force (dead for good: nothing is copied from them, nothing
    /// waits for them). Signed with the rest; empty for any other change, and then not
    /// encoded at all, so a signature over an ordinary change reads the same in every release.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub forced: BTreeSet<NodeId>,
}

/// The bytes an operator signs to change cluster `cluster`'s ring to `target` at replication
/// factor `n`, removing the nodes in `forced` by force. The target's epoch is inside it, so a
/// signature is good for one step only.
pub fn change_message(
    cluster: Option<ClusterId>,
    target: &Ring,
    n: u8,
    forced: &BTreeSet<NodeId>,
) -> Vec<u8> {
    let body = if forced.is_empty() {
        rmp_serde::to_vec(&(CHANGE_MESSAGE_VERSION, cluster, target, n))
    } else {
        rmp_serde::to_vec(&(FORCED_CHANGE_MESSAGE_VERSION, cluster, target, n, forced))
    }
    .expect("a ring always encodes");
    let mut out = Vec::with_capacity(CONTEXT.len() + body.len());
    out.extend_from_slice(CONTEXT);
    out.extend_from_slice(&body);
    out
}

/// Why a ring change's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The change carries no signature.
    #[error("the ring change is not signed by an operator")]
    Unsigned,
    /// The signer's certificate is not one the cluster CA signed, or is not valid now.
    #[error("the signer's certificate is not valid for this cluster: {reason}")]
    Certificate {
        /// What the check said.
        reason: String,
    },
    /// The signer's certificate names another role than an operator's.
    #[error(
        "the signer's certificate is a {role} certificate; only an operator's may change the ring"
    )]
    NotAnOperator {
        /// The role it names.
        role: String,
    },
    /// The signature does not verify over this change.
    #[error("the signature does not match the ring change ({reason})")]
    BadSignature {
        /// What failed.
        reason: String,
    },
    /// Signed for another replication factor than the change has.
    #[error("signed for n = {signed}, the change is for n = {change}")]
    WrongN {
        /// In the signature.
        signed: u8,
        /// In the change.
        change: u8,
    },
}

/// Checks operators' signatures. Implementations must be cheap to call repeatedly with the
/// same input (a node asks once per peer view that carries an unverified change) and must
/// not block on I/O.
pub trait ChangeVerifier: Send + Sync {
    /// Whether `authority` is an operator's signature over `message`.
    fn verify(&self, message: &[u8], authority: &Authority) -> Result<(), AuthorityError>;
}

/// Checks that `authority` signs the change of `cluster`'s ring to `target` at factor `n`
/// (removing `authority.forced` by force).
pub fn verify_change(
    verifier: &dyn ChangeVerifier,
    cluster: Option<ClusterId>,
    target: &Ring,
    n: u8,
    authority: Option<&Authority>,
) -> Result<(), AuthorityError> {
    let authority = authority.ok_or(AuthorityError::Unsigned)?;
    if authority.n != n {
        return Err(AuthorityError::WrongN {
            signed: authority.n,
            change: n,
        });
    }
    verifier.verify(
        &change_message(cluster, target, n, &authority.forced),
        authority,
    )
}

/// A stand-in operator key for the simulator and for tests of the protocol: a "signature" is
/// an xxh3 digest of the message keyed with [`SimulatedOperator::key`]. **Not
/// cryptographic**: anyone who knows the key can sign, and a node built with it trusts them.
/// Real nodes verify X.509 signatures (`ringkv_net::quic::CaVerifier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimulatedOperator {
    /// The shared key.
    pub key: u64,
}

/// The scheme number [`SimulatedOperator`] signs with (from the TLS private-use range).
pub const SIMULATED_SCHEME: u16 = 0xFE00;

impl SimulatedOperator {
    /// The simulator's operator.
    pub const fn new(key: u64) -> Self {
        Self { key }
    }

    fn digest(&self, message: &[u8]) -> Vec<u8> {
        xxhash_rust::xxh3::xxh3_64_with_seed(message, self.key)
            .to_be_bytes()
            .to_vec()
    }

    /// Signs the change of `cluster`'s ring to `target` at factor `n`.
    pub fn sign(&self, cluster: Option<ClusterId>, target: &Ring, n: u8) -> Authority {
        self.sign_forced(cluster, target, n, &BTreeSet::new())
    }

    /// Signs the change of `cluster`'s ring to `target` at factor `n` that removes `forced`
    /// by force.
    pub fn sign_forced(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
        forced: &BTreeSet<NodeId>,
    ) -> Authority {
        Authority {
            n,
            scheme: SIMULATED_SCHEME,
            signer: b"simulated operator".to_vec(),
            signature: self.digest(&change_message(cluster, target, n, forced)),
            forced: forced.clone(),
        }
    }
}

impl ChangeVerifier for SimulatedOperator {
    fn verify(&self, message: &[u8], authority: &Authority) -> Result<(), AuthorityError> {
        if authority.scheme != SIMULATED_SCHEME || authority.signature != self.digest(message) {
            return Err(AuthorityError::BadSignature {
                reason: "not the simulated operator's digest".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::ring::Member;

    fn ring(epoch: u64) -> Ring {
        let members = (1..=3)
            .map(|i| {
                Member::at(
                    NodeId(i),
                    std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect();
        let owners = (0..8).map(|p| NodeId(p % 3 + 1)).collect();
        Ring::from_owners(epoch, members, owners).expect("valid ring")
    }

    #[test]
    fn a_signature_is_good_for_its_own_change_only() {
        let op = SimulatedOperator::new(7);
        let cluster = Some(ClusterId(1));
        let a = op.sign(cluster, &ring(2), 3);
        assert_eq!(verify_change(&op, cluster, &ring(2), 3, Some(&a)), Ok(()));
        // Another epoch, cluster, n, key, or no signature at all: refused.
        assert!(verify_change(&op, cluster, &ring(3), 3, Some(&a)).is_err());
        assert!(verify_change(&op, Some(ClusterId(2)), &ring(2), 3, Some(&a)).is_err());
        assert!(matches!(
            verify_change(&op, cluster, &ring(2), 2, Some(&a)),
            Err(AuthorityError::WrongN { .. })
        ));
        assert!(verify_change(&SimulatedOperator::new(8), cluster, &ring(2), 3, Some(&a)).is_err());
        assert_eq!(
            verify_change(&op, cluster, &ring(2), 3, None),
            Err(AuthorityError::Unsigned)
        );
    }

    #[test]
    fn the_nodes_removed_by_force_are_signed_with_the_change() {
        let op = SimulatedOperator::new(7);
        let cluster = Some(ClusterId(1));
        let forced: BTreeSet<NodeId> = [NodeId(3)].into();
        let a = op.sign_forced(cluster, &ring(2), 3, &forced);
        assert_eq!(verify_change(&op, cluster, &ring(2), 3, Some(&a)), Ok(()));
        // Another set, or none, under the same signature: refused.
        for other in [
            BTreeSet::new(),
            [NodeId(2)].into(),
            [NodeId(2), NodeId(3)].into(),
        ] {
            let mut forged = a.clone();
            forged.forced = other;
            assert!(verify_change(&op, cluster, &ring(2), 3, Some(&forged)).is_err());
        }
        let plain = op.sign(cluster, &ring(2), 3);
        let mut forged = plain.clone();
        forged.forced = forced;
        assert!(verify_change(&op, cluster, &ring(2), 3, Some(&forged)).is_err());
        // An ordinary change's signature encodes as before forced removals existed.
        let encoded = rmp_serde::to_vec(&plain).unwrap();
        let before =
            rmp_serde::to_vec(&(plain.n, plain.scheme, &plain.signer, &plain.signature)).unwrap();
        assert_eq!(encoded, before);
    }

    #[test]
    fn the_message_is_versioned_and_separated_from_other_uses_of_the_key() {
        let m = change_message(None, &ring(1), 3, &BTreeSet::new());
        assert!(m.starts_with(CONTEXT));
        // rmp encodes the tuple as an array whose first element is the version.
        assert_eq!(m[CONTEXT.len() + 1], CHANGE_MESSAGE_VERSION);
    }
}
