//! The nemesis: faults on a seeded schedule while the workload runs, each undone before the
//! next (a partition heals, a crashed node restarts), so that several kinds meet one another
//! and the workload over a run.

use crate::cluster::{SimCluster, node_addr};
use crate::scenario::Scenario;
use anyhow::Result;
use ringkv_net::sim::{Faults, SimNet};
use ringkv_shared::NodeId;
use ringkv_shared::proto::AdminRequest;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Partition,
    OneWay,
    Bridge,
    ClientCut,
    Loss,
    Crash,
    Wipe,
    RingChange,
}

/// Runs faults until `until`, then undoes the last one.
pub struct Nemesis<'a> {
    /// The cluster it acts on.
    pub cluster: &'a mut SimCluster,
    /// The scenario (which faults, how often, how long).
    pub scenario: &'a Scenario,
    /// The clients' addresses (for client cuts).
    pub clients: Vec<SocketAddr>,
    /// The faults the network starts with (restored after a loss burst).
    pub calm: Faults,
    wiped: bool,
    changes: u32,
}

impl<'a> Nemesis<'a> {
    /// A nemesis for `cluster`.
    pub fn new(
        cluster: &'a mut SimCluster,
        scenario: &'a Scenario,
        clients: Vec<SocketAddr>,
        calm: Faults,
    ) -> Self {
        Self {
            cluster,
            scenario,
            clients,
            calm,
            wiped: false,
            changes: 0,
        }
    }

    fn net(&self) -> SimNet {
        self.cluster.net().clone()
    }

    fn below(&self, n: u64) -> u64 {
        self.net().random_u64() % n.max(1)
    }

    fn kinds(&self) -> Vec<Kind> {
        let f = &self.scenario.faults;
        [
            (f.partition, Kind::Partition),
            (f.one_way, Kind::OneWay),
            (f.bridge, Kind::Bridge),
            (f.client_cut, Kind::ClientCut),
            (f.loss, Kind::Loss),
            (f.crash, Kind::Crash),
            (f.wipe && !self.wiped, Kind::Wipe),
            (f.ring_change && self.changes < 2, Kind::RingChange),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }

    /// Injects faults until `until`.
    pub async fn run(&mut self, until: Instant) -> Result<()> {
        let every = self.scenario.fault_every_secs * 1000;
        while Instant::now() < until {
            let pause = every / 2 + self.below(every + 1);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if Instant::now() >= until {
                break;
            }
            let kinds = self.kinds();
            if kinds.is_empty() {
                continue;
            }
            let kind = kinds[self.below(kinds.len() as u64) as usize];
            let hold = Duration::from_millis(500 + self.below(self.scenario.fault_max_secs * 1000));
            self.inject(kind, hold).await?;
        }
        Ok(())
    }

    /// Ring members (indices) as the first live node sees them.
    fn ring_nodes(&self) -> Vec<usize> {
        let Some(node) = self
            .cluster
            .up()
            .first()
            .and_then(|&i| self.cluster.node(i))
        else {
            return Vec::new();
        };
        node.ring().members().map(|m| m.id.0 as usize - 1).collect()
    }

    fn split(&self, nodes: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let n = nodes.len() as u64;
        // A non-empty proper subset.
        let mask = 1 + self.below((1u64 << n) - 2);
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, &node) in nodes.iter().enumerate() {
            if mask & (1 << i) != 0 {
                a.push(node);
            } else {
                b.push(node);
            }
        }
        (a, b)
    }

    fn cut_between(&self, a: &[usize], b: &[usize]) {
        let net = self.net();
        for &x in a {
            for &y in b {
                net.cut(node_addr(x), node_addr(y));
                net.cut(node_addr(y), node_addr(x));
            }
        }
    }

    async fn inject(&mut self, kind: Kind, hold: Duration) -> Result<()> {
        let net = self.net();
        let nodes: Vec<usize> = (0..self.cluster.len()).collect();
        net.record(format_args!("nemesis {kind:?} for {}ms", hold.as_millis()));
        match kind {
            Kind::Partition => {
                let (a, b) = self.split(&nodes);
                net.record(format_args!("nemesis partition {a:?} | {b:?}"));
                self.cut_between(&a, &b);
                tokio::time::sleep(hold).await;
                net.heal();
            }
            Kind::OneWay => {
                let from = self.below(nodes.len() as u64) as usize;
                let to = (from + 1 + self.below(nodes.len() as u64 - 1) as usize) % nodes.len();
                net.cut(node_addr(from), node_addr(to));
                tokio::time::sleep(hold).await;
                net.heal();
            }
            Kind::Bridge if nodes.len() >= 3 => {
                let bridge = self.below(nodes.len() as u64) as usize;
                let rest: Vec<usize> = nodes.iter().copied().filter(|&i| i != bridge).collect();
                let (a, b) = self.split(&rest);
                net.record(format_args!(
                    "nemesis bridge n{} between {a:?} | {b:?}",
                    bridge + 1
                ));
                self.cut_between(&a, &b);
                tokio::time::sleep(hold).await;
                net.heal();
            }
            Kind::Bridge => {}
            Kind::ClientCut => {
                let client = self.clients[self.below(self.clients.len() as u64) as usize];
                let cut: Vec<usize> = nodes
                    .iter()
                    .copied()
                    .filter(|_| self.below(2) == 0)
                    .collect();
                for &i in &cut {
                    net.cut(client, node_addr(i));
                    net.cut(node_addr(i), client);
                }
                tokio::time::sleep(hold).await;
                net.heal();
            }
            Kind::Loss => {
                net.set_faults(Faults {
                    loss: self.scenario.loss,
                    ..self.calm.clone()
                });
                tokio::time::sleep(hold).await;
                net.set_faults(self.calm.clone());
            }
            Kind::Crash | Kind::Wipe => {
                let up = self.cluster.up();
                if up.len() < 2 {
                    return Ok(());
                }
                let victim = up[self.below(up.len() as u64) as usize];
                // A wiped disk loses everything anyway.
                let power_cut = kind == Kind::Crash && self.below(2) == 0;
                self.cluster.crash(victim, power_cut)?;
                tokio::time::sleep(hold).await;
                if kind == Kind::Wipe {
                    self.wiped = true;
                    self.cluster.wipe(victim)?;
                }
                self.cluster.restart(victim).await?;
            }
            Kind::RingChange => self.ring_change().await,
        }
        Ok(())
    }

