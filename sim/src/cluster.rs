//! [`SimCluster`]: real nodes ([`ringkv_node::Node::start_sim`]) on one [`SimNet`], with
//! crashes, restarts, wiped disks and new nodes.
//!
//! Storage is the real store on a simulated disk (`StoreOptions::simulated_disk`): fsyncs take
//! seeded simulated time on the run's runtime instead of a syncer thread whose wake-ups the
//! seed would not order, and every change is logged until a simulated fsync covers it, which
//! is how a power cut knows what to take away. Under the store is, per the scenario's
//! `storage`, a [`MemoryDisk`] per node that the cluster keeps across the node's restarts (the
//! default), or fjall in a temporary directory (on `/dev/shm` when it exists, so no disk is
//! touched), whose own threads only flush and compact, which changes no result.
//!
//! A crash drops the node's tasks and its handlers. A **process crash** keeps everything it
//! wrote (the OS buffers survive). A **power cut** ([`ringkv_node::storage::Store::simulate_crash`])
//! first undoes every change no fsync covered: under `sync` only writes not yet acknowledged,
//! under `buffered` the last interval. A **wiped** node restarts on an empty directory.
//!
//! [`Disks`] keeps a handle on each running node's storage, for the check that every
//! acknowledged write is on W disks at the moment it is acknowledged.

use anyhow::{Context as _, Result, anyhow};
use ringkv_net::sim::SimNet;
use ringkv_node::config::{BackgroundConfig, MemberConfig, StorageConfig, TlsPaths};
use ringkv_node::storage::MemoryDisk;
use ringkv_node::{Node, NodeConfig, NodeHandle, StoreProbe};
use ringkv_shared::NodeId;
use ringkv_shared::roles::Role;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scenario::{Scenario, Storage};

/// The simulated address of node `index` (never bound: nothing leaves the process).
pub fn node_addr(index: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 77, 0, index as u8 + 1), 7000))
}

/// The simulated address of client `index`.
pub fn client_addr(index: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 77, 1, index as u8 + 1), 9000))
}

/// The running nodes' storage, shared with the client tasks.
#[derive(Clone, Default)]
pub struct Disks(Arc<Mutex<DiskState>>);

#[derive(Default)]
struct DiskState {
    probes: Vec<Option<StoreProbe>>,
    crashes: u64,
}

impl Disks {
    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, index: usize, probe: Option<StoreProbe>) {
        let mut state = self.lock();
        if state.probes.len() <= index {
            state.probes.resize(index + 1, None);
        }
        if probe.is_none() {
            state.crashes += 1;
        }
        state.probes[index] = probe;
    }

    /// Crashes so far: a check that spans a crash cannot count the crashed node's disk.
    pub fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// Running nodes whose disk holds `value` for `key` (as a replica copy or a hint), such
    /// that a power cut now would not take it away.
    pub fn durable_copies(&self, key: &[u8], value: &[u8]) -> usize {
        let state = self.lock();
        let owners = state.probes.len() as u32;
        state
            .probes
            .iter()
            .flatten()
            .filter(|probe| {
                probe
                    .durable_copy(key, (1..=owners).map(NodeId))
                    .ok()
                    .flatten()
                    .is_some_and(|o| o.values().any(|v| v.as_ref() == value))
            })
            .count()
    }
}

/// Nodes on one simulated network.
pub struct SimCluster {
    net: SimNet,
    /// The nodes' directories, when they run on fjall.
    dir: Option<tempfile::TempDir>,
    /// Each node's memory disk, when they run on memory (a wipe replaces it).
    memory: Vec<Option<MemoryDisk>>,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<NodeHandle>>,
    disks: Disks,
}

