//! Starting and stopping a node.

use crate::config::{ConfigError, NodeConfig};
use crate::host_addr::HostAddr;
use crate::server;
use crate::state::NodeState;
use crate::storage::{StorageError, Store};
use arc_swap::ArcSwap;
use ringkv_net::Wire;
use ringkv_net::quic::{
    QuicTransport, TlsError, TlsIdentity, TransportOptions, client_config_speaking,
    endpoint_config, server_config_speaking,
};
use ringkv_shared::ring::RingError;
use ringkv_shared::{NodeId, Ring};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The ring could not be built from the membership.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// The node's own certificate does not name this node.
    #[error("certificate {path}: {reason}")]
    Certificate {
        /// The certificate file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A storage node.
pub struct Node;

/// Warn this long before the node's certificate expires.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Refuses a certificate that does not name this node (`ringkv://node/<id>`: the one role
/// that may replicate and gossip); warns when it expires within [`EXPIRY_WARNING`]. Returns
/// when it expires.
fn check_own_certificate(
    config: &NodeConfig,
    tls: &TlsIdentity,
) -> Result<Option<std::time::SystemTime>, NodeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| NodeError::Certificate {
        path: config.tls.cert.clone(),
        reason,
    };

    let der = CertificateDer::from_pem_slice(&tls.cert_pem)
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let role = ringkv_net::quic::role_of_certificate(&der);
    let want = ringkv_shared::roles::Role::Node(config.node_id());
    if role != want {
        return Err(bad(format!(
            "it is a {} certificate, and this node (id {}) needs one naming {} \
             (`ringkv-node certs node --id {}`)",
            role.name(),
            config.id,
            want.uri(""),
            config.id
        )));
    }
    let expires = ringkv_net::quic::certificate_expiry(&der);
    if let Some(at) = expires {
        match at.duration_since(std::time::SystemTime::now()) {
            Ok(left) if left < EXPIRY_WARNING => tracing::warn!(
                path = %config.tls.cert.display(),
                days_left = left.as_secs() / 86_400,
                "the node's certificate expires soon; issue a new one and restart"
            ),
            Ok(_) => {}
            Err(_) => tracing::warn!(
                path = %config.tls.cert.display(),
                "the node's certificate has expired; peers will refuse it"
            ),
        }
    }
    Ok(expires)
}

/// The key of the operator nodes on the simulated network trust (feature `sim`): the
/// simulator signs ring changes with [`ringkv_shared::authority::SimulatedOperator`] and it.
#[cfg(feature = "sim")]
pub const SIMULATED_OPERATOR_KEY: u64 = 0x0FE0_2A70_5EED;

