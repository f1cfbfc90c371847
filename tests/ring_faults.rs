//! Ring changes in the fault suite: real `ringkv-node` processes in a private network
//! namespace change their ring while the set workload and the unique-key workload (with
//! deletes of keys written earlier) run. Senders are SIGKILLed mid-handoff, partitions move
//! away and come back (A→B→A) with tombstones reaped in between, and a node is removed while
//! it is cut off holding hints for others.
//!
//! Checked from the final ring's owners once their replicas converged: lost 0, resurrected 0,
//! phantom 0, failed-but-present 0, duplicated 0, and no hint left on any node (G10–G12 in
//! docs/GUARANTEES.md). Every scenario prints its seed; `RINGKV_SEED=<seed>` replays it.

mod support;

use anyhow::{Context as _, Result, ensure};
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::Client;
use ringkv_node::testing::history;
use ringkv_node::testing::unique_history::{self, KeyOp};
use ringkv_shared::proto::{AdminRequest, Request, Response};
use ringkv_shared::{NodeId, Ring, handoff};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::faults::{
    FAST_BACKGROUND, FaultCluster, Net, Recorded, enter, index_of, seed, set_workload,
};
use support::unique;

/// One scenario at a time: each runs five or six node processes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes this binary's turn and enters the scenario's network namespace: `None` in the
/// parent once the scenario (re-executed inside it) passed, else the namespace and the
/// printed seed.
async fn begin(test: &str) -> Result<Option<(tokio::sync::MutexGuard<'static, ()>, Net, u64)>> {
    let one = ONE_AT_A_TIME.lock().await;
    Ok(enter(test)?.map(|net| (one, net, seed())))
}

const WRITERS: usize = 3;
/// How long the workloads run between steps.
const PHASE: Duration = Duration::from_millis(1500);
/// How long a ring change may take to come into force.
const CHANGE_LIMIT: Duration = Duration::from_secs(120);

/// Fast background work, tombstones reapable after half a second, and small handoff batches
/// so that a transfer spans several round trips and a kill lands in the middle of one.
fn background() -> String {
    format!("{FAST_BACKGROUND}tombstone_grace_ms = 500\nhandoff_batch_keys = 16\n")
}

fn set_keys() -> Vec<String> {
    (0..4).map(|i| format!("set-{i}")).collect()
}

/// The workloads of every scenario, running until [`Workloads::finish`].
struct Workloads {
    stop: Arc<AtomicBool>,
    sets: tokio::task::JoinHandle<Result<Recorded>>,
    uniques: tokio::task::JoinHandle<Result<Vec<KeyOp>>>,
}

impl Workloads {
    fn start(client: &Client, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        Workloads {
            sets: tokio::spawn(set_workload(
                client.clone(),
                set_keys(),
                WRITERS,
                seed,
                stop.clone(),
            )),
            uniques: tokio::spawn(unique::workload(client.clone(), 2, seed, stop.clone())),
            stop,
        }
    }

    async fn finish(self) -> Result<(Recorded, Vec<KeyOp>)> {
        self.stop.store(true, Ordering::Relaxed);
        Ok((self.sets.await??, self.uniques.await??))
    }
}

/// Waits for the replicas to converge by the final ring, for every hint on `nodes` to be
/// delivered, then judges both histories from the final owners' own copies.
async fn judge(
    test: &str,
    seed: u64,
    cluster: &FaultCluster,
    client: &Client,
    nodes: &[usize],
    (sets, uniques): (Recorded, Vec<KeyOp>),
) -> Result<()> {
    client.refresh_ring().await?;
    let mut keys = set_keys();
    keys.extend(unique::keys(&uniques));
    cluster
        .no_hints_left(nodes, Duration::from_secs(90))
        .await
        .with_context(|| format!("{test} (seed {seed})"))?;
    let took = cluster
        .converge(client, &keys, Duration::from_secs(90))
        .await
        .with_context(|| format!("{test} (seed {seed})"))?;
    let set_report = history::check(&sets.ops, &cluster.final_sets(client, &set_keys()).await?);
    let key_report = unique_history::check(
        &uniques,
        &unique::live_values(cluster, client, &uniques).await?,
    );
    println!(
        "{test}: ring {}; sets: {}; unique keys: {}; no hints left; converged {:.1} s after the workload stopped",
        client.ring().epoch(),
        set_report.summary(),
        key_report.summary(),
        took.as_secs_f64()
    );
    ensure!(
        set_report.is_valid(),
        "{test} (seed {seed}): {set_report:?}"
    );
    ensure!(
        key_report.is_valid(),
        "{test} (seed {seed}): {key_report:?}"
    );
    ensure!(
        set_report.acknowledged > 0 && key_report.acknowledged > 0 && key_report.deleted > 0,
        "{test} (seed {seed}): the workloads did too little to judge"
    );
    Ok(())
}

