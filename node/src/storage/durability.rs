//! Durability policies and group commit.
//!
//! Writers commit their fjall batch (which reaches the journal in OS buffers), take a sequence
//! number, and — under [`Durability::Sync`] — wait until a background syncer has run an fsync
//! that started after their commit. Writers that arrive while an fsync is running share the
//! next one, so the fsync rate stays bounded by the disk's fsync latency, not the write rate.
//! Under concurrent writes the syncer may also wait a moment (`gather`) before each fsync, so
//! that one fsync covers more writes: fsyncs are expensive in CPU as well as time (on a virtual
//! disk each one exits to the hypervisor), and fewer of them leave more for requests.

use super::engine::Engine;
use fjall::PersistMode;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::error;

use super::unsynced::Unsynced;

/// When a write is acknowledged relative to reaching the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge after an fsync that covers the write (group commit). Survives power loss.
    #[default]
    Sync,
    /// Acknowledge at once; fsync in the background every `buffered_interval_ms`. Dynamo's
    /// write buffer: a crash of the host may lose the last interval.
    Buffered,
    /// Never fsync explicitly (the OS and fjall flush when they choose).
    None,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Synced {
    upto: u64,
    failed: Option<String>,
}

struct Shared {
    written: AtomicU64,
    fsyncs: AtomicU64,
    /// Test hook: this many of the next fsyncs fail.
    #[cfg(test)]
    failing: std::sync::atomic::AtomicU32,
    wake: Mutex<bool>,
    cond: Condvar,
    stop: Mutex<bool>,
}

/// What a committed write must wait for before it is as durable as the policy requires.
#[derive(Clone, Copy, Debug)]
#[must_use = "a write is not durable until its ticket is waited for"]
pub struct Ticket(Option<u64>);

/// The group-commit syncer of one database.
pub(crate) struct GroupCommit {
    mode: Durability,
    shared: Arc<Shared>,
    synced: watch::Receiver<Synced>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// On a simulated disk: fsyncs are simulated there, and no syncer thread runs.
    disk: Option<Arc<Unsynced>>,
}

