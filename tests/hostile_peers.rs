//! A peer that holds a valid certificate of the cluster but the wrong role: three real
//! `ringkv-node` processes, and a hostile application with only a client certificate (and a
//! node with a node certificate) sending every request reserved for nodes and operators. Each
//! is refused as forbidden, and afterwards the data and every node's view are unchanged.

mod support;

use anyhow::{Result, bail};
use bytes::Bytes;
use ringkv::{CallOptions, Context};
use ringkv_node::certs::Role;
use ringkv_shared::handoff::Transfer;
use ringkv_shared::membership::View;
use ringkv_shared::proto::{AdminRequest, Request, Response};
use ringkv_shared::{Member, NodeId, Object, ReplyError, Ring};
use std::time::Duration;
use support::RawConn;
use support::real::RealCluster;

/// What a hostile holder of a valid certificate sends: a silent delete by a covering clock, a
/// poisoned counter, an early reap, key enumeration, view injection and every admin request.
fn reserved_requests(key: &Bytes, acked: &Object, epoch: u64) -> Vec<Request> {
    // A clock that covers every version of the key, with no value: merged, it deletes.
    let mut silent_delete = Object::new();
    silent_delete
        .update(acked.clock(), None, ringkv_shared::ActorId(u64::MAX >> 1))
        .expect("a fresh counter");
    let phantom = Member::at(NodeId(9), "127.0.0.1:9".parse().expect("address"));
    let view = View::newcomer(phantom, 64).expect("a view");
    vec![
        Request::Write {
            key: key.clone(),
            object: silent_delete.clone(),
            hint_for: None,
        },
        Request::Write {
            key: key.clone(),
            object: silent_delete.clone(),
            hint_for: Some(NodeId(999)),
        },
        Request::WriteMany {
            epoch,
            items: vec![(key.clone(), silent_delete.clone())],
        },
        Request::Handoff {
            epoch,
            transfer: Transfer {
                partition: 0,
                from: NodeId(1),
                to: NodeId(2),
            },
            items: vec![(key.clone(), silent_delete)],
        },
        Request::Reap {
            key: key.clone(),
            clock: acked.clock().clone(),
        },
        Request::AeLeaves { partition: 0 },
        Request::AeEntries {
            partition: 0,
            leaves: vec![0, 1, 2],
        },
        Request::ReadMany {
            keys: vec![key.clone()],
        },
        Request::HintsFor { key: key.clone() },
        Request::AeRoots {
            epoch,
            partitions: vec![0],
        },
        Request::Gossip {
            view: Box::new(view),
        },
        Request::Admin(AdminRequest::Status),
        Request::Admin(AdminRequest::Join {
            node: Some(NodeId(9)),
            addr: Some("127.0.0.1:9".parse().expect("address")),
        }),
        Request::Admin(AdminRequest::Leave { node: NodeId(2) }),
        Request::Admin(AdminRequest::Plan),
        Request::Admin(AdminRequest::Commit),
        Request::Admin(AdminRequest::Clear),
    ]
}

