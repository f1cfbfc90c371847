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
pub async fn signed_commit<F, Fut, E>(call: F, signer: &dyn ChangeSigner) -> Result<Response, E>
where
    F: Fn(AdminRequest) -> Fut,
    Fut: Future<Output = Result<Response, E>>,
{
    // The nodes to remove by force are signed with the plan; if the staged changes differ
    // by the time the commit arrives, the node refuses it.
    let (cluster, n, forced) = match call(AdminRequest::Status).await? {
        Response::Admin(AdminReply::Status(s)) => (s.view.cluster, s.n, s.view.staged.forced),
        other => return Ok(other),
    };
    let target = match call(AdminRequest::Plan).await? {
        Response::Admin(AdminReply::Plan { target, .. }) => target,
        other => return Ok(other),
    };
    let authority = match signer.sign_change(cluster, &target, n, &forced) {
        Ok(a) => a,
        Err(reason) => {
            return Ok(Response::Error(ReplyError::InvalidInput {
                reason: format!("cannot sign the ring change: {reason}"),
            }));
        }
    };
    call(AdminRequest::CommitSigned { target, authority }).await
}
