//! Read repair run to its end, for an owner a client asked to repair a key
//! ([`Request::Repair`]): unlike the repair a read starts in the background, the caller knows
//! when it is over, so a node can bound how many it runs at once.

use super::calls::{Calls, drive, expect_object, start_calls};
use crate::transport::Transport;
use bytes::Bytes;
use ringkv_shared::ids::NodeId;
use ringkv_shared::proto::Request;
use ringkv_shared::quorum::{Progress, ReadQuorum};
use ringkv_shared::ring::Member;
use std::time::Duration;
use tokio::time::Instant;

/// Asks every one of `owners` for `key`, waits for their answers until `timeout`, then writes
/// the merge to each owner that answered with less and waits for those writes until another
/// `timeout`. Returns the owners it wrote to. Owners suspected down are not asked, and owners
/// that fail or stay silent are left to anti-entropy; stand-ins are never asked (they hold
/// hints, not replicas).
pub async fn repair_owners<T: Transport>(
    transport: &T,
    key: Bytes,
    owners: &[Member],
    timeout: Duration,
) -> Vec<NodeId> {
    let owners: Vec<Member> = owners
        .iter()
        .filter(|m| !transport.is_down(m.id))
        .cloned()
        .collect();
    let ids: Vec<NodeId> = owners.iter().map(|m| m.id).collect();
    let mut quorum = ReadQuorum::new(1, ids.clone(), ids);
    let mut reads = start_calls(transport, &owners, &Request::Read { key: key.clone() });
    // Every answer counts, so drive until the calls run out or the deadline passes.
    drive(
        &mut reads,
        Instant::now() + timeout,
        Progress::Pending,
        |node, r| {
            quorum.record(node, r.and_then(expect_object));
            Progress::Pending
        },
    )
    .await;
    let stale = quorum.stale();
    if stale.is_empty() {
        return stale;
    }
    let mut writes = write_merge(transport, key, &quorum, &owners, &stale);
    drive(
        &mut writes,
        Instant::now() + timeout,
        Progress::Pending,
        |_, _| Progress::Pending,
    )
    .await;
    stale
}

/// Writes the merge `quorum` holds to the members of `among` that are in `stale`, one call
/// each: read repair's write, whether the caller waits for it or lets it finish alone.
pub(super) fn write_merge<T: Transport>(
    transport: &T,
    key: Bytes,
    quorum: &ReadQuorum,
    among: &[Member],
    stale: &[NodeId],
) -> Calls {
    let targets: Vec<Member> = among
        .iter()
        .filter(|m| stale.contains(&m.id))
        .cloned()
        .collect();
    let write = Request::Write {
        key,
        object: quorum.merged().clone(),
        hint_for: None,
    };
    start_calls(transport, &targets, &write)
}
