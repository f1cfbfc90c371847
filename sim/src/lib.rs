//! ringkv's deterministic simulator.
//!
//! Runs 3–7 real nodes (`ringkv_node::Node::start_sim`: the same dispatch, coordinator,
//! replica, hint delivery, anti-entropy, reaper, gossip and handoff code as on real hosts) and
//! several real clients (`ringkv_client::Client`) in one process, on a simulated network
//! (`ringkv_net::sim::SimNet`) and tokio's paused clock, under a seeded schedule of faults.
//! One seed is one history: the same seed replays it event for event, and its hash is checked.
//!
//! Determinism rests on four things: one current-thread runtime with paused time per seed
//! (no worker threads, no wall clock in any timer); every random draw from the seed (the
//! network's RNG, and `ringkv_net::ambient` for actor ids, gossip targets and replica order);
//! the wall clock tombstones are aged by following tokio's clock; and no work handed to other
//! threads (the node's sweep runs inline on the simulated network, `select!`s are `biased`,
//! fsyncs are simulated on the run's runtime instead of a syncer thread). The nodes' data is
//! on memory disks by default, so no engine thread runs either; on fjall (`storage =
//! "fjall"`), its flush and compaction threads remain and change no result a read returns.
//! Iteration over hash maps does not reach the event log (the node and client keep ordered
//! maps where order is observable).
//!
//! # Layout
//!
//! - [`scenario`] — [`Scenario`]: the shape of a run, from TOML or defaults.
//! - [`cluster`] — [`cluster::SimCluster`]: nodes on the network; crash, wipe, restart, add.
//! - [`workload`] — the client tasks (unique keys, plain sets, `modify` sets, counters) and
//!   their records.
//! - [`nemesis`] — faults on the seed's schedule: partitions (symmetric, one-way, bridge),
//!   client cuts, message loss, crashes, a wiped disk, ring changes with handoff.
//! - [`check`] — convergence (hints, ring, Merkle roots) and the checkers.
//! - [`run`] — one seed from start to verdict: [`run_seed`] and [`RunReport`].
//! - [`sweep`] — many seeds on a few threads, summed (the binary and CI use it).
//! - [`report`] — what a failing seed prints: the replay command and the events around it.

pub mod check;
pub mod cluster;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod workload;

pub use run::{RunReport, run_seed, run_seed_keeping};
pub use scenario::Scenario;
