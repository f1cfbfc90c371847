//! [`Scenario`]: what one simulated run does — cluster size, workload, faults, durations —
//! read from a TOML file or taken from the defaults. The seed decides everything the scenario
//! leaves open (which fault when, which node, which delays).

use ringkv_node::storage::Durability;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("scenario file {path} is not valid: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (the TOML parser's message, or the field that cannot work).
        reason: String,
    },
}

/// One simulated run's shape. Every field has a default (see [`Scenario::default`]); a file
/// sets only what it changes. Unknown fields are refused.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Fewest nodes in the ring at start (3–7).
    pub min_nodes: usize,
    /// Most nodes in the ring at start (3–7); the seed picks in between.
    pub max_nodes: usize,
    /// Client tasks, each with its own `Client` (and two more tasks sharing one of them).
    pub clients: usize,
    /// Simulated seconds of workload under faults.
    pub workload_secs: u64,
    /// Mean simulated milliseconds between one client's operations.
    pub think_ms: u64,
    /// Simulated seconds the cluster has, after healing, to converge.
    pub converge_secs: u64,
    /// Partition count Q (a power of two).
    pub partitions: u32,
    /// Keys of each shared kind (plain sets, `modify` sets, counters).
    pub shared_keys: usize,
    /// Client timeout per operation, in milliseconds.
    pub client_timeout_ms: u64,
    /// Tombstone grace, in simulated milliseconds (must exceed the longest deadline in use:
    /// the client timeout, and 10 s).
    pub tombstone_grace_ms: u64,
    /// Mean simulated seconds between faults.
    pub fault_every_secs: u64,
    /// Longest simulated seconds a fault lasts.
    pub fault_max_secs: u64,
    /// Per-message loss probability while a loss fault is on.
    pub loss: f64,
    /// Per-message duplication probability (always on).
    pub duplicate: f64,
    /// Longest one-way delay in microseconds (shortest is 100 µs).
    pub max_delay_us: u64,
    /// Whether Merkle anti-entropy runs. Without it, repair is hinted handoff and read repair
    /// alone, and the run also checks that every acknowledged write reached W of its owners
    /// once hints are delivered (instead of identical replicas, which then need not hold).
    pub anti_entropy: bool,
    /// The nodes' durability policy: `sync` (default: every acknowledged write must be on
    /// W simulated disks when it is acknowledged, which the run checks) or `buffered` (a
    /// power cut loses the last interval's writes on that node). `none` cannot be combined
    /// with crashes: it bounds nothing a power cut may take.
    pub durability: Durability,
    /// Where the nodes keep their data: `memory` (default: the store's tables as ordered maps
    /// that outlive a node's restarts; about twice as fast) or `fjall` (the production engine
    /// in a temporary directory on `/dev/shm`). The store's logic above the engine (merges,
    /// batches, tombstone records, hash trees, the simulated disk's power cuts) is the same
    /// on both.
    pub storage: Storage,
    /// Which faults the nemesis may inject.
    pub faults: FaultKinds,
}

/// The engine under the simulated nodes' stores (see [`Scenario::storage`]).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// `ringkv_node::storage::MemoryDisk`, one per node, kept across its restarts.
    #[default]
    Memory,
    /// fjall in a temporary directory per node.
    Fjall,
}

/// The faults a scenario allows.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultKinds {
    /// Cut the nodes into two groups both ways.
    pub partition: bool,
    /// Drop one node's messages to another, one way.
    pub one_way: bool,
    /// Two groups that reach each other only through one bridge node.
    pub bridge: bool,
    /// Cut a client from some nodes.
    pub client_cut: bool,
    /// Lose messages at the scenario's `loss` rate.
    pub loss: bool,
    /// Crash a node and restart it: half the time the process dies (its storage is kept
    /// whole), half the time the power goes (what no fsync covered is lost).
    pub crash: bool,
    /// Crash a node and restart it with its storage wiped (at most once per run).
    pub wipe: bool,
    /// Join a new node or remove one (at most one change at a time), with handoff.
    pub ring_change: bool,
}

