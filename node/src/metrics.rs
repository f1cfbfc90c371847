//! The node's metrics, in Prometheus form (`prometheus-client`), served on `metrics_listen`.
//!
//! Counters are atomics underneath, cheap on the hot path; the `Stats` request reads the same
//! values. Gauges (objects, hints and tombstones pending, ring epoch, members by stage) are
//! sampled when scraped, and so are the counters the store keeps (fsyncs, merges refused).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The operation a request was.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Op {
    pub(crate) op: &'static str,
}

/// The operation a request was and how it ended: `ok`, or the error's kind
/// ([`outcome`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpOutcome {
    pub(crate) op: &'static str,
    pub(crate) outcome: &'static str,
}

/// How a request ended, as a label: `ok`, or the kind of error it was answered with
/// (`quorum_failed` is a coordinated write or routed read that missed its quorum).
pub(crate) fn outcome(response: &ringkv_shared::proto::Response) -> &'static str {
    use ringkv_shared::ReplyError as E;
    match response {
        ringkv_shared::proto::Response::Error(e) => match e {
            E::InvalidInput { .. } => "invalid_input",
            E::Malformed { .. } => "malformed",
            E::UnsupportedVersion { .. } => "unsupported_version",
            E::QuorumFailed { .. } => "quorum_failed",
            E::RingChangeQuorumFailed { .. } => "ring_change_quorum_failed",
            E::NotReplica { .. } => "not_replica",
            E::Storage { .. } => "storage",
            E::OutcomeUnknown { .. } => "outcome_unknown",
            E::StaleRing { .. } => "stale_ring",
            E::Unavailable { .. } => "unavailable",
            E::Forbidden { .. } => "forbidden",
            _ => "other",
        },
        _ => "ok",
    }
}

fn latency_histogram() -> Histogram {
    // 25 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 17))
}

/// Every metric of one node.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<OpOutcome, Counter>,
    requests_all: Counter,
    pub(crate) latency: Family<Op, Histogram, fn() -> Histogram>,
    pub(crate) read_siblings: Histogram,
    pub(crate) hints_stored: Counter,
    pub(crate) hints_delivered: Counter,
    pub(crate) ae_rounds: Counter,
    pub(crate) ae_keys_repaired: Counter,
    pub(crate) ae_bytes_sent: Counter,
    pub(crate) ae_bytes_received: Counter,
    pub(crate) tombstones_reaped: Counter,
    pub(crate) slow_readers_reset: Counter,
    pub(crate) request_batches: Counter,
    pub(crate) batched_requests: Counter,
    pub(crate) repairs_refused: Counter,
    pub(crate) objects: Gauge,
    pub(crate) hints_pending: Gauge,
    pub(crate) tombstones_pending: Gauge,
    pub(crate) fsyncs: Counter,
    pub(crate) merges_refused: Counter,
    pub(crate) certificate_expiry: Gauge,
    pub(crate) ring_epoch: Gauge,
    pub(crate) peers: Family<Liveness, Gauge>,
    pub(crate) transfers_remaining: Gauge,
    pub(crate) disk_bytes: Gauge,
    pub(crate) read_repairs: Counter,
    pub(crate) members: Family<Stage, Gauge>,
    connections: Family<Protocol, Counter>,
    /// The request counter and latency histogram of each (operation, outcome) served so far,
    /// so that a request finds them without hashing its labels into the families.
    served: arc_swap::ArcSwap<Vec<Served>>,
}

/// One (operation, outcome)'s metrics, shared with the families that export them.
#[derive(Clone)]
struct Served {
    op: &'static str,
    outcome: &'static str,
    count: Counter,
    latency: Histogram,
}

impl Served {
    /// Whether these are the handles of (`op`, `outcome`): the same label strings, most often
    /// at the same address.
    fn is(&self, op: &str, outcome: &str) -> bool {
        let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
        same(self.op, op) && same(self.outcome, outcome)
    }
}

/// A frame protocol version, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Protocol {
    protocol: u8,
}

/// Whether this node reaches a peer, as a label: `up`, or `down` (the last call to it failed
/// and none has succeeded since).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Liveness {
    pub(crate) state: &'static str,
}

/// A membership stage, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Stage {
    pub(crate) stage: &'static str,
}

/// What build a node runs, as the labels of `ringkv_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    protocol: String,
}

