//! Operators' signatures over ring changes, with X.509 keys ([`ringkv_shared::authority`]):
//! [`OperatorKey`] signs with an admin certificate's key (the admin CLI), [`CaVerifier`]
//! checks a signature against the cluster CA (every node).

use super::peer::role_of_certificate;
use super::tls::{TlsError, TlsIdentity, provider};
use ringkv_shared::ClusterId;
use ringkv_shared::authority::{Authority, AuthorityError, ChangeVerifier, change_message};
use ringkv_shared::ring::Ring;
use ringkv_shared::roles::Role;
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

/// The signature schemes operators sign with and nodes accept (what `ringkv-node certs`
/// issues is ECDSA P-256; the others are for certificates made elsewhere).
const SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

/// Checks that a ring change is signed with the key of an admin certificate the cluster CA
/// issued and that is valid now.
pub struct CaVerifier {
    chain: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for CaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaVerifier").finish_non_exhaustive()
    }
}

impl CaVerifier {
    /// A verifier trusting the CA certificate(s) of `identity`.
    pub fn new(identity: &TlsIdentity) -> Result<Self, TlsError> {
        let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(identity.roots()?),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config {
            reason: e.to_string(),
        })?;
        Ok(Self { chain })
    }
}

impl ChangeVerifier for CaVerifier {
    fn verify(&self, message: &[u8], authority: &Authority) -> Result<(), AuthorityError> {
        let leaf = CertificateDer::from(authority.signer.as_slice());
        self.chain
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .map_err(|e| AuthorityError::Certificate {
                reason: e.to_string(),
            })?;
        let role = role_of_certificate(&authority.signer);
        if role != Role::Admin {
            return Err(AuthorityError::NotAnOperator { role: role.name() });
        }
        let bad = |reason: &str| AuthorityError::BadSignature {
            reason: reason.into(),
        };
        let algorithm: &'static dyn ring::signature::VerificationAlgorithm =
            match SignatureScheme::from(authority.scheme) {
                SignatureScheme::ECDSA_NISTP256_SHA256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
                SignatureScheme::ECDSA_NISTP384_SHA384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
                SignatureScheme::ED25519 => &ring::signature::ED25519,
                _ => return Err(bad("a signature scheme nodes do not accept")),
            };
        let (_, cert) = x509_parser::parse_x509_certificate(&authority.signer)
            .map_err(|_| bad("the signer's certificate cannot be read"))?;
        let key = &cert.public_key().subject_public_key.data;
        ring::signature::UnparsedPublicKey::new(algorithm, key.as_ref())
            .verify(message, &authority.signature)
            .map_err(|_| bad("it was not made with the signer's key over this change"))
    }
}

/// Why an operator key cannot sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The TLS material cannot be read.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The certificate is not an operator's.
    #[error(
        "ring changes are signed with an admin certificate; this one is a {role} certificate (issue one with `ringkv-node certs admin <name>`)"
    )]
    NotAnOperator {
        /// The role it names.
        role: String,
    },
    /// The key cannot sign with a scheme nodes accept.
    #[error("the private key cannot sign ring changes: {reason}")]
    Key {
        /// Why.
        reason: String,
    },
}

/// An operator's signing key: the key of an admin certificate.
pub struct OperatorKey {
    leaf: Vec<u8>,
    key: Arc<dyn rustls::sign::SigningKey>,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorKey").finish_non_exhaustive()
    }
}

impl OperatorKey {
    /// The key of `identity`, which must be an admin certificate.
    pub fn from_identity(identity: &TlsIdentity) -> Result<Self, SigningError> {
        let leaf = identity
            .chain()?
            .into_iter()
            .next()
            .map(|c| c.to_vec())
            .ok_or_else(|| SigningError::Key {
                reason: "no certificate".into(),
            })?;
        let role = role_of_certificate(&leaf);
        if role != Role::Admin {
            return Err(SigningError::NotAnOperator { role: role.name() });
        }
        let key =
            rustls::crypto::ring::sign::any_supported_type(&identity.key()?).map_err(|e| {
                SigningError::Key {
                    reason: e.to_string(),
                }
            })?;
        Ok(Self { leaf, key })
    }

    /// Signs the change of `cluster`'s ring to `target` at replication factor `n` that
    /// removes `forced` by force (empty for an ordinary change).
    pub fn sign(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
        forced: &std::collections::BTreeSet<ringkv_shared::NodeId>,
    ) -> Result<Authority, SigningError> {
        let signer = self
            .key
            .choose_scheme(&SCHEMES)
            .ok_or_else(|| SigningError::Key {
                reason: "its algorithm is not ECDSA P-256/P-384 or Ed25519".into(),
            })?;
        let signature = signer
            .sign(&change_message(cluster, target, n, forced))
            .map_err(|e| SigningError::Key {
                reason: e.to_string(),
            })?;
        Ok(Authority {
            n,
            scheme: u16::from(signer.scheme()),
            signer: self.leaf.clone(),
            signature,
            forced: forced.clone(),
        })
    }
}
