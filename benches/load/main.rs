//! The load harness: client-driven (direct) vs router mode on real node processes, measured
//! the way Dynamo's Table 2 was.
//!
//! ```text
//! cargo bench --bench load                                   # 3 nodes, workload A, defaults below
//! cargo bench --bench load -- --nodes 5 --workload c --keys 20000 --duration 10
//! cargo bench --bench load -- --seed-node 127.0.0.1:7001 --certs examples/cluster/certs --cert-name app
//! cargo bench --bench load -- --etcd off                     # ringkv only
//! ```
//!
//! When an `etcd` binary is found (Debian's `etcd-server`, or `ETCD_BIN`), each pair of phases
//! gets a third phase against a 3-member etcd cluster the harness starts on loopback, driven by
//! the same closed loop, and the run ends with ringkv's ratios to etcd (see `etcd.rs` for
//! what the comparison favours).
//!
//! An update reads the key and writes with that read's context, as applications do; its
//! latency is the write's. Blind writes would each be kept as a sibling.
//!
//! Defaults: 100,000 keys of 1 KiB, zipfian (theta 0.99), 32 operations in flight, N=3 R=2 W=2,
//! `sync` durability, 3 pairs of 10 s phases (direct, router[, etcd], direct, ...) after 2 s
//! of warm-up each. Prints the table, writes `results.json` and `latency.svg` under `--out`.
#![allow(missing_docs)]

mod cluster;
mod cpu;
mod etcd;
mod report;
mod tally;
mod workload;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ringkv::{Client, Mode, TlsIdentity};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally::{System, Tally, per_node_per_op, us_per};
use workload::{KeyDist, Keys, Workload};

/// The allocator a service linking the client would likely use; as the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug, serde::Serialize)]
#[command(about = "ringkv load harness: client-driven vs router mode")]
struct Args {
    /// Hedged reads in both modes: ask R replicas, one more after this many milliseconds
    /// without a quorum (default: ask all N). Direct mode: the client's `hedge_reads`; router
    /// mode: the started nodes' `router.read_hedge_us`.
    #[arg(long, conflicts_with = "hedge_pct")]
    hedge_ms: Option<f64>,
    /// Hedged reads in both modes with a delay that follows the load: this percentile (1 to
    /// 99) of recent read latencies (the client's `hedge_reads_percentile`, the nodes'
    /// `router.read_hedge_percentile`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
    hedge_pct: Option<u8>,
    /// Node processes to start (ignored with --seed-node).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Use an existing cluster instead of starting one.
    #[arg(long = "seed-node")]
    seed_nodes: Vec<SocketAddr>,
    /// With --seed-node: directory holding ca.pem and the client certificate.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// With --seed-node: client certificate name.
    #[arg(long, default_value = "app")]
    cert_name: String,
    #[arg(long, value_enum, default_value = "a")]
    workload: Workload,
    #[arg(long, value_enum, default_value = "zipfian")]
    distribution: KeyDist,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unrecorded warm-up before each phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Direct/router pairs of phases.
    #[arg(long, default_value_t = 3)]
    pairs: u64,
    #[arg(long, default_value_t = 3)]
    n: u8,
    #[arg(long, default_value_t = 2)]
    r: u8,
    #[arg(long, default_value_t = 2)]
    w: u8,
    /// Request-serving threads per started node (default: this host's cores divided among
    /// the nodes, at least one; co-located nodes each running a thread per core mostly add
    /// context switches).
    #[arg(long)]
    node_threads: Option<usize>,
    /// Group-commit gathering of started nodes under sync durability, in microseconds
    /// (`storage.group_commit_gather_us`).
    #[arg(long, default_value_t = 500)]
    gather_us: u64,
    /// Node durability when starting nodes: sync, buffered or none.
    #[arg(long, default_value = "sync")]
    durability: String,
    /// Skip loading the key space (it is already there).
    #[arg(long)]
    skip_load: bool,
    #[arg(long, default_value = "target/ringkv-load")]
    out: PathBuf,
    /// Measure etcd beside ringkv in the same run: `auto` when an `etcd` binary is found
    /// (`ETCD_BIN` or `PATH`; Debian's `etcd-server`), `on` (fail without one), `off`.
    #[arg(long, value_enum, default_value = "auto")]
    etcd: PeerChoice,
    /// Members of the etcd cluster the harness starts.
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    #[serde(skip)]
    bench: bool,
}

