//! Real `ringkv-node` processes ([`ProcessCluster`]) plus the protocol-level helpers crash
//! tests need: a client once the cluster answers, a node's counters, a node's own copy of a key.

use super::node_binary;
use anyhow::{Context as _, Result, bail};
use ringkv::{Client, TlsIdentity};
use ringkv_node::testing::ProcessCluster;
use ringkv_shared::Object;
use ringkv_shared::proto::{NodeStats, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a direct request to one node may take (the connection's own limit).
const RAW_LIMIT: Duration = Duration::from_secs(15);

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

    /// Starts one more node that knows only node 1 as its seed (see
    /// [`ProcessCluster::add_node`]); returns its index.
    pub fn add_node(&mut self, tables_toml: &str) -> Result<usize> {
        let i = self.procs.add_node(tables_toml)?;
        self.addrs = self.procs.addrs().to_vec();
        Ok(i)
    }

    /// A certificate of `role` named `name`, signed by the cluster CA.
    pub fn tls_for(&self, role: &ringkv_node::certs::Role, name: &str) -> Result<TlsIdentity> {
        Ok(self.procs.issue_tls(role, name)?)
    }

    /// [`RealCluster::tls_for`], valid for `days`.
    pub fn tls_for_days(
        &self,
        role: &ringkv_node::certs::Role,
        name: &str,
        days: u32,
    ) -> Result<TlsIdentity> {
        Ok(self.procs.issue_tls_valid_for(role, name, days)?)
    }

    /// Sends `signal` (e.g. `HUP`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) -> Result<()> {
        Ok(self.procs.signal(i, signal)?)
    }

    /// The working directory (certificates, configs, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.procs.dir()
    }

    /// Runs the `ringkv` admin CLI against node `i` with the cluster's client certificate;
    /// returns its standard output, or fails with its standard error.
    pub fn admin(&self, i: usize, args: &[&str]) -> Result<String> {
        let (cert, key) = (
            self.dir().join("admin.pem"),
            self.dir().join("admin-key.pem"),
        );
        self.admin_with(i, &cert, &key, args)
    }

    /// [`RealCluster::admin`] with the certificate `tls` instead of the operator's (its
    /// files are written under the cluster's directory as `<name>.pem`, `<name>-key.pem`).
    pub fn admin_as(
        &self,
        i: usize,
        tls: &TlsIdentity,
        name: &str,
        args: &[&str],
    ) -> Result<String> {
        let (cert, key) = (
            self.dir().join(format!("{name}.pem")),
            self.dir().join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert, &tls.cert_pem)?;
        std::fs::write(&key, &tls.key_pem)?;
        self.admin_with(i, &cert, &key, args)
    }

    fn admin_with(
        &self,
        i: usize,
        cert: &std::path::Path,
        key: &std::path::Path,
        args: &[&str],
    ) -> Result<String> {
        let out = std::process::Command::new(super::admin_binary()?)
            .env("RINGKV_NODE", self.addrs[i].to_string())
            .env("RINGKV_CA", self.dir().join("ca.pem"))
            .env("RINGKV_CERT", cert)
            .env("RINGKV_KEY", key)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "ringkv {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Node `i`'s view and outgoing handoffs.
    pub async fn status(&self, i: usize) -> Result<ringkv_shared::proto::NodeStatus> {
        match self
            .raw(
                i,
                &Request::Admin(ringkv_shared::proto::AdminRequest::Status),
            )
            .await?
        {
            Response::Admin(ringkv_shared::proto::AdminReply::Status(s)) => Ok(*s),
            other => bail!("unexpected reply {}", other.kind()),
        }
    }

    /// Resident memory of each running node process, in bytes (0 for one not running).
    pub fn resident_bytes(&self) -> Vec<u64> {
        self.procs.resident_bytes()
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        Ok(self.procs.kill(i)?)
    }

    /// Sets `key=value` in node `i`'s environment from its next start on.
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        self.procs.set_env(i, key, value);
    }

    /// SIGTERM node `i` and wait up to `grace` for it to exit (then SIGKILL); whether it
    /// exited on its own.
    pub fn stop(&mut self, i: usize, grace: Duration) -> Result<bool> {
        Ok(self.procs.stop(i, grace)?)
    }

    /// Waits up to `timeout` for node `i` to exit on its own; its exit status if it did.
    pub fn wait_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.procs.wait_exit(i, timeout)?)
    }

    /// The log of node `i`'s latest start.
    pub fn log(&self, i: usize) -> String {
        self.procs.log(i)
    }

    /// Starts node `i` if it is not running.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        Ok(self.procs.start_node(i)?)
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
        super::ask(self.addrs[i], &self.tls, request, RAW_LIMIT).await
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
        super::local_object(self.addrs[i], &self.tls, key, RAW_LIMIT).await
    }
}
