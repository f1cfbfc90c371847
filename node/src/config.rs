//! Node configuration: a TOML file, validated with errors that name the field.
//!
//! ```toml
//! id = 1                          # this node's id; unique in the cluster
//! listen = "127.0.0.1:7001"       # QUIC address to bind
//! metrics_listen = "127.0.0.1:9001"  # optional: HTTP GET /metrics, /health, /ready
//! data_dir = "/var/lib/ringkv/n1"
//! cluster = "prod-eu"             # optional: founds the cluster id with `members`
//! partitions = 1024               # Q: a power of two, fixed at cluster creation
//! replication = 3                 # N, for background work; clients use the same N
//!
//! [storage]
//! durability = "sync"             # sync | buffered | none
//! buffered_interval_ms = 10       # fsync period under "buffered"
//! cache_mb = 64                   # fjall block cache
//!
//! [tls]                           # PEM files; `ringkv-node certs` makes development ones
//! ca = "certs/ca.pem"
//! cert = "certs/n1.pem"
//! key = "certs/n1-key.pem"
//!
//! [limits]                        # optional; defaults in ringkv_shared::Limits
//! max_key_bytes = 1024
//!
//! [background]                    # optional; these are the defaults
//! hint_interval_ms = 500          # hinted handoff pace
//! anti_entropy = true
//! ae_interval_ms = 1000           # pause between Merkle exchanges
//! ae_max_keys_per_round = 2000
//! tombstone_grace_ms = 86400000   # a tombstone lives at least a day
//! gossip_interval_ms = 1000       # cluster view exchanged with a random peer
//! handoff_batch_keys = 256        # objects per partition-handoff batch
//!
//! [[members]]                     # the first members, used once to found the cluster
//! id = 1
//! addr = "127.0.0.1:7001"
//!
//! # A node joining an existing cluster lists no members, only seeds:
//! # seeds = ["127.0.0.1:7001"]
//! ```

use crate::host_addr::HostAddr;
use crate::storage::{Durability, StoreOptions};
use ringkv_shared::hedge::HedgePolicy;
use ringkv_shared::ring::{DEFAULT_PARTITIONS, MAX_PARTITIONS};
use ringkv_shared::{Limits, Member, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node configuration.
    #[error("config {origin}: {message}")]
    Parse {
        /// The file, or `<string>`.
        origin: String,
        /// The parser's message (it names the line and the field).
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// The field's path, e.g. `storage.durability` or `members[2].addr`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Storage settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// When writes are acknowledged relative to fsync.
    pub durability: Durability,
    /// Background fsync period under `buffered`, in milliseconds.
    pub buffered_interval_ms: u64,
    /// Block cache size, in MiB.
    pub cache_mb: u64,
    /// Under `sync`: microseconds the group-commit syncer lets further writes gather before an
    /// fsync while writes are concurrent (a lone write is never delayed). Fewer, larger fsyncs
    /// cost less CPU and disk time for at most this much added write latency. 0 disables it.
    pub group_commit_gather_us: u64,
}

impl StorageConfig {
    /// Checks `[storage]`.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.group_commit_gather_us > MAX_GATHER_US {
            return Err(invalid(
                "storage.group_commit_gather_us",
                format!(
                    "{} is more than {MAX_GATHER_US} (every concurrent write would wait that long)",
                    self.group_commit_gather_us
                ),
            ));
        }
        if self.durability == Durability::Buffered && self.buffered_interval_ms == 0 {
            return Err(invalid(
                "storage.buffered_interval_ms",
                "must be positive under buffered durability",
            ));
        }
        if self.cache_mb == 0 {
            return Err(invalid("storage.cache_mb", "must be positive"));
        }
        Ok(())
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            buffered_interval_ms: 10,
            cache_mb: 64,
            group_commit_gather_us: crate::storage::DEFAULT_GROUP_COMMIT_GATHER.as_micros() as u64,
        }
    }
}

