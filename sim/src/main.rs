//! `ringkv-sim`: run seeds of the simulated cluster and report the ones that fail.
//!
//! ```text
//! ringkv-sim --seed 7                      # one seed, with its event-log hash
//! ringkv-sim --seeds 100000 --threads 2    # a soak: seeds 0..100000 on two threads
//! ringkv-sim --seeds 500 --start 9000 --scenario my.toml
//! ```

use anyhow::{Result, bail};
use clap::Parser;
use ringkv_sim::{Scenario, report, run_seed};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
        let r = run_seed(seed, &scenario)?;
        println!(
            "seed {seed}: {} ops, {} events, {:.1} s simulated, hash {:016x}",
            r.ops,
            r.events,
            r.simulated.as_secs_f64(),
            r.hash
        );
        if args.log {
            for e in &r.recent {
                println!("{e}");
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
    let next = Arc::new(AtomicU64::new(args.start));
    let end = args.start.saturating_add(args.seeds);
    let failed = Arc::new(Mutex::new(Vec::new()));
    let ops = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let simulated_ms = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wall = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.threads {
            let (next, failed, ops, done, simulated_ms, stop) = (
                next.clone(),
                failed.clone(),
                ops.clone(),
                done.clone(),
                simulated_ms.clone(),
                stop.clone(),
            );
            let scenario = &scenario;
            let file = file.as_deref();
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let outcome = run_seed(seed, scenario);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    match outcome {
                        Ok(r) => {
                            ops.fetch_add(r.ops, Ordering::Relaxed);
                            simulated_ms
                                .fetch_add(r.simulated.as_millis() as u64, Ordering::Relaxed);
                            if !r.passed() {
                                eprint!("{}", report::failure(&r, file));
                                failed.lock().unwrap_or_else(|p| p.into_inner()).push(seed);
                                if args.fail_fast {
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("seed {seed}: the run itself failed: {e:#}");
                            failed.lock().unwrap_or_else(|p| p.into_inner()).push(seed);
                        }
                    }
                    if n.is_multiple_of(100) {
                        eprintln!(
                            "{n} seeds run, {} failed, {:.0} s",
                            failed.lock().unwrap_or_else(|p| p.into_inner()).len(),
                            wall.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let secs = wall.elapsed().as_secs_f64();
    let ops = ops.load(Ordering::Relaxed);
    let mut failed = failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    failed.sort_unstable();
    println!(
        "{} seeds in {secs:.1} s wall on {} threads: {} failed; {ops} client ops ({:.0} per wall second), {:.0} simulated s ({:.0}x real time)",
        done.load(Ordering::Relaxed),
        args.threads,
        failed.len(),
        ops as f64 / secs,
        simulated_ms.load(Ordering::Relaxed) as f64 / 1e3,
        simulated_ms.load(Ordering::Relaxed) as f64 / 1e3 / secs,
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?}");
        bail!("{} seeds failed", failed.len());
    }
    Ok(())
}