impl Node {
    /// Starts a node: validates `config`, opens storage, binds `config.listen` and serves.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        let socket =
            std::net::UdpSocket::bind(config.listen.addr).map_err(|source| NodeError::Bind {
                addr: config.listen.addr,
                source,
            })?;
        Self::start_with_socket(config, socket).await
    }

    /// Starts a node on an already bound UDP socket (tests bind port 0 first to learn the
    /// addresses that go into the membership).
    pub async fn start_with_socket(
        config: NodeConfig,
        socket: std::net::UdpSocket,
    ) -> Result<NodeHandle, NodeError> {
        config.validate()?;
        let id = config.node_id();
        let tls = TlsIdentity::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        let expires = check_own_certificate(&config, &tls)?;
        let store = Store::open(&config.data_dir, id, &config.store_options())?;

        let addr = socket.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen.addr,
            source,
        })?;
        let bind_err = |source| NodeError::Bind { addr, source };
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(std::io::Error::other("no async runtime found for QUIC")))?;
        let protocols = crate::protocols::spoken();
        if protocols != ringkv_shared::frame::Protocols::THIS_BUILD {
            warn!(%protocols, "test hook: speaking as the next release");
        }
        let endpoint = quinn::Endpoint::new(
            endpoint_config(&tls),
            Some(server_config_speaking(&tls, &config.limits, protocols)?),
            socket,
            runtime,
        )
        .map_err(bind_err)?;
        let quic = QuicTransport::new(
            endpoint.clone(),
            client_config_speaking(&tls, &config.limits, protocols)?,
            TransportOptions {
                limits: config.limits,
                ..TransportOptions::default()
            },
        );
        let ring_changes = Box::new(ringkv_net::quic::CaVerifier::new(&tls)?);
        // What the cluster is told: `advertise` if set (a wildcard bind, a published port),
        // else the bound address, under `listen`'s name if it was given one.
        let announced = config.advertise.clone().unwrap_or_else(|| HostAddr {
            addr,
            name: config
                .listen
                .name
                .clone()
                .filter(|_| config.listen.addr.port() == addr.port()),
        });
        let state = node_state(&config, store, Wire::Quic(quic), announced, ring_changes)?;
        if let Some(at) = expires {
            state.metrics.certificate_expires_at(at);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server::accept_loop(
            state.clone(),
            endpoint.clone(),
            stop_rx.clone(),
        ));
        let mut metrics_addr = None;
        let mut workers = Vec::new();
        if let Some(at) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|source| NodeError::Bind { addr: at, source })?;
            metrics_addr = listener.local_addr().ok();
            workers.push(tokio::spawn(crate::metrics_http::serve(
                state.clone(),
                listener,
                stop_rx.clone(),
            )));
        }
        workers.extend(spawn_workers(&state, &stop_rx));
        #[cfg(feature = "testing")]
        workers.push(tokio::spawn(crate::fault_filter::run(
            state.clone(),
            stop_rx,
        )));
        info!(node = %id, %addr, actor = %state.store.actor(), "node started");
        Ok(NodeHandle {
            id,
            addr,
            config: config.clone(),
            state,
            endpoint: Some(endpoint),
            stop: stop_tx,
            task: Some(task),
            workers,
            metrics_addr,
        })
    }

    /// Starts a node on the simulated network (feature `sim`): the same state, request
    /// dispatch and background workers as [`Node::start`], with requests arriving from the
    /// link's [`ringkv_net::sim::SimNet`] instead of a QUIC endpoint. TLS files are not read;
    /// the metrics listener is not started. The storage is on a simulated disk (fsyncs take
    /// simulated time; [`Store::simulate_crash`] undoes what they did not cover): on `memory`
    /// when given (the caller keeps it across restarts; the data directory is not touched),
    /// otherwise fjall in the data directory.
    #[cfg(feature = "sim")]
    pub fn start_sim(
        config: NodeConfig,
        link: ringkv_net::sim::SimLink,
        memory: Option<crate::storage::MemoryDisk>,
    ) -> Result<NodeHandle, NodeError> {
        config.validate_settings()?;
        let id = config.node_id();
        let options = crate::storage::StoreOptions {
            simulated_disk: true,
            memory,
            ..config.store_options()
        };
        let store = Store::open(&config.data_dir, id, &options)?;
        let addr = link.addr();
        let net = link.net().clone();
        let ring_changes = Box::new(ringkv_shared::authority::SimulatedOperator::new(
            SIMULATED_OPERATOR_KEY,
        ));
        let state = node_state(&config, store, Wire::Sim(link), addr.into(), ring_changes)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let serving = state.clone();
        net.listen(
            addr,
            std::sync::Arc::new(move |role, request| {
                let state = serving.clone();
                Box::pin(async move { crate::dispatch::handle(&state, &role, request).await })
            }),
        );
        let workers = spawn_workers(&state, &stop_rx);
        Ok(NodeHandle {
            id,
            addr,
            config: config.clone(),
            state,
            endpoint: None,
            stop: stop_tx,
            task: None,
            workers,
            metrics_addr: None,
        })
    }
}

