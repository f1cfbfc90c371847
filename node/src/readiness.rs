//! Whether a node is ready to serve (`GET /ready`), decided from its view and its storage
//! without I/O of its own: [`readiness`] is a plain function the endpoint feeds.
//!
//! `/health` answers as long as the process runs; `/ready` only when a load balancer or an
//! orchestrator may send it traffic: its storage answers, it knows the cluster's ring, and it
//! is part of that ring (joined, or leaving but still owning partitions).

use ringkv_shared::NodeId;
use ringkv_shared::membership::{Status, View};
use serde::Serialize;

/// What `/ready` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Readiness {
    /// Whether the node may be sent traffic.
    pub(crate) ready: bool,
    /// Why not, in words an operator can act on; absent when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The epoch of the ring the node has installed.
    pub(crate) ring_epoch: u64,
    /// This node's membership stage in its own view (`joining`, `up`, `leaving`, `removed`).
    pub(crate) status: String,
}

/// Decides readiness: `storage` is the result of a read of the node's own store.
pub(crate) fn readiness(view: &View, me: NodeId, storage: Result<(), String>) -> Readiness {
    let status = view.members.get(&me).map(|m| m.status);
    let in_ring = view.ring.members().any(|m| m.id == me);
    let reason = if let Err(e) = storage {
        Some(format!("storage is not answering: {e}"))
    } else if view.ring.epoch() == 0 || view.ring.members().len() == 0 {
        // A newcomer's placeholder ring (epoch 0) until it hears from the cluster.
        Some("no ring known yet: waiting to hear from the cluster (check `seeds`)".to_string())
    } else if status == Some(Status::Removed) {
        Some("this node was removed from the cluster".to_string())
    } else if !in_ring {
        Some(
            "this node is not in the ring in force yet: an operator's join must be committed \
             and its handoff finished (`ringkv plan`, `ringkv commit`)"
                .to_string(),
        )
    } else {
        None
    };
    Readiness {
        ready: reason.is_none(),
        reason,
        ring_epoch: view.ring.epoch(),
        status: status.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_shared::{Member, Ring};
    use std::net::SocketAddr;

    fn member(i: u32) -> Member {
        Member::at(
            NodeId(i),
            SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        )
    }

    fn cluster(n: u32) -> View {
        View::bootstrap(Ring::balanced(16, (1..=n).map(member).collect()).expect("ring"))
    }

    #[test]
    fn a_founding_member_with_working_storage_is_ready() {
        let r = readiness(&cluster(3), NodeId(2), Ok(()));
        assert!(r.ready, "{r:?}");
        assert_eq!(r.reason, None);
        assert_eq!(r.status, "up");
    }

    #[test]
    fn failing_storage_is_not_ready_and_says_so() {
        let r = readiness(&cluster(3), NodeId(1), Err("disk full".into()));
        assert!(!r.ready);
        assert!(
            r.reason.as_deref().is_some_and(|w| w.contains("disk full")),
            "{r:?}"
        );
    }

    #[test]
    fn a_newcomer_is_ready_only_once_the_ring_includes_it() {
        let mut v = cluster(3);
        v.announce(NodeId(4), member(4).addr);
        let r = readiness(&v, NodeId(4), Ok(()));
        assert!(!r.ready);
        assert_eq!(r.status, "joining");
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|w| w.contains("not in the ring")),
            "{r:?}"
        );
    }

    #[test]
    fn a_newcomer_that_heard_from_no_one_is_not_ready() {
        let v = View::newcomer(member(9), 16).expect("view");
        let r = readiness(&v, NodeId(9), Ok(()));
        assert!(!r.ready, "{r:?}");
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|w| w.contains("no ring known")),
            "{r:?}"
        );
        assert_eq!(r.status, "joining");
    }

    #[test]
    fn a_removed_node_is_not_ready() {
        let mut v = cluster(3);
        v.set_status(NodeId(3), Status::Removed);
        let r = readiness(&v, NodeId(3), Ok(()));
        assert!(!r.ready);
        assert!(
            r.reason.as_deref().is_some_and(|w| w.contains("removed")),
            "{r:?}"
        );
    }

    #[test]
    fn the_answer_is_json_without_a_reason_when_ready() {
        let r = readiness(&cluster(3), NodeId(1), Ok(()));
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(json, r#"{"ready":true,"ring_epoch":1,"status":"up"}"#);
    }
}
