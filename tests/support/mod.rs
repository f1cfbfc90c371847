//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod faults;
pub mod real;
pub mod unique;

use anyhow::{Context as _, Result, bail, ensure};
use ringkv::{Client, Mode};
use ringkv_net::quic::{TlsIdentity, client_config};
use ringkv_node::testing::LocalCluster;
use ringkv_shared::Limits;
use ringkv_shared::proto::{AdminReply, AdminRequest, Reply, Request, Response};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A client of `cluster` in `mode` with N=3, R=2, W=2.
pub async fn client(cluster: &LocalCluster, mode: Mode) -> Result<Client> {
    Ok(Client::builder()
        .seeds(cluster.addrs())
        .tls(cluster.client_tls())
        .mode(mode)
        .timeout(Duration::from_secs(3))
        .build()
        .await?)
}

/// A raw QUIC connection to one node, for sending frames the client would never send.
pub struct RawConn {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
}

impl RawConn {
    pub async fn open(addr: SocketAddr, tls: &TlsIdentity) -> Result<Self> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(client_config(tls, &Limits::default())?);
        let conn = endpoint
            .connect(addr, ringkv_net::quic::SERVER_NAME)?
            .await?;
        Ok(Self { endpoint, conn })
    }

    /// A connection that advertises small receive windows (64 KiB per stream, 1 MiB in all),
    /// so that replies it does not read stay on the node: a slow reader.
    pub async fn open_slow_reader(addr: SocketAddr, tls: &TlsIdentity) -> Result<Self> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let mut config = client_config(tls, &Limits::default())?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window(quinn::VarInt::from_u32(64 << 10))
            .receive_window(quinn::VarInt::from_u32(1 << 20));
        config.transport_config(std::sync::Arc::new(transport));
        endpoint.set_default_client_config(config);
        let conn = endpoint
            .connect(addr, ringkv_net::quic::SERVER_NAME)?
            .await?;
        Ok(Self { endpoint, conn })
    }

    /// Sends raw bytes on a new stream; returns the reply frame, or `None` if the node reset
    /// or closed the stream without one.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<Option<Reply>> {
        match self.send_raw_all(bytes).await? {
            Some(buf) => Ok(Some(ringkv_shared::frame::decode(&buf, 64 << 20)?)),
            None => Ok(None),
        }
    }

    /// Sends raw bytes on a new stream; returns every byte the node wrote back before it
    /// finished the stream, or `None` if it reset or closed the stream without any.
    pub async fn send_raw_all(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(bytes).await?;
        let _ = send.finish();
        let read = tokio::time::timeout(Duration::from_secs(15), recv.read_to_end(64 << 20))
            .await
            .context("node neither answered nor closed the stream")?;
        match read {
            Ok(buf) if buf.is_empty() => Ok(None),
            Ok(buf) => Ok(Some(buf)),
            Err(_) => Ok(None),
        }
    }

    /// Sends a well-formed request frame (bypassing the client's own checks).
    pub async fn request(&self, req: &Request) -> Result<Reply> {
        let frame = ringkv_shared::frame::encode(req, 64 << 20)?;
        match self.send_raw(&frame).await? {
            Some(r) => Ok(r),
            None => bail!("no reply"),
        }
    }
}

/// Sends one request to the node at `addr` on a fresh connection and returns the body of its
/// answer, failing if none comes within `limit`.
pub async fn ask(
    addr: SocketAddr,
    tls: &TlsIdentity,
    request: &Request,
    limit: Duration,
) -> Result<ringkv_shared::proto::Response> {
    let conn = RawConn::open(addr, tls).await?;
    let reply = tokio::time::timeout(limit, conn.request(request))
        .await
        .with_context(|| format!("{addr}: no answer within {limit:?}"))??;
    conn.endpoint.close(0u32.into(), b"done");
    Ok(reply.body)
}

