//! The simulator in CI: one seed replays exactly, the regression seeds pass, and 1,000 seeds
//! of the CI scenario pass, plus 100 of it on fjall, 200 of the hints-only and 40 of the
//! reaping scenario.
//!
//! `RINGKV_SIM_SEEDS` (count) and `RINGKV_SIM_START` (first seed) change the sweep, e.g. to
//! explore fresh seeds locally; a failing seed prints the command that replays it.

use ringkv_sim::sweep::SweepOptions;
use ringkv_sim::{Scenario, report, run_seed, run_seed_keeping};
use std::path::PathBuf;

fn sim_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ci_scenario() -> Scenario {
    Scenario::from_file(&sim_dir().join("scenarios/ci.toml")).expect("the CI scenario parses")
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The same seed twice gives the same history, whether or not the run keeps its events as
/// text (a sweep does not; a failure report reruns the seed to keep them).
#[test]
fn one_seed_replays_byte_for_byte() {
    let scenario = ci_scenario();
    let all = ringkv_net::sim::KEPT;
    for seed in [7, 1_000_003] {
        let a = run_seed_keeping(seed, &scenario, all).expect("run");
        let b = run_seed_keeping(seed, &scenario, all).expect("run");
        assert!(
            a.events > 1_000 && a.ops > 50 && a.recent.len() as u64 == a.events,
            "seed {seed} did too little, or kept too little of it: {} events, {} kept, {} ops",
            a.events,
            a.recent.len(),
            a.ops
        );
        assert_eq!(
            (a.hash, a.events, a.ops),
            (b.hash, b.events, b.ops),
            "seed {seed} gave two histories; first difference:\n{}",
            first_difference(&a.recent, &b.recent)
        );
        let quiet = run_seed(seed, &scenario).expect("run");
        assert_eq!(
            (quiet.hash, quiet.events, quiet.ops),
            (a.hash, a.events, a.ops),
            "seed {seed}: keeping no text changed the history"
        );
        assert!(quiet.recent.is_empty(), "a passing sweep run keeps no text");
    }
}

fn first_difference(a: &[String], b: &[String]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("event {i}:\n  {}\n  {}", a[i], b[i]),
        None => format!(
            "one log is a prefix of the other ({} / {})",
            a.len(),
            b.len()
        ),
    }
}

#[test]
fn regression_seeds_pass() {
    let text = std::fs::read_to_string(sim_dir().join("regressions.txt")).expect("read");
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let seed: u64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("regressions.txt: bad line {line:?}"));
        let (scenario, file) = match parts.next() {
            Some(f) => (
                Scenario::from_file(&sim_dir().join(f)).expect("scenario"),
                Some(f),
            ),
            None => (Scenario::default(), None),
        };
        let r = run_seed(seed, &scenario).expect("run");
        let file = file.map(|f| format!("sim/{f}"));
        assert!(r.passed(), "{}", report::failure(&r, file.as_deref()));
    }
}

/// Runs `count` seeds of `scenario_file` (from `RINGKV_SIM_START`, default 0) on two threads
/// and fails with the report of every failing seed.
fn sweep(scenario_file: &str, count: u64) {
    let scenario = Scenario::from_file(&sim_dir().join(scenario_file)).expect("scenario parses");
    let count = env_u64("RINGKV_SIM_SEEDS", count);
    let start = env_u64("RINGKV_SIM_START", 0);
    let file = format!("sim/{scenario_file}");
    let options = SweepOptions {
        scenario_file: Some(&file),
        start,
        count,
        threads: 2,
        fail_fast: false,
    };
    let swept = ringkv_sim::sweep::sweep(&scenario, &options, &|_| {}, &|_, _| {});
    assert_eq!(swept.seeds, count);
    assert!(
        swept.ops > count * 50,
        "{count} seeds ran only {} client operations",
        swept.ops
    );
    let reports: Vec<&str> = swept.failed.iter().map(|(_, r)| r.as_str()).collect();
    assert!(
        reports.is_empty(),
        "{} of {count} seeds of {scenario_file} failed (from {start}):\n{}",
        reports.len(),
        reports.join("\n")
    );
}

/// Every fault kind, short runs: 1,000 seeds.
#[test]
fn a_thousand_seeds_of_the_ci_scenario_pass() {
    sweep("scenarios/ci.toml", 1_000);
}

/// The same faults with the nodes on fjall (the others run on memory disks).
#[test]
fn a_hundred_seeds_of_the_ci_scenario_on_fjall_pass() {
    sweep("scenarios/fjall.toml", 100);
}

/// Hinted handoff alone (no anti-entropy) puts every acknowledged write on W owners.
#[test]
fn hinted_handoff_alone_restores_w_owner_copies() {
    sweep("scenarios/hints.toml", 200);
}

/// Deletes reaped while faults last stay deleted.
#[test]
fn deletes_reaped_under_faults_stay_deleted() {
    sweep("scenarios/reap.toml", 40);
}
