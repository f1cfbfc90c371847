//! The drivers against a simulated transport on a paused clock: replicas that answer after
//! a delay, never answer, refuse, or cannot be reached.
use super::*;
use crate::transport::{Transport, TransportError};
use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv_shared::dvv::VersionVector;
use ringkv_shared::error::{ReplicaError, ReplyError};
use ringkv_shared::ids::{ActorId, NodeId};
use ringkv_shared::object::Object;
use ringkv_shared::proto::{PutReply, Quorum, Request, Response};
use ringkv_shared::ring::Member;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Answer { delay_ms: u64 },
    Silent,
    Refuse,
    Unreachable,
}

#[derive(Clone, Default)]
struct Sim {
    behaviour: Arc<Mutex<HashMap<NodeId, Behaviour>>>,
    stored: Arc<Mutex<HashMap<NodeId, Object>>>,
    writes: Arc<Mutex<Vec<NodeId>>>,
    puts: Arc<Mutex<Vec<NodeId>>>,
    reads: Arc<Mutex<Vec<NodeId>>>,
    repairs_asked: Arc<Mutex<Vec<NodeId>>>,
    hinted: Arc<Mutex<Vec<(NodeId, NodeId)>>>,
    suspected: Arc<Mutex<Vec<NodeId>>>,
}

impl Sim {
    fn with(behaviour: &[(u32, Behaviour)]) -> Self {
        let sim = Sim::default();
        for &(id, b) in behaviour {
            sim.behaviour.lock().unwrap().insert(NodeId(id), b);
        }
        sim
    }
    fn store(&self, id: u32, o: Object) {
        self.stored.lock().unwrap().insert(NodeId(id), o);
    }
}

impl Transport for Sim {
    async fn call(&self, to: &Member, request: Request) -> Result<Response, TransportError> {
        let b = self.behaviour.lock().unwrap().get(&to.id).copied();
        match b.unwrap_or(Behaviour::Answer { delay_ms: 0 }) {
            Behaviour::Answer { delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(match request {
                    Request::Read { .. } => {
                        self.reads.lock().unwrap().push(to.id);
                        Response::Object(
                            self.stored
                                .lock()
                                .unwrap()
                                .get(&to.id)
                                .cloned()
                                .unwrap_or_default(),
                        )
                    }
                    Request::Write {
                        object, hint_for, ..
                    } => {
                        if let Some(owner) = hint_for {
                            self.hinted.lock().unwrap().push((to.id, owner));
                        }
                        self.stored
                            .lock()
                            .unwrap()
                            .entry(to.id)
                            .or_default()
                            .merge(&object);
                        self.writes.lock().unwrap().push(to.id);
                        Response::Written
                    }
                    Request::Repair { .. } => {
                        self.repairs_asked.lock().unwrap().push(to.id);
                        Response::Written
                    }
                    Request::Put { .. } => {
                        self.puts.lock().unwrap().push(to.id);
                        Response::Put(PutReply {
                            clock: VersionVector::new(),
                            next: VersionVector::new(),
                            body: None,
                        })
                    }
                    _ => Response::Pong { node: to.id },
                })
            }
            Behaviour::Silent => std::future::pending().await,
            Behaviour::Refuse => Ok(Response::Error(ReplyError::Unavailable {
                reason: "refusing".into(),
            })),
            Behaviour::Unreachable => Err(TransportError::Connect {
                addr: to.addr,
                reason: "refused".into(),
            }),
        }
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.suspected.lock().unwrap().contains(&node)
    }
}

fn members(n: u32) -> Vec<Member> {
    (1..=n)
        .map(|i| {
            Member::at(
                NodeId(i),
                std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            )
        })
        .collect()
}

fn nodes(out: &ReadOutcome) -> Vec<NodeId> {
    out.answers.iter().map(|a| a.node).collect()
}

fn written(v: &str) -> Object {
    let mut o = Object::new();
    o.update(
        &VersionVector::new(),
        Some(Bytes::copy_from_slice(v.as_bytes())),
        ActorId(1),
    )
    .unwrap();
    o
}

const TIMEOUT: Duration = Duration::from_millis(100);

/// A read of key `k` within [`TIMEOUT`].
fn read_plan(preference: Vec<Member>, n: usize, required: usize, repair: bool) -> ReadPlan {
    let repair = if repair { Repair::Write } else { Repair::Off };
    ReadPlan {
        key: Bytes::from_static(b"k"),
        preference,
        n,
        required,
        timeout: TIMEOUT,
        repair,
        on_repair: None,
    }
}