impl GroupCommit {
    /// Starts the syncer. `gather` applies under [`Durability::Sync`]: when the last fsync
    /// covered more than one write, the next waits this long first (zero: never waits). On a
    /// simulated `disk`, each wait runs a simulated fsync on the caller's runtime instead.
    pub(crate) fn start(
        db: Engine,
        mode: Durability,
        interval: Duration,
        gather: Duration,
        disk: Option<Arc<Unsynced>>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            #[cfg(test)]
            failing: std::sync::atomic::AtomicU32::new(0),
            wake: Mutex::new(false),
            cond: Condvar::new(),
            stop: Mutex::new(false),
        });
        let (tx, synced) = watch::channel(Synced::default());
        let thread = match mode {
            _ if disk.is_some() => None,
            Durability::None => None,
            _ => {
                let shared = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("ringkv-syncer".into())
                        .spawn(move || sync_loop(&db, &shared, &tx, mode, interval, gather))?,
                )
            }
        };
        Ok(Self {
            mode,
            shared,
            synced,
            thread: Mutex::new(thread),
            disk,
        })
    }

    /// Refuses a write while the last fsync failed: under `sync` for good (after a failed
    /// fsync the kernel may have dropped the pages, so no later fsync proves anything), under
    /// `buffered` until a later fsync succeeds. Checked before a write is committed, so a
    /// refused write stores nothing.
    pub(crate) fn healthy(&self) -> Result<(), String> {
        match &self.synced.borrow().failed {
            Some(e) => Err(format!("{e}; writes are refused until the disk recovers")),
            None => Ok(()),
        }
    }

    /// Test hook: the next `n` fsyncs fail.
    #[cfg(test)]
    pub(crate) fn fail_next_fsyncs(&self, n: u32) {
        self.shared.failing.store(n, Ordering::Release);
    }

    /// Records that a batch was committed; the ticket says what to wait for.
    pub(crate) fn committed(&self) -> Ticket {
        let seq = self.shared.written.fetch_add(1, Ordering::AcqRel) + 1;
        Ticket((self.mode == Durability::Sync).then_some(seq))
    }

    /// A ticket covering everything committed so far (for writes that changed nothing but
    /// must not be acknowledged before an earlier, identical write is on disk).
    pub(crate) fn barrier(&self) -> Ticket {
        let seq = self.shared.written.load(Ordering::Acquire);
        Ticket((self.mode == Durability::Sync && seq > 0).then_some(seq))
    }

    /// Waits until the write behind `ticket` is as durable as the policy requires.
    pub(crate) async fn durable(&self, ticket: Ticket) -> Result<(), String> {
        match ticket.0 {
            Some(seq) => self.wait(seq).await,
            None => Ok(()),
        }
    }

    async fn wait(&self, seq: u64) -> Result<(), String> {
        if let Some(disk) = &self.disk {
            if disk.synced_writes() >= seq {
                return Ok(());
            }
            let written = self.shared.written.load(Ordering::Acquire);
            return disk.fsync(written).await.map_err(str::to_string);
        }
        // Already covered (a write that changed nothing, behind an earlier fsync): no need to
        // wake the syncer, which would otherwise loop, and under gathering, sleep.
        if self.synced.borrow().upto >= seq {
            return Ok(());
        }
        {
            let mut w = self.shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            *w = true;
            self.shared.cond.notify_one();
        }
        let mut rx = self.synced.clone();
        let state = rx
            .wait_for(|s| s.upto >= seq || s.failed.is_some())
            .await
            .map_err(|_| "the syncer stopped".to_string())?;
        match &state.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Writes committed and fsyncs run so far.
    pub(crate) fn stats(&self) -> super::StoreStats {
        super::StoreStats {
            writes: self.shared.written.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed)
                + self.disk.as_ref().map_or(0, |d| d.fsyncs()),
            merges_refused: 0,
        }
    }

    /// Stops the syncer after a final fsync.
    pub(crate) fn stop(&self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        {
            let mut w = self.shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            *w = true;
            self.shared.cond.notify_one();
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One fsync of the database's journal.
fn persist(db: &Engine, shared: &Shared) -> Result<(), fjall::Error> {
    #[cfg(test)]
    if shared
        .failing
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(fjall::Error::Io(std::io::Error::other(
            "injected fsync failure",
        )));
    }
    let _ = shared;
    db.persist(PersistMode::SyncAll)
}

fn sync_loop(
    db: &Engine,
    shared: &Shared,
    tx: &watch::Sender<Synced>,
    mode: Durability,
    interval: Duration,
    gather: Duration,
) {
    let mut done = 0u64;
    // Writes the last fsync covered: more than one means writers are concurrent, and waiting
    // `gather` lets the next fsync cover more of them. A lone writer is never delayed.
    let mut last_batch = 0u64;
    // Under `buffered`, an fsync failed and writes are refused: try again every interval
    // even though nothing new was committed.
    let mut failing = false;
    loop {
        {
            let mut woken = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
            if mode == Durability::Sync {
                while !*woken {
                    woken = shared.cond.wait(woken).unwrap_or_else(|p| p.into_inner());
                }
            } else {
                let (w, _) = shared
                    .cond
                    .wait_timeout(woken, interval)
                    .unwrap_or_else(|p| p.into_inner());
                woken = w;
            }
            *woken = false;
        }
        let stopping = *shared.stop.lock().unwrap_or_else(|p| p.into_inner());
        if mode == Durability::Sync && last_batch > 1 && !gather.is_zero() && !stopping {
            std::thread::sleep(gather);
        }
        // Everything committed before this load is in the journal's buffers; the fsync below
        // covers it.
        let target = shared.written.load(Ordering::Acquire);
        if target > done || failing {
            match persist(db, shared) {
                Ok(()) => {
                    failing = false;
                    shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                    last_batch = target - done;
                    done = target;
                    tx.send_replace(Synced {
                        upto: done,
                        failed: None,
                    });
                }
                Err(e) if mode == Durability::Buffered => {
                    // Writes are refused until a later fsync (next interval) succeeds.
                    failing = true;
                    error!(error = %e, "fsync failed; writes are refused until one succeeds");
                    tx.send_replace(Synced {
                        upto: done,
                        failed: Some(format!("fsync failed: {e}")),
                    });
                }
                Err(e) => {
                    error!(error = %e, "fsync failed; storage is poisoned and refuses writes");
                    tx.send_replace(Synced {
                        upto: done,
                        failed: Some(format!("fsync failed: {e}")),
                    });
                    return;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
