//! Mutual TLS for QUIC: every node and client presents a certificate signed by the cluster CA,
//! and nothing else is accepted in either direction.

use super::alpn_ids;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ringkv_shared::frame::Protocols;
use ringkv_shared::limits::Limits;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        /// Which file (CA, certificate, key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which material.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// rustls or quinn rejected the configuration.
    #[error("TLS configuration rejected: {reason}")]
    Config {
        /// Their message.
        reason: String,
    },
}

/// A party's TLS material, PEM-encoded: the cluster CA it trusts, its own certificate chain and
/// its private key.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The cluster CA certificate(s).
    pub ca_pem: Vec<u8>,
    /// This party's certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// This party's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Reads the three PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what, p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                what,
                path: p.to_owned(),
                source,
            })
        };
        Ok(Self {
            ca_pem: read("CA certificate", ca)?,
            cert_pem: read("certificate", cert)?,
            key_pem: read("private key", key)?,
        })
    }

    pub(crate) fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| pem_err("CA certificate", e))?;
            roots.add(cert).map_err(|e| TlsError::Pem {
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        }
        if roots.is_empty() {
            return Err(TlsError::Pem {
                what: "CA certificate",
                reason: "no certificate found in PEM".into(),
            });
        }
        Ok(roots)
    }

    pub(crate) fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("certificate", e))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                reason: "no certificate found in PEM".into(),
            });
        }
        Ok(chain)
    }

    pub(crate) fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| pem_err("private key", e))
    }
}

fn pem_err(what: &'static str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        reason: e.to_string(),
    }
}

fn config_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        reason: e.to_string(),
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A connection on which nothing at all arrives for this long is dead: its requests fail at
/// once and the peer is marked down. With keep-alives every [`KEEP_ALIVE`], a live but idle
/// peer never gets near it; a crashed or paused one is detected within this time.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Keep-alive interval of every connection (both sides send them).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

fn transport(limits: &Limits) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_streams_per_connection.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.max_idle_timeout(Some(
        quinn::VarInt::from_u32(IDLE_TIMEOUT.as_millis() as u32).into(),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    Arc::new(t)
}

/// A node's endpoint settings. The stateless-reset key (RFC 9000 §10.3) and the key that
/// signs connection ids are derived from the node's private key instead of drawn at random,
/// so they are the same after a restart: a peer still holding a connection to the killed
/// process sends to a connection id the successor recognises as its own, gets a stateless
/// reset on its next packet (a keep-alive at the latest) and reconnects at once, instead of
/// sending into a dead connection until [`IDLE_TIMEOUT`]. The derivation is one-way (HMAC
/// under the key), so neither reveals anything about the private key.
pub fn endpoint_config(id: &TlsIdentity) -> quinn::EndpointConfig {
    use ring::hmac;
    let secret = hmac::Key::new(hmac::HMAC_SHA256, &id.key_pem);
    let reset = hmac::sign(&secret, b"ringkv: QUIC stateless reset key, v1");
    let cid = hmac::sign(&secret, b"ringkv: QUIC connection id key, v1");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config =
        quinn::EndpointConfig::new(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, reset.as_ref())));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// The server side: requires a client certificate signed by the cluster CA.
pub fn server_config(id: &TlsIdentity, limits: &Limits) -> Result<quinn::ServerConfig, TlsError> {
    server_config_speaking(id, limits, Protocols::THIS_BUILD)
}

/// [`server_config`] for a server that speaks the protocol versions `spoken`: a client that
/// offers none of them is refused in the handshake.
pub fn server_config_speaking(
    id: &TlsIdentity,
    limits: &Limits,
    spoken: Protocols,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(id.roots()?), provider.clone())
            .build()
            .map_err(config_err)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain()?, id.key()?)
        .map_err(config_err)?;
    tls.alpn_protocols = alpn_ids(spoken);
    let quic = QuicServerConfig::try_from(tls).map_err(config_err)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(limits));
    Ok(cfg)
}

/// The client side (used by clients and by nodes calling each other): presents our
/// certificate, accepts only servers whose certificate the cluster CA signed for
/// [`super::SERVER_NAME`].
pub fn client_config(id: &TlsIdentity, limits: &Limits) -> Result<quinn::ClientConfig, TlsError> {
    client_config_speaking(id, limits, Protocols::THIS_BUILD)
}

/// [`client_config`] for a caller that speaks the protocol versions `spoken`; it offers them
/// newest first, and the server picks.
pub fn client_config_speaking(
    id: &TlsIdentity,
    limits: &Limits,
    spoken: Protocols,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_root_certificates(id.roots()?)
        .with_client_auth_cert(id.chain()?, id.key()?)
        .map_err(config_err)?;
    tls.alpn_protocols = alpn_ids(spoken);
    let quic = QuicClientConfig::try_from(tls).map_err(config_err)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport(limits));
    Ok(cfg)
}