#[tokio::test(start_paused = true)]
async fn read_returns_after_r_and_repairs_stale_replicas_later() {
    let sim = Sim::with(&[
        (1, Behaviour::Answer { delay_ms: 1 }),
        (2, Behaviour::Answer { delay_ms: 2 }),
        (3, Behaviour::Answer { delay_ms: 50 }),
    ]);
    let newer = written("v1");
    sim.store(1, newer.clone());
    sim.store(2, newer.clone());
    // Replica 3 holds nothing: it is stale, but answers only after the quorum was met.
    let start = Instant::now();
    let out = read(&sim, read_plan(members(3), 3, 2, true)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(2),
        "returns at the R-th answer"
    );
    assert_eq!(out.object, newer);
    assert_eq!(nodes(&out), vec![NodeId(1), NodeId(2)]);
    assert!(sim.writes.lock().unwrap().is_empty());
    // Replica 3 answers at 50 ms; the repair write to it takes its 50 ms too.
    tokio::time::sleep(Duration::from_millis(97)).await; // t = 99 ms
    assert!(
        sim.writes.lock().unwrap().is_empty(),
        "no repair before replica 3 could take it"
    );
    tokio::time::sleep(Duration::from_millis(2)).await; // t = 101 ms
    assert_eq!(
        *sim.writes.lock().unwrap(),
        vec![NodeId(3)],
        "the late, stale replica is repaired"
    );
    assert_eq!(sim.stored.lock().unwrap()[&NodeId(3)], newer);
}

#[tokio::test(start_paused = true)]
async fn a_client_read_asks_an_up_to_date_owner_to_repair_and_writes_no_replica() {
    let sim = Sim::with(&[
        (1, Behaviour::Answer { delay_ms: 5 }),
        (2, Behaviour::Answer { delay_ms: 1 }),
        (3, Behaviour::Answer { delay_ms: 2 }),
    ]);
    let newer = written("v1");
    sim.store(1, newer.clone());
    // 2 and 3 answer first, with nothing: stale. 1 holds the newest.
    let plan = ReadPlan {
        repair: Repair::AskOwner,
        ..read_plan(members(3), 3, 3, false)
    };
    let out = read(&sim, plan).await.unwrap();
    assert_eq!(out.object, newer);
    tokio::time::sleep(TIMEOUT * 3).await;
    assert!(
        sim.writes.lock().unwrap().is_empty(),
        "a client writes no replica"
    );
    assert_eq!(
        *sim.repairs_asked.lock().unwrap(),
        vec![NodeId(1)],
        "one owner is asked: the one holding the merge"
    );
}

/// A simulated cluster with these behaviours where `holders` store `object`.
fn holding(object: &Object, behaviour: &[(u32, Behaviour)], holders: &[u32]) -> Sim {
    let sim = Sim::with(behaviour);
    for &i in holders {
        sim.store(i, object.clone());
    }
    sim
}

