//! [`ClientBuilder`]: seeds, certificates and defaults.

use crate::client::{Client, Inner};
use crate::error::ClientError;
use crate::options::{Defaults, Mode};
use arc_swap::ArcSwap;
use ringkv_net::Wire;
use ringkv_net::quic::{QuicTransport, TlsIdentity, TransportOptions, client_config};
use ringkv_shared::Limits;
use ringkv_shared::hedge::{HedgePolicy, Hedger};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Default for [`ClientBuilder::modify_memory`].
pub const DEFAULT_MODIFY_MEMORY: usize = 16 << 20;

/// Builds a [`Client`]. Defaults: N=3, R=2, W=2, 2 s timeout, direct mode.
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    seeds: Vec<SocketAddr>,
    tls: Option<TlsIdentity>,
    defaults: Defaults,
    mode: Mode,
    limits: Limits,
    connect_timeout: Option<Duration>,
    modify_memory: Option<usize>,
    observer: crate::observer::Slot,
    seed_hosts: Vec<String>,
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

impl ClientBuilder {
    /// Adds seed addresses: nodes asked for the ring at start, and again whenever every
    /// cached node is unreachable.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    /// Calls `observer` with every get, put and delete this client finishes (its kind,
    /// outcome and duration), to feed the application's metrics (see
    /// [`crate::observer`]).
    pub fn observer(mut self, observer: impl crate::observer::OperationObserver) -> Self {
        self.observer = crate::observer::Slot(Some(Arc::new(observer)));
        self
    }

    /// Adds seeds by name, `host:port` (`db1.example.net:7001`): resolved when the client is
    /// built, and again each time the client goes back to its seeds (every cached node
    /// unreachable), so a seed's changed DNS record is followed. A name that does not resolve
    /// at build time fails the build, naming it.
    pub fn seed_hosts(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.seed_hosts.extend(hosts.into_iter().map(Into::into));
        self
    }

    /// The TLS identity to present (a certificate signed by the cluster CA) and the CA to
    /// trust.
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Loads the TLS identity from PEM files.
    pub fn tls_files(mut self, ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let id = TlsIdentity::load(ca, cert, key).map_err(|e| ClientError::Tls {
            reason: e.to_string(),
        })?;
        self.tls = Some(id);
        Ok(self)
    }

    /// Replicas per key (default 3). Must match the cluster's intent for a key.
    pub fn n(mut self, n: u8) -> Self {
        self.defaults.n = n;
        self
    }

    /// Replies a read waits for (default 2).
    pub fn r(mut self, r: u8) -> Self {
        self.defaults.r = r;
        self
    }

    /// Acknowledgements a write waits for (default 2).
    pub fn w(mut self, w: u8) -> Self {
        self.defaults.w = w;
        self
    }