    /// Joins a new node or removes a member, through an up node's admin interface, unless a
    /// change is still moving data.
    async fn ring_change(&mut self) {
        let net = self.net();
        let ring = self.ring_nodes();
        let Some(&admin_at) = self.cluster.up().first() else {
            return;
        };
        let busy = self
            .cluster
            .node(admin_at)
            .is_some_and(|n| n.view().transition.is_some());
        if busy {
            net.record(format_args!(
                "nemesis ring change skipped: one is under way"
            ));
            return;
        }
        let join = ring.len() <= 3 || (self.cluster.len() < 7 && self.below(2) == 0);
        let mut forced = std::collections::BTreeSet::new();
        let request = if join {
            let Ok(index) = self.cluster.add_node(self.scenario) else {
                return;
            };
            // Let the new node announce itself by gossip first.
            tokio::time::sleep(Duration::from_secs(1)).await;
            AdminRequest::Join {
                node: Some(NodeId(index as u32 + 1)),
                addr: Some(node_addr(index)),
            }
        } else if self.below(2) == 0 {
            let leaver = ring[self.below(ring.len() as u64) as usize];
            AdminRequest::Leave {
                node: NodeId(leaver as u32 + 1),
            }
        } else {
            // A member is lost for good (its disk kept, as a host that was only thought dead):
            // it stays down until the heal, when it comes back with its old data.
            let others: Vec<usize> = ring.iter().copied().filter(|&i| i != admin_at).collect();
            let Some(&victim) = others.get(self.below(others.len() as u64) as usize) else {
                return;
            };
            if self.cluster.crash(victim, false).is_err() {
                return;
            }
            net.record(format_args!("nemesis n{} lost for good", victim + 1));
            forced.insert(NodeId(victim as u32 + 1));
            AdminRequest::RemoveForced {
                node: NodeId(victim as u32 + 1),
            }
        };
        net.record(format_args!("nemesis ring change {request:?}"));
        self.changes += 1;
        let Some(node) = self.cluster.node(admin_at) else {
            return;
        };
        let staged = node.admin(request).await;
        let operator =
            ringkv_shared::authority::SimulatedOperator::new(ringkv_node::SIMULATED_OPERATOR_KEY);
        let committed = ringkv_node::operator::signed_commit(
            |r| async { Ok::<_, std::convert::Infallible>(node.admin(r).await) },
            &operator,
            &forced,
        )
        .await
        .unwrap_or_else(|never| match never {});
        let short = |r: &ringkv_shared::proto::Response| {
            let mut s = format!("{r:?}");
            s.truncate(160);
            s
        };
        net.record(format_args!(
            "nemesis ring change staged: {} committed: {}",
            short(&staged),
            short(&committed)
        ));
        // Now and then the operator aborts the change a while later (a no-op if it finished).
        if forced.is_empty() && self.below(3) == 0 {
            tokio::time::sleep(Duration::from_millis(self.below(800))).await;
            let cluster = &*self.cluster;
            let Some(&asked) = cluster.up().first() else {
                return;
            };
            let aborted = ringkv_node::operator::signed_abort(
                |at, r| async move {
                    let index = (0..cluster.len()).find(|&i| node_addr(i) == at);
                    Ok::<_, std::convert::Infallible>(match index.and_then(|i| cluster.node(i)) {
                        Some(node) => node.admin(r).await,
                        None => ringkv_shared::proto::Response::Error(
                            ringkv_shared::ReplyError::Unavailable {
                                reason: format!("{at} is down"),
                            },
                        ),
                    })
                },
                node_addr(asked),
                &operator,
            )
            .await
            .unwrap_or_else(|never| match never {});
            net.record(format_args!("nemesis abort: {}", short(&aborted)));
        }
    }
}