/// Commits a change staged on node `i`, SIGKILLs one node that still has transfers to send
/// (chosen by `rng`) and restarts it a second later.
async fn commit_and_kill_a_sender(
    test: &str,
    cluster: &mut FaultCluster,
    i: usize,
    rng: &mut StdRng,
) -> Result<()> {
    cluster.admin(i, AdminRequest::Commit).await?;
    let status = cluster.status(i).await?;
    let Some(transition) = status.view.transition.as_ref() else {
        println!("{test}: the change was in force before a sender could be killed");
        return Ok(());
    };
    let remaining = transition.remaining(&status.view.ring);
    let senders: Vec<NodeId> = remaining
        .iter()
        .map(|t| t.from)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(&sender) = senders.get(rng.random_range(0..senders.len().max(1))) else {
        println!("{test}: no transfer left to interrupt");
        return Ok(());
    };
    let left = remaining.iter().filter(|t| t.from == sender).count();
    println!("{test}: SIGKILL sender {sender} with {left} transfers not yet done");
    cluster.procs.kill(index_of(sender))?;
    // The fault itself: the sender stays dead for a second, mid-transfer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.procs.restart(index_of(sender))?;
    Ok(())
}

/// Partitions whose replicas in `last` include a node that had them in `first`, lost them in
/// `middle`, and has them back: the A→B→A moves.
fn moved_away_and_back(first: &Ring, middle: &Ring, last: &Ring) -> usize {
    (0..first.partition_count())
        .filter(|&p| {
            last.replicas(p, 3)
                .iter()
                .any(|id| first.replicas(p, 3).contains(id) && !middle.replicas(p, 3).contains(id))
        })
        .count()
}

/// Two spares join in one change (one sender SIGKILLed mid-handoff); deletes land and are
/// reaped while they own their partitions; then one of them leaves (another sender
/// SIGKILLed), and partitions it took come back to the nodes that had them before. A copy
/// kept from before must not bring a delete back, and nothing acknowledged may be lost,
/// stored twice or misreported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_a_leave_move_partitions_away_and_back_under_killed_senders() -> Result<()> {
    const TEST: &str = "joins_and_a_leave_move_partitions_away_and_back_under_killed_senders";
    let Some((_one, net, seed)) = begin(TEST).await? else {
        return Ok(());
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = FaultCluster::start(net, 5, &background())?;
    let spares = [
        cluster.add_node(&background())?,
        cluster.add_node(&background())?,
    ];
    let [first_id, second_id] = spares.map(|i| NodeId(i as u32 + 1));
    let client = cluster.client().await?;
    let work = Workloads::start(&client, seed);
    let first = cluster.status(0).await?.view.ring;
    tokio::time::sleep(PHASE).await;

    cluster.stage_joins(0, &[first_id, second_id]).await?;
    commit_and_kill_a_sender(TEST, &mut cluster, 0, &mut rng).await?;
    let everyone: Vec<usize> = (0..=spares[1]).collect();
    cluster.settled(&everyone, 2, CHANGE_LIMIT).await?;
    let middle = cluster.status(0).await?.view.ring;
    println!("{TEST}: {first_id} and {second_id} joined; ring 2 in force");
    tokio::time::sleep(PHASE).await;

    cluster
        .admin(1, AdminRequest::Leave { node: first_id })
        .await?;
    commit_and_kill_a_sender(TEST, &mut cluster, 1, &mut rng).await?;
    let ring_three: Vec<usize> = everyone
        .iter()
        .copied()
        .filter(|i| *i != spares[0])
        .collect();
    cluster.settled(&ring_three, 3, CHANGE_LIMIT).await?;
    let last = cluster.status(0).await?.view.ring;
    let back = moved_away_and_back(&first, &middle, &last);
    println!("{TEST}: {first_id} left; ring 3 in force; {back} partitions moved away and back");
    ensure!(back > 0, "no partition came back to a former owner");
    // The node that left stops itself once every member knows it holds nothing.
    let exited = cluster
        .procs
        .wait_exit(spares[0], Duration::from_secs(60))?;
    ensure!(
        exited.is_some_and(|s| s.success()),
        "{first_id} did not stop by itself after leaving: {exited:?}"
    );
    tokio::time::sleep(PHASE).await;

    let recorded = work.finish().await?;
    judge(TEST, seed, &cluster, &client, &ring_three, recorded).await
}