impl Default for FaultKinds {
    fn default() -> Self {
        Self {
            partition: true,
            one_way: true,
            bridge: true,
            client_cut: true,
            loss: true,
            crash: true,
            wipe: true,
            ring_change: true,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            min_nodes: 3,
            max_nodes: 5,
            clients: 3,
            workload_secs: 30,
            think_ms: 40,
            converge_secs: 300,
            partitions: 16,
            shared_keys: 3,
            client_timeout_ms: 2_000,
            tombstone_grace_ms: 65_000,
            fault_every_secs: 3,
            fault_max_secs: 6,
            loss: 0.05,
            duplicate: 0.01,
            max_delay_us: 3_000,
            anti_entropy: true,
            durability: Durability::Sync,
            storage: Storage::Memory,
            faults: FaultKinds::default(),
        }
    }
}

impl Scenario {
    /// Reads a scenario from a TOML file; the error names the file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|reason| ScenarioError::Parse {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses and checks a scenario.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Checks that every field can work; the error names the first that cannot.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, why: &str| Err(format!("`{field}`: {why}"));
        if !(3..=7).contains(&self.min_nodes) || !(3..=7).contains(&self.max_nodes) {
            return bad("min_nodes/max_nodes", "must be between 3 and 7");
        }
        if self.min_nodes > self.max_nodes {
            return bad("min_nodes", "must not exceed max_nodes");
        }
        if self.clients == 0 || self.clients > 16 {
            return bad("clients", "must be between 1 and 16");
        }
        if self.workload_secs == 0 || self.think_ms == 0 || self.converge_secs == 0 {
            return bad("workload_secs/think_ms/converge_secs", "must be positive");
        }
        if !self.partitions.is_power_of_two() || self.partitions < 8 || self.partitions > 1024 {
            return bad("partitions", "must be a power of two from 8 to 1024");
        }
        if self.shared_keys == 0 {
            return bad("shared_keys", "must be positive");
        }
        // Every deadline in a simulated run is the clients' timeout, the final reader's 10 s
        // or a node's own (hint delivery 5 s), so a shorter grace than a real node's minimum
        // is safe here and lets reaping happen within a short run.
        if self.tombstone_grace_ms <= self.client_timeout_ms.max(10_000) {
            return bad(
                "tombstone_grace_ms",
                "must exceed every request deadline in the run (the client timeout and 10 s)",
            );
        }
        if !(0.0..=0.5).contains(&self.loss) || !(0.0..=0.5).contains(&self.duplicate) {
            return bad("loss/duplicate", "must be probabilities up to 0.5");
        }
        if self.fault_every_secs == 0 || self.fault_max_secs == 0 {
            return bad("fault_every_secs/fault_max_secs", "must be positive");
        }
        if self.durability == Durability::None && (self.faults.crash || self.faults.wipe) {
            return bad(
                "durability",
                "`none` leaves acknowledged writes to the operating system, so power cuts \
                 may take any of them; use `sync` or `buffered`, or turn crashes off",
            );
        }
        if !self.anti_entropy && (self.faults.wipe || self.faults.ring_change) {
            return bad(
                "anti_entropy",
                "without it a wiped disk or a ring change may leave fewer than W owner copies; \
                 turn `faults.wipe` and `faults.ring_change` off",
            );
        }
        Ok(())
    }

    /// The client timeout.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_file_sets_only_what_it_names() {
        assert!(Scenario::default().validate().is_ok());
        let s = Scenario::from_toml("max_nodes = 7\n[faults]\nwipe = false\n").unwrap();
        assert_eq!(s.max_nodes, 7);
        assert!(!s.faults.wipe && s.faults.crash);
        assert_eq!(s.storage, Storage::Memory);
        let s = Scenario::from_toml("storage = \"fjall\"").unwrap();
        assert_eq!(s.storage, Storage::Fjall);
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_field_named() {
        let e = Scenario::from_toml("max_nodes = 9").unwrap_err();
        assert!(e.contains("max_nodes"), "{e}");
        let e = Scenario::from_toml("nodes = 3").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = Scenario::from_toml("tombstone_grace_ms = 10000").unwrap_err();
        assert!(e.contains("tombstone_grace_ms"), "{e}");
        let e = Scenario::from_toml("durability = \"none\"").unwrap_err();
        assert!(e.contains("durability"), "{e}");
        let e = Scenario::from_toml("durability = \"fast\"").unwrap_err();
        assert!(e.contains("durability"), "{e}");
        let e = Scenario::from_toml("storage = \"rocksdb\"").unwrap_err();
        assert!(e.contains("storage"), "{e}");
        let e = Scenario::from_toml("max_nodes = \"five\"").unwrap_err();
        assert!(e.contains("max_nodes"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "clients = [").unwrap();
        let e = Scenario::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("broken.toml"), "{e}");
    }
}
