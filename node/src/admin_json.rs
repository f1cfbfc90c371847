//! What the `ringkv` admin CLI prints with `--json`, as plain functions: one JSON document per
//! command, with the same facts as the text of [`crate::admin_report`], for scripts and
//! monitoring.

use crate::admin_report::HandoffTotals;
use ringkv_shared::handoff::{Progress, Transfer};
use ringkv_shared::membership::View;
use ringkv_shared::{NodeId, Ring};
use serde_json::{Value, json};

/// How a member's address is shown to an operator: its name and the address it announced
/// (`n1.example.net:7001 (10.0.0.11:7001)`), or the address alone.
pub fn shown_address(r: &ringkv_shared::membership::MemberRecord) -> String {
    match &r.host {
        Some(host) => format!("{host} ({})", r.addr),
        None => r.addr.to_string(),
    }
}

/// `ringkv members --json`.
pub fn members(view: &View) -> Value {
    let counts = view.ring.ownership_counts();
    json!({
        "cluster": view.cluster.map(|c| c.to_string()),
        "ring_epoch": view.ring.epoch(),
        "members": view.members.iter().map(|(id, r)| json!({
            "id": id.0,
            "addr": r.addr.to_string(),
            "host": r.host.as_ref().map(|h| h.to_string()),
            "stage": r.status.to_string(),
            "partitions": counts.get(id).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
        "staged": {
            "join": view.staged.joins.iter().map(|i| i.0).collect::<Vec<_>>(),
            "leave": view.staged.leaves.iter().map(|i| i.0).collect::<Vec<_>>(),
        },
        "transition": view.transition.as_ref().map(|t| {
            let total = t.transfers(&view.ring).len();
            json!({
                "target_epoch": t.target.epoch(),
                "transfers_done": t.done.len().min(total),
                "transfers": total,
            })
        }),
        "not_swept": view.not_swept().iter().map(|i| i.0).collect::<Vec<_>>(),
    })
}

/// `ringkv ring --json`.
pub fn ring(ring: &Ring, n: u8) -> Value {
    let q = ring.partition_count();
    json!({
        "ring_epoch": ring.epoch(),
        "partitions": q,
        "n": n,
        "owners": ring.ownership_counts().iter().map(|(id, c)| json!({
            "id": id.0,
            "partitions": c,
            "share": *c as f64 / f64::from(q.max(1)),
        })).collect::<Vec<_>>(),
    })
}

fn transfer(t: &Transfer) -> Value {
    json!({ "partition": t.partition, "from": t.from.0, "to": t.to.0 })
}

/// `ringkv plan --json`.
pub fn plan(current: &Ring, target: &Ring, transfers: &[Transfer]) -> Value {
    let owners = |r: &Ring| -> Vec<Value> {
        r.ownership_counts()
            .iter()
            .map(|(id, c)| json!({ "id": id.0, "partitions": c }))
            .collect()
    };
    json!({
        "current_epoch": current.epoch(),
        "target_epoch": target.epoch(),
        "owners_before": owners(current),
        "owners_after": owners(target),
        "transfers": transfers.iter().map(transfer).collect::<Vec<_>>(),
    })
}

/// `ringkv handoffs --json`: the totals (absent when no ring change is under way) and every
/// transfer being sent.
pub fn handoffs(
    ring_epoch: u64,
    totals: Option<&HandoffTotals>,
    sending: &[(Transfer, Progress)],
) -> Value {
    json!({
        "ring_epoch": ring_epoch,
        "under_way": totals.is_some(),
        "transfers_done": totals.map(|t| t.done),
        "transfers": totals.map(|t| t.total),
        "keys_sent": totals.map(|t| t.keys),
        "bytes_sent": totals.map(|t| t.bytes),
        "bytes_per_second": totals.map(|t| t.bytes_per_sec),
        "sending": sending.iter().map(|(t, p)| json!({
            "transfer": transfer(t),
            "keys": p.keys,
            "bytes": p.bytes,
            "elapsed_ms": p.elapsed_ms,
        })).collect::<Vec<_>>(),
    })
}

/// One node as `ringkv status` found it.
#[derive(Clone, Debug)]
pub struct NodeSeen {
    /// The node.
    pub id: NodeId,
    /// Its address in the view.
    pub addr: String,
    /// Its membership stage in the asked node's view.
    pub stage: String,
    /// Partitions it owns in that view's ring.
    pub partitions: usize,
    /// Whether it answered this CLI, and its ring epoch if it did; why not otherwise.
    pub answered: Result<u64, String>,
}

/// `ringkv status --json`.
pub fn status(view: &View, nodes: &[NodeSeen]) -> Value {
    json!({
        "cluster": view.cluster.map(|c| c.to_string()),
        "ring_epoch": view.ring.epoch(),
        "nodes": nodes.iter().map(|n| json!({
            "id": n.id.0,
            "addr": n.addr,
            "stage": n.stage,
            "partitions": n.partitions,
            "up": n.answered.is_ok(),
            "ring_epoch": n.answered.as_ref().ok(),
            "error": n.answered.as_ref().err(),
        })).collect::<Vec<_>>(),
    })
}

/// `ringkv status` as text.
pub fn status_text(view: &View, nodes: &[NodeSeen]) -> String {
    use std::fmt::Write as _;
    let mut out = match view.cluster {
        Some(c) => format!("cluster {c}, ring epoch {}\n", view.ring.epoch()),
        None => format!("no cluster yet, ring epoch {}\n", view.ring.epoch()),
    };
    let w = crate::admin_report::address_width(nodes.iter().map(|n| n.addr.as_str()));
    let _ = writeln!(
        out,
        "{:>6}  {:<w$} {:<9} {:>10}  {:<5} {:>6}",
        "node", "address", "stage", "partitions", "up", "epoch"
    );
    for n in nodes {
        let (up, epoch) = match &n.answered {
            Ok(e) => ("yes", e.to_string()),
            Err(_) => ("NO", "-".to_string()),
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<w$} {:<9} {:>10}  {:<5} {:>6}",
            n.id.0, n.addr, n.stage, n.partitions, up, epoch
        );
    }
    for n in nodes {
        if let Err(why) = &n.answered {
            let _ = writeln!(out, "node {} did not answer: {why}", n.id.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_shared::Member;
    use std::net::SocketAddr;

    fn view() -> View {
        let members = (1..=3)
            .map(|i| {
                Member::at(
                    NodeId(i),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect();
        View::bootstrap(Ring::balanced(16, members).expect("ring"))
    }

    #[test]
    fn members_list_every_node_with_its_stage_and_partitions() {
        let v = members(&view());
        assert_eq!(v["ring_epoch"], 1);
        let m = v["members"].as_array().expect("array");
        assert_eq!(m.len(), 3);
        assert_eq!(m[0]["stage"], "up");
        let owned: u64 = m
            .iter()
            .map(|x| x["partitions"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(owned, 16);
        assert!(v["transition"].is_null());
    }

    #[test]
    fn status_marks_who_answered_and_says_why_not() {
        let v = view();
        let seen = vec![
            NodeSeen {
                id: NodeId(1),
                addr: "127.0.0.1:7001".into(),
                stage: "up".into(),
                partitions: 6,
                answered: Ok(1),
            },
            NodeSeen {
                id: NodeId(2),
                addr: "127.0.0.1:7002".into(),
                stage: "up".into(),
                partitions: 5,
                answered: Err("no handshake within 1s".into()),
            },
        ];
        let j = status(&v, &seen);
        assert_eq!(j["nodes"][0]["up"], true);
        assert_eq!(j["nodes"][1]["up"], false);
        assert_eq!(j["nodes"][1]["error"], "no handshake within 1s");
        let text = status_text(&v, &seen);
        assert!(
            text.contains("node 2 did not answer: no handshake within 1s"),
            "{text}"
        );
    }

    #[test]
    fn no_handoff_under_way_is_said_plainly() {
        let j = handoffs(3, None, &[]);
        assert_eq!(j["under_way"], false);
        assert_eq!(j["ring_epoch"], 3);
        assert!(j["sending"].as_array().is_some_and(|a| a.is_empty()));
    }
}
