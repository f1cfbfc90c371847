//! One seeded run: start the cluster and clients, run the workload under the nemesis, heal,
//! converge, judge.

use crate::check;
use crate::cluster::{SimCluster, client_addr, node_addr};
use crate::nemesis::Nemesis;
use crate::scenario::Scenario;
use crate::workload::{Records, SharedRecords, Task};
use anyhow::{Context as _, Result};
use ringkv_client::Client;
use ringkv_net::sim::{Faults, KEPT, SimNet};
use ringkv_node::storage::Durability;
use ringkv_shared::roles::Role;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The simulated wall clock at the start of every run (2027-01-15), so tombstone ages replay.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// What one seed did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Hash of the full event log: the same seed must give the same hash.
    pub hash: u64,
    /// Events logged.
    pub events: u64,
    /// Client operations attempted.
    pub ops: u64,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Wall time each phase of the run took on its thread.
    pub phases: Phases,
    /// What the checkers found (empty: the run passed).
    pub violations: Vec<String>,
    /// The last events of the log as text, for a failure report: empty for a run that kept
    /// no text and passed (see [`run_seed`]).
    pub recent: Vec<String>,
}

/// Wall time (on the run's thread) of each phase of a run: where a simulator's speed goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// Starting the nodes and clients.
    pub start: Duration,
    /// The workload under the nemesis.
    pub workload: Duration,
    /// Healing, restarting the nodes that were down, and waiting for convergence.
    pub converge: Duration,
    /// The checkers' reads and judgement.
    pub judge: Duration,
}

impl std::ops::AddAssign for Phases {
    fn add_assign(&mut self, other: Self) {
        self.start += other.start;
        self.workload += other.workload;
        self.converge += other.converge;
        self.judge += other.judge;
    }
}

impl RunReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs `seed` on a fresh current-thread runtime with paused time (which makes it
/// deterministic) and returns its report. The event log is hashed, not kept as text; if the
/// run fails, the seed runs again with the text kept for the report (it replays exactly: a
/// rerun whose hash differs is itself reported as a violation).
pub fn run_seed(seed: u64, scenario: &Scenario) -> Result<RunReport> {
    let mut first = run_seed_keeping(seed, scenario, 0)?;
    if first.passed() {
        return Ok(first);
    }
    let again = run_seed_keeping(seed, scenario, KEPT)?;
    if (again.hash, again.events) != (first.hash, first.events) {
        first.violations.push(format!(
            "determinism: the rerun that kept the event log gave hash {:016x} after {} events, the first run {:016x} after {}",
            again.hash, again.events, first.hash, first.events
        ));
    }
    first.recent = again.recent;
    Ok(first)
}

/// [`run_seed`] once, keeping the last `keep` events of the log as text (at most [`KEPT`]);
/// the hash is the same whatever `keep` is.
pub fn run_seed_keeping(seed: u64, scenario: &Scenario, keep: usize) -> Result<RunReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("cannot build the simulation runtime")?;
    runtime.block_on(async {
        let _ambient = ringkv_net::ambient::simulate_this_thread(seed, EPOCH_MS);
        run(seed, scenario, keep).await
    })
}

async fn client(net: &SimNet, index: usize, scenario: &Scenario, seeds: usize) -> Result<Client> {
    Client::builder()
        .seeds((0..seeds).map(node_addr))
        .timeout(scenario.client_timeout())
        .build_sim(net.link(client_addr(index), Role::Client))
        .await
        .with_context(|| format!("client {index} could not start"))
}

async fn run(seed: u64, scenario: &Scenario, keep: usize) -> Result<RunReport> {
    let started = Instant::now();
    let mut phases = Phases::default();
    let mut lap = std::time::Instant::now();
    let mut split = |into: &mut Duration| {
        let now = std::time::Instant::now();
        *into = now - lap;
        lap = now;
    };
    let calm = Faults {
        max_delay: Duration::from_micros(scenario.max_delay_us.max(100)),
        duplicate: scenario.duplicate,
        ..Faults::default()
    };
    let net = SimNet::new(seed, calm.clone());
    net.keep_events(keep);
    let span = (scenario.max_nodes - scenario.min_nodes + 1) as u64;
    let nodes = scenario.min_nodes + (net.random_u64() % span) as usize;
    net.record(format_args!(
        "seed {seed} nodes {nodes} scenario {scenario:?}"
    ));
    let mut cluster = SimCluster::start(net.clone(), scenario, nodes)?;

    let records: SharedRecords = Arc::new(Mutex::new(Records::default()));
    let until = Instant::now() + Duration::from_secs(scenario.workload_secs);
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for c in 0..scenario.clients {
        let client = client(&net, c, scenario, nodes).await?;
        clients.push(client_addr(c));
        // The first client is shared by two tasks.
        let sharers = if c == 0 { 2 } else { 1 };
        for t in 0..sharers {
            tasks.push(tokio::spawn(
                Task {
                    name: format!("c{c}t{t}"),
                    client: client.clone(),
                    net: net.clone(),
                    records: records.clone(),
                    until,
                    think: Duration::from_millis(scenario.think_ms),
                    shared_keys: scenario.shared_keys,
                    disks: (scenario.durability == Durability::Sync)
                        .then(|| cluster.disks().clone()),
                }
                .run(),
            ));
        }
    }

    split(&mut phases.start);
    Nemesis::new(&mut cluster, scenario, clients, calm.clone())
        .run(until)
        .await?;
    for t in tasks {
        t.await.context("a client task panicked")?;
    }

    split(&mut phases.workload);
    // Heal: every cut, calm network, every node up.
    net.record(format_args!("heal all"));
    net.heal();
    net.set_faults(calm);
    for i in 0..cluster.len() {
        if cluster.node(i).is_none() {
            cluster.restart(i).await?;
        }
    }
    let mut violations = Vec::new();
    let converged = check::wait_converged(
        &cluster,
        Duration::from_secs(scenario.converge_secs),
        scenario.anti_entropy,
    )
    .await;
    match converged {
        Ok(took) => net.record(format_args!("converged after {} ms", took.as_millis())),
        Err(why) => violations.push(why),
    }
    split(&mut phases.converge);
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    if !scenario.anti_entropy {
        violations.extend(check::owner_copies(&cluster, &records, 2));
    }
    let reader = client(&net, 15, scenario, cluster.len()).await?;
    violations.extend(check::judge(&reader, &records).await);
    for v in &violations {
        net.record(format_args!("VIOLATION {v}"));
    }
    cluster.stop_all();
    split(&mut phases.judge);
    Ok(RunReport {
        seed,
        hash: net.log_hash(),
        events: net.log_len(),
        ops: records.ops,
        simulated: started.elapsed(),
        phases,
        violations,
        recent: net.recent(KEPT),
    })
}