/// A node's shared state: its cluster view from storage (or the config, on first start) and
/// everything the request path and the workers share.
fn node_state(
    config: &NodeConfig,
    store: Store,
    wire: Wire,
    announced: HostAddr,
    ring_changes: Box<dyn ringkv_shared::authority::ChangeVerifier>,
) -> Result<Arc<NodeState>, NodeError> {
    let id = config.node_id();
    let me = ringkv_shared::Member {
        id,
        addr: announced.addr,
        host: announced.name,
    };
    let view = crate::cluster_view::initial_view(
        &store,
        me,
        &config.cluster,
        config.partitions,
        config.ring_members(),
    )
    .map_err(|e| match e {
        crate::cluster_view::StartError::Storage(e) => NodeError::Storage(e),
        crate::cluster_view::StartError::Ring(e) => NodeError::Ring(e),
    })?;
    if view.ring.partition_count() != config.partitions {
        return Err(NodeError::Ring(RingError::BadOwners {
            reason: format!(
                "the persisted view has {} partitions, the config {}",
                view.ring.partition_count(),
                config.partitions
            ),
        }));
    }
    let ring = view.ring.clone();
    let transition = view.transition.clone().map(Arc::new);
    let known_nodes: Vec<NodeId> = view.members.keys().copied().collect();
    let shut_out: Vec<NodeId> = view.removed_by_force.iter().copied().collect();
    Ok(Arc::new(NodeState {
        id,
        metrics: crate::metrics::Metrics::default(),
        background: config.background.clone(),
        replication: config.replication,
        read_hedge: config
            .router
            .hedge_policy()
            .map(ringkv_shared::hedge::Hedger::new),
        anti_entropy: std::sync::atomic::AtomicBool::new(config.background.anti_entropy),
        ring: ArcSwap::from_pointee(ring),
        transition: arc_swap::ArcSwapOption::new(transition),
        view: std::sync::Mutex::new(view),
        ring_changes: ArcSwap::from_pointee(ring_changes),
        seeds: config.seeds.clone(),
        noticed_transition: std::sync::atomic::AtomicU64::new(0),
        told_peers: std::sync::Mutex::new(None),
        repairs: Arc::new(tokio::sync::Semaphore::new(
            crate::router::MAX_REPAIRS_IN_FLIGHT,
        )),
        ring_vouches: std::sync::Mutex::default(),
        gossip_rounds: std::sync::atomic::AtomicU64::new(0),
        sending: std::sync::Mutex::new(Default::default()),
        in_flight: Default::default(),
        hint_cursor: Default::default(),
        known_nodes: ArcSwap::from_pointee(known_nodes),
        swept: std::sync::atomic::AtomicU64::new(0),
        sweep_wanted: tokio::sync::Notify::new(),
        store,
        wire,
        limits: config.limits,
        protocols: crate::protocols::spoken(),
        shut_out: ArcSwap::from_pointee(shut_out),
        departure: tokio::sync::watch::Sender::new(None),
    }))
}

/// The background workers every node runs: hint delivery, anti-entropy, tombstone reaping,
/// gossip, partition handoff and the sweep of partitions it no longer replicates.
fn spawn_workers(state: &Arc<NodeState>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(crate::hint_delivery::run(state.clone(), stop.clone())),
        tokio::spawn(crate::anti_entropy::run(state.clone(), stop.clone())),
        tokio::spawn(crate::reaper::run(state.clone(), stop.clone())),
        tokio::spawn(crate::gossip::run(state.clone(), stop.clone())),
        tokio::spawn(crate::partition_handoff::run(state.clone(), stop.clone())),
        tokio::spawn(crate::sweep::run(state.clone(), stop.clone())),
    ]
}

