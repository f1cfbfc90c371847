//! The peer the harness measures ringkv against: a 3-member etcd cluster on loopback, started
//! by the harness itself, and a minimal etcd v3 gRPC client (unary `KV/Range` and `KV/Put`
//! over HTTP/2) that the same closed loop drives.
//!
//! etcd is Debian's `etcd-server` (`apt-get install etcd-server`), found on `PATH` or named by
//! `ETCD_BIN`. It runs with its defaults: an fsync per raft batch (comparable to ringkv's
//! `sync` durability), linearizable reads, and plain-text gRPC. ringkv's traffic is mutual
//! TLS, so the comparison spends less CPU on etcd's side than ringkv's: it favours etcd.
//!
//! The client keeps one HTTP/2 connection per member and spreads the workers over them, as
//! etcd's own Go client balances over its endpoints; a follower forwards writes to the leader
//! and asks it for the read index of a linearizable read.

use anyhow::{Context as _, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `etcdserverpb.PutRequest` (rpc.proto), the fields the harness sets.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.RangeRequest`: one key, linearizable (the default).
#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

/// `etcdserverpb.RangeResponse`: the fields the harness reads.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
}

/// `mvccpb.KeyValue`: the value only (prost skips the other fields).
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
}

/// Where etcd is: `ETCD_BIN`, else `etcd` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    })
}

/// A free loopback port (bound and released; etcd binds it a moment later).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The started members; dropping it kills them and removes their data.
pub struct EtcdCluster {
    children: Vec<Child>,
    clients: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `members` etcd members of one new cluster on loopback.
    pub fn start(bin: &std::path::Path, members: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..members)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            clients: Vec::new(),
            _dir: dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = cluster._dir.path().join(format!("m{i}"));
            let log = std::fs::File::create(cluster._dir.path().join(format!("m{i}.log")))?;
            let child = Command::new(bin)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(&data)
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "ringkv-load"])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            cluster.children.push(child);
            cluster
                .clients
                .push(SocketAddr::from(([127, 0, 0, 1], *client)));
        }
        Ok(cluster)
    }

    /// The members' process ids (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Resident memory of each member, in bytes (0 when unreadable).
    pub fn resident_bytes(&self) -> Vec<u64> {
        self.pids()
            .iter()
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/statm"))
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .map_or(0, |pages| pages * 4096)
            })
            .collect()
    }

    /// A client once every member answers a read, giving up after `within`.
    pub async fn connect(&self, within: Duration) -> Result<EtcdClient> {
        let deadline = Instant::now() + within;
        loop {
            let attempt = async {
                let mut members = Vec::new();
                for addr in &self.clients {
                    members.push(connect_member(*addr).await?);
                }
                let client = EtcdClient {
                    members: std::sync::Arc::new(members),
                    member: 0,
                };
                for m in 0..client.members.len() {
                    client.for_worker(m).get("ringkv-load-ready").await?;
                }
                anyhow::Ok(client)
            };
            match attempt.await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("etcd did not answer");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn connect_member(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// An etcd v3 client: unary gRPC calls over one HTTP/2 connection per member, each call to
/// the member this client is pinned to.
#[derive(Clone)]
pub struct EtcdClient {
    members: std::sync::Arc<Vec<SendRequest<Full<Bytes>>>>,
    member: usize,
}

impl EtcdClient {
    /// The same connections, pinned to member `w mod members` (worker `w`'s).
    pub fn for_worker(&self, w: usize) -> EtcdClient {
        EtcdClient {
            members: self.members.clone(),
            member: w % self.members.len().max(1),
        }
    }

    /// Reads `key`: how many values it has (0 or 1).
    pub async fn get(&self, key: &str) -> Result<usize> {
        let reply = self
            .call(
                "Range",
                &RangeRequest {
                    key: key.as_bytes().to_vec(),
                },
            )
            .await?;
        let range: RangeResponse = prost::Message::decode(reply)?;
        Ok(range.kvs.len())
    }

    /// Writes `value` for `key`.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let req = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
        };
        self.call("Put", &req).await.map(drop)
    }

    /// One unary call of `etcdserverpb.KV/<method>`; the reply message's bytes.
    async fn call(&self, method: &str, msg: &impl prost::Message) -> Result<Bytes> {
        let mut body = BytesMut::with_capacity(5 + msg.encoded_len());
        body.put_u8(0); // not compressed
        body.put_u32(u32::try_from(msg.encoded_len())?);
        msg.encode(&mut body)?;
        let req = hyper::Request::post(format!("http://etcd/etcdserverpb.KV/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body.freeze()))?;
        let mut sender = self.members[self.member].clone();
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        let headers_status = grpc_status(response.headers());
        let collected = response.into_body().collect().await?;
        let status = collected
            .trailers()
            .and_then(grpc_status)
            .or(headers_status)
            .unwrap_or_else(|| "missing".into());
        if status != "0" {
            bail!("etcd {method}: grpc-status {status}");
        }
        let mut data = collected.to_bytes();
        if data.len() < 5 {
            bail!("etcd {method}: reply of {} bytes", data.len());
        }
        data.advance(1);
        let len = data.get_u32() as usize;
        if data.len() < len {
            bail!("etcd {method}: reply cut short");
        }
        Ok(data.split_to(len))
    }
}

fn grpc_status(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
