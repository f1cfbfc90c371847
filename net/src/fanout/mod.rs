//! Quorum drivers: send to replicas over a [`Transport`](crate::transport::Transport), feed the
//! [`ringkv_shared::quorum`] and [`ringkv_shared::sloppy`] state machines, return as soon as they
//! decide.
//!
//! The decisions (who counts, when a quorum is met or impossible, where a copy goes next) live
//! in those I/O-free state machines; this module only turns their decisions into calls and
//! calls' replies back into their inputs.
//!
//! Every driver shares one contract:
//!
//! - **When they return.** As soon as the quorum is met (`Ok`), as soon as it can no longer be
//!   met (`Err(QuorumFailed)` naming every replica that failed and why), or at the deadline
//!   (`Err(QuorumFailed)` with the silent replicas named as `TimedOut`).
//! - **Stragglers.** Requests still in flight when the call returns are not cancelled: a
//!   background task keeps them until the deadline, so a write still reaches every replica it
//!   was sent to, and a late read answer still takes part in read repair.
//! - **Replicas known down** (per [`Transport::is_down`](crate::transport::Transport::is_down))
//!   are not contacted while the quorum can be met without them, and are then reported as
//!   [`ReplicaError::MarkedDown`](ringkv_shared::ReplicaError::MarkedDown) if it fails. When it
//!   cannot be met without them they are contacted anyway: a local suspicion steers requests
//!   around a node, it never fails a request that node could serve, and the request doubles as
//!   the probe that clears the suspicion.
//!
//! # Layout
//!
//! - `read` — [`read`], [`read_hedged`], [`read_with_hedger`]: quorum reads with stand-ins,
//!   hedging and read repair, described by a [`ReadPlan`].
//! - `replicate` — [`replicate`]: a coordinator's copies to the other owners, sloppy placement
//!   for the ones that fail, described by a [`Replication`].
//! - `delegate` — [`first_reachable`] and [`delegate_put`]: hand one request to the first
//!   node that can be reached (direct-mode writes, router mode).
//! - `repair` — [`repair_owners`]: the read repair an owner runs when a client asks, to its end.
//! - `calls` — the shared call machinery: calls polled together in the caller's task (no task
//!   per call), [`classify`], draining stragglers.

mod calls;
mod delegate;
mod read;
mod repair;
mod replicate;

pub use calls::classify;
pub use delegate::{DelegatedPut, delegate_put, first_reachable};
pub use read::{
    ReadOutcome, ReadPlan, Repair, RepairCount, read, read_hedged, read_targets, read_with_hedger,
};
pub use repair::repair_owners;
pub use replicate::{Replication, replicate};

#[cfg(test)]
mod tests;