/// Whether to measure a peer system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
enum PeerChoice {
    Auto,
    On,
    Off,
}

async fn connect(
    seeds: &[SocketAddr],
    tls: &TlsIdentity,
    args: &Args,
    mode: Mode,
) -> Result<Client> {
    cluster::connect(|| {
        let builder = Client::builder()
            .seeds(seeds.iter().copied())
            .tls(tls.clone())
            .n(args.n)
            .r(args.r)
            .w(args.w)
            .mode(mode)
            .timeout(Duration::from_secs(5));
        match (args.hedge_ms, args.hedge_pct) {
            (Some(ms), _) => builder.hedge_reads(Duration::from_micros((ms * 1000.0) as u64)),
            (None, Some(p)) => builder.hedge_reads_percentile(p),
            (None, None) => builder,
        }
    })
    .await
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

/// Node counters read before and after a phase.
struct Counters {
    /// Requests served, per node.
    requests: Vec<u64>,
    /// Writes that changed an object, all nodes.
    writes: u64,
    /// fsyncs run, all nodes.
    fsyncs: u64,
}

async fn counters(client: &Client) -> Counters {
    let stats: Vec<_> = client
        .stats()
        .await
        .into_iter()
        .map(|(_, s)| s.ok())
        .collect();
    Counters {
        requests: stats
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.requests))
            .collect(),
        writes: stats.iter().flatten().map(|s| s.writes).sum(),
        fsyncs: stats.iter().flatten().map(|s| s.fsyncs).sum(),
    }
}

/// Share of nodes whose request count is more than 15% from the mean (Dynamo's imbalance).
fn imbalance(before: &[u64], after: &[u64]) -> f64 {
    let d: Vec<f64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b) as f64)
        .collect();
    let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
    if mean == 0.0 {
        return 0.0;
    }
    d.iter()
        .filter(|x| ((**x - mean) / mean).abs() > 0.15)
        .count() as f64
        / d.len() as f64
}

