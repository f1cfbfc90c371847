//! CPU time of the processes a run involves, read from `/proc` (Linux), so that a run reports
//! what one operation costs the whole system and what one node request costs a node.
//!
//! `/proc/<pid>/stat` counts user and system time of all of a process's threads in clock ticks
//! of `USER_HZ`, which Linux fixes at 100 per second for this interface on every architecture:
//! a resolution of 10 ms, far below a phase's seconds.

use std::time::Duration;

/// `USER_HZ`: the unit of the times in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time of process `pid` (`None` for this process), or `None` when it
/// cannot be read (not Linux, or the process is gone).
pub fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, so the fields are counted from the last `)`: after it come state
/// (field 3) ... utime (field 14) and stime (field 15).
fn parse_stat(line: &str) -> Option<Duration> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_micros(ticks * 1_000_000 / TICKS_PER_SECOND))
}

/// The CPU time of a set of processes and of this harness at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// Each watched process's CPU time (`None`: unreadable).
    pub processes: Vec<Option<Duration>>,
    /// This harness's CPU time (the client library's share of the work).
    pub harness: Option<Duration>,
}

impl CpuSample {
    /// Samples `pids` and this process.
    pub fn now(pids: &[u32]) -> Self {
        Self {
            processes: pids.iter().map(|p| process_cpu(Some(*p))).collect(),
            harness: process_cpu(None),
        }
    }

    /// CPU spent since `before`: (watched processes together, harness). `None` for a part
    /// that could not be read at either end.
    pub fn since(&self, before: &CpuSample) -> (Option<Duration>, Option<Duration>) {
        let processes = (!self.processes.is_empty()
            && self.processes.len() == before.processes.len())
        .then(|| {
            self.processes
                .iter()
                .zip(&before.processes)
                .map(|(a, b)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
                .sum::<Option<Duration>>()
        })
        .flatten();
        let harness = self
            .harness
            .zip(before.harness)
            .map(|(a, b)| a.saturating_sub(b));
        (processes, harness)
    }
}