/// What the node at `addr` itself holds for `key`, as a replica read answers it (its own copy
/// merged with hints it keeps).
pub async fn local_object(
    addr: SocketAddr,
    tls: &TlsIdentity,
    key: &str,
    limit: Duration,
) -> Result<ringkv_shared::Object> {
    let read = Request::Read {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
    };
    match ask(addr, tls, &read, limit).await? {
        ringkv_shared::proto::Response::Object(o) => Ok(o),
        other => bail!("unexpected reply {}", other.kind()),
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out after {timeout:?} waiting for: {what}")
}

/// Sends an operator's request to node `index`; its message, or the error it answered.
///
/// `AdminRequest::Commit` is sent as `ringkv commit` sends it: the plan, signed with the
/// harness's operator certificate ([`ringkv_node::operator::signed_commit`]).
pub async fn admin(cluster: &LocalCluster, index: usize, request: AdminRequest) -> Result<String> {
    let node = cluster.node(index).expect("node runs");
    let reply = if matches!(request, AdminRequest::Commit) {
        let key = ringkv_net::quic::OperatorKey::from_identity(&cluster.client_tls())?;
        ringkv_node::operator::signed_commit(
            |r| async { Ok::<_, anyhow::Error>(node.admin(r).await) },
            &key,
            &Default::default(),
        )
        .await?
    } else {
        node.admin(request).await
    };
    match reply {
        Response::Admin(AdminReply::Done { message }) => Ok(message),
        Response::Admin(other) => Ok(format!("{other:?}")),
        Response::Error(e) => bail!("{e}"),
        other => bail!("unexpected {}", other.kind()),
    }
}

/// Stages node `index` to join once node 0 knows it (it announces itself by gossip).
pub async fn stage_join(cluster: &LocalCluster, index: usize) -> Result<()> {
    let id = cluster.node_id(index);
    eventually(Duration::from_secs(10), "newcomer known", || async {
        cluster
            .node(0)
            .is_some_and(|n| n.view().members.contains_key(&id))
    })
    .await?;
    let join = AdminRequest::Join {
        node: Some(id),
        addr: None,
    };
    admin(cluster, 0, join).await.map(drop)
}

/// Waits until every listed node has the ring at `epoch` and no transition.
pub async fn settled(cluster: &LocalCluster, nodes: &[usize], epoch: u64) -> Result<()> {
    eventually(
        Duration::from_secs(60),
        &format!("every node on ring {epoch}"),
        || async {
            nodes.iter().all(|&i| {
                cluster
                    .node(i)
                    .is_some_and(|n| n.ring().epoch() == epoch && n.view().transition.is_none())
            })
        },
    )
    .await
}

/// The `ringkv-node` binary of this workspace's target directory (built on demand).
pub fn node_binary() -> Result<PathBuf> {
    workspace_binary("ringkv-node")
}

/// The `ringkv` admin CLI of this workspace's target directory (built on demand).
pub fn admin_binary() -> Result<PathBuf> {
    workspace_binary("ringkv")
}

fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("unexpected test binary location")?;
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // Once per test process: bring the binaries up to date (a no-op when they are), so that
    // a test never runs a node built from older code.
    static BUILT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let built = *BUILT.get_or_init(|| ringkv_node::testing::build_node_binaries(false));
    if !built || !bin.exists() {
        bail!("could not build {name} at {}", bin.display());
    }
    Ok(bin)
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    /// Sends SIGTERM (through `sh`'s built-in `kill`: std offers only SIGKILL) and waits up to
    /// `timeout` for the process to exit on its own.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let child = self.0.as_mut().context("process already reaped")?;
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status()?;
        if !status.success() {
            bail!("could not signal process {}", child.id());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = child.try_wait()? {
                self.0 = None;
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                bail!("process did not exit within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.0.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A free UDP port on 127.0.0.1 (bound, read, released).
/// Runs `cmd args`, failing with its standard error if it does not succeed.
pub fn run_command(cmd: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes a development CA and certificates for nodes `1..=nodes` into `dir`, and returns an
/// operator's identity (the harness reads, writes and inspects).
pub fn write_certs(dir: &std::path::Path, nodes: u32) -> Result<TlsIdentity> {
    use ringkv_node::certs::{DevCa, Role, write_pem};
    let ca = DevCa::generate()?;
    write_pem(&dir.join("ca.pem"), ca.cert_pem(), false)?;
    for i in 1..=nodes {
        let leaf = ca.issue(&Role::Node(ringkv_shared::NodeId(i)), &format!("n{i}"))?;
        write_pem(&dir.join(format!("n{i}.pem")), &leaf.cert_pem, false)?;
        write_pem(&dir.join(format!("n{i}-key.pem")), &leaf.key_pem, true)?;
    }
    let client = ca.issue(&Role::Admin, "test-admin")?;
    Ok(TlsIdentity {
        ca_pem: ca.cert_pem().as_bytes().to_vec(),
        cert_pem: client.cert_pem.into_bytes(),
        key_pem: client.key_pem.into_bytes(),
    })
}

/// Starts the real `ringkv-node` binary with `config`, logging to `log`.
pub fn spawn_node(config: &std::path::Path, log: &std::path::Path) -> Result<ChildGuard> {
    let log = std::fs::File::create(log)?;
    let child = std::process::Command::new(node_binary()?)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(ChildGuard(Some(child)))
}

/// A "signature" over a ring change made with any certificate's key, as a hostile holder of
/// a node or application certificate would make one (the admin CLI refuses to sign with
/// anything but an admin certificate; this does not ask).
pub fn sign_with_any_key(
    tls: &TlsIdentity,
    cluster: Option<ringkv_shared::ClusterId>,
    target: &ringkv_shared::Ring,
    n: u8,
) -> Result<ringkv_shared::authority::Authority> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let signer = key
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .context("an ECDSA P-256 key")?;
    let message = ringkv_shared::authority::change_message(cluster, target, n, &Default::default());
    Ok(ringkv_shared::authority::Authority {
        n,
        scheme: u16::from(signer.scheme()),
        signer: CertificateDer::from_pem_slice(&tls.cert_pem)?.to_vec(),
        signature: signer.sign(&message)?,
        forced: Default::default(),
    })
}