/// Background work: hinted handoff, anti-entropy, tombstone reaping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackgroundConfig {
    /// How often hints are offered to their owners, in milliseconds.
    pub hint_interval_ms: u64,
    /// Hints handed to one owner per round.
    pub hint_batch: usize,
    /// Whether Merkle anti-entropy runs.
    pub anti_entropy: bool,
    /// Pause between anti-entropy exchanges, in milliseconds.
    pub ae_interval_ms: u64,
    /// Keys exchanged per anti-entropy round at most (the rate limit).
    pub ae_max_keys_per_round: usize,
    /// How long a tombstone stays at least, in milliseconds, before it may be reaped (and then
    /// only once every replica holds it and no node holds a hint for the key). Must exceed the
    /// longest request deadline in use: a coordinator keeps sending a write's copies to slow
    /// replicas until its deadline, and a copy of an old value landing after the reap would
    /// bring the key back. Nodes cap deadlines at 60 s, and a grace under twice that is
    /// refused unless `allow_short_tombstone_grace` is set; the default grace is a day.
    pub tombstone_grace_ms: u64,
    /// Accept a `tombstone_grace_ms` under twice the request-deadline cap. Only for tests and
    /// simulations that reap within seconds and keep their own deadlines shorter than the
    /// grace; in production a late copy of an old value could bring a reaped delete back.
    pub allow_short_tombstone_grace: bool,
    /// How often tombstones are considered for reaping, in milliseconds.
    pub reap_interval_ms: u64,
    /// How often the node gossips its cluster view with a random peer, in milliseconds.
    pub gossip_interval_ms: u64,
    /// Objects per partition-handoff batch (the next batch goes once the receiver has made the
    /// last one durable: flow control).
    pub handoff_batch_keys: usize,
}

impl BackgroundConfig {
    /// Checks `[background]`.
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("background.gossip_interval_ms", self.gossip_interval_ms),
            ("background.hint_interval_ms", self.hint_interval_ms),
            ("background.ae_interval_ms", self.ae_interval_ms),
            ("background.reap_interval_ms", self.reap_interval_ms),
            ("background.hint_batch", self.hint_batch as u64),
            (
                "background.ae_max_keys_per_round",
                self.ae_max_keys_per_round as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        let floor = 2 * u64::from(ringkv_shared::proto::MAX_TIMEOUT_MS);
        if self.tombstone_grace_ms < floor && !self.allow_short_tombstone_grace {
            return Err(invalid(
                "background.tombstone_grace_ms",
                format!(
                    "is {} ms, at least {floor} ms needed (twice the {} ms request-deadline cap): a copy of an old value that lands after a short grace brings a reaped delete back (`allow_short_tombstone_grace = true` is for tests)",
                    self.tombstone_grace_ms,
                    ringkv_shared::proto::MAX_TIMEOUT_MS
                ),
            ));
        }
        let most = ringkv_shared::limits::MAX_KEYS_PER_BATCH;
        if !(1..=most).contains(&self.handoff_batch_keys) {
            return Err(invalid(
                "background.handoff_batch_keys",
                format!("must be between 1 and {most}"),
            ));
        }
        Ok(())
    }
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            hint_interval_ms: 500,
            hint_batch: 512,
            anti_entropy: true,
            ae_interval_ms: 1000,
            ae_max_keys_per_round: 2000,
            tombstone_grace_ms: 24 * 3600 * 1000,
            allow_short_tombstone_grace: false,
            reap_interval_ms: 10_000,
            gossip_interval_ms: 1000,
            handoff_batch_keys: 256,
        }
    }
}

/// Router mode: how this node coordinates client operations it is sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Hedged reads: ask R of the key's replicas, and one more each time this many
    /// microseconds pass without R answers (or at once when one fails). Absent: ask all N, as
    /// Dynamo does. The client's `hedge_reads` is the same for client-driven mode.
    pub read_hedge_us: Option<u64>,
    /// Hedged reads whose delay follows the load: this percentile (1 to 99) of the latencies
    /// of this node's recent router-mode reads (the client's `hedge_reads_percentile`). Not
    /// together with `read_hedge_us`.
    pub read_hedge_percentile: Option<u8>,
}

