//! [`SimCluster`]: real nodes ([`ringkv_node::Node::start_sim`]) on one [`SimNet`], with
//! crashes, restarts, wiped disks and new nodes.
//!
//! Storage is the real fjall store in a temporary directory (on `/dev/shm` when it exists, so
//! no disk is touched), with `none` durability: fjall's own threads only flush and compact,
//! which changes no result, while `sync` and `buffered` would add a syncer thread whose wake-ups
//! the seed does not order. A crash drops the node's tasks and its handlers; what it wrote stays
//! in the directory (the process survives, so the OS buffers do): the "storage kept" case. A
//! wiped node restarts on an empty directory. Losing only an unsynced tail is not simulated.

use anyhow::{Context as _, Result, anyhow};
use ringkv_net::sim::SimNet;
use ringkv_node::config::{BackgroundConfig, MemberConfig, StorageConfig, TlsPaths};
use ringkv_node::storage::Durability;
use ringkv_node::{Node, NodeConfig, NodeHandle};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::scenario::Scenario;

/// The simulated address of node `index` (never bound: nothing leaves the process).
pub fn node_addr(index: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 77, 0, index as u8 + 1), 7000))
}

/// The simulated address of client `index`.
pub fn client_addr(index: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 77, 1, index as u8 + 1), 9000))
}

/// Nodes on one simulated network.
pub struct SimCluster {
    net: SimNet,
    dir: tempfile::TempDir,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<NodeHandle>>,
}

impl SimCluster {
    /// Starts `nodes` nodes that form the initial ring.
    pub fn start(net: SimNet, scenario: &Scenario, nodes: usize) -> Result<Self> {
        let base = std::path::Path::new("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::Builder::new()
                .prefix("ringkv-sim-")
                .tempdir_in(base)
        } else {
            tempfile::Builder::new().prefix("ringkv-sim-").tempdir()
        }
        .context("cannot make the simulation's data directory")?;
        let members: Vec<MemberConfig> = (0..nodes)
            .map(|i| MemberConfig {
                id: i as u32 + 1,
                addr: node_addr(i),
            })
            .collect();
        let mut cluster = Self {
            net,
            dir,
            configs: Vec::new(),
            nodes: Vec::new(),
        };
        for i in 0..nodes {
            let config = cluster.config(scenario, i, members.clone(), vec![]);
            cluster.configs.push(config);
            cluster.nodes.push(None);
        }
        for i in 0..nodes {
            cluster.boot(i)?;
        }
        Ok(cluster)
    }

    fn config(
        &self,
        scenario: &Scenario,
        index: usize,
        members: Vec<MemberConfig>,
        seeds: Vec<SocketAddr>,
    ) -> NodeConfig {
        let name = format!("n{}", index + 1);
        NodeConfig {
            id: index as u32 + 1,
            listen: node_addr(index),
            metrics_listen: None,
            data_dir: self.dir.path().join(&name),
            partitions: scenario.partitions,
            replication: 3,
            storage: StorageConfig {
                durability: Durability::None,
                cache_mb: 1,
                ..StorageConfig::default()
            },
            tls: TlsPaths {
                ca: "unused-on-the-simulated-network".into(),
                cert: "unused-on-the-simulated-network".into(),
                key: "unused-on-the-simulated-network".into(),
            },
            limits: Default::default(),
            background: BackgroundConfig {
                anti_entropy: scenario.anti_entropy,
                hint_interval_ms: 500,
                ae_interval_ms: 1_000,
                gossip_interval_ms: 250,
                reap_interval_ms: 2_000,
                tombstone_grace_ms: scenario.tombstone_grace_ms,
                ..BackgroundConfig::default()
            },
            router: Default::default(),
            members,
            seeds,
            worker_threads: None,
        }
    }

    fn boot(&mut self, index: usize) -> Result<()> {
        let config = self.configs[index].clone();
        let link = self.net.link(config.listen);
        let handle = Node::start_sim(config, link)
            .map_err(|e| anyhow!("node n{} did not start: {e}", index + 1))?;
        self.nodes[index] = Some(handle);
        Ok(())
    }

    /// The network.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// Nodes started so far (up or down).
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether no node was started.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// Node `index`, if it is up.
    pub fn node(&self, index: usize) -> Option<&NodeHandle> {
        self.nodes.get(index).and_then(Option::as_ref)
    }

    /// Indices of the nodes that are up.
    pub fn up(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.node(i).is_some())
            .collect()
    }

    /// Crashes node `index`: its handlers and workers stop where they are.
    pub fn crash(&mut self, index: usize) {
        self.net.crash(node_addr(index));
        self.nodes[index] = None;
    }

    /// Deletes a crashed node's data directory (a disk replaced).
    pub fn wipe(&mut self, index: usize) -> Result<()> {
        let dir = &self.configs[index].data_dir;
        self.net.record(format_args!("wipe n{}", index + 1));
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot wipe {}", dir.display()))?;
        }
        Ok(())
    }

    /// Starts a crashed node again. Writes its crashed instance had in flight may hold the
    /// storage for a while (until their own deadlines); it retries until the storage opens.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        let mut last = None;
        for _ in 0..600 {
            match self.boot(index) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("n{} did not restart", index + 1)))
    }

    /// Starts one more node outside the ring (it knows node 0 as a seed and waits to be
    /// joined). Returns its index.
    pub fn add_node(&mut self, scenario: &Scenario) -> Result<usize> {
        let index = self.configs.len();
        let config = self.config(scenario, index, vec![], vec![node_addr(0)]);
        self.configs.push(config);
        self.nodes.push(None);
        self.boot(index)?;
        Ok(index)
    }

    /// Stops every node (at the end of a run).
    pub fn stop_all(&mut self) {
        for i in 0..self.len() {
            if self.nodes[i].is_some() {
                self.crash(i);
            }
        }
    }
}