/// A running node. Dropping it without [`NodeHandle::shutdown`] stops serving abruptly
/// (like a crash, minus the OS buffers, which survive).
pub struct NodeHandle {
    id: NodeId,
    addr: SocketAddr,
    /// The config it started with (for reloading certificates).
    config: NodeConfig,
    state: Arc<NodeState>,
    /// The QUIC endpoint (`None` on the simulated network).
    endpoint: Option<quinn::Endpoint>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    metrics_addr: Option<SocketAddr>,
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The bound QUIC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where Prometheus metrics are served, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The node's current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.state.ring.load_full()
    }

    /// The node's counters.
    pub fn stats(&self) -> ringkv_shared::proto::NodeStats {
        crate::stats::collect(&self.state)
    }

    /// Runs one hinted-handoff pass now (tests use it instead of waiting for the timer).
    /// Returns the hints delivered.
    #[cfg(feature = "testing")]
    pub async fn deliver_hints_now(&self) -> u64 {
        crate::hint_delivery::deliver_round(&self.state).await
    }

    /// Runs one anti-entropy exchange with every other member now (tests use it instead of
    /// waiting for the timer). Returns what each exchange did, or why it failed.
    #[cfg(feature = "testing")]
    pub async fn anti_entropy_now(
        &self,
    ) -> Vec<Result<crate::anti_entropy::Exchange, crate::WorkerError>> {
        let ring = self.state.ring.load_full();
        let mut out = Vec::new();
        for peer in ring.members().filter(|m| m.id != self.id) {
            out.push(crate::anti_entropy::exchange(&self.state, &ring, peer).await);
        }
        out
    }

    /// The node's current cluster view.
    pub fn view(&self) -> ringkv_shared::membership::View {
        self.state.view()
    }

    /// Runs one gossip round now (tests use it instead of waiting for the timer).
    #[cfg(feature = "testing")]
    pub async fn gossip_now(&self) {
        crate::gossip::gossip_round(&self.state).await;
    }

    /// Runs one handoff round now. Returns the transfers finished.
    #[cfg(feature = "testing")]
    pub async fn handoff_now(&self) -> usize {
        crate::partition_handoff::handoff_round(&self.state).await
    }

    /// Serves an operator's request as if it came over the network (tests and tools).
    pub async fn admin(
        &self,
        request: ringkv_shared::proto::AdminRequest,
    ) -> ringkv_shared::proto::Response {
        crate::admin::admin(&self.state, request).await
    }

    /// Switches the anti-entropy worker on or off at run time.
    pub fn set_anti_entropy(&self, on: bool) {
        self.state
            .anti_entropy
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs one tombstone-reaping pass now. Returns the tombstones reaped.
    #[cfg(feature = "testing")]
    pub async fn reap_now(&self) -> usize {
        crate::reaper::reap_round(&self.state).await
    }

    /// Fault injection: this node behaves as if the network to `addrs` were cut (its own
    /// calls to them fail at once). Pair with the same on the other side for a full cut.
    #[cfg(feature = "testing")]
    pub fn block(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.state.wire.block(addrs);
    }

    /// Ends this node's [`NodeHandle::block`].
    #[cfg(feature = "testing")]
    pub fn heal(&self) {
        self.state.wire.heal();
    }

    /// Reloads the TLS files named in the config (on SIGHUP): new connections, in and out,
    /// present the new certificate; open ones keep theirs. A certificate that does not name
    /// this node, or files that do not load, are refused and the old ones stay in use.
    pub fn reload_tls(&self) -> Result<(), NodeError> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(());
        };
        let paths = &self.config.tls;
        let tls = TlsIdentity::load(&paths.ca, &paths.cert, &paths.key)?;
        let expires = check_own_certificate(&self.config, &tls)?;
        let spoken = self.state.protocols;
        let server = server_config_speaking(&tls, &self.config.limits, spoken)?;
        let client = client_config_speaking(&tls, &self.config.limits, spoken)?;
        let ring_changes = ringkv_net::quic::CaVerifier::new(&tls)?;
        endpoint.set_server_config(Some(server));
        self.state
            .ring_changes
            .store(Arc::new(Box::new(ring_changes)));
        if let Wire::Quic(quic) = &self.state.wire {
            quic.set_client_config(client);
        }
        if let Some(at) = expires {
            self.state.metrics.certificate_expires_at(at);
        }
        info!(cert = %paths.cert.display(), "certificates reloaded");
        Ok(())
    }

    /// The node's storage (for inspection in tests and tools).
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// A shared handle on the node's storage (feature `sim`), for checks that read it while
    /// the node runs. Drop it when the node crashes: its storage cannot open again while a
    /// probe holds it.
    #[cfg(feature = "sim")]
    pub fn store_probe(&self) -> StoreProbe {
        StoreProbe(self.state.clone())
    }

    /// Why the node stopped itself, if it has (see [`NodeHandle::departed`]).
    pub fn departure(&self) -> Option<String> {
        self.state.departure.borrow().clone()
    }

    /// Waits until the node stops itself because it is no longer part of the cluster (it
    /// was removed by force, or its leave completed and every member knows), and returns
    /// why, for the operator. Never returns while it is a member.
    pub async fn departed(&self) -> String {
        let mut rx = self.state.departure.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The state (and its sender) outlives every handle.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops accepting work, lets requests in flight finish (up to 5 s), closes connections and
    /// flushes storage to disk.
    pub async fn shutdown(mut self) -> Result<(), StorageError> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        for w in self.workers.drain(..) {
            if tokio::time::timeout(Duration::from_secs(5), &mut Box::pin(w))
                .await
                .is_err()
            {
                tracing::warn!("a background worker did not stop within 5 s");
            }
        }
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(0u32.into(), b"node shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        self.state.store.close()?;
        info!(node = %self.id, "node stopped");
        Ok(())
    }
}

