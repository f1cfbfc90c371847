//! The simulation's event log: a running hash of every event and, when asked, the last few as
//! text.
//!
//! Hashing is the whole job in a sweep: a seed replays exactly, so a failing seed's text can be
//! had by running it again with text kept ([`EventLog::keep`]) and checking that the hash comes
//! out the same. Frequent events (every message and reply) are hashed from their fields
//! ([`EventLog::record_with`]) and formatted only when text is kept; formatting them was a
//! tenth of a seed's time. Rare ones are formatted and hashed as text ([`EventLog::record`]).
//! Whether text is kept never changes the hash.

use std::collections::VecDeque;
use std::fmt::Write as _;
use xxhash_rust::xxh3::Xxh3;

/// How many events a log keeps as text when asked to keep "all it can".
pub const KEPT: usize = 100_000;

/// Every event of one simulated run: hashed in order, the most recent kept as text if asked.
pub struct EventLog {
    hash: Xxh3,
    len: u64,
    start: tokio::time::Instant,
    /// How many events to keep as text (0: none).
    keep: usize,
    /// The kept events, oldest first; once full, the oldest line's buffer is reused.
    recent: VecDeque<String>,
    /// Scratch for events hashed as text.
    line: String,
    /// Scratch for events hashed from their fields.
    fields: Vec<u8>,
}

/// The fields of one event, gathered to be hashed in one piece ([`EventLog::record_with`]).
pub struct Fields(Vec<u8>);

impl Fields {
    /// Adds bytes to the event's hash.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log whose times count from now (tokio's clock), keeping no text.
    pub fn new() -> Self {
        Self {
            hash: Xxh3::new(),
            len: 0,
            start: tokio::time::Instant::now(),
            keep: 0,
            recent: VecDeque::new(),
            line: String::new(),
            fields: Vec::new(),
        }
    }

    /// Keeps the last `n` events as text from now on (at most [`KEPT`]).
    pub fn keep(&mut self, n: usize) {
        self.keep = n.min(KEPT);
        self.recent.truncate(self.keep);
    }

    /// Hashes the simulated time and counts the event; returns the time in microseconds.
    fn stamp(&mut self) -> u64 {
        let micros = self.micros();
        self.hash.update(&micros.to_le_bytes());
        self.len += 1;
        micros
    }

    /// The simulated time since the log started, in microseconds.
    fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Appends one event given as text.
    pub fn record(&mut self, event: std::fmt::Arguments<'_>) {
        let micros = self.stamp();
        self.line.clear();
        let _ = self.line.write_fmt(event);
        self.hash.update(self.line.as_bytes());
        self.hash.update(b"\n");
        if self.keep > 0 {
            let line = std::mem::take(&mut self.line);
            self.keep_text(micros, |out| out.push_str(&line));
            self.line = line;
        }
    }

    /// Appends one event hashed from its fields by `fields`, and written as text by `text`
    /// only if text is kept. Two events that differ must hash differently: `fields` hashes
    /// everything `text` writes.
    pub fn record_with(
        &mut self,
        fields: impl FnOnce(&mut Fields),
        text: impl FnOnce(&mut String),
    ) {
        // The same bytes in the same order as hashing each piece as it comes (`stamp`, the
        // fields, the newline), so the hash does not change; gathered first, they cost the
        // hasher one call instead of a dozen.
        let micros = self.micros();
        self.len += 1;
        let mut gathered = Fields(std::mem::take(&mut self.fields));
        gathered.0.clear();
        gathered.update(&micros.to_le_bytes());
        fields(&mut gathered);
        gathered.update(b"\n");
        self.hash.update(&gathered.0);
        self.fields = gathered.0;
        if self.keep > 0 {
            self.keep_text(micros, text);
        }
    }

    fn keep_text(&mut self, micros: u64, text: impl FnOnce(&mut String)) {
        let mut line = if self.recent.len() >= self.keep {
            self.recent.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        line.clear();
        // Integer formatting: a float's was a tenth of the simulator's time.
        let _ = write!(line, "{:>6}.{:03}ms ", micros / 1000, micros % 1000);
        text(&mut line);
        self.recent.push_back(line);
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

    /// The last `n` events kept as text (none unless [`EventLog::keep`] asked), oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let skip = self.recent.len().saturating_sub(n);
        self.recent.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(log: &mut EventLog, id: u64) {
        log.record_with(
            |h| h.update(&id.to_le_bytes()),
            |out| {
                let _ = write!(out, "msg {id}");
            },
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keeping_text_changes_no_hash_and_keeps_only_the_last_events() {
        let run = async |keep: usize| {
            let mut log = EventLog::new();
            log.keep(keep);
            log.record(format_args!("start"));
            message(&mut log, 1);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            message(&mut log, 2);
            log
        };
        let quiet = run(0).await;
        let kept = run(2).await;
        assert_eq!(quiet.hash(), kept.hash());
        assert_eq!(quiet.len(), 3);
        assert!(quiet.recent(10).is_empty());
        assert_eq!(
            kept.recent(10),
            ["     0.000ms msg 1", "     2.000ms msg 2"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_hash_covers_fields_times_and_order() {
        let hash = |ids: &[u64], pause: bool| {
            let mut log = EventLog::new();
            for &id in ids {
                message(&mut log, id);
            }
            if pause {
                log.start -= std::time::Duration::from_micros(1);
            }
            message(&mut log, 0);
            log.hash()
        };
        let base = hash(&[1, 2], false);
        assert_ne!(base, hash(&[2, 1], false), "order");
        assert_ne!(base, hash(&[1, 3], false), "fields");
        assert_ne!(base, hash(&[1, 2], true), "time");
        assert_eq!(base, hash(&[1, 2], false));
    }
}