impl RouterConfig {
    /// Checks `[router]`.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.read_hedge_us.is_some() && self.read_hedge_percentile.is_some() {
            return Err(invalid(
                "router.read_hedge_percentile",
                "set either this or `router.read_hedge_us`, not both",
            ));
        }
        if let Some(h) = self.read_hedge_us
            && h > 60_000_000
        {
            return Err(invalid(
                "router.read_hedge_us",
                format!("{h} is more than 60,000,000 (one minute)"),
            ));
        }
        if let Some(policy) = self.hedge_policy() {
            let field = match policy {
                HedgePolicy::Fixed(_) => "router.read_hedge_us",
                HedgePolicy::Percentile(_) => "router.read_hedge_percentile",
            };
            policy.validate().map_err(|reason| invalid(field, reason))?;
        }
        Ok(())
    }

    /// The read hedging these settings ask for (validated by [`NodeConfig::validate`]).
    pub fn hedge_policy(&self) -> Option<HedgePolicy> {
        match (self.read_hedge_us, self.read_hedge_percentile) {
            (Some(us), _) => Some(HedgePolicy::Fixed(Duration::from_micros(us))),
            (None, Some(p)) => Some(HedgePolicy::Percentile(p)),
            (None, None) => None,
        }
    }
}

/// Paths of the node's TLS material.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

