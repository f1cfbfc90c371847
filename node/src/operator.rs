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
use ringkv_shared::{ClusterId, Ring};
use std::future::Future;

/// A key that signs ring changes.
pub trait ChangeSigner {
    /// Signs the change of `cluster`'s ring to `target` at replication factor `n`.
    fn sign_change(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
    ) -> Result<Authority, String>;
}

impl ChangeSigner for OperatorKey {
    fn sign_change(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
    ) -> Result<Authority, String> {
        self.sign(cluster, target, n).map_err(|e| e.to_string())
    }
}

impl ChangeSigner for SimulatedOperator {
    fn sign_change(
        &self,
        cluster: Option<ClusterId>,
        target: &Ring,
        n: u8,
    ) -> Result<Authority, String> {
        Ok(self.sign(cluster, target, n))
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
    let (cluster, n) = match call(AdminRequest::Status).await? {
        Response::Admin(AdminReply::Status(s)) => (s.view.cluster, s.n),
        other => return Ok(other),
    };
    let target = match call(AdminRequest::Plan).await? {
        Response::Admin(AdminReply::Plan { target, .. }) => target,
        other => return Ok(other),
    };
    let authority = match signer.sign_change(cluster, &target, n) {
        Ok(a) => a,
        Err(reason) => {
            return Ok(Response::Error(ReplyError::InvalidInput {
                reason: format!("cannot sign the ring change: {reason}"),
            }));
        }
    };
    call(AdminRequest::CommitSigned { target, authority }).await
}
