//! What batching requests to one peer would save (issue 17, item 2), measured before building
//! it: a QUIC echo of 1 KiB requests with ringkv's TLS and transport settings, one stream per
//! request (what ringkv does now) against the requests queued at the same moment framed on
//! one stream (what batching would do, including the hop through a queue it needs).
//!
//! ```sh
//! cargo bench --bench quic_batching                  # 32 in flight, 3 rounds of 3 s per mode
//! cargo bench --bench quic_batching -- 8 2           # 8 in flight, 2 rounds
//! ```
//!
//! Client and server share this process, so "CPU per request" is both sides' CPU time (from
//! `/proc/self/stat`) over the requests answered.

use anyhow::{Context, Result, bail};
use ringkv_net::quic::{client_config, endpoint_config, server_config};
use ringkv_node::certs::{DevCa, Role};
use ringkv_shared::NodeId;
use ringkv_shared::limits::Limits;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const VALUE: usize = 1024;
/// Most requests one batch carries.
const MOST_PER_BATCH: usize = 32;
const ROUND: Duration = Duration::from_secs(3);

/// Reads length-prefixed frames until the peer finishes, echoing each as it arrives.
async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    loop {
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => break,
            Err(e) => bail!("read: {e}"),
        }
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        recv.read_exact(&mut body).await?;
        send.write_all(&len).await?;
        send.write_all(&body).await?;
    }
    send.finish()?;
    Ok(())
}

async fn serve(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_stream(send, recv));
            }
        });
    }
}

/// Sends `bodies` framed on one new stream and reads their echoes in order.
async fn exchange(conn: &quinn::Connection, bodies: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 4).sum());
    for b in bodies {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    send.write_all(&out).await?;
    send.finish()?;
    let mut replies = Vec::with_capacity(bodies.len());
    for _ in bodies {
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await?;
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        recv.read_exact(&mut body).await?;
        replies.push(body);
    }
    Ok(replies)
}

type Job = (Vec<u8>, oneshot::Sender<Vec<u8>>);

/// Takes what is queued at the moment (at least one request, at most [`MOST_PER_BATCH`]) and
/// sends it as one stream; batches run concurrently.
async fn batcher(
    conn: quinn::Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    streams: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MOST_PER_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        streams.fetch_add(1, Ordering::Relaxed);
        let conn = conn.clone();
        tokio::spawn(async move {
            let (bodies, waiters): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
            if let Ok(replies) = exchange(&conn, &bodies).await {
                for (reply, waiter) in replies.into_iter().zip(waiters) {
                    let _ = waiter.send(reply);
                }
            }
        });
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    StreamPerRequest,
    Batched,
}

struct Figures {
    per_sec: f64,
    cpu_us: f64,
    mean_batch: f64,
}

async fn round(conn: &quinn::Connection, mode: Mode, in_flight: usize) -> Result<Figures> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let streams = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let batcher_task = tokio::spawn(batcher(conn.clone(), rx, streams.clone()));
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let (conn, stop, done, tx, streams) = (
            conn.clone(),
            stop.clone(),
            done.clone(),
            tx.clone(),
            streams.clone(),
        );
        workers.push(tokio::spawn(async move {
            let body = vec![w as u8; VALUE];
            while !stop.load(Ordering::Relaxed) {
                let reply = match mode {
                    Mode::StreamPerRequest => {
                        streams.fetch_add(1, Ordering::Relaxed);
                        exchange(&conn, std::slice::from_ref(&body))
                            .await?
                            .pop()
                            .context("no reply")?
                    }
                    Mode::Batched => {
                        let (reply_tx, reply_rx) = oneshot::channel();
                        tx.send((body.clone(), reply_tx))
                            .ok()
                            .context("batcher gone")?;
                        reply_rx.await.context("batch failed")?
                    }
                };
                if reply != body {
                    bail!("echo differs");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    drop(tx);
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    batcher_task.await?;
    let n = done.load(Ordering::Relaxed) as f64;
    let streams = streams.load(Ordering::Relaxed) as f64;
    Ok(Figures {
        per_sec: n / elapsed,
        cpu_us: cpu * 1e6 / n,
        mean_batch: n / streams.max(1.0),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let in_flight = args.first().copied().unwrap_or(32);
    let rounds = args.get(1).copied().unwrap_or(3);
    let ca = DevCa::generate()?;
    let limits = Limits::default();
    let server_id = ca.identity(&Role::Node(NodeId(1)), "n1")?;
    let client_id = ca.identity(&Role::Client, "bench")?;
    let server_socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let server = quinn::Endpoint::new(
        endpoint_config(&server_id),
        Some(server_config(&server_id, &limits)?),
        server_socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr: SocketAddr = server.local_addr()?;
    tokio::spawn(serve(server));
    let client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = client
        .connect_with(
            client_config(&client_id, &limits)?,
            addr,
            ringkv_net::quic::SERVER_NAME,
        )?
        .await?;
    // Warm up both paths.
    let warm = vec![vec![0u8; VALUE]; 4];
    exchange(&conn, &warm).await?;
    let header = format!(
        "QUIC echo, {VALUE} B, {in_flight} in flight, {rounds} rounds of {} s per mode\n\
         | round | mode | requests/s | CPU per request | requests per stream |\n| --- | --- | --- | --- | --- |\n",
        ROUND.as_secs()
    );
    print!("{header}");
    for r in 1..=rounds {
        for mode in [Mode::StreamPerRequest, Mode::Batched] {
            let f = round(&conn, mode, in_flight).await?;
            let line = format!(
                "| {r} | {} | {:.0} | {:.1} µs | {:.2} |\n",
                match mode {
                    Mode::StreamPerRequest => "stream per request",
                    Mode::Batched => "batched",
                },
                f.per_sec,
                f.cpu_us,
                f.mean_batch
            );
            print!("{line}");
        }
    }
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    Ok(())
}
