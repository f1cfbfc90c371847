//! A coordinator's replication of a write it has stored, with sloppy placement for the copies
//! whose owner is suspected or fails.

use super::calls::{Calls, classify, expect_written};
use crate::transport::Transport;
use bytes::Bytes;
use ringkv_shared::error::ReplyError;
use ringkv_shared::ids::NodeId;
use ringkv_shared::object::Object;
use ringkv_shared::proto::Request;
use ringkv_shared::quorum::Progress;
use ringkv_shared::ring::Member;
use ringkv_shared::sloppy::{Placement, SloppyWrite};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span};

/// One write to replicate: the stored object, who stored it, and where its copies go.
#[derive(Clone, Debug)]
pub struct Replication {
    /// The key written.
    pub key: Bytes,
    /// The object as the coordinator stored it (its new sibling and everything it merged).
    pub object: Object,
    /// The coordinator, which already holds the object and counts toward `required`.
    pub local: NodeId,
    /// The key's preference list: its `n` owners first, then the stand-ins in order.
    pub preference: Vec<Member>,
    /// How many of `preference` own the key (N).
    pub n: usize,
    /// How many distinct nodes, `local` included, must hold the object (W).
    pub required: usize,
    /// The write's deadline, from its start; stragglers are bounded by it too.
    pub timeout: Duration,
}

/// Replicates a write the coordinator `local` has stored: sends copies to the key's other
/// owners (the first `n` of `preference`), redirecting the copy of a suspected or failing owner
/// to the next stand-in with a hint (see [`ringkv_shared::sloppy`]), until `required` distinct nodes,
/// `local` included, hold it.
///
/// Returns the nodes that acknowledged before returning. Copies still in flight keep going in
/// the background until they settle or the deadline passes; then `on_settled` is called with
/// the owners whose copy found no home, for which the coordinator keeps hints itself.
pub async fn replicate<T, F, Fut>(
    transport: &T,
    replication: Replication,
    on_settled: F,
) -> Result<Vec<NodeId>, ReplyError>
where
    T: Transport,
    F: FnOnce(Vec<NodeId>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Replication {
        key,
        object,
        local,
        preference,
        n,
        required,
        timeout,
    } = replication;
    let deadline = Instant::now() + timeout;
    let n = n.min(preference.len());
    let owners: Vec<NodeId> = preference[..n].iter().map(|m| m.id).collect();
    let standins: Vec<NodeId> = preference[n..].iter().map(|m| m.id).collect();
    let (mut write, first) = SloppyWrite::new(required, &owners, &standins, local, |id| {
        transport.is_down(id)
    });
    let sender = CopySender {
        transport: transport.clone(),
        key,
        object,
        members: preference,
    };
    let mut calls = Calls::new();
    sender.send_all(&mut calls, first);
    let mut progress = write.progress();
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    while progress == Progress::Pending {
        match calls.next_before(timer.as_mut()).await {
            Ok(Some((node, result))) => {
                let (p, more) = write.record(node, result.and_then(expect_written));
                sender.send_all(&mut calls, more);
                progress = p;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let result = match progress {
        Progress::Met => Ok(write.acked().to_vec()),
        _ => Err(write.clone().into_error()),
    };
    tokio::spawn(
        async move {
            let timer = tokio::time::sleep_until(deadline);
            tokio::pin!(timer);
            while !write.settled() {
                match calls.next_before(timer.as_mut()).await {
                    Ok(Some((node, result))) => {
                        let (_, more) = write.record(node, result.and_then(expect_written));
                        sender.send_all(&mut calls, more);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            drop(calls);
            let unplaced = write.unplaced();
            if !unplaced.is_empty() {
                debug!(
                    ?unplaced,
                    "copies without a home; the coordinator keeps hints"
                );
            }
            on_settled(unplaced).await;
        }
        .instrument(debug_span!("replicate_stragglers")),
    );
    result
}

/// Sends copies of one write as [`ringkv_shared::sloppy`] places them.
struct CopySender<T> {
    transport: T,
    key: Bytes,
    object: Object,
    members: Vec<Member>,
}

impl<T: Transport> CopySender<T> {
    fn send_all(&self, calls: &mut Calls, placements: Vec<Placement>) {
        for p in placements {
            let Some(member) = self.members.iter().find(|m| m.id == p.to).cloned() else {
                continue;
            };
            let t = self.transport.clone();
            let request = Request::Write {
                key: self.key.clone(),
                object: self.object.clone(),
                hint_for: p.hint_for,
            };
            let span =
                debug_span!("replica_call", node = %p.to, op = "write", hint_for = ?p.hint_for);
            calls.push(
                async move {
                    let r = classify(t.call(&member, request).await);
                    (member.id, r)
                }
                .instrument(span),
            );
        }
    }
}
