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
use ringkv_net::quic::SERVER_NAME;
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
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert_pem = ca_params()?.self_signed(&key).map_err(gen_err)?.pem();
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
    /// `-` and `_`, e.g. `n1` or `cart-api`).
    pub fn issue(&self, role: &Role, name: &str) -> Result<IssuedCert, CertError> {
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

/// Writes `contents` to `path`; private keys (`secret`) are created with mode 0600.
pub fn write_pem(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = secret;
    use std::io::Write;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
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
        let leaf = again
            .issue(&Role::Node(ringkv_shared::NodeId(1)), "n1")
            .unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // Chain validity is exercised end to end by the TLS tests (tests/tls.rs).
        let id = ringkv_net::quic::TlsIdentity {
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            cert_pem: leaf.cert_pem.into_bytes(),
            key_pem: leaf.key_pem.into_bytes(),
        };
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
}
