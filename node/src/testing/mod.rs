//! A local cluster in one call, for tests, examples and benchmarks.
//!
//! [`LocalCluster`] runs nodes in this process; [`ProcessCluster`] runs the `ringkv-node`
//! binary as child processes (for crashes that must kill a real process).
//!
//! [`LocalCluster::start`] generates a development CA and certificates, binds every node on
//! `127.0.0.1:0`, and runs the nodes in-process with storage in a temporary directory that is
//! deleted when the cluster is dropped. Nodes can be stopped and restarted (same address,
//! same data) to exercise failures. [`build_node_binaries`] brings the binaries a
//! [`ProcessCluster`] runs up to date first. [`history`] and [`unique_history`] judge what
//! the fault suite's workloads recorded.

mod build;
pub mod history;
mod process;
pub mod unique_history;

pub use build::build_node_binaries;
pub use process::{ProcessCluster, ProcessOptions};

use crate::certs::{CertError, DevCa, Role, write_pem};
use crate::config::{MemberConfig, NodeConfig, StorageConfig, TlsPaths};
use crate::node::{Node, NodeError, NodeHandle};
use crate::storage::Durability;
use ringkv_net::quic::TlsIdentity;
use ringkv_shared::{Limits, NodeId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a local cluster could not be started or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A node failed to start.
    #[error("node {index}: {source}")]
    Node {
        /// The node's index in the cluster.
        index: usize,
        /// Why.
        source: NodeError,
    },
    /// Certificates could not be made.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// Temporary directories or sockets failed.
    #[error("local cluster I/O: {0}")]
    Io(#[from] std::io::Error),
    /// No node has that index.
    #[error("no node with index {index}")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
    },
}

/// Settings of a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    nodes: usize,
    partitions: u32,
    durability: Durability,
    limits: Limits,
    background: crate::config::BackgroundConfig,
    metrics: bool,
    ca: Option<CaPems>,
}

/// A CA's certificate and key, to found a second cluster under the first one's CA.
#[derive(Clone)]
struct CaPems {
    cert: String,
    key: String,
}

impl std::fmt::Debug for CaPems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaPems(..)")
    }
}

impl LocalClusterBuilder {
    /// Partition count Q (default 64: small clusters in tests need no more).
    pub fn partitions(mut self, q: u32) -> Self {
        self.partitions = q;
        self
    }

    /// Durability policy of every node (default `sync`).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Background settings of every node (hinted handoff, anti-entropy, reaping).
    pub fn background(mut self, b: crate::config::BackgroundConfig) -> Self {
        self.background = b;
        self
    }

    /// Serve Prometheus metrics from every node on 127.0.0.1 (a free port each; see
    /// [`NodeHandle::metrics_addr`]).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Limits of every node.
    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }

    /// Certificates signed by `ca` (another cluster's) instead of a CA of its own: two
    /// clusters that share a CA, as in the cluster-identity tests.
    pub fn ca(mut self, ca: &DevCa) -> Self {
        self.ca = Some(CaPems {
            cert: ca.cert_pem().to_string(),
            key: ca.key_pem(),
        });
        self
    }

    /// Starts the cluster.
    pub async fn start(self) -> Result<LocalCluster, ClusterError> {
        let dir = tempfile::Builder::new().prefix("ringkv-local-").tempdir()?;
        let certs = dir.path().join("certs");
        let ca = match &self.ca {
            Some(pems) => DevCa::from_pem(pems.cert.clone(), &pems.key)?,
            None => DevCa::generate()?,
        };
        write_pem(&certs.join("ca.pem"), ca.cert_pem(), false)?;
        write_pem(&certs.join("ca-key.pem"), &ca.key_pem(), true)?;

        let mut sockets = Vec::new();
        for _ in 0..self.nodes {
            sockets.push(std::net::UdpSocket::bind("127.0.0.1:0")?);
        }
        let members: Vec<MemberConfig> = sockets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(MemberConfig {
                    id: i as u32 + 1,
                    addr: s.local_addr()?.into(),
                })
            })
            .collect::<Result<_, std::io::Error>>()?;

        let mut configs = Vec::new();
        for m in &members {
            configs.push(self.node_config(
                &ca,
                dir.path(),
                m.id,
                m.addr.addr,
                members.clone(),
                vec![],
            )?);
        }
        // The harness also inspects and administers the cluster: an operator's certificate.
        let client_tls = ca.identity(&Role::Admin, "local-admin")?;

        let mut nodes = Vec::new();
        for (index, (config, socket)) in configs.iter().zip(sockets).enumerate() {
            let handle = Node::start_with_socket(config.clone(), socket)
                .await
                .map_err(|source| ClusterError::Node { index, source })?;
            nodes.push(Some(handle));
        }
        Ok(LocalCluster {
            dir,
            ca,
            configs,
            nodes,
            client_tls,
            settings: self,
        })
    }

    /// A node's config: certificates issued by `ca` into `dir/certs`, data in `dir/n<id>`.
    fn node_config(
        &self,
        ca: &DevCa,
        dir: &Path,
        id: u32,
        listen: SocketAddr,
        members: Vec<MemberConfig>,
        seeds: Vec<SocketAddr>,
    ) -> Result<NodeConfig, ClusterError> {
        let certs = dir.join("certs");
        let name = format!("n{id}");
        let leaf = ca.issue(&Role::Node(ringkv_shared::NodeId(id)), &name)?;
        let cert = certs.join(format!("{name}.pem"));
        let key = certs.join(format!("{name}-key.pem"));
        write_pem(&cert, &leaf.cert_pem, false)?;
        write_pem(&key, &leaf.key_pem, true)?;
        Ok(NodeConfig {
            id,
            listen: listen.into(),
            advertise: None,
            metrics_listen: self
                .metrics
                .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: dir.join(&name),
            partitions: self.partitions,
            // N = 3, or every founding member of a smaller cluster.
            replication: if members.is_empty() {
                3
            } else {
                members.len().min(3) as u8
            },
            storage: StorageConfig {
                durability: self.durability,
                ..StorageConfig::default()
            },
            tls: TlsPaths {
                ca: certs.join("ca.pem"),
                cert,
                key,
            },
            limits: self.limits,
            background: self.background.clone(),
            router: Default::default(),
            members,
            seeds: seeds.into_iter().map(Into::into).collect(),
            worker_threads: None,
            cluster: String::new(),
        })
    }
}