/// A running node's storage, shared (feature `sim`; see [`NodeHandle::store_probe`]).
#[cfg(feature = "sim")]
#[derive(Clone)]
pub struct StoreProbe(Arc<NodeState>);

#[cfg(feature = "sim")]
impl StoreProbe {
    /// The storage.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// What the node would still hold for `key` after a power cut now: its copy merged with
    /// the hints it holds for any of `owners` ([`Store::durable_copy`]).
    pub fn durable_copy(
        &self,
        key: &[u8],
        owners: impl Iterator<Item = NodeId>,
    ) -> Result<Option<ringkv_shared::Object>, StorageError> {
        let partition = self.0.ring.load().partition_of(key);
        self.0.store.durable_copy(partition, key, owners)
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(0u32.into(), b"node dropped");
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        for w in self.workers.drain(..) {
            w.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{DevCa, Role};

    fn identity(ca: &DevCa, role: &Role) -> TlsIdentity {
        ca.identity(role, "n1").expect("issue")
    }

    #[test]
    fn a_node_starts_only_with_a_certificate_naming_its_own_id() {
        let config = NodeConfig::parse(
            "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"d\"\nreplication = 1\n\
             [tls]\nca = \"ca.pem\"\ncert = \"n1.pem\"\nkey = \"n1-key.pem\"\n\
             [[members]]\nid = 1\naddr = \"127.0.0.1:7001\"\n",
            "t",
        )
        .expect("config");
        let ca = DevCa::generate().expect("ca");
        let expires = check_own_certificate(&config, &identity(&ca, &Role::Node(NodeId(1))))
            .expect("its own certificate")
            .expect("an expiry");
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .expect("in the future");
        assert!(left > Duration::from_secs(364 * 86_400));
        for wrong in [Role::Node(NodeId(2)), Role::Client, Role::Admin] {
            let e = check_own_certificate(&config, &identity(&ca, &wrong))
                .expect_err("refused")
                .to_string();
            assert!(e.contains("n1.pem") && e.contains("ringkv://node/1"), "{e}");
        }
    }
}
