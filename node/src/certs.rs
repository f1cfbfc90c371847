//! Development certificates: a cluster CA, and the node, admin and client certificates it signs
//! (rcgen).
//!
//! Every leaf names its role as a URI subject alternative name ([`Role::uri`]:
//! `ringkv://node/<id>`, `ringkv://admin/<name>`, `ringkv://client/<name>`), which nodes check
//! on every request ([`ringkv_shared::roles::permits`]). For production, issue certificates from
//! your own PKI with the same shape: node certificates carry the DNS name
//! [`ringkv_net::quic::SERVER_NAME`], their role URI and both server and client authentication;
//! admin and client certificates carry their role URI and client authentication.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ringkv_net::quic::{SERVER_NAME, TlsIdentity};
pub use ringkv_shared::roles::Role;
use std::path::{Path, PathBuf};

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen failed.
    #[error("certificate generation failed: {reason}")]
    Generate {
        /// rcgen's message.
        reason: String,
    },
    /// A certificate name that cannot be used.
    #[error("certificate name {name:?}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn gen_err(e: rcgen::Error) -> CertError {
    CertError::Generate {
        reason: e.to_string(),
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// A development certificate authority.
pub struct DevCa {
    key: KeyPair,
    cert_pem: String,
}

/// Days a CA made by [`DevCa::generate`] is valid for.
pub const CA_DAYS: u32 = 3650;
/// Days a leaf made by [`DevCa::issue`] is valid for.
pub const LEAF_DAYS: u32 = 365;

/// Valid from an hour ago (clocks differ a little between hosts) for `days`.
fn validity(params: &mut CertificateParams, days: u32) -> Result<(), CertError> {
    if days == 0 {
        return Err(CertError::Generate {
            reason: "a certificate must be valid for at least a day".into(),
        });
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days.into());
    Ok(())
}

fn ca_params() -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ringkv development CA");
    dn.push(DnType::OrganizationName, "ringkv");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

impl DevCa {
    /// A new CA with a fresh key, valid for [`CA_DAYS`].
    pub fn generate() -> Result<Self, CertError> {
        Self::generate_valid_for(CA_DAYS)
    }

    /// A new CA with a fresh key, valid for `days`.
    pub fn generate_valid_for(days: u32) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = ca_params()?;
        validity(&mut params, days)?;
        let cert_pem = params.self_signed(&key).map_err(gen_err)?.pem();
        Ok(Self { key, cert_pem })
    }

    /// Reloads a CA made by [`DevCa::generate`] from its certificate and key PEM.
    pub fn from_pem(cert_pem: String, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(gen_err)?;
        Ok(Self { key, cert_pem })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `role` named `name` (a DNS-style name: letters, digits, `.`,
    /// `-` and `_`, e.g. `n1` or `cart-api`), valid for [`LEAF_DAYS`].
    pub fn issue(&self, role: &Role, name: &str) -> Result<IssuedCert, CertError> {
        self.issue_valid_for(role, name, LEAF_DAYS)
    }

    /// A certificate for `role` named `name` with its key and this CA, as the TLS identity a
    /// node or client presents ([`DevCa::issue`]).
    pub fn identity(&self, role: &Role, name: &str) -> Result<TlsIdentity, CertError> {
        self.identity_valid_for(role, name, LEAF_DAYS)
    }

    /// [`DevCa::identity`], valid for `days`.
    pub fn identity_valid_for(
        &self,
        role: &Role,
        name: &str,
        days: u32,
    ) -> Result<TlsIdentity, CertError> {
        let leaf = self.issue_valid_for(role, name, days)?;
        Ok(TlsIdentity {
            ca_pem: self.cert_pem().as_bytes().to_vec(),
            cert_pem: leaf.cert_pem.into_bytes(),
            key_pem: leaf.key_pem.into_bytes(),
        })
    }

    /// [`DevCa::issue`], valid for `days`.
    pub fn issue_valid_for(
        &self,
        role: &Role,
        name: &str,
        days: u32,
    ) -> Result<IssuedCert, CertError> {
        let bad = |reason| CertError::Name {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 63 {
            return Err(bad("must be 1 to 63 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad("may hold only letters, digits, `.`, `-` and `_`"));
        }
        let mut sans = vec![name.to_owned()];
        if matches!(role, Role::Node(_)) {
            sans.push(SERVER_NAME.to_owned());
        }
        sans.dedup();
        let mut params = CertificateParams::new(sans).map_err(gen_err)?;
        let uri = role.uri(name).try_into().map_err(gen_err)?;
        params.subject_alt_names.push(SanType::URI(uri));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        validity(&mut params, days)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Node(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Admin | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let key = KeyPair::generate().map_err(gen_err)?;
        let issuer = Issuer::new(ca_params()?, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to `path` atomically: into a new file beside it, then renamed over it,
/// so that a crash leaves the old file or the new one, never half of one. Private keys
/// (`secret`) get mode 0600 every time, whatever the file had before.
pub fn write_pem(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let _ = secret;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        use std::io::Write;
        let mut f = opts.open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Reads a PEM file.
pub fn read_pem(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain() {
        let ca = DevCa::generate().unwrap();
        let again = DevCa::from_pem(ca.cert_pem().to_owned(), &ca.key_pem()).unwrap();
        let id = again
            .identity(&Role::Node(ringkv_shared::NodeId(1)), "n1")
            .unwrap();
        assert!(id.cert_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert_eq!(id.ca_pem, ca.cert_pem().as_bytes());
        // Chain validity is exercised end to end by the TLS tests (tests/tls.rs).
        ringkv_net::quic::server_config(&id, &ringkv_shared::Limits::default()).unwrap();
    }

    #[test]
    fn every_role_is_read_back_from_its_certificate() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let ca = DevCa::generate().unwrap();
        for (role, name) in [
            (Role::Node(ringkv_shared::NodeId(3)), "n3"),
            (Role::Admin, "ops"),
            (Role::Client, "cart-api"),
        ] {
            let leaf = ca.issue(&role, name).unwrap();
            let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
            assert_eq!(ringkv_net::quic::role_of_certificate(&der), role);
        }
        assert!(matches!(
            ca.issue(&Role::Client, "a b"),
            Err(CertError::Name { .. })
        ));
        assert!(matches!(
            ca.issue(&Role::Client, ""),
            Err(CertError::Name { .. })
        ));
    }

    #[test]
    fn only_an_operator_of_this_cluster_signs_a_ring_change() {
        use ringkv_net::quic::{CaVerifier, OperatorKey, SigningError, TlsIdentity};
        use ringkv_shared::authority::{AuthorityError, verify_change};
        use ringkv_shared::{ClusterId, Member, NodeId, Ring};
        use rustls::pki_types::pem::PemObject;
        let tls = |ca: &DevCa, role: &Role, name: &str| {
            let leaf = ca.issue(role, name).unwrap();
            TlsIdentity {
                ca_pem: ca.cert_pem().as_bytes().to_vec(),
                cert_pem: leaf.cert_pem.into_bytes(),
                key_pem: leaf.key_pem.into_bytes(),
            }
        };
        let ca = DevCa::generate().unwrap();
        let admin = tls(&ca, &Role::Admin, "ops");
        let nodes = CaVerifier::new(&admin).unwrap();
        let members = (1..=3)
            .map(|i| {
                Member::at(
                    NodeId(i),
                    std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect::<Vec<_>>();
        let ring = Ring::balanced(16, members).unwrap();
        let cluster = Some(ClusterId(7));
        let signed = OperatorKey::from_identity(&admin)
            .unwrap()
            .sign(cluster, &ring, 3, &Default::default())
            .unwrap();
        assert_eq!(
            verify_change(&nodes, cluster, &ring, 3, Some(&signed)),
            Ok(())
        );
        // Over another change (cluster, n, ring), or with a bit flipped: refused.
        assert!(matches!(
            verify_change(&nodes, Some(ClusterId(8)), &ring, 3, Some(&signed)),
            Err(AuthorityError::BadSignature { .. })
        ));
        let later = Ring::from_owners(
            ring.epoch() + 1,
            ring.members().cloned().collect(),
            (0..ring.partition_count()).map(|p| ring.owner(p)).collect(),
        )
        .unwrap();
        assert!(matches!(
            verify_change(&nodes, cluster, &later, 3, Some(&signed)),
            Err(AuthorityError::BadSignature { .. })
        ));
        let mut flipped = signed.clone();
        let last = flipped.signature.len() - 1;
        flipped.signature[last] ^= 1;
        assert!(matches!(
            verify_change(&nodes, cluster, &ring, 3, Some(&flipped)),
            Err(AuthorityError::BadSignature { .. })
        ));
        // A node's or an application's key cannot sign (the CLI says so), and a signature
        // made with one anyway (the certificate swapped in afterwards) is refused.
        for (role, name) in [(Role::Node(NodeId(2)), "n2"), (Role::Client, "app")] {
            let other = tls(&ca, &role, name);
            assert!(matches!(
                OperatorKey::from_identity(&other),
                Err(SigningError::NotAnOperator { .. })
            ));
            let mut forged = signed.clone();
            forged.signer = rustls::pki_types::CertificateDer::from_pem_slice(&other.cert_pem)
                .unwrap()
                .to_vec();
            assert!(matches!(
                verify_change(&nodes, cluster, &ring, 3, Some(&forged)),
                Err(AuthorityError::NotAnOperator { .. })
            ));
        }
        // An operator of another CA is nobody here.
        let stranger = tls(&DevCa::generate().unwrap(), &Role::Admin, "ops");
        let theirs = OperatorKey::from_identity(&stranger)
            .unwrap()
            .sign(cluster, &ring, 3, &Default::default())
            .unwrap();
        assert!(matches!(
            verify_change(&nodes, cluster, &ring, 3, Some(&theirs)),
            Err(AuthorityError::Certificate { .. })
        ));
    }
}