/// The started etcd cluster and a client of it, or `None` (with the reason printed) when the
/// run does not measure etcd.
async fn start_etcd(args: &Args) -> Result<Option<(etcd::EtcdCluster, etcd::EtcdClient)>> {
    if args.etcd == PeerChoice::Off {
        return Ok(None);
    }
    let Some(bin) = etcd::binary() else {
        if args.etcd == PeerChoice::On {
            anyhow::bail!("--etcd on: no etcd binary (install etcd-server, or set ETCD_BIN)");
        }
        println!(
            "etcd not found (install Debian's etcd-server, or set ETCD_BIN): measuring ringkv only"
        );
        return Ok(None);
    };
    println!(
        "starting {} etcd members ({})...",
        args.etcd_members,
        bin.display()
    );
    let cluster = etcd::EtcdCluster::start(&bin, args.etcd_members)?;
    let client = cluster.connect(Duration::from_secs(60)).await?;
    Ok(Some((cluster, client)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (cluster, seeds, tls) = if args.seed_nodes.is_empty() {
        let threads = args
            .node_threads
            .unwrap_or_else(|| cluster::threads_per_node(args.nodes));
        println!(
            "starting {} ringkv-node processes ({} durability, gathering {} µs, {threads} worker thread(s) each)...",
            args.nodes, args.durability, args.gather_us
        );
        let mut config = format!(
            "worker_threads = {threads}\n[storage]\ndurability = \"{}\"\ngroup_commit_gather_us = {}\n",
            args.durability, args.gather_us
        );
        if let Some(ms) = args.hedge_ms {
            config += &format!("[router]\nread_hedge_us = {}\n", (ms * 1000.0) as u64);
        } else if let Some(p) = args.hedge_pct {
            config += &format!("[router]\nread_hedge_percentile = {p}\n");
        }
        let c = cluster::start(args.nodes, &config)?;
        let (seeds, tls) = (c.addrs().to_vec(), c.client_tls());
        (Some(c), seeds, tls)
    } else {
        let dir = args
            .certs
            .clone()
            .context("--certs is required with --seed-node")?;
        let tls = TlsIdentity::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{}.pem", args.cert_name)),
            &dir.join(format!("{}-key.pem", args.cert_name)),
        )?;
        (None, args.seed_nodes.clone(), tls)
    };
    let direct = connect(&seeds, &tls, &args, Mode::Direct).await?;
    let router = connect(&seeds, &tls, &args, Mode::Router).await?;
    let etcd = start_etcd(&args).await?;
    let value = Bytes::from(vec![0x5a; args.value_size]);

    if !args.skip_load {
        let b = bar(args.keys, "loading keys");
        workload::load(&direct, args.keys, &value, args.in_flight, &b).await?;
        b.finish();
    }
    if let Some((_, client)) = &etcd {
        let b = bar(args.keys, "loading etcd");
        workload::load(client, args.keys, &value, args.in_flight, &b).await?;
        b.finish();
    }

    let keys = Arc::new(Keys::new(args.keys, args.distribution)?);
    let mut systems = vec![System::Direct, System::Router];
    if etcd.is_some() {
        systems.push(System::Etcd);
    }
    let mut tallies: Vec<Tally> = systems
        .iter()
        .map(|s| Tally::new(*s))
        .collect::<Result<_>>()?;
    let mut versions = [0u64; 5];
    let mut phases = Vec::new();
    let mut imbalances = Vec::new();
    // Writes per fsync over ringkv's phases.
    let (mut writes, mut fsyncs) = (0u64, 0u64);
    // CPU time: the started ringkv nodes, the etcd members, and this harness (the client).
    let node_pids: Vec<u32> = cluster.as_ref().map_or_else(Vec::new, |c| {
        (0..args.nodes).filter_map(|i| c.pid(i)).collect()
    });
    let etcd_pids = etcd.as_ref().map_or_else(Vec::new, |(c, _)| c.pids());
    let expected = args.pairs * systems.len() as u64 * args.duration * 3000;
    let b = bar(expected, "measuring");
    for pair in 0..args.pairs {
        for (i, tally) in tallies.iter_mut().enumerate() {
            let system = tally.system;
            let client = match system {
                System::Direct => Some(&direct),
                System::Router => Some(&router),
                System::Etcd => None,
            };
            let before = match client {
                Some(c) => Some(counters(c).await),
                None => None,
            };
            let pids = if system.is_ringkv() {
                &node_pids
            } else {
                &etcd_pids
            };
            let cpu_before = cpu::CpuSample::now(pids);
            b.set_message(format!("{} {}/{}", system.name(), pair + 1, args.pairs));
            let phase = workload::Phase {
                workload: args.workload,
                keys: &keys,
                value: &value,
                in_flight: args.in_flight,
                warmup: Duration::from_secs(args.warmup),
                duration: Duration::from_secs(args.duration),
                seed: pair * systems.len() as u64 + i as u64,
                bar: &b,
            };
            let run = match (client, &etcd) {
                (Some(c), _) => workload::run(c, &phase).await?,
                (None, Some((_, e))) => workload::run(e, &phase).await?,
                (None, None) => continue,
            };
            let cpu_spent = cpu::CpuSample::now(pids).since(&cpu_before);
            let after = match client {
                Some(c) => Some(counters(c).await),
                None => None,
            };
            let (req_before, req_after) = match (before, after) {
                (Some(b), Some(a)) => {
                    writes += a.writes.saturating_sub(b.writes);
                    fsyncs += a.fsyncs.saturating_sub(b.fsyncs);
                    imbalances.push(imbalance(&b.requests, &a.requests));
                    (b.requests, a.requests)
                }
                _ => (Vec::new(), Vec::new()),
            };
            let served: u64 = req_after
                .iter()
                .zip(&req_before)
                .map(|(a, b)| a.saturating_sub(*b))
                .sum();
            let ops = run.reads.len() + run.updates.len();
            phases.push(serde_json::json!({
                "pair": pair + 1, "system": system.name(),
                "ops_per_sec": ops as f64 / run.elapsed.as_secs_f64(),
                "read": report::Latencies::of(&run.reads), "update": report::Latencies::of(&run.updates),
                "errors": run.errors,
                "requests_per_node_before": req_before, "requests_per_node_after": req_after,
                "node_requests_per_op": served as f64 / run.all_ops.max(1) as f64,
                "node_requests_per_op_by_node": per_node_per_op(&req_before, &req_after, run.all_ops),
                "cpu_us_per_op": {
                    "servers": cpu_spent.0.map(|d| us_per(d, run.all_ops)),
                    "harness": cpu_spent.1.map(|d| us_per(d, run.all_ops)),
                },
            }));
            if system.is_ringkv() {
                for (a, v) in versions.iter_mut().zip(run.versions) {
                    *a += v;
                }
            }
            tally.add(&run, cpu_spent, &req_before, &req_after)?;
        }
    }
    b.finish();
    let secs = (args.pairs * args.duration) as f64;
    let figures: Vec<report::ModeFigures> = tallies.iter().map(|t| t.figures(secs)).collect();
    println!(
        "\nworkload {:?}, {:?} keys ({}), {} B values, {} in flight, N={} R={} W={}, {} x {} s per system",
        args.workload,
        args.distribution,
        args.keys,
        args.value_size,
        args.in_flight,
        args.n,
        args.r,
        args.w,
        args.pairs,
        args.duration
    );
    report::print_table(&figures[0], &figures[1]);
    if let Some(peer) = figures.get(2) {
        report::print_peer(&[&figures[0], &figures[1]], peer);
    }
    let reads_total: u64 = versions.iter().sum();
    let share = |i: usize| 100.0 * versions[i] as f64 / reads_total.max(1) as f64;
    println!(
        "\nringkv reads by versions returned: 1: {:.3}%  2: {:.3}%  3: {:.3}%  4+: {:.3}%  (not found: {:.3}%)",
        share(1),
        share(2),
        share(3),
        share(4),
        share(0)
    );
    let mean_imbalance = imbalances.iter().sum::<f64>() / imbalances.len().max(1) as f64;
    println!(
        "load imbalance (share of nodes >15% from the mean request count): {:.1}% on average over phases",
        100.0 * mean_imbalance
    );
    let writes_per_fsync = (fsyncs > 0).then(|| writes as f64 / fsyncs as f64);
    println!(
        "node requests per operation (an update's read included): direct {:.2}, router {:.2}; writes per fsync: {}",
        tallies[0].requests_per_op(),
        tallies[1].requests_per_op(),
        writes_per_fsync.map_or("no fsyncs".into(), |w| format!("{w:.2}"))
    );
    for t in &tallies {
        println!("{}", t.cpu_line());
    }
    let errors: Vec<String> = tallies
        .iter()
        .map(|t| format!("{} {}", t.system.name(), t.errors))
        .collect();
    println!("failed operations: {}", errors.join(", "));
    let mib = |bytes: Vec<u64>| -> String {
        let v: Vec<String> = bytes.iter().map(|b| format!("{} MiB", b >> 20)).collect();
        v.join(", ")
    };
    if let Some(c) = &cluster {
        println!("node resident memory: {}", mib(c.resident_bytes()));
    }
    if let Some((c, _)) = &etcd {
        println!("etcd resident memory: {}", mib(c.resident_bytes()));
    }

    let dir = args.out.join(format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    ));
    std::fs::create_dir_all(&dir)?;
    let cpu: serde_json::Map<String, serde_json::Value> = tallies
        .iter()
        .map(|t| (t.system.name().to_string(), t.cpu_json()))
        .collect();
    let json = serde_json::json!({
        "args": &args, "systems": figures, "phases": phases,
        "versions": {"not_found": versions[0], "one": versions[1], "two": versions[2], "three": versions[3], "four_or_more": versions[4]},
        "mean_imbalance": mean_imbalance,
        "node_requests_per_op": {"direct": tallies[0].requests_per_op(), "router": tallies[1].requests_per_op()},
        "writes_per_fsync": writes_per_fsync,
        "cpu": cpu,
    });
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    let mut series: Vec<(String, &Histogram<u64>)> = Vec::new();
    for t in &tallies {
        series.push((format!("{} read", t.system.name()), &t.reads));
        series.push((format!("{} write", t.system.name()), &t.updates));
    }
    let series: Vec<(&str, &Histogram<u64>)> =
        series.iter().map(|(n, h)| (n.as_str(), *h)).collect();
    report::plot(&dir.join("latency.svg"), &series)?;
    println!(
        "\nwrote {} and {}",
        dir.join("results.json").display(),
        dir.join("latency.svg").display()
    );
    Ok(())
}
