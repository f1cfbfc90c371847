//! [`Client`]: quorum get, put and delete, in direct or router mode.

use crate::error::ClientError;
use crate::observer::{Operation, OperationKind};
use crate::options::{CallOptions, Defaults, Mode};
use crate::versions::{Context, Versions};
use arc_swap::ArcSwap;
use bytes::Bytes;
use ringkv_net::Wire;
use ringkv_net::fanout;
use ringkv_net::transport::{Transport, TransportError};
use ringkv_shared::proto::{NodeStats, PutReply, Quorum, Request, Response};
use ringkv_shared::{Limits, Member, NodeId, ReplyError, Ring};
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{Instrument, debug, debug_span};

/// A handle to a ringkv cluster. Cheap to clone; clones share connections and the ring cache.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) transport: Wire,
    pub(crate) ring: ArcSwap<Ring>,
    pub(crate) seeds: Vec<SocketAddr>,
    /// Seeds given by name, resolved again whenever the client goes back to its seeds.
    pub(crate) seed_hosts: Vec<String>,
    pub(crate) defaults: Defaults,
    pub(crate) mode: Mode,
    pub(crate) limits: Limits,
    pub(crate) refreshing: tokio::sync::Mutex<()>,
    /// The actors of mergeable updates, with the state each last wrote (see [`crate::lanes`]).
    pub(crate) lanes: crate::lanes::Lanes,
    pub(crate) next_coordinator: std::sync::atomic::AtomicUsize,
    /// Direct-mode read hedging (from `defaults.read_hedge`), with its latency record.
    pub(crate) hedger: Option<ringkv_shared::hedge::Hedger>,
    /// The application's hook for every finished operation, if it set one.
    pub(crate) observer: Option<Arc<dyn crate::observer::OperationObserver>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("mode", &self.inner.mode)
            .field("defaults", &self.inner.defaults)
            .field("ring_epoch", &self.inner.ring.load().epoch())
            .finish_non_exhaustive()
    }
}

/// How often one call fetches the ring and tries again after a ring change.
const MAX_RING_RETRIES: u32 = 5;

/// Settles one call's N, quorum and deadline from the defaults and the overrides.
fn settle(
    defaults: &Defaults,
    opts: &CallOptions,
    default_quorum: u8,
) -> Result<Quorum, ClientError> {
    let n = opts.n.unwrap_or(defaults.n);
    let required = opts.quorum.unwrap_or(default_quorum);
    let timeout = opts.timeout.unwrap_or(defaults.timeout);
    Quorum::check_counts(n, required).map_err(|reason| ClientError::InvalidInput { reason })?;
    Ok(Quorum {
        n,
        required,
        timeout_ms: u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
    })
}

fn key_label(key: &[u8]) -> String {
    let shown = &key[..key.len().min(64)];
    String::from_utf8_lossy(shown).into_owned()
}

