//! The simulation's event log: a running hash of every event and the last few in full.

use std::collections::VecDeque;
use std::fmt::Write as _;
use xxhash_rust::xxh3::Xxh3;

/// How many events are kept in full for a failure report.
const KEPT: usize = 100_000;

/// Every event of one simulated run: hashed in order, the most recent kept as text.
pub struct EventLog {
    hash: Xxh3,
    len: u64,
    recent: VecDeque<String>,
    start: tokio::time::Instant,
    line: String,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log whose times count from now (tokio's clock).
    pub fn new() -> Self {
        Self {
            hash: Xxh3::new(),
            len: 0,
            recent: VecDeque::with_capacity(KEPT),
            start: tokio::time::Instant::now(),
            line: String::new(),
        }
    }

    /// Appends one event, stamped with the simulated time.
    pub fn record(&mut self, event: std::fmt::Arguments<'_>) {
        self.line.clear();
        // Integer formatting: a float's would be a tenth of the simulator's time.
        let micros = self.start.elapsed().as_micros();
        let _ = write!(
            self.line,
            "{:>6}.{:03}ms {event}",
            micros / 1000,
            micros % 1000
        );
        self.hash.update(self.line.as_bytes());
        self.hash.update(b"\n");
        self.len += 1;
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(self.line.clone());
    }

    /// The hash of every event so far, in order.
    pub fn hash(&self) -> u64 {
        self.hash.digest()
    }

    /// Events so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last `n` events (at most the ones kept), oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let skip = self.recent.len().saturating_sub(n);
        self.recent.iter().skip(skip).cloned().collect()
    }
}