/// The repair an owner runs for a client waits for every owner, writes the merge to the stale
/// ones only, and is over (writes included) when it returns; a silent owner is waited for no
/// longer than the timeout.
#[tokio::test(start_paused = true)]
async fn an_owner_asked_to_repair_writes_the_merge_to_stale_owners_and_then_returns() {
    let sim = Sim::with(&[
        (1, Behaviour::Answer { delay_ms: 1 }),
        (2, Behaviour::Answer { delay_ms: 30 }),
        (3, Behaviour::Silent),
        (4, Behaviour::Answer { delay_ms: 1 }),
    ]);
    let newer = written("v1");
    sim.store(1, newer.clone());
    sim.store(4, newer.clone());
    let start = Instant::now();
    let owners = members(4)[..3].to_vec();
    let repaired = repair_owners(&sim, Bytes::from_static(b"k"), &owners, TIMEOUT).await;
    assert_eq!(
        repaired,
        vec![NodeId(2)],
        "only the owner that answered with less"
    );
    assert_eq!(*sim.writes.lock().unwrap(), vec![NodeId(2)]);
    assert_eq!(
        sim.stored.lock().unwrap()[&NodeId(2)],
        newer,
        "written before returning"
    );
    assert!(
        !sim.reads.lock().unwrap().contains(&NodeId(4)),
        "a stand-in is never asked"
    );
    // The silent owner is waited for until the timeout; the write then takes its 30 ms.
    assert_eq!(start.elapsed(), TIMEOUT + Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn a_hedged_read_asks_r_nodes_and_a_third_only_when_one_is_slow() {
    let newer = written("v1");
    // Quick replicas: two requests, not three.
    let quick = Behaviour::Answer { delay_ms: 1 };
    let sim = holding(&newer, &[(1, quick), (2, quick), (3, quick)], &[1, 2, 3]);
    let hedge = Some(Duration::from_millis(5));
    let out = read_hedged(&sim, read_plan(members(3), 3, 2, true), hedge)
        .await
        .unwrap();
    assert_eq!(out.object, newer);
    tokio::time::sleep(TIMEOUT).await;
    let mut asked = sim.reads.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, vec![NodeId(1), NodeId(2)]);

    // Replica 2 is slow: after the hedge delay replica 3 is asked and answers first.
    let slow = Behaviour::Answer { delay_ms: 80 };
    let sim = holding(&newer, &[(1, quick), (2, slow), (3, quick)], &[1, 2, 3]);
    let start = Instant::now();
    let out = read_hedged(&sim, read_plan(members(3), 3, 2, true), hedge)
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(6),
        "hedge at 5 ms, answer at 6 ms"
    );
    assert_eq!(nodes(&out), vec![NodeId(1), NodeId(3)]);

    // A failing replica is replaced at once, without waiting for the hedge delay.
    let sim = holding(
        &newer,
        &[(1, quick), (2, Behaviour::Refuse), (3, quick)],
        &[1, 3],
    );
    let start = Instant::now();
    read_hedged(
        &sim,
        read_plan(members(3), 3, 2, true),
        Some(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn silent_replicas_time_out_at_the_deadline_and_are_named() {
    let sim = Sim::with(&[(2, Behaviour::Silent), (3, Behaviour::Silent)]);
    let start = Instant::now();
    let err = read(&sim, read_plan(members(3), 3, 2, true))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), TIMEOUT);
    assert_eq!(
        err,
        ReplyError::QuorumFailed {
            required: 2,
            succeeded: 1,
            errors: vec![
                (NodeId(2), ReplicaError::TimedOut),
                (NodeId(3), ReplicaError::TimedOut)
            ],
        }
    );
}

/// Runs `replicate` from coordinator n1 over `members(total)`; returns the result and a
/// handle on the owners reported unplaced once everything settled.
async fn replicate_from_n1(
    sim: &Sim,
    total: u32,
    n: usize,
    w: usize,
) -> (
    Result<Vec<NodeId>, ReplyError>,
    Arc<Mutex<Option<Vec<NodeId>>>>,
) {
    let settled: Arc<Mutex<Option<Vec<NodeId>>>> = Arc::default();
    let report = settled.clone();
    let replication = Replication {
        key: Bytes::from_static(b"k"),
        object: written("v"),
        local: NodeId(1),
        preference: members(total),
        n,
        required: w,
        timeout: TIMEOUT,
    };
    let result = replicate(sim, replication, move |unplaced| async move {
        *report.lock().unwrap() = Some(unplaced);
    })
    .await;
    (result, settled)
}

#[tokio::test(start_paused = true)]
async fn failures_that_make_the_quorum_impossible_return_at_once() {
    let sim = Sim::with(&[(2, Behaviour::Refuse), (3, Behaviour::Silent)]);
    let start = Instant::now();
    let (result, settled) = replicate_from_n1(&sim, 3, 3, 3).await;
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no waiting for the silent one"
    );
    let err = result.unwrap_err();
    let ReplyError::QuorumFailed {
        succeeded, errors, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(succeeded, 1, "the coordinator itself");
    assert!(
        matches!(errors[0], (NodeId(2), ReplicaError::Refused { .. })),
        "{errors:?}"
    );
    assert_eq!(errors[1], (NodeId(3), ReplicaError::NotAwaited));
    // Past the deadline both owners are still without a copy: the coordinator keeps hints.
    tokio::time::sleep(TIMEOUT + Duration::from_millis(1)).await;
    assert_eq!(
        settled.lock().unwrap().clone(),
        Some(vec![NodeId(2), NodeId(3)])
    );
}

#[tokio::test(start_paused = true)]
async fn replicate_counts_the_coordinator_and_keeps_writing_to_stragglers() {
    let sim = Sim::with(&[
        (2, Behaviour::Answer { delay_ms: 5 }),
        (3, Behaviour::Answer { delay_ms: 40 }),
    ]);
    let (result, settled) = replicate_from_n1(&sim, 3, 3, 2).await;
    assert_eq!(result.unwrap(), vec![NodeId(1), NodeId(2)]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        *sim.writes.lock().unwrap(),
        vec![NodeId(2), NodeId(3)],
        "the straggler still got the write"
    );
    assert_eq!(
        settled.lock().unwrap().clone(),
        Some(vec![]),
        "every owner has its copy"
    );
}

#[tokio::test(start_paused = true)]
async fn a_down_owner_is_replaced_by_a_standin_that_counts_toward_w() {
    let sim = Sim::with(&[(3, Behaviour::Unreachable)]);
    sim.suspected.lock().unwrap().push(NodeId(2));
    let (result, settled) = replicate_from_n1(&sim, 5, 3, 3).await;
    let mut acked = result.unwrap();
    acked.sort();
    assert_eq!(
        acked,
        vec![NodeId(1), NodeId(4), NodeId(5)],
        "W=3 met with two stand-ins"
    );
    let mut hinted = sim.hinted.lock().unwrap().clone();
    hinted.sort();
    assert_eq!(hinted, vec![(NodeId(4), NodeId(2)), (NodeId(5), NodeId(3))]);
    tokio::time::sleep(TIMEOUT + Duration::from_millis(1)).await;
    assert_eq!(settled.lock().unwrap().clone(), Some(vec![]));
}

#[tokio::test(start_paused = true)]
async fn with_no_standin_left_the_coordinator_keeps_the_hint() {
    // 3 nodes, N=3: nowhere to redirect n3's copy. W=2 is met; n3 is reported unplaced.
    let sim = Sim::with(&[(3, Behaviour::Unreachable)]);
    let (result, settled) = replicate_from_n1(&sim, 3, 3, 2).await;
    assert_eq!(result.unwrap(), vec![NodeId(1), NodeId(2)]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(settled.lock().unwrap().clone(), Some(vec![NodeId(3)]));
}

/// A blind delete of `k`, for an owner to coordinate.
fn delete_of_k(quorum: Quorum) -> DelegatedPut {
    DelegatedPut {
        key: Bytes::from_static(b"k"),
        context: VersionVector::new(),
        value: None,
        quorum,
        return_body: false,
    }
}

#[tokio::test(start_paused = true)]
async fn delegate_put_fails_over_only_when_nothing_was_applied() {
    let q = Quorum {
        n: 3,
        required: 2,
        timeout_ms: 100,
    };
    // First replica unreachable (certainly not applied): the next one coordinates.
    let sim = Sim::with(&[(1, Behaviour::Unreachable)]);
    delegate_put(&sim, delete_of_k(q), &members(3))
        .await
        .unwrap();
    assert_eq!(*sim.puts.lock().unwrap(), vec![NodeId(2)]);

    // First replica silent: the outcome is unknown, and no second coordinator is tried
    // (that could apply the write twice).
    let sim = Sim::with(&[(1, Behaviour::Silent)]);
    let err = delegate_put(&sim, delete_of_k(q), &members(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplyError::OutcomeUnknown {
                node: NodeId(1),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(sim.puts.lock().unwrap().is_empty());

    // Every replica unreachable: failed, not applied, each one named.
    let sim = Sim::with(&[
        (1, Behaviour::Unreachable),
        (2, Behaviour::Unreachable),
        (3, Behaviour::Unreachable),
    ]);
    let err = delegate_put(&sim, delete_of_k(q), &members(3))
        .await
        .unwrap_err();
    let ReplyError::QuorumFailed {
        succeeded: 0,
        errors,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn suspected_replicas_are_skipped_only_while_the_quorum_can_do_without_them() {
    let sim = Sim::default();
    sim.suspected.lock().unwrap().push(NodeId(3));
    read(&sim, read_plan(members(3), 3, 2, false))
        .await
        .unwrap();
    assert_eq!(
        *sim.reads.lock().unwrap(),
        vec![NodeId(1), NodeId(2)],
        "n3 steered around"
    );
    sim.reads.lock().unwrap().clear();
    // R=3 needs n3: it is asked (and answers) instead of the read failing unasked.
    read(&sim, read_plan(members(3), 3, 3, false))
        .await
        .unwrap();
    let mut asked = sim.reads.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, vec![NodeId(1), NodeId(2), NodeId(3)]);
}

/// The bridge partition: owners n2 and n3 are suspected and cut off, stand-ins n4 and n5
/// hold nothing. Their "not found" is no evidence: the read asks the suspected owners after
/// all, waits for them until the deadline, and fails naming who said what, instead of
/// returning the key as empty.
#[tokio::test(start_paused = true)]
async fn empty_standins_never_make_a_read_return_not_found() {
    let sim = Sim::with(&[(2, Behaviour::Silent), (3, Behaviour::Silent)]);
    sim.suspected.lock().unwrap().extend([NodeId(2), NodeId(3)]);
    sim.store(1, written("v"));
    let start = Instant::now();
    let err = read(&sim, read_plan(members(5), 3, 2, true))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        TIMEOUT,
        "waits for the owners until the deadline"
    );
    let ReplyError::QuorumFailed {
        succeeded: 1,
        mut errors,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    errors.sort_by_key(|(n, _)| *n);
    assert_eq!(
        errors,
        vec![
            (NodeId(2), ReplicaError::TimedOut),
            (NodeId(3), ReplicaError::TimedOut),
            (NodeId(4), ReplicaError::HoldsNothing),
            (NodeId(5), ReplicaError::HoldsNothing),
        ]
    );
    // When an owner answers after all, its answer counts (empty or not).
    let sim = Sim::with(&[(3, Behaviour::Silent)]);
    sim.suspected.lock().unwrap().extend([NodeId(2), NodeId(3)]);
    sim.store(1, written("v"));
    let out = read(&sim, read_plan(members(5), 3, 2, true)).await.unwrap();
    assert_eq!(out.object, written("v"));
    let mut answered = nodes(&out);
    answered.sort();
    assert_eq!(answered, vec![NodeId(1), NodeId(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_read_replaces_failed_owners_with_the_next_nodes_of_the_list() {
    // Owners n2 and n3 fail during the read; stand-in n4 holds a hint and answers.
    let sim = Sim::with(&[(2, Behaviour::Unreachable), (3, Behaviour::Refuse)]);
    sim.store(1, written("v"));
    sim.store(4, written("v"));
    let out = read(&sim, read_plan(members(5), 3, 2, true)).await.unwrap();
    let mut answered = nodes(&out);
    answered.sort();
    assert_eq!(answered, vec![NodeId(1), NodeId(4)]);
    // Without spares the same failures fail the read, naming both owners.
    let err = read(&sim, read_plan(members(3), 3, 2, true))
        .await
        .unwrap_err();
    let ReplyError::QuorumFailed {
        succeeded: 1,
        errors,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_silent_router_on_a_read_is_a_named_timeout_not_an_unknown_write() {
    let sim = Sim::with(&[(1, Behaviour::Unreachable), (2, Behaviour::Silent)]);
    let ms = members(3);
    let order: Vec<&Member> = ms.iter().collect();
    let q = Quorum {
        n: 3,
        required: 2,
        timeout_ms: 100,
    };
    let deadline = Instant::now() + q.timeout();
    let err = first_reachable(&sim, &order, 2, deadline, |_, _| Request::RouteGet {
        key: Bytes::from_static(b"k"),
        quorum: q,
    })
    .await
    .unwrap_err();
    let ReplyError::QuorumFailed {
        required: 2,
        succeeded: 0,
        errors,
    } = err
    else {
        panic!("{err:?}")
    };
    assert!(
        matches!(errors[0], (NodeId(1), ReplicaError::Unreachable { .. })),
        "{errors:?}"
    );
    assert_eq!(errors[1], (NodeId(2), ReplicaError::TimedOut));
    assert_eq!(
        errors.len(),
        2,
        "node 3 was never tried: node 2 may still answer"
    );
}

/// Random behaviours from a printed seed: a read succeeds exactly when at least R replicas
/// answer before the deadline, and then it returns at the R-th fastest answer.
#[tokio::test(start_paused = true)]
async fn seeded_random_replica_behaviour() {
    let seed: u64 = std::env::var("RINGKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..300 {
        let n = rng.random_range(1..=5u32);
        let r = rng.random_range(1..=n as usize);
        let mut plan = Vec::new();
        let mut in_time = Vec::new();
        for id in 1..=n {
            let b = match rng.random_range(0..4) {
                0 => Behaviour::Silent,
                1 => Behaviour::Refuse,
                2 => Behaviour::Unreachable,
                // Multiples of 7 ms never coincide with the 100 ms deadline.
                _ => Behaviour::Answer {
                    delay_ms: 7 * rng.random_range(0..30),
                },
            };
            if let Behaviour::Answer { delay_ms } = b
                && delay_ms < 100
            {
                in_time.push(delay_ms);
            }
            plan.push((id, b));
        }
        in_time.sort_unstable();
        let sim = Sim::with(&plan);
        let start = Instant::now();
        let result = read(&sim, read_plan(members(n), n as usize, r, false)).await;
        let ctx = format!("seed {seed} round {round}: n={n} r={r} plan={plan:?}");
        if in_time.len() >= r {
            assert!(result.is_ok(), "{ctx}: {result:?}");
            assert_eq!(
                start.elapsed(),
                Duration::from_millis(in_time[r - 1]),
                "{ctx}"
            );
        } else {
            assert!(result.is_err(), "{ctx}");
            assert!(start.elapsed() <= TIMEOUT, "{ctx}");
        }
    }
}