impl SimCluster {
    /// Starts `nodes` nodes that form the initial ring.
    pub fn start(net: SimNet, scenario: &Scenario, nodes: usize) -> Result<Self> {
        let dir = match scenario.storage {
            Storage::Memory => None,
            Storage::Fjall => {
                let base = std::path::Path::new("/dev/shm");
                let dir = if base.is_dir() {
                    tempfile::Builder::new()
                        .prefix("ringkv-sim-")
                        .tempdir_in(base)
                } else {
                    tempfile::Builder::new().prefix("ringkv-sim-").tempdir()
                };
                Some(dir.context("cannot make the simulation's data directory")?)
            }
        };
        let members: Vec<MemberConfig> = (0..nodes)
            .map(|i| MemberConfig {
                id: i as u32 + 1,
                addr: node_addr(i).into(),
            })
            .collect();
        let mut cluster = Self {
            net,
            dir,
            memory: Vec::new(),
            configs: Vec::new(),
            nodes: Vec::new(),
            disks: Disks::default(),
        };
        for i in 0..nodes {
            cluster.add_config(scenario, i, members.clone(), vec![]);
        }
        for i in 0..nodes {
            cluster.boot(i)?;
        }
        Ok(cluster)
    }

    /// Adds node `index`'s config (and its empty memory disk, when the nodes run on memory).
    fn add_config(
        &mut self,
        scenario: &Scenario,
        index: usize,
        members: Vec<MemberConfig>,
        seeds: Vec<SocketAddr>,
    ) {
        let name = format!("n{}", index + 1);
        let data_dir = match &self.dir {
            Some(dir) => dir.path().join(&name),
            // Names the store in messages; nothing is written there.
            None => std::path::PathBuf::from(format!("memory/{name}")),
        };
        self.memory.push(self.dir.is_none().then(MemoryDisk::new));
        self.nodes.push(None);
        self.configs.push(NodeConfig {
            id: index as u32 + 1,
            listen: node_addr(index).into(),
            advertise: None,
            metrics_listen: None,
            data_dir,
            partitions: scenario.partitions,
            replication: 3,
            storage: StorageConfig {
                durability: scenario.durability,
                buffered_interval_ms: 10,
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
                // The scenario keeps its own rule: grace above every client deadline.
                allow_short_tombstone_grace: true,
                ..BackgroundConfig::default()
            },
            router: Default::default(),
            members,
            seeds: seeds.into_iter().map(Into::into).collect(),
            worker_threads: None,
            cluster: String::new(),
        });
    }

    fn boot(&mut self, index: usize) -> Result<()> {
        let config = self.configs[index].clone();
        let link = self
            .net
            .link(config.listen.addr, Role::Node(NodeId(config.id)));
        let handle = Node::start_sim(config, link, self.memory[index].clone())
            .map_err(|e| anyhow!("node n{} did not start: {e}", index + 1))?;
        self.disks.set(index, Some(handle.store_probe()));
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

    /// The running nodes' storage.
    pub fn disks(&self) -> &Disks {
        &self.disks
    }

    /// Crashes node `index`: its handlers and workers stop where they are. With `power_cut`,
    /// its disk also loses every change no fsync covered.
    pub fn crash(&mut self, index: usize, power_cut: bool) -> Result<()> {
        self.net.crash(node_addr(index));
        self.disks.set(index, None);
        if let Some(node) = self.nodes[index].take() {
            let lost = node
                .store()
                .simulate_crash(power_cut)
                .with_context(|| format!("power cut n{}: the undo failed", index + 1))?;
            if power_cut {
                self.net.record(format_args!(
                    "power cut n{}: {lost} unsynced changes lost",
                    index + 1
                ));
            }
        }
        Ok(())
    }

    /// Deletes a crashed node's data (a disk replaced).
    pub fn wipe(&mut self, index: usize) -> Result<()> {
        let dir = &self.configs[index].data_dir;
        self.net.record(format_args!("wipe n{}", index + 1));
        if let Some(disk) = &mut self.memory[index] {
            *disk = MemoryDisk::new();
        } else if dir.exists() {
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
        self.add_config(scenario, index, vec![], vec![node_addr(0)]);
        self.boot(index)?;
        Ok(index)
    }

    /// Stops every node (at the end of a run).
    pub fn stop_all(&mut self) {
        for i in 0..self.len() {
            if self.nodes[i].is_some() {
                self.net.crash(node_addr(i));
                self.disks.set(i, None);
                self.nodes[i] = None;
            }
        }
    }
}
