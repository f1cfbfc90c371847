//! A simulated network (feature `sim`): every node and client of a simulated cluster in one
//! process, talking through [`SimNet`] instead of QUIC.
//!
//! A call is delivered to the handler registered at its address after a delay drawn from the
//! network's seeded RNG; the handler runs as its own task (so a caller that gives up does not
//! stop a write from landing), and its reply comes back after a second delay. Per message the
//! network may lose the request or the reply (the caller waits out [`Faults::timeout`], as a
//! QUIC caller waits out its idle timeout) or deliver the request twice. Cuts are directed
//! (`from → to`), so symmetric partitions, one-way partitions and bridges are sets of cuts.
//! A crashed endpoint's running handlers are aborted.
//!
//! Determinism: all decisions come from one seeded RNG, in the order calls are made. Run on a
//! current-thread tokio runtime with paused time, the same seed gives the same history. Every
//! message is written to the [`EventLog`], whose hash a test compares across two runs.
//!
//! Requests are handed over as values, not encoded: codec bugs are the fuzzers' and the
//! real-process tests' job; the simulator spends its time on interleavings.

mod log;

pub use log::{EventLog, Fields, KEPT};

use crate::transport::{Transport, TransportError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_shared::ids::NodeId;
use ringkv_shared::proto::{Reply, Request, Response};
use ringkv_shared::ring::Member;
use ringkv_shared::roles::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Serves one request at a simulated address, from a caller holding the given role (what its
/// certificate would name on the real network).
pub type Handler =
    Arc<dyn Fn(Role, Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// How the simulated network misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay (drawn uniformly in between, per message: this reorders).
    pub max_delay: Duration,
    /// Probability that a request, and independently its reply, is lost.
    pub loss: f64,
    /// Probability that a request is delivered twice.
    pub duplicate: f64,
    /// How long a caller waits for a lost message before it reports the connection lost.
    pub timeout: Duration,
    /// How long a call to a cut or absent address takes to fail.
    pub connect_timeout: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(2),
            loss: 0.0,
            duplicate: 0.0,
            timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

struct Endpoint {
    handler: Handler,
    tasks: Vec<tokio::task::AbortHandle>,
}

struct Inner {
    rng: StdRng,
    faults: Faults,
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    endpoints: BTreeMap<SocketAddr, Endpoint>,
    log: EventLog,
    next_message: u64,
}

/// The simulated network: cheap to clone, clones share it.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<Mutex<Inner>>,
}

/// What the network decided for one message.
struct Plan {
    id: u64,
    reachable: bool,
    request_lost: bool,
    reply_lost: bool,
    duplicate: bool,
    there: Duration,
    back: Duration,
    faults: Faults,
}

impl SimNet {
    /// A network whose decisions are drawn from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                rng: StdRng::seed_from_u64(seed),
                faults,
                cut: BTreeSet::new(),
                endpoints: BTreeMap::new(),
                log: EventLog::new(),
                next_message: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves requests to `addr` with `handler` (a node starting or restarting).
    pub fn listen(&self, addr: SocketAddr, handler: Handler) {
        let mut inner = self.lock();
        inner.log.record(format_args!("listen {addr}"));
        inner.endpoints.insert(
            addr,
            Endpoint {
                handler,
                tasks: Vec::new(),
            },
        );
    }

    /// Stops serving `addr` and aborts every request it is handling (a node crashing).
    pub fn crash(&self, addr: SocketAddr) {
        let mut inner = self.lock();
        inner.log.record(format_args!("crash {addr}"));
        if let Some(endpoint) = inner.endpoints.remove(&addr) {
            for task in endpoint.tasks {
                task.abort();
            }
        }
    }

    /// Messages from `from` to `to` are no longer delivered (one direction).
    pub fn cut(&self, from: SocketAddr, to: SocketAddr) {
        let mut inner = self.lock();
        inner.log.record(format_args!("cut {from} -> {to}"));
        inner.cut.insert((from, to));
    }

    /// Every cut heals.
    pub fn heal(&self) {
        let mut inner = self.lock();
        inner.log.record(format_args!("heal"));
        inner.cut.clear();
    }

    /// Changes how the network misbehaves from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut inner = self.lock();
        inner.log.record(format_args!("faults {faults:?}"));
        inner.faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Keeps the last `n` events as text from now on, for [`SimNet::recent`] (at most
    /// [`KEPT`]; none by default). The hash is the same either way.
    pub fn keep_events(&self, n: usize) {
        self.lock().log.keep(n);
    }

    /// Adds a line to the event log (workloads and the nemesis record what they do).
    pub fn record(&self, line: std::fmt::Arguments<'_>) {
        self.lock().log.record(line);
    }

    /// A draw from the network's RNG (for the scenario's own choices, so one seed decides all).
    pub fn random_u64(&self) -> u64 {
        self.lock().rng.random()
    }

    /// The hash of every event so far.
    pub fn log_hash(&self) -> u64 {
        self.lock().log.hash()
    }

    /// Events logged so far.
    pub fn log_len(&self) -> u64 {
        self.lock().log.len()
    }

    /// The last `n` events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        self.lock().log.recent(n)
    }

    /// A transport for the node or client at `me`, whose calls carry `role` (its simulated
    /// certificate).
    pub fn link(&self, me: SocketAddr, role: Role) -> SimLink {
        SimLink {
            inner: Arc::new(LinkInner {
                net: self.clone(),
                me,
                role,
                highest_epoch: AtomicU64::new(0),
                down: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn plan(&self, from: SocketAddr, to: SocketAddr, request: &Request) -> Plan {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let faults = inner.faults.clone();
        let id = inner.next_message;
        inner.next_message += 1;
        let reachable = inner.endpoints.contains_key(&to) && !inner.cut.contains(&(from, to));
        let rng = &mut inner.rng;
        let delay = |rng: &mut StdRng| {
            let (lo, hi) = (faults.min_delay.as_micros(), faults.max_delay.as_micros());
            let us = if hi > lo {
                rng.random_range(lo..=hi)
            } else {
                lo
            };
            Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
        };
        let there = delay(rng);
        let back = delay(rng);
        let request_lost = faults.loss > 0.0 && rng.random_bool(faults.loss.min(1.0));
        let reply_lost = (faults.loss > 0.0 && rng.random_bool(faults.loss.min(1.0)))
            || inner.cut.contains(&(to, from));
        let duplicate = may_arrive_twice(request)
            && faults.duplicate > 0.0
            && rng.random_bool(faults.duplicate.min(1.0));
        let kind = request.kind();
        let (key, hint_for) = label(request);
        let (there_us, back_us) = (there.as_micros(), back.as_micros());
        inner.log.record_with(
            |h| {
                h.update(b"msg");
                h.update(&id.to_le_bytes());
                hash_addr(h, from);
                hash_addr(h, to);
                h.update(kind.as_bytes());
                h.update(&[
                    u8::from(reachable),
                    u8::from(request_lost),
                    u8::from(reply_lost),
                    u8::from(duplicate),
                ]);
                h.update(&there_us.to_le_bytes());
                h.update(&back_us.to_le_bytes());
                h.update(&hint_for.map_or(0, |n| u64::from(n.0) + 1).to_le_bytes());
                if let Some(key) = key {
                    h.update(&(key.len() as u64).to_le_bytes());
                    h.update(key);
                }
            },
            |out| {
                let _ = write!(out, "msg {id} {from} -> {to} {kind}");
                if let Some(key) = key {
                    let _ = write!(out, " {}", String::from_utf8_lossy(key));
                }
                if let Some(owner) = hint_for {
                    let _ = write!(out, " hint-for={owner}");
                }
                let _ = write!(
                    out,
                    " reach={reachable} lost={request_lost}/{reply_lost} dup={duplicate} delay={there_us}/{back_us}us"
                );
            },
        );
        Plan {
            id,
            reachable,
            request_lost,
            reply_lost,
            duplicate,
            there,
            back,
            faults,
        }
    }

    /// Starts `request` on the handler at `to`, if it is still there; the receiver gets the
    /// reply (or closes if the endpoint crashes first).
    fn deliver(
        &self,
        to: SocketAddr,
        role: Role,
        request: Request,
    ) -> Option<tokio::sync::oneshot::Receiver<Reply>> {
        let mut inner = self.lock();
        let endpoint = inner.endpoints.get_mut(&to)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serve = (endpoint.handler)(role, request);
        let task = tokio::spawn(async move {
            let _ = tx.send(serve.await);
        });
        if endpoint.tasks.len() >= 64 {
            endpoint.tasks.retain(|t| !t.is_finished());
        }
        endpoint.tasks.push(task.abort_handle());
        Some(rx)
    }
}

/// Whether a real deployment can deliver `request` to a node twice. QUIC delivers a stream at
/// most once, so a request arrives twice only when its sender sends it again: coordinators,
/// hint delivery, anti-entropy and handoff resend replica-level messages (which must be
/// idempotent), and gossip repeats itself. A client does not resend a coordinated `Put` or
/// an admin request (a new `Put` would be a new version, a sibling, by design), so those are
/// never duplicated here.
fn may_arrive_twice(request: &Request) -> bool {
    !matches!(
        request,
        Request::Put { .. } | Request::RoutePut { .. } | Request::Admin(_)
    )
}

/// The key (and hint owner) of a request, for the event log.
fn label(request: &Request) -> (Option<&[u8]>, Option<NodeId>) {
    match request {
        Request::Write { key, hint_for, .. } => (Some(key), *hint_for),
        Request::Read { key }
        | Request::Put { key, .. }
        | Request::HintsFor { key }
        | Request::Reap { key, .. }
        | Request::RouteGet { key, .. }
        | Request::RoutePut { key, .. } => (Some(key), None),
        _ => (None, None),
    }
}

/// Feeds an address to the event log's hash.
fn hash_addr(h: &mut Fields, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => h.update(&a.ip().octets()),
        SocketAddr::V6(a) => h.update(&a.ip().octets()),
    }
    h.update(&addr.port().to_le_bytes());
}

struct LinkInner {
    net: SimNet,
    me: SocketAddr,
    role: Role,
    highest_epoch: AtomicU64,
    /// Failure detector: consecutive failures and until when a node counts as down.
    down: Mutex<BTreeMap<NodeId, (u32, Instant)>>,
}

/// One participant's view of the [`SimNet`]: its address, the highest ring epoch its replies
/// carried, and its failure detector (the same back-off as the QUIC transport's).
#[derive(Clone)]
pub struct SimLink {
    inner: Arc<LinkInner>,
}

impl SimLink {
    /// This participant's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.me
    }

    /// The network this link is on.
    pub fn net(&self) -> &SimNet {
        &self.inner.net
    }

    /// The highest ring epoch any reply carried.
    pub fn highest_epoch(&self) -> u64 {
        self.inner.highest_epoch.load(Ordering::Relaxed)
    }

    /// Calls an address (seeds, whose node ids are not known yet).
    pub async fn call_addr(
        &self,
        to: SocketAddr,
        request: Request,
    ) -> Result<Response, TransportError> {
        let net = &self.inner.net;
        let plan = net.plan(self.inner.me, to, &request);
        if !plan.reachable {
            tokio::time::sleep(plan.faults.connect_timeout).await;
            return Err(TransportError::Connect {
                addr: to,
                reason: format!("simulated: unreachable (message {})", plan.id),
            });
        }
        let lost = |what: &str| TransportError::Lost {
            addr: to,
            reason: format!("simulated: {what} (message {})", plan.id),
        };
        tokio::time::sleep(plan.there).await;
        if plan.duplicate {
            let copy = request.clone();
            let net = net.clone();
            let again = plan.there;
            let role = self.inner.role.clone();
            tokio::spawn(async move {
                tokio::time::sleep(again).await;
                let _ = net.deliver(to, role, copy);
            });
        }
        let reply = if plan.request_lost {
            None
        } else {
            net.deliver(to, self.inner.role.clone(), request)
        };
        let Some(reply) = reply else {
            tokio::time::sleep(plan.faults.timeout).await;
            return Err(lost("request lost"));
        };
        let Ok(reply) = reply.await else {
            return Err(lost("peer crashed"));
        };
        if plan.reply_lost {
            tokio::time::sleep(plan.faults.timeout).await;
            return Err(lost("reply lost"));
        }
        tokio::time::sleep(plan.back).await;
        let kind = reply.body.kind();
        net.lock().log.record_with(
            |h| {
                h.update(b"reply");
                h.update(&plan.id.to_le_bytes());
                h.update(kind.as_bytes());
            },
            |out| {
                let _ = write!(out, "reply {} {kind}", plan.id);
            },
        );
        self.inner
            .highest_epoch
            .fetch_max(reply.epoch, Ordering::Relaxed);
        Ok(reply.body)
    }

    fn down(&self) -> MutexGuard<'_, BTreeMap<NodeId, (u32, Instant)>> {
        self.inner.down.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Transport for SimLink {
    async fn call(&self, to: &Member, request: Request) -> Result<Response, TransportError> {
        let result = self.call_addr(to.addr, request).await;
        match &result {
            Ok(_) => {
                self.down().remove(&to.id);
            }
            Err(TransportError::Connect { .. } | TransportError::Lost { .. }) => {
                let mut down = self.down();
                let entry = down.entry(to.id).or_insert((0, Instant::now()));
                entry.0 = entry.0.saturating_add(1);
                let backoff = Duration::from_millis(100)
                    .saturating_mul(1 << (entry.0 - 1).min(16))
                    .min(Duration::from_secs(5));
                entry.1 = Instant::now() + backoff;
            }
            Err(_) => {}
        }
        result
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.down()
            .get(&node)
            .is_some_and(|(_, until)| *until > Instant::now())
    }

    fn is_unreachable(&self, node: NodeId) -> bool {
        self.down().contains_key(&node)
    }
}