    /// Default deadline of a call (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.defaults.timeout = timeout;
        self
    }

    /// Hedged reads in direct mode: ask only R replicas, and one more each time `delay`
    /// passes without R answers (or at once when one fails). Reads then cost R requests
    /// instead of N; read repair reaches only the replicas asked, anti-entropy the rest.
    /// Off by default (every read asks all N, as Dynamo does).
    pub fn hedge_reads(mut self, delay: Duration) -> Self {
        self.defaults.read_hedge = Some(HedgePolicy::Fixed(delay));
        self
    }

    /// Hedged reads whose delay follows the load: the `percentile` (1 to 99) of the
    /// latencies of this client's recent reads, so that about `100 - percentile`% of reads
    /// ask another replica however slow the cluster is at the moment (a fixed delay below the
    /// loaded median makes most reads hedge). Until the client has seen 100 reads, reads ask
    /// all N. 90 is a good start.
    pub fn hedge_reads_percentile(mut self, percentile: u8) -> Self {
        self.defaults.read_hedge = Some(HedgePolicy::Percentile(percentile));
        self
    }

    /// Direct (client-driven, default) or router mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Size limits checked before sending (default [`Limits::default`], as nodes use).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a connection attempt may take before a node counts as unreachable
    /// (default 500 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How much memory (bytes of encoded values) [`Client::modify`] may keep of the states
    /// it last wrote, per key, so that each actor updates its own latest state whatever a read
    /// returns (default 16 MiB). Keys evicted beyond it are safe: their next modify starts a
    /// new actor, which costs one more actor entry in the value. See [`crate::lanes`].
    pub fn modify_memory(mut self, bytes: usize) -> Self {
        self.modify_memory = Some(bytes);
        self
    }

    /// Connects to a seed, fetches and caches the ring.
    pub async fn build(mut self) -> Result<Client, ClientError> {
        self.defaults.validate()?;
        self.limits
            .validate()
            .map_err(|reason| ClientError::InvalidInput { reason })?;
        let tls = self.tls.take().ok_or_else(|| ClientError::Tls {
            reason: "no TLS identity configured: call ClientBuilder::tls or tls_files".into(),
        })?;
        for host in &self.seed_hosts {
            let addrs = ringkv_net::quic::resolve_host(host)
                .await
                .map_err(|reason| ClientError::InvalidInput {
                    reason: format!("seed {host:?}: {reason}"),
                })?;
            for addr in addrs {
                if !self.seeds.contains(&addr) {
                    self.seeds.push(addr);
                }
            }
        }
        if self.seeds.is_empty() {
            return Err(ClientError::Unavailable { errors: vec![] });
        }
        let tls_err = |e: ringkv_net::quic::TlsError| ClientError::Tls {
            reason: e.to_string(),
        };
        let config = client_config(&tls, &self.limits).map_err(tls_err)?;
        let bind = bind_addr(&self.seeds);
        let endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Unavailable {
            errors: vec![(bind, format!("cannot bind a local UDP socket: {e}"))],
        })?;
        let transport = QuicTransport::new(
            endpoint,
            config,
            TransportOptions {
                limits: self.limits,
                connect_timeout: self.connect_timeout.unwrap_or(Duration::from_millis(500)),
                ..TransportOptions::default()
            },
        );
        self.connect(Wire::Quic(transport)).await
    }

    /// Builds a client on the simulated network (feature `sim`): no TLS identity needed.
    #[cfg(feature = "sim")]
    pub async fn build_sim(self, link: ringkv_net::sim::SimLink) -> Result<Client, ClientError> {
        self.defaults.validate()?;
        self.limits
            .validate()
            .map_err(|reason| ClientError::InvalidInput { reason })?;
        if self.seeds.is_empty() {
            return Err(ClientError::Unavailable { errors: vec![] });
        }
        self.connect(Wire::Sim(link)).await
    }

    /// Fetches the ring over `transport` and makes the client.
    async fn connect(self, transport: Wire) -> Result<Client, ClientError> {
        // Epoch 0 is a node still waiting to be joined: any real cluster ring is newer.
        let ring = crate::client::fetch_ring(&transport, &self.seeds, 1).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                ring: ArcSwap::from_pointee(ring),
                seeds: self.seeds,
                seed_hosts: self.seed_hosts,
                defaults: self.defaults,
                mode: self.mode,
                limits: self.limits,
                refreshing: tokio::sync::Mutex::new(()),
                lanes: crate::lanes::Lanes::new(
                    self.modify_memory.unwrap_or(DEFAULT_MODIFY_MEMORY),
                ),
                next_coordinator: std::sync::atomic::AtomicUsize::new(0),
                hedger: self.defaults.read_hedge.map(Hedger::new),
                observer: self.observer.0,
            }),
        })
    }
}

/// Loopback seeds get a loopback socket; otherwise the unspecified address of the seeds'
/// family.
fn bind_addr(seeds: &[SocketAddr]) -> SocketAddr {
    let all_loopback = seeds.iter().all(|s| s.ip().is_loopback());
    let v6 = seeds.first().is_some_and(SocketAddr::is_ipv6);
    let ip: IpAddr = match (all_loopback, v6) {
        (true, false) => Ipv4Addr::LOCALHOST.into(),
        (true, true) => Ipv6Addr::LOCALHOST.into(),
        (false, false) => Ipv4Addr::UNSPECIFIED.into(),
        (false, true) => Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}
