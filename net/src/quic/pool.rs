//! [`QuicTransport`]: one pooled connection per peer, one stream per request, and local
//! failure detection.

use super::SERVER_NAME;
use super::batch::{self, Link};
use super::peer::peer_role;
use crate::transport::{Transport, TransportError};
use dashmap::DashMap;
use ringkv_shared::HostName;
use ringkv_shared::frame::{self, BATCHES_SINCE};
use ringkv_shared::ids::NodeId;
use ringkv_shared::limits::Limits;
use ringkv_shared::proto::{Request, Response};
use ringkv_shared::ring::Member;
use ringkv_shared::roles::Role;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// Tunables of a [`QuicTransport`].
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Limits on frames sent and received.
    pub limits: Limits,
    /// How long a connection attempt may take before the peer counts as unreachable.
    pub connect_timeout: Duration,
    /// First back-off after a peer fails; doubles per consecutive failure.
    pub min_backoff: Duration,
    /// Longest back-off; a peer marked down is retried at least this often.
    pub max_backoff: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

struct Down {
    failures: u32,
    until: Instant,
}

/// An open connection and the role its server's certificate names, read once when it was
/// made (parsing the certificate on every request cost 5% of a read-heavy client's CPU).
#[derive(Clone)]
struct Live {
    conn: quinn::Connection,
    role: Role,
    /// The protocol version the handshake settled on; every frame on it is of this version.
    version: u8,
    /// The batch being gathered for this connection (protocol 5 and later).
    gathering: Arc<batch::Gathering>,
}

/// Serialises connection attempts to one peer; holds when the last attempt failed, and why.
type ConnectGate = tokio::sync::Mutex<Option<(Instant, TransportError)>>;

struct Inner {
    endpoint: quinn::Endpoint,
    /// Replaced when the certificates are reloaded; new connections use the current one.
    client_config: std::sync::RwLock<quinn::ClientConfig>,
    options: TransportOptions,
    live: DashMap<SocketAddr, Live>,
    /// One connection attempt per peer at a time; the slot remembers the last failed attempt
    /// (when it failed, and why) so that every caller that waited on it shares its outcome
    /// instead of starting an attempt of its own (callers arriving during a connect timeout
    /// would otherwise wait out one timeout each, one after the other). A caller that arrives
    /// after a failure tries again itself.
    connecting: DashMap<SocketAddr, Arc<ConnectGate>>,
    down: DashMap<NodeId, Down>,
    /// Where each member given by name was found when its connection was last made: the
    /// address its requests go to while that connection lives.
    named: DashMap<HostName, SocketAddr>,
    highest_epoch: AtomicU64,
    /// Fault injection: addresses this transport behaves as if it cannot reach.
    #[cfg(feature = "testing")]
    blocked: std::sync::RwLock<std::collections::HashSet<SocketAddr>>,
}

/// The QUIC [`Transport`]: cheap to clone, clones share connections and failure state.
///
/// A peer whose connection cannot be made (or breaks) is marked down for a back-off that
/// doubles with each consecutive failure; [`Transport::is_down`] reports it so that callers
/// route around it, and the first request after the back-off probes it again.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

