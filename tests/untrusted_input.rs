//! The network is untrusted: wrong certificates are refused, malformed frames get an error
//! reply or a reset, and the node keeps serving everyone else.

mod support;

use anyhow::Result;
use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::{ClientError, Context, Mode};
use ringkv_net::quic::TlsIdentity;
use ringkv_node::certs::{DevCa, Role};
use ringkv_node::testing::LocalCluster;
use ringkv_shared::frame::{self, PROTOCOL_VERSION};
use ringkv_shared::proto::{Quorum, Request, Response};
use ringkv_shared::{ReplyError, VersionVector};
use support::{RawConn, client};

fn identity_from(ca: &DevCa, trust: &DevCa, role: Role) -> Result<TlsIdentity> {
    let leaf = ca.issue(&role, "intruder")?;
    Ok(TlsIdentity {
        ca_pem: trust.cert_pem().as_bytes().to_vec(),
        cert_pem: leaf.cert_pem.into_bytes(),
        key_pem: leaf.key_pem.into_bytes(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() -> Result<()> {
    let cluster = LocalCluster::start(1).await?;
    let rogue_ca = DevCa::generate()?;
    // Signed by a foreign CA, but trusting the cluster's CA (so only the node can refuse).
    let tls = identity_from(&rogue_ca, cluster.ca(), Role::Client)?;
    let err = ringkv::Client::builder()
        .seeds(cluster.addrs())
        .tls(tls)
        .build()
        .await
        .expect_err("a foreign certificate must be refused");
    assert!(
        matches!(err, ClientError::Tls { .. }),
        "expected a TLS error, got: {err}"
    );

    println!("refusal as the application sees it: {err}");

    // The node still serves a legitimate client.
    let c = ringkv::Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .n(1)
        .r(1)
        .w(1)
        .build()
        .await?;
    c.put("k", "v", &Context::empty()).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_from_another_ca_is_not_trusted_by_clients() -> Result<()> {
    let cluster = LocalCluster::start(1).await?;
    // A client that trusts a different CA refuses the node's certificate.
    let other_ca = DevCa::generate()?;
    let tls = identity_from(&other_ca, &other_ca, Role::Client)?;
    let err = ringkv::Client::builder()
        .seeds(cluster.addrs())
        .tls(tls)
        .build()
        .await
        .expect_err("an untrusted node must be refused");
    assert!(
        matches!(err, ClientError::Tls { .. }),
        "expected a TLS error, got: {err}"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_get_an_error_or_a_reset_and_the_node_keeps_serving() -> Result<()> {
    let seed: u64 = std::env::var("RINGKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (replay with RINGKV_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let cluster = LocalCluster::start(3).await?;
    let addr = cluster.addrs()[0];
    let raw = RawConn::open(addr, &cluster.client_tls()).await?;

    // Random garbage of random sizes.
    for i in 0..40 {
        let len = rng.random_range(0..2048);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Some(reply) = raw.send_raw(&bytes).await? {
            assert!(
                matches!(
                    reply.body,
                    Response::Error(
                        ReplyError::Malformed { .. } | ReplyError::UnsupportedVersion { .. }
                    )
                ),
                "garbage #{i} (seed {seed}) got {:?}",
                reply.body
            );
        }
    }

    // A frame claiming more than the limit is refused before the body is read.
    let mut huge = (u32::MAX).to_be_bytes().to_vec();
    huge.push(PROTOCOL_VERSION);
    let reply = raw.send_raw(&huge).await?.expect("an error reply");
    assert!(
        matches!(&reply.body, Response::Error(ReplyError::Malformed { reason }) if reason.contains("exceeds")),
        "{:?}",
        reply.body
    );

    // A well-formed frame of a future protocol version is named as such.
    let mut future = frame::encode(&Request::Ping, 1 << 20)?;
    future[4] = PROTOCOL_VERSION + 1;
    let reply = raw.send_raw(&future).await?.expect("an error reply");
    assert_eq!(
        reply.body,
        Response::Error(ReplyError::UnsupportedVersion {
            found: PROTOCOL_VERSION + 1,
            supported: PROTOCOL_VERSION
        })
    );

    // A truncated frame (the header promises more than arrives before the stream ends): there
    // is no request to answer, so the stream just ends.
    let ping = frame::encode(&Request::Ping, 1 << 20)?;
    assert!(raw.send_raw(&ping[..ping.len() - 1]).await?.is_none());

    // The same connection, and every other client, is still served.
    let pong = raw.request(&Request::Ping).await?;
    assert!(
        matches!(pong.body, Response::Pong { .. }),
        "{:?}",
        pong.body
    );
    let c = client(&cluster, Mode::Direct).await?;
    c.put("still", "serving", &Context::empty()).await?;
    assert_eq!(
        c.get("still").await?.single().map(Bytes::as_ref),
        Some(b"serving".as_slice())
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_enforces_limits_even_when_the_client_does_not() -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let raw = RawConn::open(cluster.addrs()[0], &cluster.client_tls()).await?;
    let q = Quorum {
        n: 3,
        required: 2,
        timeout_ms: 2000,
    };
    let cases = [
        Request::Put {
            key: Bytes::from(vec![b'k'; 2000]),
            context: VersionVector::new(),
            value: Some(Bytes::from_static(b"v")),
            quorum: q,
            return_body: false,
        },
        Request::RoutePut {
            key: Bytes::from_static(b"k"),
            context: VersionVector::new(),
            value: Some(Bytes::from(vec![0u8; (1 << 20) + 1])),
            quorum: q,
            return_body: false,
        },
        Request::Read { key: Bytes::new() },
        Request::RouteGet {
            key: Bytes::from_static(b"k"),
            quorum: Quorum {
                n: 3,
                required: 4,
                timeout_ms: 2000,
            },
        },
    ];
    for req in cases {
        let reply = raw.request(&req).await?;
        assert!(
            matches!(reply.body, Response::Error(ReplyError::InvalidInput { .. })),
            "{} got {:?}",
            req.kind(),
            reply.body
        );
    }
    for i in 0..3 {
        let node = cluster.node(i).expect("running");
        assert!(
            node.store()
                .get(node.ring().partition_of(b"k"), b"k")?
                .is_none()
        );
    }
    cluster.shutdown().await;
    Ok(())
}

/// `max_siblings` bounds what concurrent writes can pile up on one key: the write that would
/// leave one sibling too many is refused with an error that says how to resolve, and the
/// application's resolving write (the read's context) goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_too_many_siblings_refuses_writes_until_resolved() -> Result<()> {
    let limits = ringkv_shared::Limits {
        max_siblings: 3,
        ..Default::default()
    };
    let cluster = LocalCluster::builder(3).limits(limits).start().await?;
    let c = client(&cluster, Mode::Direct).await?;
    // Blind writes (empty context) are concurrent with each other: each adds a sibling.
    for i in 0..3 {
        c.put("hot", format!("v{i}"), &Context::empty()).await?;
    }
    let refused = c
        .put("hot", "one too many", &Context::empty())
        .await
        .expect_err("a fourth sibling is refused");
    let message = refused.to_string();
    anyhow::ensure!(
        message.contains("siblings") && message.contains("resolved value"),
        "{message}"
    );
    let read = c.get("hot").await?;
    anyhow::ensure!(read.values.len() == 3, "{:?}", read.values);
    c.put("hot", "merged", &read.context).await?;
    let after = c.get("hot").await?;
    anyhow::ensure!(
        after.values == vec![Bytes::from_static(b"merged")],
        "{:?}",
        after.values
    );
    cluster.shutdown().await;
    Ok(())
}

/// A peer that opens connections without end is refused past `max_connections_per_ip`,
/// before any handshake; the connections it holds keep working, and a place freed by closing
/// one is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_places_come_back() -> Result<()> {
    let limits = ringkv_shared::Limits {
        max_connections_per_ip: 3,
        ..Default::default()
    };
    let cluster = LocalCluster::builder(1).limits(limits).start().await?;
    let (addr, tls) = (cluster.addrs()[0], cluster.client_tls());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawConn::open(addr, &tls).await?);
    }
    let over = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        RawConn::open(addr, &tls),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the refusal never came"))?;
    anyhow::ensure!(
        over.is_err(),
        "a fourth connection from one address was accepted"
    );
    for conn in &held {
        let reply = conn.request(&Request::Ping).await?;
        anyhow::ensure!(
            matches!(reply.body, Response::Pong { .. }),
            "{:?}",
            reply.body
        );
    }
    let closed = held.pop().expect("three held");
    closed.conn.close(0u32.into(), b"done");
    closed.endpoint.wait_idle().await;
    support::eventually(
        std::time::Duration::from_secs(10),
        "a freed place taken again",
        || async {
            match RawConn::open(addr, &tls).await {
                Ok(conn) => conn.request(&Request::Ping).await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}

/// Splits a stream's bytes into its frames' bodies decoded as `(index, reply)`.
fn batch_replies(mut buf: &[u8]) -> Result<Vec<(u32, ringkv_shared::proto::Reply)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = u32::from_be_bytes(buf[..frame::HEADER_BYTES].try_into()?) as usize;
        let end = frame::HEADER_BYTES + len;
        out.push(frame::decode(&buf[..end], 1 << 20)?);
        buf = &buf[end..];
    }
    Ok(out)
}

/// A batch (protocol 5): a header and the requests it announces, each answered with its
/// place in the batch; a header announcing too many or too few, a broken frame among the
/// requests, or a stream that ends before the announced requests, gets the stream reset
/// unanswered; the connection and the node keep serving.
#[tokio::test]
async fn batches_are_answered_per_request_and_oversized_or_broken_ones_are_reset() -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let raw = RawConn::open(cluster.addrs()[0], &cluster.client_tls()).await?;
    let encode = |r: &Request| frame::encode(r, 1 << 20);
    let header = |n: usize| encode(&Request::Batch { requests: n as u16 });
    let ping = encode(&Request::Ping)?;
    let get_ring = encode(&Request::GetRing)?;

    let three = [header(3)?, ping.clone(), get_ring, ping.clone()].concat();
    let buf = raw.send_raw_all(&three).await?.expect("three replies");
    let mut replies = batch_replies(&buf)?;
    replies.sort_by_key(|(i, _)| *i);
    let indexes: Vec<u32> = replies.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(matches!(replies[0].1.body, Response::Pong { .. }));
    assert!(matches!(replies[1].1.body, Response::Ring(_)));
    assert!(matches!(replies[2].1.body, Response::Pong { .. }));

    let most = frame::MAX_REQUESTS_PER_STREAM;
    let full = [header(most)?, ping.repeat(most)].concat();
    let buf = raw
        .send_raw_all(&full)
        .await?
        .expect("a full batch is answered");
    assert_eq!(batch_replies(&buf)?.len(), most);
    for refused in [
        [header(most + 1)?, ping.repeat(most + 1)].concat(),
        [header(1)?, ping.clone()].concat(),
        [header(0)?].concat(),
        // Fewer requests than announced before the stream ends.
        [header(3)?, ping.repeat(2)].concat(),
    ] {
        assert!(raw.send_raw_all(&refused).await?.is_none());
    }
    // A well-formed first request, then a frame whose body is not a message.
    let mut broken = [header(2)?, ping.clone()].concat();
    broken.extend_from_slice(&3u32.to_be_bytes());
    broken.extend_from_slice(&[PROTOCOL_VERSION, 0xc1, 0xc1]);
    assert!(raw.send_raw_all(&broken).await?.is_none());
    // A header inside a batch is not a request.
    let nested = [header(2)?, header(2)?, ping.clone()].concat();
    let buf = raw.send_raw_all(&nested).await?.expect("two replies");
    let mut replies = batch_replies(&buf)?;
    replies.sort_by_key(|(i, _)| *i);
    assert!(matches!(
        replies[0].1.body,
        Response::Error(ReplyError::Malformed { .. })
    ));
    assert!(matches!(replies[1].1.body, Response::Pong { .. }));

    let pong = raw.request(&Request::Ping).await?;
    assert!(
        matches!(pong.body, Response::Pong { .. }),
        "{:?}",
        pong.body
    );
    Ok(())
}

/// A batch smuggles nothing past the role checks: a client certificate's batch that carries
/// a replica write between two pings gets the pings answered and the write refused, and no
/// node holds the key afterwards.
#[tokio::test]
async fn a_batch_cannot_carry_a_request_the_senders_role_may_not_make() -> Result<()> {
    let cluster = LocalCluster::start(3).await?;
    let raw = RawConn::open(cluster.addrs()[0], &cluster.client_tls()).await?;
    let key = Bytes::from_static(b"smuggled");
    let mut object = ringkv_shared::Object::new();
    object.update(
        &VersionVector::new(),
        Some(Bytes::from_static(b"forged")),
        ringkv_shared::ActorId(7),
    )?;
    let write = Request::Write {
        key: key.clone(),
        object,
        hint_for: None,
    };
    let ping = frame::encode(&Request::Ping, 1 << 20)?;
    let batch = [
        frame::encode(&Request::Batch { requests: 3 }, 1 << 20)?,
        ping.clone(),
        frame::encode(&write, 1 << 20)?,
        ping,
    ]
    .concat();
    let buf = raw.send_raw_all(&batch).await?.expect("three replies");
    let mut replies = batch_replies(&buf)?;
    replies.sort_by_key(|(i, _)| *i);
    assert_eq!(replies.len(), 3);
    assert!(matches!(replies[0].1.body, Response::Pong { .. }));
    assert!(
        matches!(
            replies[1].1.body,
            Response::Error(ReplyError::Forbidden { .. })
        ),
        "{:?}",
        replies[1].1.body
    );
    assert!(matches!(replies[2].1.body, Response::Pong { .. }));
    for i in 0..3 {
        let node = cluster.node(i).expect("running");
        let p = node.ring().partition_of(&key);
        assert!(
            node.store().get(p, &key)?.is_none(),
            "node {} holds it",
            i + 1
        );
    }
    Ok(())
}