/// A founder goes down so that writes leave hints on stand-ins; a stand-in holding hints is
/// cut off from the cluster and the clients and removed while it cannot hear. The change must
/// wait for it: once the cut heals it hands over its partitions and every hint it holds before
/// the new ring comes into force, and stopping it then loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_while_cut_off_hands_over_the_hints_it_holds() -> Result<()> {
    const TEST: &str = "a_node_removed_while_cut_off_hands_over_the_hints_it_holds";
    let Some((_one, net, seed)) = begin(TEST).await? else {
        return Ok(());
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = FaultCluster::start(net, 5, &background())?;
    let client = cluster.client().await?;
    let work = Workloads::start(&client, seed);
    tokio::time::sleep(PHASE).await;

    let down = rng.random_range(0..5);
    cluster.procs.kill(down)?;
    let mut leaver = None;
    support::eventually(
        Duration::from_secs(30),
        "a stand-in holds hints",
        || async {
            for i in (0..5).filter(|i| *i != down) {
                if cluster.stats(i).await.is_ok_and(|s| s.hints_pending > 0) {
                    return true;
                }
            }
            false
        },
    )
    .await?;
    // Let hints pile up, then take the stand-in holding the most.
    tokio::time::sleep(PHASE).await;
    for i in (0..5).filter(|i| *i != down) {
        let held = cluster.stats(i).await?.hints_pending;
        if held > leaver.map_or(0, |(_, most)| most) {
            leaver = Some((i, held));
        }
    }
    let (leaver, held) = leaver.context("the stand-in holding hints stopped answering")?;
    let leaver_id = NodeId(leaver as u32 + 1);
    let rest: Vec<usize> = (0..5).filter(|i| *i != leaver).collect();
    println!("{TEST}: node index {down} down; {leaver_id} holds {held} hints; cutting it off");
    cluster.partition(&[leaver], &rest)?;
    if !cluster.cut_client(&[leaver])? {
        println!("{TEST}: no nftables: the clients are not cut off (fault filter)");
    }
    cluster.procs.restart(down)?;
    let operator = *rest.iter().find(|i| **i != down).context("a node to ask")?;
    cluster
        .admin(operator, AdminRequest::Leave { node: leaver_id })
        .await?;
    cluster.admin(operator, AdminRequest::Commit).await?;
    // The fault itself: the cut holds 3 s (a dozen gossip and handoff rounds) and the change
    // must still be waiting for the leaver at the end of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = cluster.status(operator).await?;
    ensure!(
        status.view.ring.epoch() == 1 && status.view.transition.is_some(),
        "the ring changed without the cut-off leaver's partitions and hints"
    );
    cluster.heal()?;
    cluster.settled(&rest, 2, CHANGE_LIMIT).await?;
    // The new ring is in force only once the leaver handed over every hint; it takes no new
    // ones. It then stops itself, once every member holds its report that it holds nothing
    // (made only with no hint left); if it still answers, it holds none.
    if let Ok(stats) = cluster.stats(leaver).await {
        ensure!(
            stats.hints_pending == 0,
            "{TEST} (seed {seed}): {leaver_id} still holds {} hints with ring 2 in force",
            stats.hints_pending
        );
    }
    let exited = cluster.procs.wait_exit(leaver, Duration::from_secs(60))?;
    ensure!(
        exited.is_some_and(|s| s.success()),
        "{TEST} (seed {seed}): {leaver_id} did not stop by itself after leaving: {exited:?}"
    );
    ensure!(
        cluster.procs.log(leaver).contains("has left the cluster"),
        "{}",
        cluster.procs.log(leaver)
    );
    println!(
        "{TEST}: {leaver_id} removed, holding no hint, and stopped by itself; ring 2 in force"
    );
    tokio::time::sleep(PHASE).await;

    let recorded = work.finish().await?;
    judge(TEST, seed, &cluster, &client, &rest, recorded).await
}

