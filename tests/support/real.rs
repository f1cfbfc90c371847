//! A cluster of real `ringkv-node` processes on 127.0.0.1, for crash tests.

use super::{ChildGuard, RawConn, free_udp_port, spawn_node, write_certs};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use ringkv::{Client, TlsIdentity};
use ringkv_shared::proto::{NodeStats, Request, Response};
use ringkv_shared::{NodeId, Object};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Real node processes sharing one temporary directory.
pub struct RealCluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
    pub tls: TlsIdentity,
    procs: Vec<ChildGuard>,
    starts: Vec<u32>,
}

impl RealCluster {
    /// Writes configs for `nodes` nodes (extra TOML appended to each) and starts them all.
    pub fn start(nodes: u32, extra_toml: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let tls = write_certs(dir.path(), nodes)?;
        let addrs: Vec<SocketAddr> = (0..nodes)
            .map(|_| Ok(format!("127.0.0.1:{}", free_udp_port()?).parse()?))
            .collect::<Result<_>>()?;
        let members: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[members]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i + 1;
            std::fs::write(
                dir.path().join(format!("n{id}.toml")),
                format!(
                    "id = {id}\nlisten = \"{addr}\"\ndata_dir = \"data/n{id}\"\npartitions = 64\n\
                     {extra_toml}\n[tls]\nca = \"ca.pem\"\ncert = \"n{id}.pem\"\nkey = \"n{id}-key.pem\"\n{members}"
                ),
            )?;
        }
        let mut cluster = RealCluster {
            dir,
            addrs,
            tls,
            procs: Vec::new(),
            starts: vec![0; nodes as usize],
        };
        for i in 0..nodes as usize {
            let p = cluster.spawn(i)?;
            cluster.procs.push(p);
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<ChildGuard> {
        self.starts[i] += 1;
        let log = self
            .dir
            .path()
            .join(format!("n{}-{}.log", i + 1, self.starts[i]));
        spawn_node(&self.config(i), &log)
    }

    /// The config file of node `i`.
    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.toml", i + 1))
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.procs[i].kill()
    }

    /// Starts node `i` again (after a kill).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.procs[i].kill()?;
        self.procs[i] = self.spawn(i)?;
        Ok(())
    }

    /// A client (N=3, R=2, W=2) once the cluster answers.
    pub async fn client(&self) -> Result<Client> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let built = Client::builder()
                .seeds(self.addrs.iter().copied())
                .tls(self.tls.clone())
                .timeout(Duration::from_secs(3))
                .build()
                .await;
            match built {
                Ok(c) => return Ok(c),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(e).context("cluster never answered");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn raw(&self, i: usize, request: &Request) -> Result<Response> {
        let conn = RawConn::open(self.addrs[i], &self.tls).await?;
        let reply = conn.request(request).await?;
        conn.endpoint.close(0u32.into(), b"done");
        Ok(reply.body)
    }

    /// Node `i`'s counters (fails if it does not answer).
    pub async fn stats(&self, i: usize) -> Result<NodeStats> {
        match self.raw(i, &Request::Stats).await? {
            Response::Stats(s) => Ok(s),
            other => bail!("unexpected reply {}", other.kind()),
        }
    }

    /// What node `i` itself holds for `key` (its replica merged with hints it keeps).
    pub async fn local_object(&self, i: usize, key: &str) -> Result<Object> {
        match self
            .raw(
                i,
                &Request::Read {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                },
            )
            .await?
        {
            Response::Object(o) => Ok(o),
            other => bail!("unexpected reply {}", other.kind()),
        }
    }

    /// Node ids, for messages.
    pub fn id(&self, i: usize) -> NodeId {
        NodeId(i as u32 + 1)
    }
}