impl QuicTransport {
    /// A transport that connects from `endpoint` with `client_config`.
    pub fn new(
        endpoint: quinn::Endpoint,
        client_config: quinn::ClientConfig,
        options: TransportOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                client_config: std::sync::RwLock::new(client_config),
                options,
                live: DashMap::new(),
                connecting: DashMap::new(),
                down: DashMap::new(),
                named: DashMap::new(),
                highest_epoch: AtomicU64::new(0),
                #[cfg(feature = "testing")]
                blocked: Default::default(),
            }),
        }
    }

    /// The TLS configuration new connections use.
    fn client_config(&self) -> quinn::ClientConfig {
        self.inner
            .client_config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes new connections present `config` (reloaded certificates); connections already
    /// open keep theirs.
    pub fn set_client_config(&self, config: quinn::ClientConfig) {
        *self
            .inner
            .client_config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The highest ring epoch any reply carried.
    pub fn highest_epoch(&self) -> u64 {
        self.inner.highest_epoch.load(Ordering::Relaxed)
    }

    /// The endpoint requests leave from.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.inner.endpoint
    }

    /// Fault injection (feature `testing`): from now on, calls to `addrs` fail as if the
    /// network between this transport and them were cut, without sending anything. Existing
    /// connections to them are not used while blocked.
    #[cfg(feature = "testing")]
    pub fn block(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut b = self
            .inner
            .blocked
            .write()
            .unwrap_or_else(|p| p.into_inner());
        b.extend(addrs);
    }

    /// Ends every [`QuicTransport::block`]: the cut heals.
    #[cfg(feature = "testing")]
    pub fn heal(&self) {
        self.inner
            .blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    #[cfg(feature = "testing")]
    fn is_blocked(&self, addr: SocketAddr) -> bool {
        self.inner
            .blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&addr)
    }

    /// Without fault injection compiled in, nothing is ever blocked.
    #[cfg(not(feature = "testing"))]
    fn is_blocked(&self, _addr: SocketAddr) -> bool {
        false
    }

    /// Calls an address directly (for seeds, whose node ids are not known yet). The peer
    /// must hold a node certificate (of any node id).
    pub async fn call_addr(
        &self,
        addr: SocketAddr,
        request: Request,
    ) -> Result<Response, TransportError> {
        self.connect_and_exchange(addr, None, &request).await
    }

    /// Connects (or reuses the connection), checks that the peer's certificate names node
    /// `expect` (or, if `None`, some node), and exchanges one request.
    async fn connect_and_exchange(
        &self,
        addr: SocketAddr,
        expect: Option<NodeId>,
        request: &Request,
    ) -> Result<Response, TransportError> {
        if self.is_blocked(addr) {
            return Err(TransportError::Connect {
                addr,
                reason: "blocked by fault injection".into(),
            });
        }
        let live = self.connection(addr).await?;
        check_server(&live.role, addr, expect)?;
        self.exchange(&live, addr, request).await
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Live, TransportError> {
        if let Some(c) = self.inner.live.get(&addr)
            && c.conn.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let queued_at = Instant::now();
        let gate = self.inner.connecting.entry(addr).or_default().clone();
        let mut last_failure = gate.lock().await;
        if let Some(c) = self.inner.live.get(&addr)
            && c.conn.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let connect_err = |reason: String| TransportError::Connect { addr, reason };
        if let Some((failed_at, error)) = last_failure.as_ref()
            && *failed_at >= queued_at
        {
            return Err(error.clone());
        }
        let attempt = async {
            let connecting = self
                .inner
                .endpoint
                .connect_with(self.client_config(), addr, SERVER_NAME)
                .map_err(|e| connect_err(e.to_string()))?;
            match tokio::time::timeout(self.inner.options.connect_timeout, connecting).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(match tls_refusal(&e) {
                    Some(reason) => TransportError::Refused { addr, reason },
                    None => connect_err(e.to_string()),
                }),
                Err(_) => Err(connect_err(format!(
                    "no handshake within {:?}",
                    self.inner.options.connect_timeout
                ))),
            }
        };
        match attempt.await {
            Ok(conn) => {
                debug!(%addr, "connected");
                *last_failure = None;
                let live = Live {
                    role: peer_role(&conn),
                    version: super::negotiated_version(&conn),
                    conn,
                    gathering: Arc::default(),
                };
                self.inner.live.insert(addr, live.clone());
                Ok(live)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn exchange(
        &self,
        live: &Live,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<Response, TransportError> {
        let conn = &live.conn;
        let max = self.inner.options.limits.max_frame_bytes;
        let frame = frame::encode_as(request, live.version, max).map_err(|f| {
            TransportError::RequestTooLarge {
                reason: f.to_string(),
            }
        })?;
        let link = Link {
            conn: conn.clone(),
            version: live.version,
            max_frame_bytes: max,
            addr,
        };
        let result = if live.version >= BATCHES_SINCE {
            batch::exchange(&live.gathering, link, frame).await
        } else {
            batch::exchange_alone(&link, &frame).await
        };
        match result {
            Ok(reply) => {
                self.inner
                    .highest_epoch
                    .fetch_max(reply.epoch, Ordering::Relaxed);
                Ok(reply.body)
            }
            // In TLS 1.3 a client can finish its side of the handshake before the server has
            // checked the client's certificate; a refusal then arrives as a connection close
            // carrying a TLS alert. Report it as what it is.
            Err(TransportError::Lost { .. })
                if conn.close_reason().as_ref().and_then(tls_refusal).is_some() =>
            {
                let reason = conn
                    .close_reason()
                    .as_ref()
                    .and_then(tls_refusal)
                    .unwrap_or_default();
                Err(TransportError::Refused { addr, reason })
            }
            Err(e) => Err(e),
        }
    }

    /// Where to reach `to` now. A member named by address is reached there. A member given
    /// by name keeps the address its name resolved to while the connection made to it
    /// lives; for a new connection the name is resolved again, and if it does not resolve
    /// the last address known for it (else the ring's) is dialled.
    async fn address_of(&self, to: &Member) -> SocketAddr {
        let Some(host) = &to.host else {
            return to.addr;
        };
        let known = self.inner.named.get(host).map(|a| *a);
        if let Some(addr) = known
            && self
                .inner
                .live
                .get(&addr)
                .is_some_and(|c| c.conn.close_reason().is_none())
        {
            return addr;
        }
        match super::resolve_host(host.as_str()).await {
            Ok(addrs) => {
                let addr = addrs[0];
                if known != Some(addr) {
                    debug!(node = %to.id, %host, %addr, "name resolved");
                }
                self.inner.named.insert(host.clone(), addr);
                addr
            }
            Err(reason) => {
                let fallback = known.unwrap_or(to.addr);
                debug!(node = %to.id, %host, %fallback, %reason, "name did not resolve");
                fallback
            }
        }
    }

    fn mark_down(&self, node: NodeId) {
        let opts = &self.inner.options;
        let mut entry = self.inner.down.entry(node).or_insert(Down {
            failures: 0,
            until: Instant::now(),
        });
        entry.failures = entry.failures.saturating_add(1);
        let backoff = opts
            .min_backoff
            .saturating_mul(1 << (entry.failures - 1).min(16))
            .min(opts.max_backoff);
        entry.until = Instant::now() + backoff;
        if entry.failures == 1 {
            // Once per outage; the retries after it are debug.
            info!(%node, ?backoff, "peer unreachable: marked down");
        } else {
            debug!(%node, failures = entry.failures, ?backoff, "still down");
        }
    }

    fn mark_up(&self, node: NodeId) {
        if let Some((_, down)) = self.inner.down.remove(&node) {
            info!(%node, failures = down.failures, "peer reachable again: marked up");
        }
    }
}

/// Refuses a server whose certificate does not name the node it was called as (`expect`),
/// or no node at all: the CA also signs application and operator certificates, and a node's
/// certificate speaks for that node only. Nothing is sent to such a server.
fn check_server(
    role: &Role,
    addr: SocketAddr,
    expect: Option<NodeId>,
) -> Result<(), TransportError> {
    match (role, expect) {
        (Role::Node(id), Some(want)) if *id == want => Ok(()),
        (Role::Node(_), None) => Ok(()),
        (found, want) => Err(TransportError::Refused {
            addr,
            reason: format!(
                "its certificate names {}, not {}",
                found.name(),
                want.map_or("a node".to_string(), |id| Role::Node(id).name())
            ),
        }),
    }
}

/// The handshake failure described by a connection error, if it is one (QUIC carries TLS
/// alerts as transport error codes 0x100..=0x1ff).
fn tls_refusal(e: &quinn::ConnectionError) -> Option<String> {
    let code = match e {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(t) => t.code,
        _ => return None,
    };
    let code = u64::from(code);
    if code == NO_APPLICATION_PROTOCOL {
        return Some(format!(
            "the two sides speak no protocol version in common; upgrade the older one, one \
             release at a time ({e})"
        ));
    }
    (0x100..0x200).contains(&code).then(|| e.to_string())
}

/// QUIC's code for TLS alert 120: the server speaks none of the protocols offered.
const NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;

impl Transport for QuicTransport {
    async fn call(&self, to: &Member, request: Request) -> Result<Response, TransportError> {
        let addr = self.address_of(to).await;
        let result = self.connect_and_exchange(addr, Some(to.id), &request).await;
        match &result {
            Ok(_) => self.mark_up(to.id),
            Err(
                TransportError::Connect { .. }
                | TransportError::Lost { .. }
                | TransportError::Refused { .. },
            ) => {
                self.mark_down(to.id);
                if let Some((_, c)) = self
                    .inner
                    .live
                    .remove_if(&addr, |_, c| c.conn.close_reason().is_some())
                {
                    drop(c);
                }
            }
            Err(_) => {}
        }
        result
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.inner
            .down
            .get(&node)
            .is_some_and(|d| d.until > Instant::now())
    }

    fn is_unreachable(&self, node: NodeId) -> bool {
        self.inner.down.contains_key(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_must_be_the_node_it_was_called_as() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7001));
        let (n1, n2) = (NodeId(1), NodeId(2));
        assert!(check_server(&Role::Node(n1), addr, Some(n1)).is_ok());
        assert!(check_server(&Role::Node(n2), addr, None).is_ok());
        for (role, expect) in [
            (Role::Node(n2), Some(n1)),
            (Role::Client, Some(n1)),
            (Role::Admin, None),
            (Role::Client, None),
        ] {
            let err = check_server(&role, addr, expect).unwrap_err();
            assert!(
                matches!(&err, TransportError::Refused { reason, .. } if reason.contains(&role.name())),
                "{err}"
            );
        }
    }
}
