//! Many seeds side by side: [`sweep`] runs a range of seeds of one scenario on a few threads
//! (each seed on one thread, with its own runtime) and sums what they did. The binary's
//! `--seeds` and the CI tests both use it.

use crate::run::Phases;
use crate::{Scenario, report, run_seed};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Which seeds to run, and how.
#[derive(Clone, Debug)]
pub struct SweepOptions<'a> {
    /// The scenario file the seeds use, named in each failure's replay command.
    pub scenario_file: Option<&'a str>,
    /// The first seed.
    pub start: u64,
    /// How many seeds.
    pub count: u64,
    /// Threads running seeds.
    pub threads: usize,
    /// Stop taking new seeds after the first failure.
    pub fail_fast: bool,
}

/// What a sweep did.
#[derive(Clone, Debug, Default)]
pub struct Swept {
    /// Seeds run.
    pub seeds: u64,
    /// Client operations over all seeds.
    pub ops: u64,
    /// Simulated time over all seeds.
    pub simulated: Duration,
    /// Wall time of each phase over all seeds (summed over threads).
    pub phases: Phases,
    /// Failing seeds (sorted) with their reports (the run's failure report, or why the run
    /// itself could not complete).
    pub failed: Vec<(u64, String)>,
}

/// Runs the seeds. `on_failure` gets each failure's report as it happens; `progress` gets
/// the seeds run and failed after each seed.
pub fn sweep(
    scenario: &Scenario,
    options: &SweepOptions<'_>,
    on_failure: &(dyn Fn(&str) + Sync),
    progress: &(dyn Fn(u64, usize) + Sync),
) -> Swept {
    let end = options.start.saturating_add(options.count);
    let next = AtomicU64::new(options.start);
    let stop = AtomicBool::new(false);
    let swept = Mutex::new(Swept::default());
    std::thread::scope(|s| {
        for _ in 0..options.threads.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let failure = match run_seed(seed, scenario) {
                        Ok(r) => {
                            let text =
                                (!r.passed()).then(|| report::failure(&r, options.scenario_file));
                            let mut swept = swept.lock().unwrap_or_else(|p| p.into_inner());
                            swept.ops += r.ops;
                            swept.simulated += r.simulated;
                            swept.phases += r.phases;
                            text
                        }
                        Err(e) => Some(format!("seed {seed}: the run itself failed: {e:#}\n")),
                    };
                    let mut swept = swept.lock().unwrap_or_else(|p| p.into_inner());
                    swept.seeds += 1;
                    if let Some(text) = failure {
                        on_failure(&text);
                        swept.failed.push((seed, text));
                        if options.fail_fast {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    progress(swept.seeds, swept.failed.len());
                }
            });
        }
    });
    let mut swept = swept.into_inner().unwrap_or_else(|p| p.into_inner());
    swept.failed.sort_by_key(|(seed, _)| *seed);
    swept
}
