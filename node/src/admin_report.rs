//! What the `ringkv` admin CLI prints, as plain functions of what the nodes answered (tested
//! without a cluster).

use ringkv_shared::handoff::{Progress, Transfer};
use ringkv_shared::membership::View;
use ringkv_shared::planner::{moved, replica_conflicts, window_repeats};
use ringkv_shared::{NodeId, Ring};
use std::fmt::Write as _;

/// The width of an address column holding `addresses`: 22 (an IPv4 `host:port`) or the
/// longest, so that long host names keep the columns after them aligned.
pub fn address_width<'a>(addresses: impl IntoIterator<Item = &'a str>) -> usize {
    addresses
        .into_iter()
        .map(|a| a.chars().count())
        .max()
        .unwrap_or(0)
        .max(22)
}

/// `ringkv members`: one line per known node.
pub fn members(view: &View) -> String {
    let counts = view.ring.ownership_counts();
    let mut out = match view.cluster {
        Some(cluster) => format!("cluster {cluster}, ring epoch {}\n", view.ring.epoch()),
        None => format!("no cluster yet, ring epoch {}\n", view.ring.epoch()),
    };
    let shown: Vec<String> = view
        .members
        .values()
        .map(crate::admin_json::shown_address)
        .collect();
    let w = address_width(shown.iter().map(String::as_str));
    let _ = writeln!(
        out,
        "{:>6}  {:<w$} {:<9} {:>10}",
        "node", "address", "status", "partitions"
    );
    for ((id, r), address) in view.members.iter().zip(&shown) {
        let owns = counts.get(id).copied().unwrap_or(0);
        let forced = if view.removed_by_force.contains(id) {
            " (by force)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<w$} {:<9} {:>10}{forced}",
            id.0, address, r.status, owns
        );
    }
    if !view.staged.is_empty() {
        let _ = write!(
            out,
            "staged: join {:?}, leave {:?}",
            ids(view.staged.joins.iter()),
            ids(view.staged.leaves.iter())
        );
        if !view.staged.forced.is_empty() {
            let _ = write!(
                out,
                ", of which removed by force {:?}",
                ids(view.staged.forced.iter())
            );
        }
        let _ = writeln!(out, " (see `ringkv plan`)");
    }
    if let Some(t) = &view.transition {
        let total = t.transfers(&view.ring).len();
        let _ = writeln!(
            out,
            "ring change to epoch {} under way: {}/{} transfers done (see `ringkv handoffs`)",
            t.target.epoch(),
            t.done.len().min(total),
            total
        );
        let hints = t.hints_pending(&view.ring);
        if !hints.is_empty() {
            let _ = writeln!(
                out,
                "leavers still handing over hints: {:?}",
                ids(hints.iter())
            );
        }
    }
    let unswept = view.not_swept();
    if !unswept.is_empty() {
        let _ = writeln!(
            out,
            "not yet reported dropping old partition copies (tombstones are kept until they do): {:?}",
            ids(unswept.iter())
        );
    }
    out
}

fn ids<'a>(it: impl Iterator<Item = &'a NodeId>) -> Vec<u32> {
    it.map(|i| i.0).collect()
}

/// `ringkv ring`: ownership per node, balance, and the placement checks.
pub fn ring(ring: &Ring, n: u8) -> String {
    let q = ring.partition_count() as usize;
    let counts = ring.ownership_counts();
    let s = counts.len().max(1);
    let mut out = format!(
        "ring epoch {}: {} partitions over {} nodes, N={n}\n",
        ring.epoch(),
        q,
        s
    );
    let _ = writeln!(out, "{:>6}  {:>10} {:>8}", "node", "partitions", "share");
    for (id, c) in &counts {
        let _ = writeln!(
            out,
            "{:>6}  {:>10} {:>7.2}%",
            id.0,
            c,
            100.0 * *c as f64 / q as f64
        );
    }
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    let _ = writeln!(
        out,
        "balance: min {min}, max {max}, ideal {}{} per node",
        q / s,
        if q.is_multiple_of(s) {
            String::new()
        } else {
            format!(" or {}", q / s + 1)
        }
    );
    let conflicts = replica_conflicts(ring, n.into());
    let _ = writeln!(
        out,
        "partitions whose {n} replicas are not {n} distinct nodes: {}",
        conflicts.len()
    );
    let _ = writeln!(
        out,
        "partitions whose next {n} owners repeat a node (replicas reach further round the ring): {}",
        window_repeats(ring, n.into()).len()
    );
    out
}