impl TlsPaths {
    /// Checks `[tls]`: every file is there.
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, p) in [
            ("tls.ca", &self.ca),
            ("tls.cert", &self.cert),
            ("tls.key", &self.key),
        ] {
            if !p.is_file() {
                return Err(invalid(
                    field,
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// One member of the (static) cluster membership.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's node id.
    pub id: u32,
    /// Its QUIC address (`ip:port` or `host:port`, resolved when the config is read; a name
    /// is kept in the ring and resolved again by peers and clients when they reconnect).
    pub addr: HostAddr,
}

/// A node's whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id.
    pub id: u32,
    /// Address to bind for QUIC (`ip:port` or `host:port`, resolved when the config is
    /// read; `0.0.0.0:port` binds every interface and then needs `advertise`). Without
    /// `advertise`, it is also what the node announces, name included.
    pub listen: HostAddr,
    /// The address this node announces to the cluster, where other nodes and clients reach
    /// it, when that is not `listen` (a wildcard bind, a container's published port);
    /// `ip:port` or `host:port`, resolved when the config is read. A name is announced with
    /// the address, and peers and clients resolve it again whenever they reconnect, so a host
    /// that comes back at another address under the same name is found there.
    #[serde(default)]
    pub advertise: Option<HostAddr>,
    /// Address to serve HTTP on: Prometheus metrics (`GET /metrics`), liveness (`/health`) and
    /// readiness (`/ready`); none if absent.
    #[serde(default, deserialize_with = "crate::host_addr::optional")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where storage lives.
    pub data_dir: PathBuf,
    /// The cluster's name, used once with `members` to derive the cluster id when the cluster
    /// is founded (`ringkv_shared::ClusterId::founded`). Give each cluster that shares a CA
    /// and could share host addresses (staging and production on look-alike networks) its
    /// own name; empty by default.
    #[serde(default)]
    pub cluster: String,
    /// Q, the partition count (power of two).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// N, the cluster's replication factor, used by background work (anti-entropy compares
    /// a node's data with the other N-1 replicas of each partition). Clients should use the
    /// same N (their default is 3).
    #[serde(default = "default_replication")]
    pub replication: u8,
    /// Storage settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// TLS material.
    pub tls: TlsPaths,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Background work.
    #[serde(default)]
    pub background: BackgroundConfig,
    /// Router-mode coordination.
    #[serde(default)]
    pub router: RouterConfig,
    /// The cluster's first members, this node included: used once, when a node with an empty
    /// data directory starts a new cluster. Afterwards the persisted, gossiped view rules. Leave
    /// it empty (and give `seeds`) for a node that will join an existing cluster.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// Nodes of an existing cluster to gossip with when this node knows no other live member
    /// (a new node announces itself through them, then waits for `ringkv join`). A seed given
    /// by name is resolved again each time the node turns to it.
    #[serde(default)]
    pub seeds: Vec<HostAddr>,
    /// Request-serving threads (the async runtime's workers); absent means one per core.
    /// Set it lower when several nodes share a host's cores: every extra thread adds wake-ups
    /// and context switches (see docs/BENCHMARKS.md).
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// Longest group-commit gathering delay a node accepts, in microseconds.
pub const MAX_GATHER_US: u64 = 100_000;

/// Most request-serving threads a node accepts in its configuration.
pub const MAX_WORKER_THREADS: usize = 1024;

fn default_partitions() -> u32 {
    DEFAULT_PARTITIONS
}

fn default_replication() -> u8 {
    3
}

impl NodeConfig {
    /// Reads and validates a config file. Relative paths in it are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        if let Some(base) = path.parent() {
            cfg.resolve_relative(base);
        }
        Ok(cfg)
    }

    /// Parses (without validating) a config from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Renders the config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    fn resolve_relative(&mut self, base: &Path) {
        for p in [
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Checks every field; the error names the first field that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_settings()?;
        self.tls.validate()
    }

    /// Checks every field but the TLS files (the simulated network needs none).
    pub(crate) fn validate_settings(&self) -> Result<(), ConfigError> {
        self.validate_node()?;
        self.validate_members()?;
        self.storage.validate()?;
        self.router.validate()?;
        self.background.validate()?;
        self.limits
            .validate()
            .map_err(|reason| invalid("limits", reason))
    }

    /// The top-level settings: partitions, replication, how the node finds its cluster,
    /// worker threads.
    fn validate_node(&self) -> Result<(), ConfigError> {
        if self.partitions == 0
            || !self.partitions.is_power_of_two()
            || self.partitions > MAX_PARTITIONS
        {
            return Err(invalid(
                "partitions",
                format!(
                    "{} is not a power of two between 1 and {MAX_PARTITIONS}",
                    self.partitions
                ),
            ));
        }
        if self.replication == 0 {
            return Err(invalid("replication", "must be at least 1"));
        }
        if !self.members.is_empty() && usize::from(self.replication) > self.members.len() {
            return Err(invalid(
                "replication",
                format!(
                    "N = {} needs at least {} members; `members` lists {}",
                    self.replication,
                    self.replication,
                    self.members.len()
                ),
            ));
        }
        if self.members.is_empty() && self.seeds.is_empty() {
            return Err(invalid(
                "members",
                "list the cluster's first members (this node included), or give `seeds` to join an existing cluster",
            ));
        }
        if let Some(t) = self.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&t)
        {
            return Err(invalid(
                "worker_threads",
                format!("{t} is not between 1 and {MAX_WORKER_THREADS}"),
            ));
        }
        Ok(())
    }

    /// `[[members]]`: distinct ids and reachable, distinct addresses, this node among them.
    fn validate_members(&self) -> Result<(), ConfigError> {
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if !ids.insert(m.id) {
                return Err(invalid(
                    format!("members[{i}].id"),
                    format!("node id {} is listed twice", m.id),
                ));
            }
            if m.addr.addr.port() == 0 || m.addr.addr.ip().is_unspecified() {
                return Err(invalid(
                    format!("members[{i}].addr"),
                    format!(
                        "{} is not a reachable address (no port 0, no 0.0.0.0)",
                        m.addr
                    ),
                ));
            }
            if !addrs.insert(m.addr.addr) {
                return Err(invalid(
                    format!("members[{i}].addr"),
                    format!("address {} is listed twice", m.addr),
                ));
            }
        }
        if !self.members.is_empty() && !ids.contains(&self.id) {
            return Err(invalid(
                "id",
                format!("node {} is not listed in [[members]]", self.id),
            ));
        }
        if let Some(a) = &self.advertise
            && (a.addr.port() == 0 || a.addr.ip().is_unspecified())
        {
            return Err(invalid(
                "advertise",
                format!("{a} is not an address others can reach (no port 0, no 0.0.0.0)"),
            ));
        }
        if self.advertise.is_none() && self.listen.addr.ip().is_unspecified() {
            return Err(invalid(
                "listen",
                format!(
                    "{} binds every interface, which other nodes cannot be told to call: set \
                     `advertise` to the address they reach this node at",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.id)
    }

    /// The members as ring members.
    pub fn ring_members(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|m| Member {
                id: NodeId(m.id),
                addr: m.addr.addr,
                host: m.addr.name.clone(),
            })
            .collect()
    }

    /// Storage options derived from the config.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            partitions: self.partitions,
            durability: self.storage.durability,
            buffered_interval: Duration::from_millis(self.storage.buffered_interval_ms.max(1)),
            cache_bytes: self.storage.cache_mb << 20,
            group_commit_gather: Duration::from_micros(self.storage.group_commit_gather_us),
            simulated_disk: false,
            memory: None,
            write_cap: self.limits.write_cap(),
            merge_cap: self.limits.merge_cap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> String {
        r#"
id = 1
listen = "127.0.0.1:7001"
data_dir = "data"
replication = 1
[tls]
ca = "ca.pem"
cert = "n1.pem"
key = "n1-key.pem"
[[members]]
id = 1
addr = "127.0.0.1:7001"
"#
        .to_string()
    }

    #[test]
    fn addresses_may_be_host_names_and_a_wildcard_bind_needs_advertise() {
        let named = base()
            .replace("listen = \"127.0.0.1:7001\"", "listen = \"localhost:7001\"")
            .replace("addr = \"127.0.0.1:7001\"", "addr = \"localhost:7001\"");
        let c = NodeConfig::parse(&named, "t").unwrap();
        assert!(c.listen.addr.ip().is_loopback() && c.listen.addr.port() == 7001);
        c.validate_settings().unwrap();
        // The names are kept: the ring carries them, for peers to resolve when they dial.
        assert_eq!(
            c.listen.name.as_ref().map(|n| n.as_str()),
            Some("localhost:7001")
        );
        let named_member = c.ring_members().into_iter().find(|m| m.host.is_some());
        assert!(
            named_member.is_some_and(|m| m.addr.ip().is_loopback()),
            "{:?}",
            c.ring_members()
        );
        assert_eq!(c.advertise, None);
        let literal = NodeConfig::parse(&base(), "t").unwrap();
        assert_eq!(literal.listen.name, None, "an IP address is not a name");

        let e = NodeConfig::parse(
            &base().replace(
                "127.0.0.1:7001\"\ndata_dir",
                "no-such-host.invalid:7001\"\ndata_dir",
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen") && e.contains("cannot resolve"), "{e}");

        let wildcard = base().replace("listen = \"127.0.0.1:7001\"", "listen = \"0.0.0.0:7001\"");
        let e = NodeConfig::parse(&wildcard, "t")
            .unwrap()
            .validate_settings()
            .unwrap_err();
        assert!(e.to_string().contains("advertise"), "{e}");
        let advertised = wildcard.replace("data_dir", "advertise = \"127.0.0.1:7001\"\ndata_dir");
        NodeConfig::parse(&advertised, "t")
            .unwrap()
            .validate_settings()
            .unwrap();
    }

    /// The configs the repository ships (`deploy/`, `examples/cluster/`) are valid as they
    /// stand: an operator copies them.
    #[test]
    fn the_shipped_configs_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("deploy/node.toml")];
        for n in 1..=5 {
            files.push(root.join(format!("examples/cluster/n{n}.toml")));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let c = NodeConfig::parse(&text, &file.display().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            c.validate_settings()
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        let deploy = std::fs::read_to_string(root.join("deploy/node.toml")).unwrap();
        let c = NodeConfig::parse(&deploy, "deploy/node.toml").unwrap();
        assert_eq!(c.members.len(), 3);
        assert!(c.metrics_listen.is_some());
    }

    #[test]
    fn parses_with_defaults() {
        let c = NodeConfig::parse(&base(), "t").unwrap();
        assert_eq!(c.partitions, 1024);
        assert_eq!(c.storage.durability, Durability::Sync);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let e = NodeConfig::parse(&(base() + "\nbogus = 1\n"), "t").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = NodeConfig::parse(
            &base().replace("\"127.0.0.1:7001\"\ndata", "\"nonsense\"\ndata"),
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e =
            NodeConfig::parse(&(base() + "[storage]\ndurability = \"fast\"\n"), "t").unwrap_err();
        assert!(e.to_string().contains("durability"), "{e}");
    }

    #[test]
    fn a_tombstone_grace_shorter_than_twice_the_deadline_cap_is_refused() {
        let with = |extra: &str| {
            NodeConfig::parse(&(base() + "[background]\n" + extra), "t")
                .unwrap()
                .validate_settings()
        };
        let e = with("tombstone_grace_ms = 60000\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("background.tombstone_grace_ms") && e.contains("120000"),
            "{e}"
        );
        assert!(with("tombstone_grace_ms = 120000\n").is_ok());
        assert!(with("tombstone_grace_ms = 0\nallow_short_tombstone_grace = true\n").is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = NodeConfig::parse(&base(), "t").unwrap();
        c.partitions = 1000;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`partitions`")
        );
        let mut c = NodeConfig::parse(&base(), "t").unwrap();
        c.id = 9;
        assert!(c.validate().unwrap_err().to_string().contains("`id`"));
        let mut c = NodeConfig::parse(&base(), "t").unwrap();
        c.members.push(c.members[0].clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("members[1].id")
        );
        let c = NodeConfig::parse(&base(), "t").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("`tls.ca`"));
        // N above the founding members could never be met.
        let c =
            NodeConfig::parse(&base().replace("replication = 1", "replication = 3"), "t").unwrap();
        let e = c.validate_settings().unwrap_err().to_string();
        assert!(e.contains("`replication`") && e.contains("lists 1"), "{e}");
        // Zero intervals are refused, not turned into 1 ms.
        for field in [
            "hint_interval_ms",
            "ae_interval_ms",
            "reap_interval_ms",
            "gossip_interval_ms",
            "hint_batch",
            "ae_max_keys_per_round",
        ] {
            let c = NodeConfig::parse(&(base() + &format!("[background]\n{field} = 0\n")), "t")
                .unwrap();
            let e = c.validate_settings().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_are_bounded() {
        let c = NodeConfig::parse(&base(), "t").unwrap();
        assert_eq!(c.worker_threads, None);
        let with = |t: &str| base().replace("data_dir", &format!("worker_threads = {t}\ndata_dir"));
        let c = NodeConfig::parse(&with("2"), "t").unwrap();
        assert_eq!(c.worker_threads, Some(2));
        for bad in ["0", "5000"] {
            let c = NodeConfig::parse(&with(bad), "t").unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("`worker_threads`"), "{bad}: {e}");
        }
        assert!(NodeConfig::parse(&with("-1"), "t").is_err());
    }

    #[test]
    fn group_commit_gathering_has_a_default_and_is_bounded() {
        let c = NodeConfig::parse(&base(), "t").unwrap();
        assert_eq!(
            c.store_options().group_commit_gather,
            Duration::from_micros(500)
        );
        let c = NodeConfig::parse(&(base() + "[storage]\ngroup_commit_gather_us = 300\n"), "t")
            .unwrap();
        assert_eq!(
            c.store_options().group_commit_gather,
            Duration::from_micros(300)
        );
        let mut c = c;
        c.storage.group_commit_gather_us = MAX_GATHER_US + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`storage.group_commit_gather_us`"), "{e}");
    }

    #[test]
    fn router_reads_ask_all_n_unless_hedging_is_configured() {
        use ringkv_shared::hedge::HedgePolicy;
        let c = NodeConfig::parse(&base(), "t").unwrap();
        assert_eq!(c.router.hedge_policy(), None);
        let mut c = NodeConfig::parse(&(base() + "[router]\nread_hedge_us = 2000\n"), "t").unwrap();
        assert_eq!(
            c.router.hedge_policy(),
            Some(HedgePolicy::Fixed(Duration::from_millis(2)))
        );
        c.router.read_hedge_us = Some(0);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`router.read_hedge_us`"), "{e}");

        let mut c =
            NodeConfig::parse(&(base() + "[router]\nread_hedge_percentile = 90\n"), "t").unwrap();
        assert_eq!(c.router.hedge_policy(), Some(HedgePolicy::Percentile(90)));
        c.router.read_hedge_percentile = Some(100);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`router.read_hedge_percentile`"), "{e}");
        let both = "[router]\nread_hedge_us = 2000\nread_hedge_percentile = 90\n";
        let e = NodeConfig::parse(&(base() + both), "t")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
    }
}
