//! What an operator's tools do with its key: sign a ring change and commit it.
//!
//! `ringkv commit`, the test harnesses and the simulator all commit the same way: ask the
//! node for its status (cluster and replication factor) and its plan (the ring the staged
//! changes lead to), sign that plan ([`ringkv_shared::authority::change_message`]), and send
//! [`AdminRequest::CommitSigned`]. The node verifies the signature, and refuses the commit if
//! the staged changes lead elsewhere by then.

use ringkv_net::quic::OperatorKey;
use ringkv_shared::ReplyError;
use ringkv_shared::authority::{Authority, SimulatedOperator};
use ringkv_shared::proto::{AdminReply, AdminRequest, Response};
use ringkv_shared::{ClusterId, NodeId, Ring};
use std::collections::BTreeSet;
use std::future::Future;

/// A key that signs ring changes.
pub trait ChangeSigner {
    /// Signs the change of `cluster`'s ring to `target` at replication factor `n` that
    /// removes `forced` by force.
    fn sign_change(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
        forced: &BTreeSet<NodeId>,
    ) -> Result<Authority, String>;
}

impl ChangeSigner for OperatorKey {
    fn sign_change(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
        forced: &BTreeSet<NodeId>,
    ) -> Result<Authority, String> {
        self.sign(cluster, target, n, forced)
            .map_err(|e| e.to_string())
    }
}

impl ChangeSigner for SimulatedOperator {
    fn sign_change(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
        forced: &BTreeSet<NodeId>,
    ) -> Result<Authority, String> {
        Ok(self.sign_forced(cluster, target, n, forced))
    }
}

/// Commits the changes staged on the node `call` reaches, signed by `signer`: status, plan,
/// sign, [`AdminRequest::CommitSigned`]. Returns the node's answer to the first request it
/// refused, or to the commit; `Err` only if `call` could not reach it.
///
/// `forced` is the set of nodes the operator confirms removing by force: the commit is
/// refused before anything is signed unless it is exactly the staged set, so that a removal
/// by force someone else staged (by any node, after the operator's review) is never signed
/// unseen.
pub async fn signed_commit<F, Fut, E>(
    call: F,
    signer: &dyn ChangeSigner,
    forced: &BTreeSet<NodeId>,
) -> Result<Response, E>
where
    F: Fn(AdminRequest) -> Fut,
    Fut: Future<Output = Result<Response, E>>,
{
    // The nodes to remove by force are signed with the plan; if the staged changes differ
    // by the time the commit arrives, the node refuses it.
    let (cluster, n, staged) = match call(AdminRequest::Status).await? {
        Response::Admin(AdminReply::Status(s)) => (s.view.cluster, s.n, s.view.staged.forced),
        other => return Ok(other),
    };
    if staged != *forced {
        let ids = |set: &BTreeSet<NodeId>| set.iter().map(|id| id.0).collect::<Vec<_>>();
        return Ok(Response::Error(ReplyError::InvalidInput {
            reason: format!(
                "the staged change removes {:?} by force, and the commit confirms {:?}: review `ringkv plan`, then confirm exactly those with `ringkv commit --forced {}`",
                ids(&staged),
                ids(forced),
                ids(&staged)
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }));
    }
    let target = match call(AdminRequest::Plan).await? {
        Response::Admin(AdminReply::Plan { target, .. }) => target,
        other => return Ok(other),
    };
    let authority = match signer.sign_change(cluster, &target, n, forced) {
        Ok(a) => a,
        Err(reason) => {
            return Ok(Response::Error(ReplyError::InvalidInput {
                reason: format!("cannot sign the ring change: {reason}"),
            }));
        }
    };
    call(AdminRequest::CommitSigned { target, authority }).await
}

/// Aborts the ring change running in the cluster the node `call_at(node)` reaches, signed by
/// `signer`: reads the view there, signs the ring the abort leads to
/// ([`ringkv_shared::membership::View::abort_target`]) and sends
/// [`AdminRequest::AbortSigned`] to the claimant (the only node that takes it), through
/// `call_at(claimant's address)`. Returns the answer to the first request refused, or to
/// the abort; `Err` only if a node could not be reached.
pub async fn signed_abort<F, Fut, E>(
    call_at: F,
    node: std::net::SocketAddr,
    signer: &dyn ChangeSigner,
) -> Result<Response, E>
where
    F: Fn(std::net::SocketAddr, AdminRequest) -> Fut,
    Fut: Future<Output = Result<Response, E>>,
{
    let status = match call_at(node, AdminRequest::Status).await? {
        Response::Admin(AdminReply::Status(s)) => s,
        other => return Ok(other),
    };
    let refuse = |reason: String| Ok(Response::Error(ReplyError::InvalidInput { reason }));
    let target = match status.view.abort_target(status.n) {
        Ok(t) => t,
        Err(e) => return refuse(e.to_string()),
    };
    let Some(claimant) = status.view.claimant() else {
        return refuse("no node can complete ring changes in this view".into());
    };
    let Some(at) = status.view.members.get(&claimant).map(|r| r.addr) else {
        return refuse(format!(
            "the claimant, node {claimant}, has no known address"
        ));
    };
    let authority =
        match signer.sign_change(status.view.cluster, &target, status.n, &BTreeSet::new()) {
            Ok(a) => a,
            Err(reason) => return refuse(format!("cannot sign the abort: {reason}")),
        };
    call_at(
        at,
        AdminRequest::AbortSigned {
            target: Box::new(target),
            authority,
        },
    )
    .await
}
