//! What a failing seed prints: how to replay it, what was violated, and a shortened event log
//! (the events that name the keys involved, then the last events before the verdict).

use crate::RunReport;
use std::fmt::Write as _;

/// The report for a failed run. `scenario` is the scenario file the run used, if any.
pub fn failure(report: &RunReport, scenario: Option<&str>) -> String {
    let mut out = String::new();
    let file = scenario
        .map(|f| format!(" --scenario {f}"))
        .unwrap_or_default();
    let _ = writeln!(out, "seed {} FAILED", report.seed);
    let _ = writeln!(
        out,
        "replay: cargo run -p ringkv-sim -- --seed {}{file}",
        report.seed
    );
    for v in &report.violations {
        let _ = writeln!(out, "violation: {v}");
    }
    let keys = keys_named(&report.violations);
    if !keys.is_empty() {
        let _ = writeln!(out, "--- events naming {keys:?} (last 40) ---");
        let named: Vec<&String> = report
            .recent
            .iter()
            .filter(|e| keys.iter().any(|k| mentions(e, k)))
            .collect();
        for e in named.iter().skip(named.len().saturating_sub(40)) {
            let _ = writeln!(out, "{e}");
        }
    }
    let _ = writeln!(out, "--- last 30 events ---");
    for e in report
        .recent
        .iter()
        .skip(report.recent.len().saturating_sub(30))
    {
        let _ = writeln!(out, "{e}");
    }
    out
}

/// Workload keys (`u-…`, `s-…`, `m-…`, `c-…`) a violation names.
fn keys_named(violations: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = violations
        .iter()
        .flat_map(|v| {
            v.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|t| {
                    ["u-", "s-", "m-", "c-"].iter().any(|p| t.starts_with(p)) && t.len() > 2
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.truncate(4);
    keys
}

fn mentions(event: &str, key: &str) -> bool {
    event
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .any(|t| t == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_replay_command_and_the_keys_events() {
        let report = RunReport {
            seed: 42,
            hash: 0,
            events: 3,
            ops: 1,
            simulated: std::time::Duration::ZERO,
            phases: Default::default(),
            violations: vec!["unique keys: lost [\"u-c1t0-7\"]".into()],
            recent: vec![
                "1ms c1t0 insert u-c1t0-7 -> Ok".into(),
                "2ms c1t0 insert u-c1t0-70 -> Ok".into(),
                "3ms heal".into(),
            ],
        };
        let text = failure(&report, Some("s.toml"));
        assert!(text.contains("cargo run -p ringkv-sim -- --seed 42 --scenario s.toml"));
        assert!(text.contains("events naming [\"u-c1t0-7\"]"));
        let named = text.split("--- last").next().unwrap();
        assert!(named.contains("insert u-c1t0-7 -> Ok"));
        assert!(!named.contains("u-c1t0-70"), "{named}");
    }
}