impl Client {
    /// The cached ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.ring.load_full()
    }

    /// Reads `key` with the default R.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Versions, ClientError> {
        self.get_with(key, CallOptions::default()).await
    }

    /// Reads `key`: returns once R replicas answered, with every concurrent value and the
    /// context to write back with. Replicas that answered with older versions are repaired in
    /// the background.
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        opts: CallOptions,
    ) -> Result<Versions, ClientError> {
        let started = self.started();
        let read = self.get_inner(key.into(), opts).await;
        self.observe(OperationKind::Get, read.as_ref().map(|_| ()), started);
        read
    }

    /// When an operation starts, if an observer will be told (the clock is read only then).
    fn started(&self) -> Option<std::time::Instant> {
        self.inner.observer.is_some().then(std::time::Instant::now)
    }

    /// Reports one finished operation to the application's observer, if any.
    fn observe(
        &self,
        kind: OperationKind,
        result: Result<(), &ClientError>,
        started: Option<std::time::Instant>,
    ) {
        if let (Some(observer), Some(started)) = (&self.inner.observer, started) {
            observer.observe(&Operation {
                kind,
                result,
                duration: started.elapsed(),
            });
        }
    }

    async fn get_inner(&self, key: Bytes, opts: CallOptions) -> Result<Versions, ClientError> {
        let q = settle(&self.inner.defaults, &opts, self.inner.defaults.r)?;
        self.check(&key, None)?;
        let span = debug_span!("get", key = %key_label(&key), r = q.required, n = q.n, mode = ?self.inner.mode);
        async {
            // A reply from a newer ring means this read may have asked nodes that no longer
            // replicate the key (they answer only with hints): read again by the current ring.
            let read = || async {
                match self.inner.mode {
                    Mode::Direct => {
                        let preference = self.preference(&key);
                        let plan = fanout::ReadPlan {
                            key: key.clone(),
                            preference,
                            n: q.n.into(),
                            required: q.required.into(),
                            timeout: q.timeout(),
                            // A client may not write replicas: an owner repairs for it.
                            repair: fanout::Repair::AskOwner,
                            on_repair: None,
                        };
                        fanout::read_with_hedger(
                            &self.inner.transport,
                            plan,
                            self.inner.hedger.as_ref(),
                        )
                        .await
                        .map(|r| (r.object, r.answers))
                        .map_err(ClientError::from)
                    }
                    Mode::Router => {
                        let req = Request::RouteGet {
                            key: key.clone(),
                            quorum: q,
                        };
                        match self.route(req, q).await {
                            Ok(Response::Read { object, answers }) => Ok((object, answers)),
                            Ok(other) => Err(unexpected(other)),
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            let (object, answers) = self.with_ring_retries(true, read).await?;
            self.after_reply();
            Ok(Versions::from_object(&object, answers))
        }
        .instrument(span)
        .await
    }

    /// Writes `value` with the default W.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        context: &Context,
    ) -> Result<Context, ClientError> {
        self.put_with(key, value, context, CallOptions::default())
            .await
    }

    /// Writes `value` for `key`, replacing the versions `context` covers. Returns once W
    /// replicas hold the write, with the context to write the key next with.
    ///
    /// The returned context covers `context` and this write, and **no version this caller has
    /// not seen**: a loop that writes, then writes again with the returned context, needs no
    /// read in between and never drops a value another writer stored meanwhile (that value
    /// stays a sibling, seen on the next read). It is not the stored object's whole context:
    /// that would also cover concurrent siblings, and writing with it would overwrite them
    /// unseen. To get those siblings back with the write, use [`Client::put_returning`].
    pub async fn put_with(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        context: &Context,
        opts: CallOptions,
    ) -> Result<Context, ClientError> {
        let reply = self
            .write(key.into(), Some(value.into()), context, opts, false)
            .await?;
        Ok(Context::from_clock(&reply.next))
    }

    /// Writes like [`Client::put_with`] and returns what the coordinating replica holds for
    /// the key after the write (Riak's `return_body`): this write's value and every sibling
    /// written concurrently that the coordinator has, with the context covering all of them.
    /// A read-modify-write loop on a hot key can merge those values and write again with that
    /// context, without a read per write.
    ///
    /// This is one replica's state, not a quorum read: other replicas may hold siblings the
    /// coordinator has not seen yet; they are kept (the context does not cover them).
    /// [`Versions::answers`] is empty.
    pub async fn put_returning(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        context: &Context,
        opts: CallOptions,
    ) -> Result<Versions, ClientError> {
        let value = value.into();
        let reply = self
            .write(key.into(), Some(value.clone()), context, opts, true)
            .await?;
        Ok(match reply.body {
            Some(body) => Versions::from_object(&body, Vec::new()),
            // A coordinator that left the body out: what this writer knows is its own write.
            None => Versions {
                values: vec![value],
                context: Context::from_clock(&reply.next),
                answers: Vec::new(),
            },
        })
    }

    /// Deletes `key` with the default W: writes a tombstone replacing what `context` covers.
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        context: &Context,
    ) -> Result<Context, ClientError> {
        self.delete_with(key, context, CallOptions::default()).await
    }

    /// Deletes `key` with per-call options.
    pub async fn delete_with(
        &self,
        key: impl Into<Bytes>,
        context: &Context,
        opts: CallOptions,
    ) -> Result<Context, ClientError> {
        let reply = self.write(key.into(), None, context, opts, false).await?;
        Ok(Context::from_clock(&reply.next))
    }

    /// A put made by [`Client::modify`]: unlike a plain put it keeps the key's other lanes,
    /// and it asks for the stored object back.
    pub(crate) async fn put_lane(
        &self,
        key: Bytes,
        value: Bytes,
        context: &Context,
        opts: CallOptions,
    ) -> Result<PutReply, ClientError> {
        self.write_inner(key, Some(value), context, opts, true)
            .await
    }

    async fn write(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        context: &Context,
        opts: CallOptions,
        return_body: bool,
    ) -> Result<PutReply, ClientError> {
        // A plain put or delete replaces what mergeable updates through this client wrote:
        // their lanes must not merge the old state back in.
        self.inner.lanes.forget(&key);
        self.write_inner(key, value, context, opts, return_body)
            .await
    }

    /// `write_inner_unobserved`, reported to the observer.
    async fn write_inner(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        context: &Context,
        opts: CallOptions,
        return_body: bool,
    ) -> Result<PutReply, ClientError> {
        let started = self.started();
        let kind = if value.is_some() {
            OperationKind::Put
        } else {
            OperationKind::Delete
        };
        let written = self
            .write_inner_unobserved(key, value, context, opts, return_body)
            .await;
        self.observe(kind, written.as_ref().map(|_| ()), started);
        written
    }

    async fn write_inner_unobserved(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        context: &Context,
        opts: CallOptions,
        return_body: bool,
    ) -> Result<PutReply, ClientError> {
        let q = settle(&self.inner.defaults, &opts, self.inner.defaults.w)?;
        self.check(&key, value.as_deref())?;
        let clock = context
            .to_clock()
            .map_err(|reason| ClientError::InvalidInput { reason })?;
        let op = if value.is_some() { "put" } else { "delete" };
        let span = debug_span!("write", op, key = %key_label(&key), w = q.required, n = q.n, mode = ?self.inner.mode);
        async {
            let write = || async {
                match self.inner.mode {
                    Mode::Direct => {
                        // Any owner can coordinate; rotating the first choice spreads a hot
                        // key's writes over all its owners instead of piling them onto one node.
                        let mut replicas = self.replicas(&key, q.n);
                        if !replicas.is_empty() {
                            let turn = self
                                .inner
                                .next_coordinator
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let len = replicas.len();
                            replicas.rotate_left(turn % len);
                        }
                        let put = fanout::DelegatedPut {
                            key: key.clone(),
                            context: clock.clone(),
                            value: value.clone(),
                            quorum: q,
                            return_body,
                        };
                        fanout::delegate_put(&self.inner.transport, put, &replicas)
                            .await
                            .map_err(ClientError::from)
                    }
                    Mode::Router => {
                        let req = Request::RoutePut {
                            key: key.clone(),
                            context: clock.clone(),
                            value: value.clone(),
                            quorum: q,
                            return_body,
                        };
                        match self.route(req, q).await {
                            Ok(Response::Put(reply)) => Ok(reply),
                            Ok(other) => Err(unexpected(other)),
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            // Retried only when the write certainly was not applied anywhere.
            let reply = self.with_ring_retries(false, write).await?;
            self.after_reply();
            Ok(reply)
        }
        .instrument(span)
        .await
    }

    /// Runs `call` until it succeeds, fails in a way a fresher ring cannot help (see
    /// [`worth_retrying`]), or has been retried [`MAX_RING_RETRIES`] times, fetching the ring
    /// before each retry. With `when_newer_ring` (reads), a call that met a ring newer than
    /// the one it was routed by is repeated too.
    async fn with_ring_retries<T, F, Fut>(
        &self,
        when_newer_ring: bool,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            let epoch = self.inner.ring.load().epoch();
            let result = call().await;
            let stale = when_newer_ring && self.inner.transport.highest_epoch() > epoch;
            if attempt < MAX_RING_RETRIES && (stale || self.should_retry(&result)) {
                attempt += 1;
                self.catch_up(attempt).await;
                continue;
            }
            return result;
        }
    }

    /// Whether a failed call is worth repeating after fetching the ring (see
    /// [`worth_retrying`]).
    fn should_retry<T>(&self, result: &Result<T, ClientError>) -> bool {
        result.as_ref().err().is_some_and(worth_retrying)
    }

    /// Fetches the current ring before a retry, pausing a little longer each time so that a
    /// node still learning the new ring by gossip can catch up.
    async fn catch_up(&self, attempt: u32) {
        if let Err(e) = self.refresh_ring().await {
            debug!(error = %e, "ring refresh before a retry failed");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
    }

    fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), ClientError> {
        self.inner
            .limits
            .check(key, value)
            .map_err(|reason| ClientError::InvalidInput { reason })
    }

    /// The preference list of `key`'s partition, from the cached ring.
    fn preference(&self, key: &[u8]) -> Vec<Member> {
        self.inner.ring.load().preference_members(key)
    }

    /// The first `n` replicas (owners) of `key`'s partition, from the cached ring.
    fn replicas(&self, key: &[u8], n: u8) -> Vec<Member> {
        let mut preference = self.preference(key);
        preference.truncate(n.into());
        preference
    }

    /// Router mode: sends `req` to a random node not known down, trying others (in random
    /// order) while none can be reached.
    async fn route(&self, req: Request, q: Quorum) -> Result<Response, ClientError> {
        let ring = self.inner.ring.load_full();
        let transport = &self.inner.transport;
        // The RNG is a temporary, dropped before the await below: client futures stay `Send`.
        let mut order: Vec<&Member> = ring
            .members()
            .filter(|m| !transport.is_down(m.id))
            .collect();
        ringkv_net::ambient::shuffle(&mut order);
        let mut down: Vec<&Member> = ring.members().filter(|m| transport.is_down(m.id)).collect();
        ringkv_net::ambient::shuffle(&mut down);
        order.extend(down);
        let deadline = tokio::time::Instant::now() + q.timeout();
        Ok(
            fanout::first_reachable(transport, &order, q.required, deadline, |_, _| req.clone())
                .await?,
        )
    }

    /// Refreshes the ring in the background when a reply carried a newer epoch.
    fn after_reply(&self) {
        let seen = self.inner.transport.highest_epoch();
        if seen <= self.inner.ring.load().epoch() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.refresh_ring().await {
                debug!(error = %e, "ring refresh failed");
            }
        });
    }

    /// Fetches the ring again: from the cached members first, then from the seeds.
    pub async fn refresh_ring(&self) -> Result<(), ClientError> {
        let _one = self.inner.refreshing.lock().await;
        let mut addrs: Vec<SocketAddr> = self.inner.ring.load().members().map(|m| m.addr).collect();
        let mut seeds = self.inner.seeds.clone();
        for host in &self.inner.seed_hosts {
            match ringkv_net::quic::resolve_host(host).await {
                Ok(now) => seeds.extend(now),
                Err(reason) => debug!(%host, %reason, "a seed name does not resolve now"),
            }
        }
        for seed in seeds {
            if !addrs.contains(&seed) {
                addrs.push(seed);
            }
        }
        let newest = self.inner.transport.highest_epoch();
        let ring = fetch_ring(&self.inner.transport, &addrs, newest).await?;
        if ring.epoch() >= self.inner.ring.load().epoch() {
            self.inner.ring.store(Arc::new(ring));
        }
        Ok(())
    }

    /// Every member's counters (hints pending and delivered, anti-entropy rounds, keys
    /// repaired, bytes exchanged, ...), asked in parallel; a member that does not answer within
    /// the default timeout is listed with its error.
    pub async fn stats(&self) -> Vec<(NodeId, Result<NodeStats, ClientError>)> {
        let ring = self.inner.ring.load_full();
        let timeout = self.inner.defaults.timeout;
        let mut calls = tokio::task::JoinSet::new();
        for m in ring.members().cloned() {
            let t = self.inner.transport.clone();
            calls.spawn(async move {
                let r = match tokio::time::timeout(timeout, t.call(&m, Request::Stats)).await {
                    Ok(Ok(Response::Stats(s))) => Ok(s),
                    Ok(Ok(other)) => Err(unexpected(other)),
                    Ok(Err(e)) => Err(ClientError::Unavailable {
                        errors: vec![(m.addr, e.to_string())],
                    }),
                    Err(_) => Err(ClientError::Unavailable {
                        errors: vec![(m.addr, "no answer before the deadline".into())],
                    }),
                };
                (m.id, r)
            });
        }
        let mut out = Vec::new();
        while let Some(Ok(r)) = calls.join_next().await {
            out.push(r);
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Fault injection (feature `testing`): this client behaves as if the network to `addrs`
    /// were cut.
    #[cfg(feature = "testing")]
    pub fn block_for_testing(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.inner.transport.block(addrs);
    }

    /// Ends [`Client::block_for_testing`].
    #[cfg(feature = "testing")]
    pub fn heal_for_testing(&self) {
        self.inner.transport.heal();
    }

    /// Closes every connection. Calls made afterwards fail.
    pub fn close(&self) {
        if let Some(quic) = self.inner.transport.quic() {
            quic.endpoint().close(0u32.into(), b"client closed");
        }
    }
}

fn unexpected(resp: Response) -> ClientError {
    match resp {
        Response::Error(e) => e.into(),
        other => ClientError::Node {
            error: ReplyError::Unavailable {
                reason: format!("unexpected reply {}", other.kind()),
            },
        },
    }
}

/// Whether a failed call is worth repeating after fetching the ring: the node asked no longer
/// replicates the key (a ring change; it refused before stamping anything), or no node of the
/// cached ring could be reached at all (the cluster moved; the seeds know where). Neither
/// applied anything, so a retry cannot store a write twice. Every other error of a write may
/// have been applied ([`ClientError::may_have_been_applied`]) and is returned as it is: a
/// retry would stamp the value a second time.
pub(crate) fn worth_retrying(error: &ClientError) -> bool {
    use ringkv_shared::ReplicaError as E;
    match error {
        ClientError::Node {
            error: ReplyError::NotReplica { .. },
        } => true,
        ClientError::QuorumFailed {
            succeeded: 0,
            errors,
            ..
        } => {
            errors
                .iter()
                .any(|(_, e)| matches!(e, E::Unreachable { .. }))
                && errors.iter().all(|(_, e)| {
                    matches!(e, E::Unreachable { .. } | E::MarkedDown | E::NotAwaited)
                })
        }
        _ => false,
    }
}

/// Asks each address in turn for its ring; returns the first at epoch `at_least` or newer, else
/// the newest any address gave.
pub(crate) async fn fetch_ring(
    transport: &Wire,
    addrs: &[SocketAddr],
    at_least: u64,
) -> Result<Ring, ClientError> {
    let mut errors = Vec::new();
    let mut refused = Vec::new();
    let mut best: Option<Ring> = None;
    for &addr in addrs {
        match transport.call_addr(addr, Request::GetRing).await {
            Ok(Response::Ring(ring)) if ring.epoch() >= at_least => return Ok(ring),
            Ok(Response::Ring(ring)) => {
                if best.as_ref().is_none_or(|b| b.epoch() < ring.epoch()) {
                    best = Some(ring);
                }
            }
            Ok(Response::Error(e)) => errors.push((addr, e.to_string())),
            Ok(other) => errors.push((addr, format!("unexpected reply {}", other.kind()))),
            Err(TransportError::Refused { reason, .. }) => refused.push((addr, reason)),
            Err(e) => errors.push((addr, e.to_string())),
        }
    }
    if let Some(ring) = best {
        return Ok(ring);
    }
    if errors.is_empty() && !refused.is_empty() {
        return Err(ClientError::Tls {
            reason: format!(
                "every seed refused the handshake; is the client certificate signed by the cluster CA, \
                 and the CA file the cluster's? ({})",
                refused
                    .iter()
                    .map(|(a, r)| format!("{a}: {r}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    errors.extend(refused);
    Err(ClientError::Unavailable { errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// A retry is taken only when nothing can have been stamped; a write the coordinator
    /// stored, whatever else went wrong, is reported, never repeated.
    #[test]
    fn only_writes_that_were_applied_nowhere_are_retried() {
        use ringkv_shared::{NodeId, ReplicaError as E};
        let unreachable = || E::Unreachable {
            reason: "connection refused".into(),
        };
        let quorum = |succeeded, errors| ClientError::QuorumFailed {
            required: 2,
            succeeded,
            errors,
        };
        // Nothing reachable, or a node that refused before stamping: retried.
        assert!(worth_retrying(&quorum(0, vec![(NodeId(1), unreachable())])));
        assert!(worth_retrying(&quorum(
            0,
            vec![(NodeId(1), unreachable()), (NodeId(2), E::MarkedDown)]
        )));
        let not_replica = ClientError::from(ReplyError::NotReplica {
            node: NodeId(1),
            partition: 3,
        });
        assert!(worth_retrying(&not_replica));
        // Stored somewhere: never retried, and reported as maybe applied.
        let stored = [
            quorum(1, vec![(NodeId(2), unreachable())]),
            ClientError::from(ReplyError::RingChangeQuorumFailed {
                required: 2,
                held: 2,
                held_by_target: 1,
                errors: vec![(NodeId(6), unreachable())],
            }),
            ClientError::from(ReplyError::OutcomeUnknown {
                node: NodeId(1),
                reason: "stream reset".into(),
            }),
        ];
        for e in &stored {
            assert!(!worth_retrying(e), "{e}");
            assert!(e.may_have_been_applied(), "{e}");
        }
        // A timeout is not "unreachable": the replica may have it.
        assert!(!worth_retrying(&quorum(0, vec![(NodeId(1), E::TimedOut)])));
    }

    /// Applications spawn client calls on multi-threaded runtimes: every call's future must be
    /// `Send` (a compile-time check; the body never runs to completion).
    #[allow(dead_code, clippy::diverging_sub_expression)]
    fn client_futures_are_send(c: Client) {
        assert_send(&c.get("k"));
        assert_send(&c.put("k", "v", &Context::empty()));
        assert_send(&c.delete("k", &Context::empty()));
        assert_send(&c.refresh_ring());
    }

    #[test]
    fn settle_applies_overrides_and_rejects_impossible_quorums() {
        let d = Defaults::default();
        let q = settle(&d, &CallOptions::default().quorum(3), d.w).unwrap();
        assert_eq!((q.n, q.required, q.timeout_ms), (3, 3, 2000));
        assert!(settle(&d, &CallOptions::default().quorum(4), d.w).is_err());
        assert!(settle(&d, &CallOptions::default().quorum(0), d.r).is_err());
    }
}
