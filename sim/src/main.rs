//! `ringkv-sim`: run seeds of the simulated cluster and report the ones that fail.
//!
//! ```text
//! ringkv-sim --seed 7                      # one seed, with its event-log hash
//! ringkv-sim --seeds 100000 --threads 2    # a soak: seeds 0..100000 on two threads
//! ringkv-sim --seeds 500 --start 9000 --scenario my.toml
//! ```

use anyhow::{Result, bail};
use clap::Parser;
use ringkv_sim::sweep::{SweepOptions, sweep};
use ringkv_sim::{Scenario, report, run_seed_keeping};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// mimalloc instead of the system allocator: a simulated run allocates and frees messages,
/// objects and log lines at a high rate, and glibc's malloc was a sixth of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs seeds of ringkv's deterministic simulation.
#[derive(Debug, Parser)]
#[command(name = "ringkv-sim", version)]
struct Args {
    /// Run this one seed and print its report.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from `--start`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Threads running seeds side by side (each seed runs on one thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A scenario file (TOML; see docs/SIMULATION.md). Default: the built-in scenario.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// With `--seed`: print the whole event log, not only on failure.
    #[arg(long, requires = "seed")]
    log: bool,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::default(),
    };
    let file = args.scenario.as_ref().map(|p| p.display().to_string());
    if let Some(seed) = args.seed {
        let r = run_seed_keeping(seed, &scenario, ringkv_net::sim::KEPT)?;
        println!(
            "seed {seed}: {} ops, {} events, {:.1} s simulated, hash {:016x}",
            r.ops,
            r.events,
            r.simulated.as_secs_f64(),
            r.hash
        );
        if args.log {
            // Written, not printed: a reader that stops early (`| head`) ends the listing,
            // not the program with a panic.
            let mut out = std::io::stdout().lock();
            for e in &r.recent {
                if writeln!(out, "{e}").is_err() {
                    break;
                }
            }
        }
        if !r.passed() {
            eprint!("{}", report::failure(&r, file.as_deref()));
            bail!("seed {seed} failed");
        }
        println!("seed {seed} passed");
        return Ok(());
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let wall = Instant::now();
    let options = SweepOptions {
        scenario_file: file.as_deref(),
        start: args.start,
        count: args.seeds,
        threads: args.threads,
        fail_fast: args.fail_fast,
    };
    let swept = sweep(
        &scenario,
        &options,
        &|text| eprint!("{text}"),
        &|done, failed| {
            if done.is_multiple_of(100) {
                eprintln!(
                    "{done} seeds run, {failed} failed, {:.0} s",
                    wall.elapsed().as_secs_f64()
                );
            }
        },
    );
    let secs = wall.elapsed().as_secs_f64();
    let simulated = swept.simulated.as_secs_f64();
    println!(
        "{} seeds in {secs:.1} s wall on {} threads: {} failed; {} client ops ({:.0} per wall second), {simulated:.0} simulated s ({:.0}x real time)",
        swept.seeds,
        args.threads,
        swept.failed.len(),
        swept.ops,
        swept.ops as f64 / secs,
        simulated / secs,
    );
    let p = &swept.phases;
    let total = (p.start + p.workload + p.converge + p.judge)
        .as_secs_f64()
        .max(1e-9);
    let share = |d: std::time::Duration| 100.0 * d.as_secs_f64() / total;
    println!(
        "thread time by phase: start {:.0}%, workload {:.0}%, heal and converge {:.0}%, judge {:.0}%",
        share(p.start),
        share(p.workload),
        share(p.converge),
        share(p.judge),
    );
    if !swept.failed.is_empty() {
        let seeds: Vec<u64> = swept.failed.iter().map(|(seed, _)| *seed).collect();
        println!("failing seeds: {seeds:?}");
        bail!("{} seeds failed", seeds.len());
    }
    Ok(())
}
