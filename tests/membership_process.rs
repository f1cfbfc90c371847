//! Ring changes with real `ringkv-node` processes driven by the `ringkv` admin CLI: gossip
//! convergence among 5 processes, and a sender SIGKILLed in the middle of partition handoff.

mod support;

use anyhow::{Result, ensure};
use ringkv::{CallOptions, Context};
use ringkv_shared::NodeId;
use std::time::{Duration, Instant};
use support::eventually;
use support::real::RealCluster;

const TABLES: &str = "[background]\ngossip_interval_ms = 250\nhandoff_batch_keys = 16\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_survives_a_sigkilled_sender_and_nothing_acknowledged_is_lost() -> Result<()> {
    let mut cluster = RealCluster::start(3, TABLES)?;
    let c = cluster.client().await?;
    let mut acked = Vec::new();
    let mut writes = tokio::task::JoinSet::new();
    for chunk in 0..8 {
        let c = c.clone();
        writes.spawn(async move {
            let mut keys = Vec::new();
            for i in (chunk..3000).step_by(8) {
                let key = format!("k-{i}");
                c.put_with(
                    key.clone(),
                    vec![b'x'; 200],
                    &Context::empty(),
                    CallOptions::default().quorum(2),
                )
                .await?;
                keys.push(key);
            }
            anyhow::Ok(keys)
        });
    }
    while let Some(r) = writes.join_next().await {
        acked.extend(r??);
    }

    // Two newcomers announce themselves through the seed; membership spreads by gossip alone.
    let started = Instant::now();
    cluster.add_node(TABLES)?;
    cluster.add_node(TABLES)?;
    eventually(
        Duration::from_secs(30),
        "all 5 nodes know all 5",
        || async {
            for i in 0..5 {
                match cluster.status(i).await {
                    Ok(s) if s.view.members.len() == 5 => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await?;
    let took = started.elapsed();
    println!(
        "membership of 5 real nodes converged {:.2} s after the newcomers started (~{:.1} gossip rounds of 250 ms, including process start)",
        took.as_secs_f64(),
        took.as_secs_f64() / 0.25
    );

    // The operator's walk-through, with the real CLI.
    let members = cluster.admin(0, &["members"])?;
    ensure!(members.contains("joining"), "{members}");
    cluster.admin(0, &["join", "4"])?;
    cluster.admin(1, &["join", &cluster.addrs[4].to_string()])?;
    let plan = cluster.admin(2, &["plan"])?;
    ensure!(plan.contains("ring epoch 1 -> 2"), "{plan}");
    println!("{plan}");
    cluster.admin(0, &["commit"])?;

    // SIGKILL node 1, a sender, once it has finished some of its transfers and not others.
    let own_done = |s: &ringkv_shared::proto::NodeStatus| -> Vec<ringkv_shared::handoff::Transfer> {
        s.view.transition.as_ref().map_or_else(Vec::new, |t| {
            t.done
                .iter()
                .filter(|tr| tr.from == NodeId(1))
                .copied()
                .collect()
        })
    };
    eventually(
        Duration::from_secs(60),
        "node 1 part-way through its handoffs",
        || async {
            cluster.status(0).await.is_ok_and(|s| {
                s.view.transition.as_ref().is_some_and(|t| {
                    let mine = t
                        .transfers(&s.view.ring)
                        .iter()
                        .filter(|tr| tr.from == NodeId(1))
                        .count();
                    let done = own_done(&s).len();
                    done > 0 && done < mine
                })
            })
        },
    )
    .await?;
    let done_before = own_done(&cluster.status(0).await?);
    cluster.kill(0)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(0)?;
    eventually(Duration::from_secs(30), "node 1 back", || async {
        cluster.status(0).await.is_ok()
    })
    .await?;
    // What it finished before the crash is not sent again: its persisted view still has it.
    let after = cluster.status(0).await?;
    if after.view.transition.is_some() {
        let done_after = own_done(&after);
        ensure!(
            done_before.iter().all(|t| done_after.contains(t)),
            "the restarted node forgot transfers it had finished"
        );
    }
    eventually(
        Duration::from_secs(120),
        "ring epoch 2 on all 5 nodes",
        || async {
            for i in 0..5 {
                match cluster.status(i).await {
                    Ok(s) if s.view.ring.epoch() == 2 && s.view.transition.is_none() => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await?;
    let ring = cluster.admin(3, &["ring"])?;
    println!("{ring}");
    ensure!(ring.contains("balance: min 12, max 13"), "{ring}");
    ensure!(ring.contains("not 3 distinct nodes: 0"), "{ring}");

    // The client built before the change reads every acknowledged key with R=2.
    let mut missing = Vec::new();
    for key in &acked {
        let v = c
            .get_with(key.clone(), CallOptions::default().quorum(2))
            .await?;
        if v.values.is_empty() {
            missing.push(key.clone());
        }
    }
    ensure!(
        missing.is_empty(),
        "{} acknowledged keys missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    ensure!(c.ring().epoch() == 2);
    let log = std::fs::read_to_string(cluster.dir().join("n1-2.log")).unwrap_or_default();
    println!(
        "restarted sender resumed a transfer from its cursor: {}",
        log.contains("resuming an interrupted handoff transfer")
    );
    Ok(())
}
