//! The fault suite's harness: real node processes in a private network namespace, faults
//! (kill, pause, partitions, wiped disks), the set workload that records a history, and the
//! convergence check. The judging is `ringkv_node::testing::history`'s.
//!
//! Each scenario runs in its own network namespace holding only loopback: the test re-executes
//! itself under `unshare --net`, nodes bind 127.0.0.2, 127.0.0.3, ..., and partitions are
//! nftables rules on the input hook (a drop there looks like a lossy network to the sender).
//! Without root, `unshare` or `nft` (or with `RINGKV_FAULTS_NO_NETNS=1`) the suite says so and
//! cuts the network with the nodes' own fault filter instead.

use super::node_binary;
use anyhow::{Context as _, Result, bail, ensure};
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::{CallOptions, Client, TlsIdentity};
use ringkv_node::testing::history::{Op, Outcome, encode_set, parse_set, union_of_sets};
use ringkv_node::testing::{ProcessCluster, ProcessOptions};
use ringkv_shared::proto::{AdminReply, AdminRequest, NodeStats, NodeStatus, Request, Response};
use ringkv_shared::{Member, NodeId, Object};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const INSIDE: &str = "RINGKV_FAULTS_INSIDE";

/// How partitions are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// nftables rules in this test's own network namespace.
    Nft,
    /// The nodes' transport fault filter (no namespace available).
    Filter,
}

/// The seed of this run: `RINGKV_SEED` if set, else random. Printed so a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("RINGKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("faults: seed {seed} (replay with RINGKV_SEED={seed})");
    seed
}

/// Whether the long version runs (`RINGKV_SOAK=1`).
pub fn soak() -> bool {
    std::env::var_os("RINGKV_SOAK").is_some()
}

use super::run_command as run;

/// Puts the calling test into a network namespace of its own. Returns `None` in the parent
/// after the child (the same test, re-executed inside a namespace) passed; `Some(net)` where
/// the scenario should run now.
pub fn enter(test: &str) -> Result<Option<Net>> {
    if std::env::var_os(INSIDE).is_some() {
        run("ip", &["link", "set", "lo", "up"])?;
        run("nft", &["add", "table", "inet", "faults"])?;
        run(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "faults",
                "inp",
                "{ type filter hook input priority 0 ; }",
            ],
        )?;
        return Ok(Some(Net::Nft));
    }
    let usable = std::env::var_os("RINGKV_FAULTS_NO_NETNS").is_none()
        && Command::new("unshare")
            .args(["--net", "--", "nft", "list", "ruleset"])
            .output()
            .is_ok_and(|o| o.status.success());
    if usable {
        let status = Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(std::env::current_exe()?)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(INSIDE, "1")
            .status()?;
        ensure!(
            status.success(),
            "scenario {test} failed in its network namespace (output above)"
        );
        return Ok(None);
    }
    println!(
        "faults: no private network namespace with nftables here (needs root, unshare and nft); \
         partitions use the nodes' transport fault filter instead"
    );
    Ok(Some(Net::Filter))
}

/// Real node processes under faults.
pub struct FaultCluster {
    pub procs: ProcessCluster,
    pub net: Net,
    pub addrs: Vec<SocketAddr>,
    pub tls: TlsIdentity,
    blocked: BTreeMap<usize, BTreeSet<SocketAddr>>,
}

/// Background settings that let faults heal within a test's time.
pub const FAST_BACKGROUND: &str = "[background]\nhint_interval_ms = 200\nae_interval_ms = 300\n\
     gossip_interval_ms = 250\nreap_interval_ms = 500\nallow_short_tombstone_grace = true\n";