fn is_forbidden(response: &Response) -> bool {
    matches!(response, Response::Error(ReplyError::Forbidden { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_can_do_nothing_reserved_for_nodes_or_operators() -> Result<()> {
    let cluster = RealCluster::start(3, "")?;
    let admin_client = cluster.client().await?;
    let w3 = CallOptions::default().quorum(3);
    admin_client
        .put_with("victim", "acknowledged", &Context::empty(), w3)
        .await?;
    let key = Bytes::from_static(b"victim");
    let acked = cluster.local_object(0, "victim").await?;
    let before: Vec<View> = {
        let mut views = Vec::new();
        for i in 0..3 {
            views.push(cluster.status(i).await?.view);
        }
        views
    };
    let epoch = before[0].ring.epoch();

    // The application's own certificate, and a real node's (which is not an operator).
    let app = cluster.tls_for(&Role::Client, "hostile-app")?;
    let node = cluster.tls_for(&Role::Node(NodeId(2)), "n2")?;
    let mut refused = 0;
    for i in 0..3 {
        let conn = RawConn::open(cluster.addrs[i], &app).await?;
        for request in reserved_requests(&key, &acked, epoch) {
            let reply = conn.request(&request).await?;
            if !is_forbidden(&reply.body) {
                bail!(
                    "node {} accepted `{}` from a client certificate: {:?}",
                    i + 1,
                    request.kind(),
                    reply.body
                );
            }
            refused += 1;
        }
        let conn = RawConn::open(cluster.addrs[i], &node).await?;
        for request in [
            Request::Admin(AdminRequest::Join {
                node: Some(NodeId(9)),
                addr: None,
            }),
            Request::Admin(AdminRequest::Commit),
        ] {
            let reply = conn.request(&request).await?;
            if !is_forbidden(&reply.body) {
                bail!(
                    "node {} accepted `{}` from a node certificate",
                    i + 1,
                    request.kind()
                );
            }
            refused += 1;
        }
    }
    println!("{refused} reserved requests refused on 3 nodes");

    // Even a node may not make another hold hints for a node that does not exist, nor make
    // it build a reply of thousands of copies of one object.
    let conn = RawConn::open(cluster.addrs[0], &node).await?;
    let mut hint = Object::new();
    hint.update(
        &ringkv_shared::VersionVector::new(),
        Some(Bytes::from_static(b"x")),
        ringkv_shared::ActorId(7),
    )
    .expect("a fresh counter");
    match conn
        .request(&Request::Write {
            key: Bytes::from_static(b"hinted"),
            object: hint,
            hint_for: Some(NodeId(999)),
        })
        .await?
        .body
    {
        Response::Error(ReplyError::InvalidInput { reason }) => {
            assert!(reason.contains("999"), "{reason}")
        }
        other => bail!("a hint for a node that does not exist was taken: {other:?}"),
    }
    let copies = vec![key.clone(); 4096];
    match conn
        .request(&Request::ReadMany { keys: copies })
        .await?
        .body
    {
        Response::Objects(objects) => assert!(objects.len() <= 1, "{} objects", objects.len()),
        other => bail!("ReadMany of one key 4096 times: {other:?}"),
    }

    // A forged context cannot poison the key: a counter at the top of the range is refused
    // at admission, on every node, and the key stays writable.
    let actor = acked.clock().entries()[0].0;
    let poisoned = ringkv_shared::VersionVector::from_entries([(actor, u64::MAX)]);
    for i in 0..3 {
        let conn = RawConn::open(cluster.addrs[i], &app).await?;
        let reply = conn
            .request(&Request::Put {
                key: key.clone(),
                context: poisoned.clone(),
                value: Some(Bytes::from_static(b"poison")),
                quorum: ringkv_shared::proto::Quorum {
                    n: 3,
                    required: 2,
                    timeout_ms: 3_000,
                },
                return_body: false,
            })
            .await?;
        match reply.body {
            Response::Error(ReplyError::InvalidInput { reason }) => {
                assert!(reason.contains("counter"), "{reason}")
            }
            other => bail!("node {} took a poisoned context: {other:?}", i + 1),
        }
    }

    // What a client may do still works with the same certificate.
    let conn = RawConn::open(cluster.addrs[0], &app).await?;
    match conn
        .request(&Request::Read { key: key.clone() })
        .await?
        .body
    {
        Response::Object(o) => assert_eq!(o, acked, "a client may read a replica"),
        other => bail!("a client's read was refused: {other:?}"),
    }
    let app_client = ringkv::Client::builder()
        .seeds(cluster.addrs.iter().copied())
        .tls(app)
        .timeout(Duration::from_secs(3))
        .build()
        .await?;
    let read = app_client
        .get_with("victim", CallOptions::default().quorum(3))
        .await?;
    assert_eq!(
        read.values,
        vec![Bytes::from_static(b"acknowledged")],
        "the acknowledged value is intact at R=3"
    );
    app_client.put("app-key", "v", &Context::empty()).await?;

    // Nothing changed: every copy of the key, every view.
    for (i, earlier) in before.iter().enumerate() {
        assert_eq!(
            cluster.local_object(i, "victim").await?,
            acked,
            "node {} holds the acknowledged copy",
            i + 1
        );
        let view = cluster.status(i).await?.view;
        assert_eq!(view.members, earlier.members, "node {} members", i + 1);
        assert_eq!(view.ring, earlier.ring, "node {} ring", i + 1);
        assert_eq!(view.staged, earlier.staged, "node {} staged", i + 1);
        assert!(view.transition.is_none());
    }

    // The key the forged contexts aimed at stays writable: a normal update supersedes.
    admin_client
        .put_with("victim", "updated", &read.context, w3)
        .await?;
    let after = admin_client
        .get_with("victim", CallOptions::default().quorum(3))
        .await?;
    assert_eq!(after.values, vec![Bytes::from_static(b"updated")]);
    Ok(())
}

/// Views a node certificate's holder forges from the cluster's real view `real`: rings it
/// cannot have been given (an overflowing epoch, another node's address, every partition
/// its own), a transition the planner would not make, another address for node 1, and
/// acknowledgements of node 3.
fn forged_views(real: &View, forger: NodeId) -> Vec<(&'static str, View)> {
    let ring = &real.ring;
    let members: Vec<Member> = ring.members().cloned().collect();
    let owners: Vec<NodeId> = (0..ring.partition_count()).map(|p| ring.owner(p)).collect();
    let with_ring = |r: Ring| {
        let mut v = real.clone();
        v.ring = r;
        v
    };
    let mut moved = members.clone();
    moved[2].addr = "127.0.0.1:9".parse().expect("address");
    let grab = vec![forger; owners.len()];
    let mut with_forger = members.clone();
    if ring.member(forger).is_none() {
        with_forger.push(Member::at(forger, "127.0.0.1:9".parse().expect("address")));
    }
    let mut transition = real.clone();
    transition.transition = Some(ringkv_shared::membership::Transition {
        target: Ring::from_owners(ring.epoch() + 1, with_forger.clone(), grab.clone())
            .expect("a ring"),
        n: 3,
        done: Default::default(),
        hints_handed_over: Default::default(),
        authority: None,
    });
    // n3 "swept for good" (so no stale copy could be on it, and a tombstone could be
    // reaped without it) and "saw" a transition far ahead.
    let mut speaking_for_n3 = real.clone();
    speaking_for_n3
        .swept
        .insert(NodeId(3), ringkv_shared::membership::SWEPT_FOR_GOOD);
    speaking_for_n3.seen.insert(NodeId(3), u64::MAX);
    let mut readdressed = real.clone();
    if let Some(r) = readdressed.members.get_mut(&NodeId(1)) {
        r.addr = "127.0.0.1:9".parse().expect("address");
        r.version += 100;
    }
    vec![
        (
            "a ring at epoch u64::MAX",
            with_ring(Ring::from_owners(u64::MAX, members.clone(), owners.clone()).expect("ring")),
        ),
        (
            "a ring moving n3 to another address",
            with_ring(Ring::from_owners(ring.epoch() + 1, moved, owners).expect("ring")),
        ),
        (
            "a ring giving the forger every partition",
            with_ring(Ring::from_owners(ring.epoch() + 1, with_forger, grab).expect("ring")),
        ),
        ("a transition the planner would not make", transition),
        ("another address for n1", readdressed),
        ("n3's acknowledgements", speaking_for_n3),
    ]
}

/// A node certificate is the most a stolen credential can be: it may gossip. It still cannot
/// move the ring (no epoch jump, no owner table or address of its choosing, no transition the
/// planner would not make; one node's word is never enough for a ring a node cannot verify)
/// and cannot say where another node listens (that node's own record wins back) or what
/// another node acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_cannot_move_the_ring_or_speak_for_another_node() -> Result<()> {
    let cluster = RealCluster::start(3, "")?;
    let client = cluster.client().await?;
    let w3 = CallOptions::default().quorum(3);
    client
        .put_with("victim", "acknowledged", &Context::empty(), w3)
        .await?;
    let real = cluster.status(0).await?.view;
    // A member's certificate (stolen from n2) and a stranger's (n9, in no ring).
    for forger in [NodeId(2), NodeId(9)] {
        let tls = cluster.tls_for(&Role::Node(forger), &format!("n{}", forger.0))?;
        for (what, view) in forged_views(&real, forger) {
            for i in 0..3 {
                let conn = RawConn::open(cluster.addrs[i], &tls).await?;
                let reply = conn
                    .request(&Request::Gossip {
                        view: Box::new(view.clone()),
                    })
                    .await?;
                if let Response::View(theirs) = &reply.body {
                    assert_eq!(
                        theirs.ring,
                        real.ring,
                        "node {} took {what} from {forger}",
                        i + 1
                    );
                    assert!(theirs.transition.is_none(), "node {} took {what}", i + 1);
                    if forger != NodeId(3) {
                        let forged = Some(&u64::MAX);
                        assert!(
                            theirs.swept.get(&NodeId(3)) != forged
                                && theirs.seen.get(&NodeId(3)) != forged,
                            "node {} took {what} from {forger}",
                            i + 1
                        );
                    }
                }
            }
        }
    }
    // Gossip keeps running between the real nodes; the forged parts must not come back
    // through it, and n1's own record must win back everywhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut wrong = Vec::new();
        for i in 0..3 {
            let view = cluster.status(i).await?.view;
            assert_eq!(view.ring, real.ring, "node {} ring", i + 1);
            assert!(view.transition.is_none(), "node {} transition", i + 1);
            if view.members.get(&NodeId(1)).map(|r| r.addr) != Some(cluster.addrs[0]) {
                wrong.push(i + 1);
            }
        }
        if wrong.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("nodes {wrong:?} still list n1 at the forged address");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = cluster.client().await?;
    let read = fresh.get_with("victim", w3).await?;
    assert_eq!(read.values, vec![Bytes::from_static(b"acknowledged")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_declare_huge_frames_and_send_nothing_pin_no_memory() -> Result<()> {
    let cluster = RealCluster::start(3, "")?;
    let client = cluster.client().await?;
    client.put("k", "v", &Context::empty()).await?;
    let app = cluster.tls_for(&Role::Client, "hostile-app")?;
    let before = cluster.resident_bytes()[0];
    // 400 streams on two connections, each declaring a frame just under the 16 MiB limit and
    // sending nothing more.
    let declared = (16u32 << 20) - 1024;
    let mut held = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let conn = RawConn::open(cluster.addrs[0], &app).await?;
        for _ in 0..200 {
            let (mut send, recv) = conn.conn.open_bi().await?;
            send.write_all(&declared.to_be_bytes()).await?;
            held.push((send, recv));
        }
        conns.push(conn);
    }
    // The most the node holds while the streams stay open: sampled every 100 ms for 2 s (an
    // absence of growth has no event to wait for, so the whole window is measured).
    let mut after = 0;
    for _ in 0..20 {
        after = after.max(cluster.resident_bytes()[0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = after.saturating_sub(before);
    println!(
        "resident memory of the node: {} MiB before, {} MiB with 400 streams declaring 16 MiB each",
        before >> 20,
        after >> 20
    );
    assert!(growth < 64 << 20, "the node grew by {} MiB", growth >> 20);
    // Normal clients are served meanwhile.
    let started = std::time::Instant::now();
    let read = client.get("k").await?;
    assert_eq!(read.values, vec![Bytes::from_static(b"v")]);
    println!("a normal read took {:?} meanwhile", started.elapsed());
    drop(held);
    drop(conns);
    Ok(())
}

/// A reader that asks for large replies and never reads them does not pin the node's memory:
/// past `REPLY_WRITE_TIMEOUT` the node resets those streams (freeing the replies) though the
/// connection stays open, and counts them; normal clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_nobody_reads_are_reset_after_the_write_deadline() -> Result<()> {
    let cluster = RealCluster::start(3, "")?;
    let client = cluster.client().await?;
    let value = Bytes::from(vec![7u8; 512 << 10]);
    let w3 = CallOptions::default().quorum(3);
    client
        .put_with("big", value.clone(), &Context::empty(), w3)
        .await?;
    let app = cluster.tls_for(&Role::Client, "slow-reader")?;
    let conn = RawConn::open_slow_reader(cluster.addrs[0], &app).await?;
    let frame = ringkv_shared::frame::encode(
        &Request::Read {
            key: Bytes::from_static(b"big"),
        },
        1 << 20,
    )?;
    let before = cluster.stats(0).await?.slow_readers_reset;
    let mut unread = Vec::new();
    for _ in 0..200 {
        let (mut send, recv) = conn.conn.open_bi().await?;
        send.write_all(&frame).await?;
        let _ = send.finish();
        unread.push((send, recv));
    }
    // 100 MiB of replies cannot all pass the connection's flow-control window: most of them
    // wait on the node until the deadline resets them.
    let deadline =
        std::time::Instant::now() + ringkv_node::REPLY_WRITE_TIMEOUT + Duration::from_secs(20);
    let reset = loop {
        let reset = cluster.stats(0).await?.slow_readers_reset - before;
        if reset >= 100 {
            break reset;
        }
        if std::time::Instant::now() > deadline {
            bail!("only {reset} of 200 unread replies were reset past the write deadline");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("{reset} of 200 unread 512 KiB replies reset past the write deadline");
    let read = client.get_with("big", w3).await?;
    assert_eq!(
        read.values,
        vec![value],
        "normal clients are served meanwhile"
    );
    drop(unread);
    drop(conn);
    Ok(())
}

/// When the certificate node `addr` presents to a new connection expires.
async fn served_expiry(
    addr: std::net::SocketAddr,
    tls: &ringkv::TlsIdentity,
) -> Result<std::time::SystemTime> {
    let conn = RawConn::open(addr, tls).await?;
    let chain = conn
        .conn
        .peer_identity()
        .and_then(|i| {
            i.downcast::<Vec<quinn::rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no peer certificate"))?;
    ringkv_net::quic::certificate_expiry(&chain[0]).ok_or_else(|| anyhow::anyhow!("no expiry"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_a_wrong_one_is_refused() -> Result<()> {
    use ringkv_node::certs::write_pem;
    let cluster = RealCluster::start(3, "")?;
    let client = cluster.client().await?;
    client.put("k", "v", &Context::empty()).await?;
    let day = Duration::from_secs(86_400);
    let left = |at: std::time::SystemTime| {
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    };
    assert!(left(served_expiry(cluster.addrs[0], &cluster.tls).await?) > day * 300);

    // A new node certificate valid for 30 days, written over n1's files, then SIGHUP.
    let write = |tls: &ringkv::TlsIdentity| -> Result<()> {
        let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(anyhow::Error::from);
        write_pem(&cluster.dir().join("n1.pem"), &utf8(&tls.cert_pem)?, false)?;
        write_pem(
            &cluster.dir().join("n1-key.pem"),
            &utf8(&tls.key_pem)?,
            true,
        )?;
        Ok(())
    };
    write(&cluster.tls_for_days(&Role::Node(NodeId(1)), "n1", 30)?)?;
    cluster.signal(0, "HUP")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now_left = left(served_expiry(cluster.addrs[0], &cluster.tls).await?);
        if now_left < day * 31 {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("node 1 still presents its old certificate 10 s after SIGHUP");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A client's certificate in the node's files: refused on reload, the node keeps the one
    // it has and keeps serving.
    write(&cluster.tls_for(&Role::Client, "not-a-node")?)?;
    cluster.signal(0, "HUP")?;
    let refused = || {
        std::fs::read_dir(cluster.dir())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("n1-")
                    && name.ends_with(".log")
                    && std::fs::read_to_string(e.path())
                        .is_ok_and(|log| log.contains("certificates not reloaded"))
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !refused() {
        if std::time::Instant::now() > deadline {
            bail!("node 1 logged no refused reload within 10 s of SIGHUP");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = left(served_expiry(cluster.addrs[0], &cluster.tls).await?);
    assert!(kept < day * 31 && kept > day * 29, "kept {kept:?}");
    let read = client
        .get_with("k", CallOptions::default().quorum(3))
        .await?;
    assert_eq!(read.values, vec![Bytes::from_static(b"v")]);
    Ok(())
}

/// A node called as one id must hold that id's certificate: a node reached at the address
/// another member's record names (a forged or stale address) is refused before anything is
/// sent, so nothing it answers is taken as that member's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_as_another_member_is_refused() -> Result<()> {
    use ringkv_net::transport::{Transport, TransportError};
    let cluster = RealCluster::start(3, "")?;
    let tls = cluster.tls_for(&Role::Node(NodeId(1)), "n1")?;
    let limits = ringkv_shared::limits::Limits::default();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(ringkv_net::quic::client_config(&tls, &limits)?);
    let wire = ringkv_net::quic::QuicTransport::new(
        endpoint,
        ringkv_net::quic::client_config(&tls, &limits)?,
        ringkv_net::quic::TransportOptions {
            connect_timeout: Duration::from_secs(10),
            ..Default::default()
        },
    );
    let n2_addr = cluster.addrs[1];
    let as_n2 = Member::at(NodeId(2), n2_addr);
    let reply = wire.call(&as_n2, Request::Ping).await?;
    assert_eq!(reply, Response::Pong { node: NodeId(2) });
    let as_n3 = Member::at(NodeId(3), n2_addr);
    match wire.call(&as_n3, Request::Ping).await {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(
                reason.contains("node n2") && reason.contains("node n3"),
                "{reason}"
            );
        }
        other => bail!("n2 answered as n3: {other:?}"),
    }
    Ok(())
}

/// A client that asks a node for read repairs without end cannot make it run reads without
/// end. While an owner hangs, every repair waits out its deadline; past
/// `MAX_REPAIRS_IN_FLIGHT` running at once the node refuses more (`unavailable`, counted in
/// `repairs_refused`), keeps serving reads, and takes repairs again once they are over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_asked_without_end_are_bounded_while_an_owner_hangs() -> Result<()> {
    const ASKED: usize = 2 * ringkv_node::MAX_REPAIRS_IN_FLIGHT;
    let cluster = RealCluster::start(3, "")?;
    let client = cluster.client().await?;
    let w3 = CallOptions::default().quorum(3);
    client.put_with("k", "v", &Context::empty(), w3).await?;
    let app = cluster.tls_for(&Role::Client, "repairer")?;
    let conn = std::sync::Arc::new(RawConn::open(cluster.addrs[0], &app).await?);
    let before = cluster.stats(0).await?.repairs_refused;
    cluster.signal(2, "STOP")?;
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..ASKED {
        let conn = conn.clone();
        asks.spawn(async move {
            let key = Bytes::from(format!("key-{i}"));
            conn.request(&Request::Repair { key }).await
        });
    }
    let (mut taken, mut refused) = (0usize, 0usize);
    while let Some(reply) = asks.join_next().await {
        match reply??.body {
            Response::Written => taken += 1,
            Response::Error(ReplyError::Unavailable { .. }) => refused += 1,
            other => bail!("a repair was answered {other:?}"),
        }
    }
    let read = client.get_with("k", CallOptions::default().quorum(2)).await;
    cluster.signal(2, "CONT")?;
    println!("{ASKED} repairs asked while an owner hung: {taken} taken, {refused} refused");
    anyhow::ensure!(
        taken <= ringkv_node::MAX_REPAIRS_IN_FLIGHT + ASKED / 4 && refused >= ASKED / 4,
        "{taken} taken and {refused} refused of {ASKED}: repairs are not bounded"
    );
    let counted = cluster.stats(0).await?.repairs_refused - before;
    anyhow::ensure!(
        counted == refused as u64,
        "{counted} counted, {refused} refused"
    );
    anyhow::ensure!(
        read?.values == vec![Bytes::from_static(b"v")],
        "reads are served meanwhile"
    );
    // Once the running repairs are over (each within two deadlines), new ones are taken.
    support::eventually(Duration::from_secs(20), "a repair taken again", || async {
        matches!(
            conn.request(&Request::Repair {
                key: Bytes::from_static(b"k")
            })
            .await
            .map(|r| r.body),
            Ok(Response::Written)
        )
    })
    .await?;
    Ok(())
}

/// A ring change counts only with an operator's signature. A join staged by the operator and
/// planned, then gossiped as a committed transition (or as the ring it leads to) by holders
/// of two node certificates, a member's (n2) and the newcomer's (n4, a member of the target
/// ring, so that the two could vouch for it together): unsigned, signed with a node's key,
/// an application's, another cluster's operator's, or the real operator's signature over
/// another change. No node takes any of them. `ringkv commit` with an application or node
/// certificate refuses to sign; an unsigned commit and one signed by a node's key are refused
/// by the node; the operator's `ringkv commit` then goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_change_needs_an_operators_signature() -> Result<()> {
    let mut cluster = RealCluster::start(3, "")?;
    let client = cluster.client().await?;
    let w3 = CallOptions::default().quorum(3);
    client
        .put_with("victim", "acknowledged", &Context::empty(), w3)
        .await?;
    let newcomer = cluster.add_node("")?;
    let n4 = NodeId(newcomer as u32 + 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.status(0).await?.view.members.contains_key(&n4) {
        if std::time::Instant::now() > deadline {
            bail!("n1 never heard of {n4}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.admin(0, &["join", &n4.0.to_string()])?;
    let real = cluster.status(0).await?.view;
    let target = real.planned_with(3)?;
    let epoch = real.ring.epoch();

    let n2 = cluster.tls_for(&Role::Node(NodeId(2)), "n2")?;
    let n4_tls = cluster.tls_for(&Role::Node(n4), "n4")?;
    let app = cluster.tls_for(&Role::Client, "hostile-app")?;
    let stranger_ca = ringkv_node::certs::DevCa::generate()?;
    let stranger = stranger_ca.issue(&Role::Admin, "ops")?;
    let stranger = ringkv_net::quic::TlsIdentity {
        ca_pem: stranger_ca.cert_pem().as_bytes().to_vec(),
        cert_pem: stranger.cert_pem.into_bytes(),
        key_pem: stranger.key_pem.into_bytes(),
    };
    let operator = ringkv_net::quic::OperatorKey::from_identity(&cluster.tls)?;
    let sign = |tls| support::sign_with_any_key(tls, real.cluster, &target, 3);
    let signatures = [
        ("unsigned", None),
        ("signed with n2's node key", Some(sign(&n2)?)),
        ("signed with an application key", Some(sign(&app)?)),
        (
            "signed by another cluster's operator",
            Some(sign(&stranger)?),
        ),
        (
            "the operator's signature over the current ring",
            Some(operator.sign(real.cluster, &real.ring, 3, &Default::default())?),
        ),
        (
            "the operator's signature for n = 2",
            Some(operator.sign(real.cluster, &target, 2, &Default::default())?),
        ),
    ];
    let nodes = cluster.addrs.len();
    for (what, authority) in &signatures {
        let mut as_transition = real.clone();
        as_transition.staged = Default::default();
        as_transition.transition = Some(ringkv_shared::membership::Transition {
            target: target.clone(),
            n: 3,
            done: Default::default(),
            hints_handed_over: Default::default(),
            authority: authority.clone(),
        });
        let mut as_ring = real.clone();
        as_ring.staged = Default::default();
        as_ring.ring = target.clone();
        as_ring.ring_authority = authority.clone();
        for view in [as_transition, as_ring] {
            for tls in [&n2, &n4_tls] {
                for i in 0..nodes {
                    let conn = RawConn::open(cluster.addrs[i], tls).await?;
                    let reply = conn
                        .request(&Request::Gossip {
                            view: Box::new(view.clone()),
                        })
                        .await?;
                    if let Response::View(theirs) = &reply.body {
                        assert!(
                            theirs.ring.epoch() <= epoch,
                            "node {} took a ring {what}",
                            i + 1
                        );
                        assert!(
                            theirs.transition.is_none(),
                            "node {} took a transition {what}",
                            i + 1
                        );
                    }
                }
            }
        }
    }
    // What the forgers sent must not come back through the nodes' own gossip either.
    let watch_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < watch_until {
        for i in 0..nodes {
            let view = cluster.status(i).await?.view;
            assert!(view.transition.is_none(), "node {} has a transition", i + 1);
            assert!(view.ring.epoch() <= epoch, "node {} moved its ring", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The admin path: the CLI signs only with an admin certificate, and a node commits only
    // what an operator signed.
    for (tls, name) in [(&app, "hostile-app"), (&n2, "n2")] {
        let err = cluster
            .admin_as(0, tls, name, &["commit"])
            .expect_err("only an admin certificate signs");
        let err = err.to_string();
        assert!(err.contains("signed with an admin certificate"), "{err}");
    }
    let refused = |reply: &Response| match reply {
        Response::Error(ReplyError::InvalidInput { reason }) => Ok(reason.clone()),
        other => Err(anyhow::anyhow!("expected a refusal, got {other:?}")),
    };
    let admin_conn = RawConn::open(cluster.addrs[0], &cluster.tls).await?;
    let reply = admin_conn
        .request(&Request::Admin(AdminRequest::Commit))
        .await?;
    let reason = refused(&reply.body)?;
    assert!(reason.contains("must be signed by an operator"), "{reason}");
    for (what, authority) in &signatures[1..] {
        let reply = admin_conn
            .request(&Request::Admin(AdminRequest::CommitSigned {
                target: Box::new(target.clone()),
                authority: authority.clone().expect("signed"),
            }))
            .await?;
        let reason = refused(&reply.body)?;
        assert!(reason.contains("refused the commit"), "{what}: {reason}");
    }
    let view = cluster.status(0).await?.view;
    assert!(view.transition.is_none() && view.ring == real.ring);
    assert_eq!(view.staged, real.staged, "the staged join is still there");

    // The operator commits; the join runs to the end and the acknowledged value is intact.
    cluster.admin(0, &["commit"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut behind = Vec::new();
        for i in 0..nodes {
            let view = cluster.status(i).await?.view;
            if view.ring != target || view.transition.is_some() {
                behind.push(i + 1);
            }
        }
        if behind.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("nodes {behind:?} never reached the operator's ring");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = cluster.client().await?;
    let read = fresh.get_with("victim", w3).await?;
    assert_eq!(read.values, vec![Bytes::from_static(b"acknowledged")]);
    Ok(())
}
