//! The ambient inputs of a node or client: randomness and the wall clock.
//!
//! Everything in ringkv that draws a random number (actor ids, gossip targets, the client's
//! replica order) or reads the wall clock (tombstone ages) goes through here. In production
//! these are the thread-local OS-seeded RNG and [`std::time::SystemTime`]. The simulator (feature
//! `sim`) replaces both for the current thread with a seeded RNG and a clock that follows tokio's
//! (paused) time, so that one seed replays one history exactly.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

#[cfg(feature = "sim")]
mod simulated {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::cell::RefCell;

    pub(super) struct Ambient {
        pub(super) rng: StdRng,
        pub(super) start: tokio::time::Instant,
        pub(super) epoch_ms: u64,
    }

    thread_local! {
        pub(super) static AMBIENT: RefCell<Option<Ambient>> = const { RefCell::new(None) };
    }

    /// Ends the simulated inputs of this thread when dropped.
    #[must_use = "the simulated inputs end when the guard is dropped"]
    pub struct SimulatedGuard(());

    impl Drop for SimulatedGuard {
        fn drop(&mut self) {
            AMBIENT.with(|a| *a.borrow_mut() = None);
        }
    }

    /// From now until the guard drops, this thread draws randomness from `seed` and reads a
    /// wall clock that starts at `epoch_ms` and advances with tokio's clock. Must be called
    /// inside the (paused) runtime the simulation runs on.
    pub fn simulate_this_thread(seed: u64, epoch_ms: u64) -> SimulatedGuard {
        AMBIENT.with(|a| {
            *a.borrow_mut() = Some(Ambient {
                rng: StdRng::seed_from_u64(seed),
                start: tokio::time::Instant::now(),
                epoch_ms,
            })
        });
        SimulatedGuard(())
    }

    /// Runs `f` on the seeded RNG if this thread has one; hands `f` back otherwise.
    pub(super) fn try_with_rng<T, F: FnOnce(&mut dyn rand::RngCore) -> T>(f: F) -> Result<T, F> {
        AMBIENT.with(|a| match a.borrow_mut().as_mut() {
            Some(sim) => Ok(f(&mut sim.rng)),
            None => Err(f),
        })
    }

    pub(super) fn unix_ms() -> Option<u64> {
        AMBIENT.with(|a| {
            a.borrow().as_ref().map(|sim| {
                sim.epoch_ms
                    + u64::try_from(sim.start.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
            })
        })
    }
}

#[cfg(feature = "sim")]
pub use simulated::{SimulatedGuard, simulate_this_thread};

/// Runs `f` on this thread's RNG: the simulator's seeded one if set, else the OS-seeded one.
fn with_rng<T, F: FnOnce(&mut dyn rand::RngCore) -> T>(f: F) -> T {
    #[cfg(feature = "sim")]
    let f = match simulated::try_with_rng(f) {
        Ok(t) => return t,
        Err(f) => f,
    };
    f(&mut rand::rng())
}

/// A uniformly random `u64`.
pub fn random_u64() -> u64 {
    with_rng(|r| r.random())
}

/// Shuffles `items` in place.
pub fn shuffle<T>(items: &mut [T]) {
    with_rng(|r| items.shuffle(r))
}

/// One of `items`, uniformly; `None` if empty.
pub fn choose<T>(items: &[T]) -> Option<&T> {
    with_rng(|r| items.choose(r))
}

/// Milliseconds since the Unix epoch by the wall clock (the simulator's under `sim`).
pub fn unix_ms() -> u64 {
    #[cfg(feature = "sim")]
    if let Some(ms) = simulated::unix_ms() {
        return ms;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