impl FaultCluster {
    /// Starts `nodes` nodes (on 127.0.0.2, ... under nftables).
    pub fn start(net: Net, nodes: usize, tables_toml: &str) -> Result<Self> {
        let hosts = match net {
            Net::Nft => (0..nodes)
                .map(|i| std::net::Ipv4Addr::new(127, 0, 0, 2 + i as u8))
                .collect(),
            Net::Filter => Vec::new(),
        };
        let procs = ProcessCluster::start_with(
            &node_binary()?,
            ProcessOptions {
                nodes,
                partitions: 64,
                tables_toml: tables_toml.to_owned(),
                hosts,
                fault_files: net == Net::Filter,
            },
        )?;
        Ok(FaultCluster {
            addrs: procs.addrs().to_vec(),
            tls: procs.client_tls(),
            procs,
            net,
            blocked: BTreeMap::new(),
        })
    }

    /// A client (N=3, R=2, W=2, 1 s deadline) once the cluster answers.
    pub async fn client(&self) -> Result<Client> {
        self.client_in(ringkv::Mode::Direct).await
    }

    /// [`FaultCluster::client`] in `mode`.
    pub async fn client_in(&self, mode: ringkv::Mode) -> Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let built = Client::builder()
                .seeds(self.addrs.iter().copied())
                .tls(self.tls.clone())
                .mode(mode)
                .timeout(Duration::from_secs(1))
                .build()
                .await;
            match built {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("cluster never answered");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Drops every packet from a node in `from` arriving at a node in `to`.
    pub fn cut(&mut self, from: &[usize], to: &[usize]) -> Result<()> {
        for &a in from {
            for &b in to {
                if a == b {
                    continue;
                }
                match self.net {
                    Net::Nft => run(
                        "nft",
                        &[
                            "add",
                            "rule",
                            "inet",
                            "faults",
                            "inp",
                            "ip",
                            "saddr",
                            &self.addrs[a].ip().to_string(),
                            "ip",
                            "daddr",
                            &self.addrs[b].ip().to_string(),
                            "drop",
                        ],
                    )?,
                    Net::Filter => {
                        // The nearest the filter comes: a's calls to b fail.
                        self.blocked.entry(a).or_default().insert(self.addrs[b]);
                    }
                }
            }
        }
        self.write_filters()
    }

    /// Cuts the test's own clients (they send from 127.0.0.1) off from nodes `to`, both ways.
    /// Only nftables can: returns `false` (and cuts nothing) under the fault-filter fallback.
    pub fn cut_client(&mut self, to: &[usize]) -> Result<bool> {
        if self.net != Net::Nft {
            return Ok(false);
        }
        for &b in to {
            let node = self.addrs[b].ip().to_string();
            for (src, dst) in [("127.0.0.1", node.as_str()), (node.as_str(), "127.0.0.1")] {
                run(
                    "nft",
                    &[
                        "add", "rule", "inet", "faults", "inp", "ip", "saddr", src, "ip", "daddr",
                        dst, "drop",
                    ],
                )?;
            }
        }
        Ok(true)
    }

    /// Cuts `a` and `b` apart both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) -> Result<()> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Ends every cut.
    pub fn heal(&mut self) -> Result<()> {
        if self.net == Net::Nft {
            run("nft", &["flush", "chain", "inet", "faults", "inp"])?;
        }
        self.blocked.clear();
        self.write_filters()
    }

    fn write_filters(&self) -> Result<()> {
        if self.net == Net::Filter {
            for i in 0..self.addrs.len() {
                let lines: String = self
                    .blocked
                    .get(&i)
                    .map(|s| s.iter().map(|a| format!("{a}\n")).collect())
                    .unwrap_or_default();
                std::fs::write(self.procs.fault_file(i), lines)?;
            }
        }
        Ok(())
    }

    /// Sends one request to node `i` on a fresh connection.
    pub async fn request(&self, i: usize, request: &Request) -> Result<Response> {
        super::ask(self.addrs[i], &self.tls, request, Duration::from_secs(3)).await
    }

    /// Node `i`'s own object for `key` (as a replica read answers it).
    pub async fn local_object(&self, i: usize, key: &str) -> Result<Object> {
        super::local_object(self.addrs[i], &self.tls, key, Duration::from_secs(3)).await
    }

    /// The N=3 replicas of `key` (indices into this cluster), from `client`'s ring.
    pub fn replicas(&self, client: &Client, key: &str) -> Vec<usize> {
        let ring = client.ring();
        let p = ring.partition_of(key.as_bytes());
        ring.replicas(p, 3)
            .iter()
            .filter_map(|id| ring.member(*id))
            .filter_map(|m: &Member| self.addrs.iter().position(|a| *a == m.addr))
            .collect()
    }

    /// Waits until, for every key, all its replicas hold the same object and the same Merkle
    /// root for its partition (G3). Returns how long that took.
    pub async fn converge(
        &self,
        client: &Client,
        keys: &[String],
        limit: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            match self.diverging(client, keys).await {
                Ok(None) => return Ok(started.elapsed()),
                Ok(Some(why)) => last = why,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("replicas did not converge within {limit:?}: {last}")
    }

    async fn diverging(&self, client: &Client, keys: &[String]) -> Result<Option<String>> {
        let ring = client.ring();
        let held = self.own_objects_of_owners(client, keys).await?;
        let mut partitions: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
        for key in keys {
            let replicas = self.replicas(client, key);
            let objects: Vec<Option<&Object>> = replicas
                .iter()
                .map(|i| held.get(i).and_then(|h| h.get(key)))
                .collect();
            if objects.windows(2).any(|w| w[0] != w[1]) {
                return Ok(Some(format!("replicas {replicas:?} of {key} differ")));
            }
            for i in replicas {
                partitions
                    .entry(i)
                    .or_default()
                    .insert(ring.partition_of(key.as_bytes()));
            }
        }
        let mut roots: BTreeMap<(u32, usize), u64> = BTreeMap::new();
        for (&i, ps) in &partitions {
            let ps: Vec<u32> = ps.iter().copied().collect();
            let request = Request::AeRoots {
                epoch: ring.epoch(),
                partitions: ps.clone(),
            };
            match self.request(i, &request).await? {
                Response::Hashes(h) if h.len() == ps.len() => {
                    roots.extend(ps.iter().zip(h).map(|(p, h)| ((*p, i), h)));
                }
                Response::Error(e) => return Ok(Some(format!("node index {i}: {e}"))),
                other => bail!("unexpected reply {}", other.kind()),
            }
        }
        for p in partitions.values().flatten().collect::<BTreeSet<_>>() {
            let of_p: Vec<(usize, u64)> = roots
                .range((*p, 0)..=(*p, usize::MAX))
                .map(|((_, i), h)| (*i, *h))
                .collect();
            if of_p.windows(2).any(|w| w[0].1 != w[1].1) {
                let on: Vec<usize> = of_p.iter().map(|(i, _)| *i).collect();
                return Ok(Some(format!(
                    "Merkle roots of partition {p} differ on {on:?}"
                )));
            }
        }
        Ok(None)
    }

    /// Node `i`'s own objects for `keys` (hints excluded; keys it does not replicate by its
    /// ring, and absent keys, left out), read on one connection.
    pub async fn own_objects(&self, i: usize, keys: &[String]) -> Result<BTreeMap<String, Object>> {
        let conn = super::RawConn::open(self.addrs[i], &self.tls).await?;
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(1024) {
            let request = Request::ReadMany {
                keys: chunk
                    .iter()
                    .map(|k| bytes::Bytes::copy_from_slice(k.as_bytes()))
                    .collect(),
            };
            let reply = tokio::time::timeout(Duration::from_secs(15), conn.request(&request))
                .await
                .with_context(|| format!("node index {i}: no answer to a read of many keys"))??;
            match reply.body {
                Response::Objects(items) => {
                    for (k, o) in items {
                        out.insert(String::from_utf8_lossy(&k).into_owned(), o);
                    }
                }
                Response::Error(e) => bail!("node index {i}: {e}"),
                other => bail!("node index {i}: unexpected reply {}", other.kind()),
            }
        }
        conn.endpoint.close(0u32.into(), b"done");
        Ok(out)
    }

    /// [`FaultCluster::own_objects`] of every replica of `keys` by `client`'s ring, by node.
    pub async fn own_objects_of_owners(
        &self,
        client: &Client,
        keys: &[String],
    ) -> Result<BTreeMap<usize, BTreeMap<String, Object>>> {
        let mut by_node: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for key in keys {
            for i in self.replicas(client, key) {
                by_node.entry(i).or_default().push(key.clone());
            }
        }
        let mut held = BTreeMap::new();
        for (i, keys) in by_node {
            held.insert(i, self.own_objects(i, &keys).await?);
        }
        Ok(held)
    }

    /// Starts one more node outside the ring (its id is its index plus one) that knows only
    /// the first node; it waits to be joined.
    pub fn add_node(&mut self, tables_toml: &str) -> Result<usize> {
        let i = self.procs.add_node(tables_toml)?;
        self.addrs = self.procs.addrs().to_vec();
        Ok(i)
    }

    /// Stages each of `nodes` (ids) to join, through node `i`, once `i` knows them all.
    pub async fn stage_joins(&self, i: usize, nodes: &[NodeId]) -> Result<()> {
        super::eventually(
            Duration::from_secs(30),
            "the newcomers are known",
            || async {
                self.status(i)
                    .await
                    .is_ok_and(|s| nodes.iter().all(|id| s.view.members.contains_key(id)))
            },
        )
        .await?;
        for &id in nodes {
            let join = AdminRequest::Join {
                node: Some(id),
                addr: None,
            };
            self.admin(i, join).await?;
        }
        Ok(())
    }

    /// Sends an operator's request to node `i`; its message, or the error it answered.
    ///
    /// `AdminRequest::Commit` is sent as `ringkv commit` sends it: the plan, signed with the
    /// harness's operator certificate.
    pub async fn admin(&self, i: usize, request: AdminRequest) -> Result<String> {
        let reply = if matches!(request, AdminRequest::Commit) {
            let key = ringkv_net::quic::OperatorKey::from_identity(&self.tls)?;
            ringkv_node::operator::signed_commit(
                |r| async move { self.request(i, &Request::Admin(r)).await },
                &key,
                &Default::default(),
            )
            .await?
        } else {
            self.request(i, &Request::Admin(request)).await?
        };
        match reply {
            Response::Admin(AdminReply::Done { message }) => Ok(message),
            Response::Admin(other) => Ok(format!("{other:?}")),
            Response::Error(e) => bail!("node index {i}: {e}"),
            other => bail!("node index {i}: unexpected reply {}", other.kind()),
        }
    }

    /// The ring now in force and the ring the changes staged on node `i` lead to.
    pub async fn plan(&self, i: usize) -> Result<(ringkv_shared::Ring, ringkv_shared::Ring)> {
        match self.request(i, &Request::Admin(AdminRequest::Plan)).await? {
            Response::Admin(AdminReply::Plan {
                current, target, ..
            }) => Ok((*current, *target)),
            Response::Error(e) => bail!("node index {i}: {e}"),
            other => bail!("node index {i}: unexpected reply {}", other.kind()),
        }
    }

    /// Node `i`'s view of the cluster.
    pub async fn status(&self, i: usize) -> Result<NodeStatus> {
        match self
            .request(i, &Request::Admin(AdminRequest::Status))
            .await?
        {
            Response::Admin(AdminReply::Status(s)) => Ok(*s),
            other => bail!("node index {i}: unexpected reply {}", other.kind()),
        }
    }

    /// Node `i`'s counters.
    pub async fn stats(&self, i: usize) -> Result<NodeStats> {
        match self.request(i, &Request::Stats).await? {
            Response::Stats(s) => Ok(s),
            other => bail!("node index {i}: unexpected reply {}", other.kind()),
        }
    }

    /// Waits until every node in `nodes` has the ring at `epoch` in force and no transition.
    pub async fn settled(&self, nodes: &[usize], epoch: u64, limit: Duration) -> Result<()> {
        let what = format!("ring {epoch} not in force within {limit:?}");
        until_none(limit, &what, || async {
            let mut behind = Vec::new();
            for &i in nodes {
                match self.status(i).await {
                    Ok(s) if s.view.ring.epoch() == epoch && s.view.transition.is_none() => {}
                    Ok(s) => behind.push(format!(
                        "{i}: epoch {}{}",
                        s.view.ring.epoch(),
                        if s.view.transition.is_some() {
                            " in transition"
                        } else {
                            ""
                        }
                    )),
                    Err(e) => behind.push(format!("{i}: {e}")),
                }
            }
            behind
        })
        .await
    }

    /// Waits until no node in `nodes` holds a hint.
    pub async fn no_hints_left(&self, nodes: &[usize], limit: Duration) -> Result<()> {
        let what = format!("hints still pending after {limit:?}");
        until_none(limit, &what, || async {
            let mut holding = Vec::new();
            for &i in nodes {
                match self.stats(i).await {
                    Ok(s) if s.hints_pending == 0 => {}
                    Ok(s) => holding.push(format!("{i}: {} hints", s.hints_pending)),
                    Err(e) => holding.push(format!("{i}: {e}")),
                }
            }
            holding
        })
        .await
    }

    /// The final set of each key: the union of every replica's siblings.
    pub async fn final_sets(
        &self,
        client: &Client,
        keys: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<String>>> {
        let mut out = BTreeMap::new();
        for key in keys {
            let mut set = BTreeSet::new();
            for i in self.replicas(client, key) {
                for v in self.local_object(i, key).await?.values() {
                    set.extend(parse_set(v));
                }
            }
            out.insert(key.clone(), set);
        }
        Ok(out)
    }
}

/// Polls `lagging` every 200 ms until it names nothing; after `limit`, fails with `what` and
/// what it named last.
async fn until_none<F, Fut>(limit: Duration, what: &str, mut lagging: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let named = lagging().await;
        if named.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: {}", named.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the set workload recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    pub ops: Vec<Op>,
    pub max_siblings: usize,
}

/// Runs `writers` clients adding unique elements to `keys` by read-merge-write until `stop`.
pub async fn set_workload(
    client: Client,
    keys: Vec<String>,
    writers: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Result<Recorded> {
    let max_siblings = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (client, keys, stop, max_siblings) = (
            client.clone(),
            keys.clone(),
            stop.clone(),
            max_siblings.clone(),
        );
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            let mut ops = Vec::new();
            let mut seq = 0u64;
            let opts = CallOptions::default().timeout(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                let key = keys[rng.random_range(0..keys.len())].clone();
                let read = match client.get_with(key.clone(), opts).await {
                    Ok(v) => v,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                max_siblings.fetch_max(read.values.len(), Ordering::Relaxed);
                let mut set: BTreeSet<String> = union_of_sets(&read.values);
                let element = format!("w{w}-{seq}");
                seq += 1;
                set.insert(element.clone());
                let outcome = match client
                    .put_with(key.clone(), encode_set(&set), &read.context, opts)
                    .await
                {
                    Ok(_) => Outcome::Ok,
                    Err(e) if e.may_have_been_applied() => Outcome::Unknown,
                    Err(_) => Outcome::Failed,
                };
                if outcome != Outcome::Ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ops.push(Op {
                    key,
                    element,
                    outcome,
                });
            }
            ops
        });
    }
    let mut recorded = Recorded::default();
    while let Some(ops) = tasks.join_next().await {
        recorded.ops.extend(ops?);
    }
    recorded.max_siblings = max_siblings.load(Ordering::Relaxed);
    Ok(recorded)
}

/// The index of the node with id `id`.
pub fn index_of(id: NodeId) -> usize {
    id.0 as usize - 1
}
