//! What the harness adds up over the phases of each system it measures: latencies, operations,
//! node requests and CPU time.

use crate::report::{Latencies, ModeFigures};
use anyhow::Result;
use hdrhistogram::Histogram;
use std::time::Duration;

/// A system the harness measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// ringkv, the client coordinating.
    Direct,
    /// ringkv, any node coordinating.
    Router,
    /// The peer: an etcd cluster.
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Router => "router",
            System::Etcd => "etcd",
        }
    }

    /// Whether node counters (requests served) exist for it.
    pub fn is_ringkv(self) -> bool {
        self != System::Etcd
    }
}

fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

pub fn us_per(spent: Duration, count: u64) -> f64 {
    spent.as_secs_f64() * 1e6 / count.max(1) as f64
}

/// Each node's requests served between two counter readings, per operation of the phase.
pub fn per_node_per_op(before: &[u64], after: &[u64], ops: u64) -> Vec<f64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b) as f64 / ops.max(1) as f64)
        .collect()
}

/// One system's figures summed over its phases.
pub struct Tally {
    pub system: System,
    pub reads: Histogram<u64>,
    pub updates: Histogram<u64>,
    /// Operations measured (after warm-up).
    pub ops: u64,
    pub errors: u64,
    /// Operations completed, warm-up included (what node counters and CPU are divided by).
    pub all_ops: u64,
    /// Node requests served.
    pub requests: u64,
    /// Requests served per node.
    pub per_node: Vec<u64>,
    /// CPU time of the servers (ringkv nodes or etcd members), and of this harness.
    pub servers_cpu: Option<Duration>,
    pub harness_cpu: Option<Duration>,
}

impl Tally {
    pub fn new(system: System) -> Result<Self> {
        Ok(Tally {
            system,
            reads: histogram()?,
            updates: histogram()?,
            ops: 0,
            errors: 0,
            all_ops: 0,
            requests: 0,
            per_node: Vec::new(),
            servers_cpu: None,
            harness_cpu: None,
        })
    }

    /// Adds one phase's run, its CPU time, and the node request counters around it.
    pub fn add(
        &mut self,
        run: &crate::workload::Run,
        (servers, harness): (Option<Duration>, Option<Duration>),
        before: &[u64],
        after: &[u64],
    ) -> Result<()> {
        self.reads.add(&run.reads)?;
        self.updates.add(&run.updates)?;
        self.ops += run.reads.len() + run.updates.len();
        self.errors += run.errors;
        self.all_ops += run.all_ops;
        let sum = |acc: Option<Duration>, d: Option<Duration>| Some(acc.unwrap_or_default() + d?);
        self.servers_cpu = sum(self.servers_cpu, servers);
        self.harness_cpu = sum(self.harness_cpu, harness);
        self.per_node
            .resize(after.len().max(self.per_node.len()), 0);
        for (i, (a, b)) in after.iter().zip(before).enumerate() {
            self.per_node[i] += a.saturating_sub(*b);
            self.requests += a.saturating_sub(*b);
        }
        Ok(())
    }

    /// The table's figures, over `secs` of measured time.
    pub fn figures(&self, secs: f64) -> ModeFigures {
        ModeFigures {
            mode: self.system.name().into(),
            ops_per_sec: self.ops as f64 / secs,
            read: Latencies::of(&self.reads),
            update: Latencies::of(&self.updates),
            errors: self.errors,
            cpu_us_per_op: self.cpu_per_op(),
        }
    }

    /// Servers' and harness's CPU time per operation, in µs.
    pub fn cpu_per_op(&self) -> Option<f64> {
        let total = self.servers_cpu? + self.harness_cpu?;
        Some(us_per(total, self.all_ops))
    }

    /// Node requests per operation (an update's read included).
    pub fn requests_per_op(&self) -> f64 {
        self.requests as f64 / self.all_ops.max(1) as f64
    }

    /// "direct: CPU per operation 421 µs (nodes 300, harness 121); node CPU per node request
    /// 61 µs; node requests per operation per node: mean 1.63, max 1.64, min 1.62"
    pub fn cpu_line(&self) -> String {
        let fmt =
            |d: Option<Duration>, n: u64| d.map_or("-".into(), |d| format!("{:.0}", us_per(d, n)));
        let total = self
            .cpu_per_op()
            .map_or("-".into(), |us| format!("{us:.0}"));
        if !self.system.is_ringkv() {
            return format!(
                "{}: CPU per operation {total} µs (members {}, harness {})",
                self.system.name(),
                fmt(self.servers_cpu, self.all_ops),
                fmt(self.harness_cpu, self.all_ops),
            );
        }
        let shares = self.shares();
        let (mean, max, min) = (
            shares.iter().sum::<f64>() / shares.len().max(1) as f64,
            shares.iter().copied().fold(0.0, f64::max),
            shares.iter().copied().fold(f64::INFINITY, f64::min),
        );
        format!(
            "{}: CPU per operation {total} µs (nodes {}, harness {}); node CPU per node request {} µs; node requests per operation per node: mean {mean:.2}, max {max:.2}, min {:.2}",
            self.system.name(),
            fmt(self.servers_cpu, self.all_ops),
            fmt(self.harness_cpu, self.all_ops),
            fmt(self.servers_cpu, self.requests),
            if min.is_finite() { min } else { 0.0 },
        )
    }

    fn shares(&self) -> Vec<f64> {
        per_node_per_op(&vec![0; self.per_node.len()], &self.per_node, self.all_ops)
    }

    pub fn cpu_json(&self) -> serde_json::Value {
        serde_json::json!({
            "servers_us_per_op": self.servers_cpu.map(|d| us_per(d, self.all_ops)),
            "harness_us_per_op": self.harness_cpu.map(|d| us_per(d, self.all_ops)),
            "node_us_per_request": self.servers_cpu.filter(|_| self.system.is_ringkv()).map(|d| us_per(d, self.requests)),
            "node_requests_per_op_by_node": self.shares(),
        })
    }
}