/// Nodes running in this process on loopback.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    ca: DevCa,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<NodeHandle>>,
    client_tls: TlsIdentity,
    settings: LocalClusterBuilder,
}

impl LocalCluster {
    /// Settings for a cluster of `nodes` nodes.
    pub fn builder(nodes: usize) -> LocalClusterBuilder {
        LocalClusterBuilder {
            nodes,
            partitions: 64,
            durability: Durability::Sync,
            limits: Limits::default(),
            background: crate::config::BackgroundConfig::default(),
            metrics: false,
            ca: None,
        }
    }

    /// Starts `nodes` nodes with default settings.
    pub async fn start(nodes: usize) -> Result<Self, ClusterError> {
        Self::builder(nodes).start().await
    }

    /// Every node's address, in index order (running or not).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.configs.iter().map(|c| c.listen.addr).collect()
    }

    /// TLS material for a client the cluster trusts.
    pub fn client_tls(&self) -> TlsIdentity {
        self.client_tls.clone()
    }

    /// The cluster's CA (to issue more certificates).
    pub fn ca(&self) -> &DevCa {
        &self.ca
    }

    /// The config node `index` runs with.
    pub fn config(&self, index: usize) -> &NodeConfig {
        &self.configs[index]
    }

    /// The id of node `index`.
    pub fn node_id(&self, index: usize) -> NodeId {
        NodeId(self.configs[index].id)
    }

    /// The running node at `index`, if it is running.
    pub fn node(&self, index: usize) -> Option<&NodeHandle> {
        self.nodes.get(index).and_then(Option::as_ref)
    }

    /// The cluster's working directory (certificates, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory of node `index`.
    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.configs[index].data_dir.clone()
    }

    /// Stops node `index` cleanly (its data stays).
    pub async fn stop(&mut self, index: usize) -> Result<(), ClusterError> {
        let handle = self
            .nodes
            .get_mut(index)
            .ok_or(ClusterError::NoSuchNode { index })?
            .take();
        if let Some(h) = handle {
            h.shutdown().await.map_err(|e| ClusterError::Node {
                index,
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Starts node `index` again on its old address with its old data.
    ///
    /// Background work of the stopped instance may hold its storage for a moment after the
    /// stop; the restart retries for up to 10 s until the storage can be opened.
    pub async fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        let config = self
            .configs
            .get(index)
            .ok_or(ClusterError::NoSuchNode { index })?
            .clone();
        self.stop(index).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Node::start(config.clone()).await {
                Ok(h) => {
                    self.nodes[index] = Some(h);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "restart: storage still held, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => return Err(ClusterError::Node { index, source }),
            }
        }
    }

    /// Starts one more node, outside the ring: it knows only the first node as a seed,
    /// announces itself by gossip and waits to be joined (`AdminRequest::Join`, then
    /// `Commit`). Returns its index.
    pub async fn add_node(&mut self) -> Result<usize, ClusterError> {
        let index = self.configs.len();
        let id = self.configs.iter().map(|c| c.id).max().unwrap_or(0) + 1;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let seeds = vec![self.configs[0].listen.addr];
        let config = self.settings.node_config(
            &self.ca,
            self.dir.path(),
            id,
            socket.local_addr()?,
            vec![],
            seeds,
        )?;
        let handle = Node::start_with_socket(config.clone(), socket)
            .await
            .map_err(|source| ClusterError::Node { index, source })?;
        self.configs.push(config);
        self.nodes.push(Some(handle));
        Ok(index)
    }

    /// Stops every node cleanly.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.stop(i).await;
        }
    }
}