/// Four founders and a fifth node staged to join (not committed yet), with the ring now and
/// the ring the join leads to.
struct StagedJoin {
    cluster: FaultCluster,
    spare: usize,
    spare_id: NodeId,
    current: Ring,
    target: Ring,
}

async fn four_and_a_staged_joiner(net: Net) -> Result<StagedJoin> {
    let mut cluster = FaultCluster::start(net, 4, FAST_BACKGROUND)?;
    let spare = cluster.add_node(FAST_BACKGROUND)?;
    let spare_id = NodeId(spare as u32 + 1);
    cluster.stage_joins(0, &[spare_id]).await?;
    let (current, target) = cluster.plan(0).await?;
    Ok(StagedJoin {
        cluster,
        spare,
        spare_id,
        current,
        target,
    })
}

/// The window a ring change leaves for writes begun before a node noticed it: a coordinator
/// starts a write (W=3, one other owner and the only stand-in SIGSTOPped, so the write cannot
/// succeed and replicates until its copy to the stalled owner fails) whose partition the staged
/// change gives to a joiner, and the change is committed while the write is in flight.
/// The coordinator must not acknowledge the transition while that write replicates (the
/// handoff scan needs every acknowledgement, so it cannot start behind the write); once the
/// write settled it does, and after the switch every new owner holds the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_begun_before_its_coordinator_noticed_a_change_holds_the_change_back() -> Result<()>
{
    const TEST: &str =
        "a_write_begun_before_its_coordinator_noticed_a_change_holds_the_change_back";
    let Some((_one, net, _)) = begin(TEST).await? else {
        return Ok(());
    };
    let StagedJoin {
        cluster,
        spare,
        spare_id,
        current,
        target,
    } = four_and_a_staged_joiner(net).await?;
    // A key whose partition the joiner receives and which node index 0 (it commits) owns:
    // one other owner coordinates, the third owner and the only stand-in (the fourth node)
    // are stalled. No node can then take the stalled owner's copy, so the write cannot reach
    // W early: it stays in flight until its copy to the stalled owner fails.
    let key = (0..10_000)
        .map(|i| format!("gate-{i}"))
        .find(|k| {
            let p = current.partition_of(k.as_bytes());
            handoff::incoming(&current, &target, p, 3).contains(&spare_id)
                && current.replicas(p, 3).iter().any(|id| index_of(*id) == 0)
        })
        .context("no key of node 0 moves to the joiner")?;
    let p = current.partition_of(key.as_bytes());
    let owners: Vec<usize> = current
        .replicas(p, 3)
        .iter()
        .map(|id| index_of(*id))
        .filter(|i| *i != 0)
        .collect();
    let (coordinator, stalled) = (owners[0], owners[1]);
    let standin = (1..4)
        .find(|i| *i != coordinator && *i != stalled)
        .context("no stand-in")?;
    let coordinator_id = NodeId(coordinator as u32 + 1);
    println!(
        "{TEST}: {key} coordinated by index {coordinator}, owner {stalled} and stand-in {standin} stalled"
    );

    // A first write of the key through the coordinator opens its connections to the other
    // owners: a copy to a stalled owner then hangs until the connection's idle timeout
    // (`ringkv_net::quic::IDLE_TIMEOUT`, 4 s) instead of failing at the 1 s connect timeout,
    // which could end the write before the others had time to acknowledge the change. The
    // others acknowledge 1.5 to 2.5 s after the commit here, which leaves the 500 ms the check
    // below needs.
    let warm = w3_put(&key, b"warm");
    let warmed = support::ask(
        cluster.addrs[coordinator],
        &cluster.tls,
        &warm,
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        matches!(warmed, Response::Put { .. }),
        "the first write failed: {warmed:?}"
    );
    cluster.procs.signal(stalled, "STOP")?;
    cluster.procs.signal(standin, "STOP")?;
    let writes_before = cluster.stats(0).await?.writes;
    let put = w3_put(&key, b"gate");
    let (addr, tls) = (cluster.addrs[coordinator], cluster.tls.clone());
    let write =
        tokio::spawn(async move { support::ask(addr, &tls, &put, Duration::from_secs(20)).await });
    // The write is replicating once node index 0, the one owner still running besides the
    // coordinator, stored its copy.
    support::eventually(
        Duration::from_secs(5),
        "a copy of the write landed",
        || async {
            cluster
                .stats(0)
                .await
                .is_ok_and(|s| s.writes > writes_before)
        },
    )
    .await?;
    cluster.admin(0, AdminRequest::Commit).await?;
    let epoch = target.epoch();
    let acked = |s: &ringkv_shared::proto::NodeStatus| {
        s.view.seen.get(&s.node).is_some_and(|e| *e >= epoch)
    };
    // The others acknowledge within a few rounds; the coordinator, which knows the transition
    // as they do, does not while its write is in flight. Shown for as long as both hold:
    // another node acknowledged, the coordinator holds the transition and has not. (Counting
    // from the first other node's acknowledgement, not the last, keeps the window when a
    // loaded machine spreads the acknowledgements over seconds.)
    let others: Vec<usize> = (0..=spare)
        .filter(|i| ![stalled, standin, coordinator].contains(i))
        .collect();
    let mut held_back = 0u32;
    while !write.is_finished() {
        let own = cluster.status(coordinator).await?;
        ensure!(
            !acked(&own),
            "{coordinator_id} acknowledged the change while a write it began before noticing it was still replicating"
        );
        let mut another = false;
        for &i in &others {
            if cluster.status(i).await.is_ok_and(|s| acked(&s)) {
                another = true;
                break;
            }
        }
        if another && own.view.transition.is_some() && !write.is_finished() {
            held_back += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{TEST}: {coordinator_id} held its acknowledgement back for at least {} ms while it knew the change and another node had acknowledged it ({:?})",
        held_back * 100,
        write.await?.map(|r| r.kind())
    );
    ensure!(
        held_back >= 5,
        "the write settled before another node acknowledged: nothing was shown"
    );
    support::eventually(
        Duration::from_secs(10),
        "the others acknowledged",
        || async {
            for &i in &others {
                if !cluster.status(i).await.is_ok_and(|s| acked(&s)) {
                    return false;
                }
            }
            true
        },
    )
    .await?;
    support::eventually(
        Duration::from_secs(10),
        "the coordinator acknowledged",
        || async { cluster.status(coordinator).await.is_ok_and(|s| acked(&s)) },
    )
    .await?;
    cluster.procs.signal(stalled, "CONT")?;
    cluster.procs.signal(standin, "CONT")?;
    let everyone: Vec<usize> = (0..=spare).collect();
    cluster.settled(&everyone, epoch, CHANGE_LIMIT).await?;
    for id in target.replicas(p, 3) {
        let held = cluster
            .own_objects(index_of(*id), std::slice::from_ref(&key))
            .await?;
        ensure!(
            held.get(&key)
                .is_some_and(|o| o.values().any(|v| v.as_ref() == b"gate")),
            "new owner {id} does not hold {key}"
        );
    }
    println!("{TEST}: every owner by ring {epoch} holds {key}");
    Ok(())
}

/// Writes stored by W=3 replicas of the ring in force but not by W of the new one (the joiner
/// that receives their partitions is cut off from everyone) must fail as "may have been
/// applied", never as "not applied", and must not be stamped again by a client retry: after
/// the change every new owner holds each of them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_short_of_w_in_the_new_ring_are_reported_maybe_applied_and_stored_once() -> Result<()>
{
    const TEST: &str =
        "writes_short_of_w_in_the_new_ring_are_reported_maybe_applied_and_stored_once";
    let Some((_one, net, _)) = begin(TEST).await? else {
        return Ok(());
    };
    let StagedJoin {
        mut cluster,
        spare,
        spare_id,
        current,
        target,
    } = four_and_a_staged_joiner(net).await?;
    let client = cluster.client().await?;
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("short-{i}"))
        .filter(|k| {
            let p = current.partition_of(k.as_bytes());
            handoff::incoming(&current, &target, p, 3).contains(&spare_id)
        })
        .take(20)
        .collect();
    let founders: Vec<usize> = (0..spare).collect();
    cluster.partition(&[spare], &founders)?;
    if !cluster.cut_client(&[spare])? {
        println!("{TEST}: no nftables: the clients are not cut off (fault filter)");
    }
    cluster.admin(0, AdminRequest::Commit).await?;
    support::eventually(
        Duration::from_secs(10),
        "the founders know the change",
        || async {
            for &i in &founders {
                if !cluster
                    .status(i)
                    .await
                    .is_ok_and(|s| s.view.transition.is_some())
                {
                    return false;
                }
            }
            true
        },
    )
    .await?;

    let w3 = ringkv::CallOptions::default()
        .quorum(3)
        .timeout(Duration::from_secs(2));
    let mut by_ring_change = 0;
    for key in &keys {
        let value = unique_history::value_of(key);
        match client
            .put_with(key.clone(), value, &ringkv::Context::empty(), w3)
            .await
        {
            Ok(_) => anyhow::bail!("{key}: acknowledged with a new replica of 3 cut off"),
            Err(e) => {
                ensure!(
                    e.may_have_been_applied(),
                    "{key}: a write stored on 3 old replicas reported as not applied: {e}"
                );
                by_ring_change += usize::from(e.to_string().contains("ring change"));
            }
        }
    }
    println!(
        "{TEST}: {} writes failed as maybe applied, {by_ring_change} of them naming the ring change",
        keys.len()
    );
    ensure!(by_ring_change > 0, "no failure named the ring change");

    cluster.heal()?;
    let everyone: Vec<usize> = (0..=spare).collect();
    cluster
        .settled(&everyone, target.epoch(), CHANGE_LIMIT)
        .await?;
    client.refresh_ring().await?;
    let held = cluster.own_objects_of_owners(&client, &keys).await?;
    for key in &keys {
        for i in cluster.replicas(&client, key) {
            let values: Vec<&bytes::Bytes> = held
                .get(&i)
                .and_then(|h| h.get(key))
                .map(|o| o.values().collect())
                .unwrap_or_default();
            ensure!(
                values.len() == 1 && values[0].as_ref() == unique_history::value_of(key),
                "{key} on node index {i} after the change: {values:?}"
            );
        }
    }
    println!("{TEST}: every new owner holds each write exactly once");
    Ok(())
}

/// A coordinated write of `value` to `key` with N=3, W=3 and an 8 s deadline, on an empty
/// context.
fn w3_put(key: &str, value: &'static [u8]) -> Request {
    Request::Put {
        key: key.to_owned().into(),
        context: ringkv_shared::VersionVector::new(),
        value: Some(bytes::Bytes::from_static(value)),
        quorum: ringkv_shared::proto::Quorum {
            n: 3,
            required: 3,
            timeout_ms: 8_000,
        },
        return_body: false,
    }
}