/// `ringkv plan`: what the staged change does.
pub fn plan(current: &Ring, target: &Ring, transfers: &[Transfer]) -> String {
    let before = current.ownership_counts();
    let after = target.ownership_counts();
    let mut out = format!(
        "ring epoch {} -> {}: {} of {} partitions change owner, {} transfers\n",
        current.epoch(),
        target.epoch(),
        moved(current, target),
        current.partition_count(),
        transfers.len()
    );
    let mut nodes: Vec<NodeId> = before.keys().chain(after.keys()).copied().collect();
    nodes.sort();
    nodes.dedup();
    let _ = writeln!(out, "{:>6}  {:>6} -> {:<6}", "node", "owns", "owns");
    for id in nodes {
        let _ = writeln!(
            out,
            "{:>6}  {:>6} -> {:<6}",
            id.0,
            before.get(&id).copied().unwrap_or(0),
            after.get(&id).copied().unwrap_or(0)
        );
    }
    let mut shown = 0;
    for p in 0..current.partition_count() {
        if current.owner(p) != target.owner(p) {
            if shown == 8 {
                let _ = writeln!(out, "  ...");
                break;
            }
            let _ = writeln!(
                out,
                "  partition {p}: {} -> {}",
                current.owner(p),
                target.owner(p)
            );
            shown += 1;
        }
    }
    out.push_str("run `ringkv commit` to start moving data\n");
    out
}

/// Handoff totals across the nodes' reports: transfers done and total, keys and bytes sent,
/// and the send rate in bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HandoffTotals {
    /// Transfers finished.
    pub done: usize,
    /// Transfers in the transition.
    pub total: usize,
    /// Keys sent by transfers under way.
    pub keys: u64,
    /// Bytes sent by transfers under way.
    pub bytes: u64,
    /// Bytes per second over the transfers under way.
    pub bytes_per_sec: f64,
}

/// Sums what the nodes reported about the running transition.
pub fn handoff_totals(view: &View, sending: &[(Transfer, Progress)]) -> Option<HandoffTotals> {
    let t = view.transition.as_ref()?;
    let total = t.transfers(&view.ring).len();
    let (keys, bytes) = sending
        .iter()
        .fold((0, 0), |(k, b), (_, p)| (k + p.keys, b + p.bytes));
    let ms: u64 = sending.iter().map(|(_, p)| p.elapsed_ms).max().unwrap_or(0);
    Some(HandoffTotals {
        done: t.done.len().min(total),
        total,
        keys,
        bytes,
        bytes_per_sec: if ms == 0 {
            0.0
        } else {
            bytes as f64 * 1000.0 / ms as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_shared::Member;
    use std::net::SocketAddr;

    fn members(ids: impl IntoIterator<Item = u32>) -> Vec<Member> {
        ids.into_iter()
            .map(|i| {
                Member::at(
                    NodeId(i),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                )
            })
            .collect()
    }

    #[test]
    fn a_long_host_name_keeps_the_members_columns_aligned() {
        let r = Ring::balanced(64, members(1..=3)).unwrap();
        let mut view = View::bootstrap(r);
        let mut named = members([2])[0].clone();
        named.host = Some(
            ringkv_shared::HostName::parse("storage-node-2.eu-west-1.internal.example.com:7031")
                .unwrap(),
        );
        assert!(view.announce_member(&named));
        let text = super::members(&view);
        let lines: Vec<&str> = text.lines().skip(1).take(4).collect();
        let status_at: Vec<usize> = lines
            .iter()
            .map(|l| {
                ["status", "up", "joining"]
                    .iter()
                    .find_map(|w| l.find(&format!(" {w} ")))
                    .unwrap_or(usize::MAX)
            })
            .collect();
        assert!(
            status_at
                .iter()
                .all(|&at| at == status_at[0] && at != usize::MAX),
            "{status_at:?}\n{text}"
        );
        assert_eq!(address_width(["a:1"]), 22);
    }

    #[test]
    fn reports_show_the_figures_an_operator_needs() {
        let r = Ring::balanced(64, members(1..=3)).unwrap();
        let text = ring(&r, 3);
        assert!(
            text.contains("balance: min 21, max 22, ideal 21 or 22"),
            "{text}"
        );
        assert!(text.contains("not 3 distinct nodes: 0"), "{text}");
        let mut view = View::bootstrap(r.clone());
        view.announce(NodeId(4), members([4])[0].addr);
        view.stage_join(NodeId(4)).unwrap();
        let m = super::members(&view);
        assert!(
            m.contains("joining") && m.contains("staged: join [4]"),
            "{m}"
        );
        assert!(
            m.contains("not yet reported dropping old partition copies") && m.contains("[1, 2, 3]"),
            "{m}"
        );
        let target = view.planned_with(3).unwrap();
        let ts = ringkv_shared::handoff::transfers(&r, &target, 3);
        let p = plan(&r, &target, &ts);
        assert!(
            p.contains("ring epoch 1 -> 2: 16 of 64 partitions change owner"),
            "{p}"
        );
        ringkv_shared::authority::SimulatedOperator::new(1)
            .commit(&mut view, 3)
            .unwrap();
        let sending = [(
            ts[0],
            Progress {
                keys: 10,
                bytes: 2000,
                elapsed_ms: 500,
            },
        )];
        let totals = handoff_totals(&view, &sending).unwrap();
        assert_eq!((totals.done, totals.total, totals.keys), (0, ts.len(), 10));
        assert!((totals.bytes_per_sec - 4000.0).abs() < 1e-9);
    }
}