impl Metrics {
    /// Records when the node's own certificate expires.
    pub(crate) fn certificate_expires_at(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.certificate_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ringkv");
        let m = Metrics {
            requests: Family::default(),
            requests_all: Counter::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            read_siblings: Histogram::new([1.0, 2.0, 3.0, 4.0, 8.0, 16.0]),
            hints_stored: Counter::default(),
            hints_delivered: Counter::default(),
            ae_rounds: Counter::default(),
            ae_keys_repaired: Counter::default(),
            ae_bytes_sent: Counter::default(),
            ae_bytes_received: Counter::default(),
            tombstones_reaped: Counter::default(),
            slow_readers_reset: Counter::default(),
            request_batches: Counter::default(),
            batched_requests: Counter::default(),
            repairs_refused: Counter::default(),
            objects: Gauge::default(),
            hints_pending: Gauge::default(),
            tombstones_pending: Gauge::default(),
            fsyncs: Counter::default(),
            merges_refused: Counter::default(),
            certificate_expiry: Gauge::default(),
            ring_epoch: Gauge::default(),
            peers: Family::default(),
            transfers_remaining: Gauge::default(),
            disk_bytes: Gauge::default(),
            read_repairs: Counter::default(),
            members: Family::default(),
            connections: Family::default(),
            served: arc_swap::ArcSwap::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests served, by operation and outcome (ok, or the error's kind)",
            m.requests.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the node's own certificate expires (Unix time)",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to serve a request, by operation",
            m.latency.clone(),
        );
        registry.register(
            "replica_read_siblings",
            "Siblings in the object a replica read returned",
            m.read_siblings.clone(),
        );
        registry.register(
            "hints_stored",
            "Hints stored for other nodes",
            m.hints_stored.clone(),
        );
        registry.register(
            "hints_delivered",
            "Hints handed over to their owners",
            m.hints_delivered.clone(),
        );
        registry.register(
            "anti_entropy_rounds",
            "Anti-entropy exchanges completed",
            m.ae_rounds.clone(),
        );
        registry.register(
            "anti_entropy_keys_repaired",
            "Keys anti-entropy merged",
            m.ae_keys_repaired.clone(),
        );
        registry.register(
            "anti_entropy_sent_bytes",
            "Anti-entropy bytes sent",
            m.ae_bytes_sent.clone(),
        );
        registry.register(
            "anti_entropy_received_bytes",
            "Anti-entropy bytes received",
            m.ae_bytes_received.clone(),
        );
        registry.register(
            "tombstones_reaped",
            "Tombstones removed for good",
            m.tombstones_reaped.clone(),
        );
        registry.register(
            "slow_readers_reset",
            "Streams reset because the peer did not take its reply within the write deadline",
            m.slow_readers_reset.clone(),
        );
        registry.register(
            "request_batches",
            "Streams that carried more than one request (a batch, protocol 5 and later)",
            m.request_batches.clone(),
        );
        registry.register(
            "batched_requests",
            "Requests that arrived in a batch",
            m.batched_requests.clone(),
        );
        registry.register(
            "repairs_refused",
            "Read repairs asked for while the most a node runs at once were running",
            m.repairs_refused.clone(),
        );
        registry.register("objects", "Objects stored (approximate)", m.objects.clone());
        registry.register(
            "hints_pending",
            "Hints held for other nodes",
            m.hints_pending.clone(),
        );
        registry.register(
            "tombstones_pending",
            "Tombstones not yet reaped",
            m.tombstones_pending.clone(),
        );
        registry.register(
            "fsyncs",
            "fsyncs run by the group-commit syncer",
            m.fsyncs.clone(),
        );
        registry.register(
            "merges_refused",
            "Merges refused since start because the object would exceed the merge cap (bytes or siblings): such a key needs resolving by the application",
            m.merges_refused.clone(),
        );
        registry.register(
            "ring_epoch",
            "Epoch of the ring this node has installed",
            m.ring_epoch.clone(),
        );
        registry.register(
            "peers",
            "Other members of the ring in force, by whether this node reaches them (down: its last call failed, none succeeded since)",
            m.peers.clone(),
        );
        registry.register(
            "handoff_transfers_remaining",
            "Partition transfers the committed ring change still waits for (0: none under way)",
            m.transfers_remaining.clone(),
        );
        registry.register(
            "disk_bytes",
            "Bytes the node's storage takes on disk",
            m.disk_bytes.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted, by the protocol version their handshake settled on",
            m.connections.clone(),
        );
        registry.register(
            "read_repairs",
            "Stale owners this node brought up to date when a client asked it to repair a key",
            m.read_repairs.clone(),
        );
        registry.register(
            "members",
            "Nodes in this node's view of the cluster, by membership stage",
            m.members.clone(),
        );
        registry.register(
            "build",
            "The node's version and wire protocol version",
            Info::new(Build {
                version: env!("CARGO_PKG_VERSION"),
                protocol: ringkv_shared::frame::PROTOCOL_VERSION.to_string(),
            }),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub(crate) fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// Counts a connection accepted that speaks protocol `version`.
    pub(crate) fn connection_accepted(&self, version: u8) {
        self.connections
            .get_or_create(&Protocol { protocol: version })
            .inc();
    }

    /// Brings a counter kept elsewhere (the store's) up to `total`; it never goes back.
    pub(crate) fn catch_up(counter: &Counter, total: u64) {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    pub(crate) fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    /// Counts one served request.
    pub(crate) fn served(&self, op: &'static str, outcome: &'static str, seconds: f64) {
        let known = self.served.load();
        let fresh;
        let handles = match known.iter().find(|s| s.is(op, outcome)) {
            Some(kept) => kept,
            None => {
                fresh = self.keep_served(op, outcome);
                &fresh
            }
        };
        handles.count.inc();
        handles.latency.observe(seconds);
        self.requests_all.inc();
    }

    /// The handles of a pair served for the first time, found by label in the families and
    /// kept for the requests after it (a few dozen pairs at most: the operations and outcomes
    /// are a fixed set).
    fn keep_served(&self, op: &'static str, outcome: &'static str) -> Served {
        let handles = Served {
            op,
            outcome,
            count: self
                .requests
                .get_or_create(&OpOutcome { op, outcome })
                .clone(),
            latency: self.latency.get_or_create(&Op { op }).clone(),
        };
        self.served.rcu(|known| {
            let mut more = Vec::clone(known);
            if !more.iter().any(|s| s.is(op, outcome)) {
                more.push(handles.clone());
            }
            more
        });
        handles
    }

    /// Requests served, all operations together.
    pub(crate) fn requests_total(&self) -> u64 {
        self.requests_all.get()
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_shared::ReplyError;
    use ringkv_shared::proto::Response;

    #[test]
    fn outcomes_are_ok_or_the_error_kind() {
        assert_eq!(outcome(&Response::Written), "ok");
        let quorum = Response::Error(ReplyError::QuorumFailed {
            required: 2,
            succeeded: 1,
            errors: vec![],
        });
        assert_eq!(outcome(&quorum), "quorum_failed");
        let forbidden = Response::Error(ReplyError::Forbidden {
            request: "write".into(),
            role: "client".into(),
        });
        assert_eq!(outcome(&forbidden), "forbidden");
    }

    /// The handles kept per (operation, outcome) count into the exported families: the first
    /// request of a pair and the later ones alike.
    #[test]
    fn served_requests_are_counted_per_operation_and_outcome() {
        let m = Metrics::default();
        let read = String::from("read");
        m.served("read", "ok", 0.001);
        m.served("read", "ok", 0.002);
        // Equal labels at another address are the same pair.
        m.served(read.leak(), "ok", 0.003);
        m.served("read", "quorum_failed", 0.004);
        m.served("write", "ok", 0.005);
        let text = m.render();
        for line in [
            r#"ringkv_requests_total{op="read",outcome="ok"} 3"#,
            r#"ringkv_requests_total{op="read",outcome="quorum_failed"} 1"#,
            r#"ringkv_requests_total{op="write",outcome="ok"} 1"#,
            r#"ringkv_request_duration_seconds_count{op="read"} 4"#,
            r#"ringkv_request_duration_seconds_count{op="write"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert_eq!(m.requests_total(), 5);
        assert_eq!(m.served.load().len(), 3);
    }

    #[test]
    fn a_counter_kept_elsewhere_catches_up_and_never_goes_back() {
        let c = Counter::default();
        Metrics::catch_up(&c, 5);
        Metrics::catch_up(&c, 3);
        assert_eq!(c.get(), 5);
        Metrics::catch_up(&c, 9);
        assert_eq!(c.get(), 9);
    }
}
