//! Real `ringkv-node` processes ([`ProcessCluster`]) plus the protocol-level helpers crash
//! tests need: a client once the cluster answers, a node's counters, a node's own copy of a key.

use super::{RawConn, node_binary};
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use ringkv::{Client, TlsIdentity};
use ringkv_node::testing::ProcessCluster;
use ringkv_shared::Object;
use ringkv_shared::proto::{NodeStats, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;

/// Real node processes (Q = 64).
pub struct RealCluster {
    procs: ProcessCluster,
    pub addrs: Vec<SocketAddr>,
    pub tls: TlsIdentity,
}

impl RealCluster {
    /// Starts `nodes` nodes; `tables_toml` (e.g. a `[background]` section) goes into each config.
    pub fn start(nodes: u32, tables_toml: &str) -> Result<Self> {
        let procs = ProcessCluster::start(&node_binary()?, nodes as usize, 64, tables_toml)?;
        Ok(RealCluster {
            addrs: procs.addrs().to_vec(),
            tls: procs.client_tls(),
            procs,
        })
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        Ok(self.procs.kill(i)?)
    }

    /// Starts node `i` again (killing it first if it runs).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        Ok(self.procs.restart(i)?)
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
}
