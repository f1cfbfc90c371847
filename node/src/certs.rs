//! Development certificates: a cluster CA, and node and client certificates it signs (rcgen).
//!
//! For production, issue certificates from your own PKI with the same shape: node certificates
//! carry the DNS name [`ringkv_net::quic::SERVER_NAME`] and both server and client
//! authentication; client certificates carry client authentication.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use ringkv_net::quic::SERVER_NAME;
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

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// A storage node: serves QUIC and calls other nodes.
    Node,
    /// An application using the client library.
    Client,
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

    /// Issues a certificate of `kind` named `name` (a DNS-style name, e.g. `n1` or `cart-api`).
    pub fn issue(&self, kind: CertKind, name: &str) -> Result<IssuedCert, CertError> {
        let mut sans = vec![name.to_owned()];
        if kind == CertKind::Node {
            sans.push(SERVER_NAME.to_owned());
        }
        sans.dedup();
        let mut params = CertificateParams::new(sans).map_err(gen_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match kind {
            CertKind::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
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
        let leaf = again.issue(CertKind::Node, "n1").unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // Chain validity is exercised end to end by the TLS tests (tests/tls.rs).
        let id = ringkv_net::quic::TlsIdentity {
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            cert_pem: leaf.cert_pem.into_bytes(),
            key_pem: leaf.key_pem.into_bytes(),
        };
        ringkv_net::quic::server_config(&id, &ringkv_shared::Limits::default()).unwrap();
    }
}
