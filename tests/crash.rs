//! Real `ringkv-node` processes: under `sync` durability a write acknowledged by the node
//! survives `kill -9`; SIGTERM shuts the node down cleanly with its data flushed.

mod support;

use anyhow::{Context as _, Result};
use ringkv::{CallOptions, Client, Context};
use std::sync::Arc;
use std::time::Duration;
use support::{eventually, free_udp_port, spawn_node, write_certs};
use tokio::sync::Mutex;

async fn connect(addr: std::net::SocketAddr, tls: &ringkv::TlsIdentity) -> Result<Client> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let built = Client::builder()
            .seeds([addr])
            .tls(tls.clone())
            .n(1)
            .r(1)
            .w(1)
            .timeout(Duration::from_secs(2))
            .build()
            .await;
        match built {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e).context("the node did not accept clients within 30 s");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A one-node cluster's config in `dir`, with durability `durability`.
fn one_node(
    dir: &std::path::Path,
    durability: &str,
) -> Result<(std::path::PathBuf, std::net::SocketAddr)> {
    let port = free_udp_port()?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config = dir.join("n1.toml");
    std::fs::write(
        &config,
        format!(
            r#"
id = 1
listen = "{addr}"
data_dir = "data"
partitions = 64
replication = 1
[storage]
durability = "{durability}"
[tls]
ca = "ca.pem"
cert = "n1.pem"
key = "n1-key.pem"
[[members]]
id = 1
addr = "{addr}"
"#
        ),
    )?;
    Ok((config, addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = write_certs(dir.path(), 1)?;
    let (config, addr) = one_node(dir.path(), "sync")?;
    let log = dir.path().join("node.log");
    let mut node = spawn_node(&config, &log)?;
    let client = connect(addr, &tls).await?;

    // Writers keep 16 writes in flight; the node is killed while they run.
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16u32 {
        let client = client.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10_000u32 {
                let key = w * 100_000 + i;
                let put = client
                    .put_with(
                        format!("key-{key}"),
                        format!("value-{key}"),
                        &Context::empty(),
                        CallOptions::default(),
                    )
                    .await;
                match put {
                    Ok(_) => acked.lock().await.push(key),
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "300 acknowledged writes", || {
        let acked = acked.clone();
        async move { acked.lock().await.len() >= 300 }
    })
    .await?;
    node.kill()?;
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().await.clone();
    println!("{} writes acknowledged before kill -9", acked.len());
    client.close();

    let _node = spawn_node(&config, &dir.path().join("node-restarted.log"))?;
    let client = connect(addr, &tls).await?;
    let mut missing = Vec::new();
    for key in &acked {
        let read = client.get(format!("key-{key}")).await;
        match read {
            Ok(v)
                if v.single()
                    .is_some_and(|b| b.as_ref() == format!("value-{key}").as_bytes()) => {}
            Ok(v) => missing.push((*key, format!("{:?}", v.values))),
            Err(e) => missing.push((*key, format!("read failed: {e}"))),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost after kill -9: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_the_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = write_certs(dir.path(), 1)?;
    // `none`: nothing is fsynced while the node runs; shutdown's flush is the first fsync.
    // (fjall hands every batch to the OS, so the data would survive a process exit anyway;
    // what this test shows is the clean exit and that nothing is lost on the way.)
    let (config, addr) = one_node(dir.path(), "none")?;
    let log = dir.path().join("node.log");
    let mut node = spawn_node(&config, &log)?;
    let client = connect(addr, &tls).await?;
    for i in 0..50 {
        client
            .put(format!("t{i}"), format!("v{i}"), &Context::empty())
            .await?;
    }
    client.close();
    let status = node.terminate(Duration::from_secs(20)).await?;
    let text = std::fs::read_to_string(&log)?;
    assert!(status.success(), "exit {status}; log:\n{text}");
    assert!(text.contains("node stopped"), "log:\n{text}");

    let _node = spawn_node(&config, &dir.path().join("node-restarted.log"))?;
    let client = connect(addr, &tls).await?;
    for i in 0..50 {
        let read = client.get(format!("t{i}")).await?;
        assert_eq!(
            read.single().map(|b| b.to_vec()),
            Some(format!("v{i}").into_bytes()),
            "t{i}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_survive_a_sigkill_of_the_node_holding_them() -> Result<()> {
    use support::real::RealCluster;
    const KEYS: usize = 200;
    let mut cluster = RealCluster::start(3, "[background]\nhint_interval_ms = 200\n")?;
    let client = cluster.client().await?;
    cluster.kill(2)?; // n3 down: its copies become hints on n1 and n2
    for i in 0..KEYS {
        client
            .put(format!("h{i}"), format!("v{i}"), &Context::empty())
            .await
            .with_context(|| format!("write h{i} with n3 down"))?;
    }
    eventually(
        Duration::from_secs(20),
        "hints for every key on n1 and n2",
        || async {
            let a = cluster.stats(0).await.map(|s| s.hints_pending).unwrap_or(0);
            let b = cluster.stats(1).await.map(|s| s.hints_pending).unwrap_or(0);
            a + b >= KEYS as u64
        },
    )
    .await?;
    let held_by_n1 = cluster.stats(0).await?.hints_pending;
    assert!(held_by_n1 > 0, "n1 holds hints");

    // Crash the holder before it could deliver anything, bring it back, then the owner.
    cluster.kill(0)?;
    cluster.restart(0)?;
    eventually(
        Duration::from_secs(20),
        "n1 is back with its hints",
        || async {
            cluster
                .stats(0)
                .await
                .is_ok_and(|s| s.hints_pending == held_by_n1)
        },
    )
    .await?;
    cluster.restart(2)?;
    eventually(
        Duration::from_secs(40),
        "n3 holds every key and no hints remain",
        || async {
            let mut pending = 0;
            for i in 0..3 {
                match cluster.stats(i).await {
                    Ok(s) => pending += s.hints_pending,
                    Err(_) => return false,
                }
            }
            pending == 0
        },
    )
    .await?;
    for i in 0..KEYS {
        let o = cluster.local_object(2, &format!("h{i}")).await?;
        assert_eq!(
            o.values().next().map(|v| v.to_vec()),
            Some(format!("v{i}").into_bytes()),
            "n3 lacks h{i}"
        );
    }
    Ok(())
}

/// A client that held a connection to a node killed with SIGKILL carries on with its restarted
/// successor at once: the successor derives the same stateless-reset key from its private
/// key, so the client's next packet on the dead connection (or its keep-alive) is answered
/// with a reset, not left unanswered until the call deadline and the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resets_connections_left_by_its_predecessor() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = write_certs(dir.path(), 1)?;
    let (config, addr) = one_node(dir.path(), "sync")?;
    let mut node = spawn_node(&config, &dir.path().join("node.log"))?;
    let client = connect(addr, &tls).await?;
    let ctx = client.put("k", "v", &Context::empty()).await?;
    client.get("k").await?;

    node.kill()?;
    let _node = spawn_node(&config, &dir.path().join("node-restarted.log"))?;
    // Wait until the new process answers on a fresh connection of another client; the first
    // client still holds its connection to the killed process.
    let fresh = connect(addr, &tls).await?;
    fresh.get("k").await?;
    fresh.close();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut errors = Vec::new();
    let read = loop {
        match client.get("k").await {
            Ok(read) => break read,
            Err(e) if std::time::Instant::now() < deadline => {
                errors.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context(format!("earlier errors: {errors:?}")),
        }
    };
    assert_eq!(read.single().map(|b| b.to_vec()), Some(b"v".to_vec()));
    assert!(
        !errors
            .iter()
            .any(|e| e.contains("deadline") || e.contains("timed out")),
        "a call waited on the dead connection: {errors:?}"
    );
    println!("errors before the first read on a new connection: {errors:?}");
    client.put("k", "v2", &ctx).await?;
    Ok(())
}
