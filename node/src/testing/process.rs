//! Real `ringkv-node` processes on 127.0.0.1, for crash tests and the load harness.

use super::ClusterError;
use crate::certs::{DevCa, Role, write_pem};
use ringkv_net::quic::TlsIdentity;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A cluster of `ringkv-node` child processes sharing one temporary directory (certificates,
/// configs, data, one log file per start). Every process is killed when the cluster is dropped.
pub struct ProcessCluster {
    dir: tempfile::TempDir,
    binary: PathBuf,
    addrs: Vec<SocketAddr>,
    client_tls: TlsIdentity,
    procs: Vec<Option<Child>>,
    starts: Vec<u32>,
    ca: DevCa,
    partitions: u32,
    fault_files: bool,
    /// The loopback address of each node when they are not all on 127.0.0.1.
    hosts: Vec<std::net::Ipv4Addr>,
    /// Environment variables set for a node's next starts, by index.
    env: std::collections::HashMap<usize, Vec<(String, String)>>,
}

/// How [`ProcessCluster::start_with`] lays a cluster out.
#[derive(Clone, Debug, Default)]
pub struct ProcessOptions {
    /// Node processes (default 3 when 0).
    pub nodes: usize,
    /// Q (default 64 when 0).
    pub partitions: u32,
    /// TOML appended to every config (top-level keys first, then tables).
    pub tables_toml: String,
    /// The loopback address of each node (127.0.0.2, 127.0.0.3, ... in a network namespace);
    /// all on 127.0.0.1 when empty.
    pub hosts: Vec<std::net::Ipv4Addr>,
    /// Give every node a fault file (see [`crate::fault_filter`]) at `dir/faults-n<id>.txt`.
    pub fault_files: bool,
}

impl ProcessCluster {
    /// Writes certificates and configs for `nodes` nodes with `partitions` partitions
    /// (`tables_toml`, e.g. `[storage]` or `[background]` sections, is appended to each
    /// config) and starts `binary` once per node.
    pub fn start(
        binary: &Path,
        nodes: usize,
        partitions: u32,
        tables_toml: &str,
    ) -> Result<Self, ClusterError> {
        Self::start_with(
            binary,
            ProcessOptions {
                nodes,
                partitions,
                tables_toml: tables_toml.to_owned(),
                ..ProcessOptions::default()
            },
        )
    }

    /// [`ProcessCluster::start`] with every option.
    pub fn start_with(binary: &Path, options: ProcessOptions) -> Result<Self, ClusterError> {
        let nodes = if options.nodes == 0 { 3 } else { options.nodes };
        let partitions = if options.partitions == 0 {
            64
        } else {
            options.partitions
        };
        let tables_toml = options.tables_toml.as_str();
        let dir = tempfile::Builder::new().prefix("ringkv-procs-").tempdir()?;
        let ca = DevCa::generate()?;
        write_pem(&dir.path().join("ca.pem"), ca.cert_pem(), false)?;
        // Bind-and-release: the ports are free a moment later when the nodes bind them.
        let addrs: Vec<SocketAddr> = (0..nodes)
            .map(|i| {
                let ip = options
                    .hosts
                    .get(i)
                    .copied()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
                std::net::UdpSocket::bind((ip, 0))?.local_addr()
            })
            .collect::<Result<_, _>>()?;
        let members: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[members]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        // N = 3, or every node of a smaller cluster (a config may not ask for more replicas
        // than it has members), unless the caller's tables set it.
        let tables_toml = &if tables_toml.contains("replication") {
            tables_toml.to_owned()
        } else {
            format!("replication = {}\n{tables_toml}", nodes.min(3))
        };
        for (i, addr) in addrs.iter().enumerate() {
            write_node_files(
                dir.path(),
                &ca,
                i + 1,
                *addr,
                partitions,
                tables_toml,
                &members,
            )?;
        }
        // The harness inspects and administers the cluster as well as reading and writing, so
        // its certificate is an operator's (a test of what a client may not do makes its own).
        let client = ca.issue(&Role::Admin, "test-admin")?;
        // Also on disk, for the `ringkv` admin CLI.
        write_pem(&dir.path().join("admin.pem"), &client.cert_pem, false)?;
        write_pem(&dir.path().join("admin-key.pem"), &client.key_pem, true)?;
        let mut cluster = ProcessCluster {
            dir,
            binary: binary.to_owned(),
            addrs,
            client_tls: TlsIdentity {
                ca_pem: ca.cert_pem().as_bytes().to_vec(),
                cert_pem: client.cert_pem.into_bytes(),
                key_pem: client.key_pem.into_bytes(),
            },
            procs: (0..nodes).map(|_| None).collect(),
            starts: vec![0; nodes],
            ca,
            partitions,
            fault_files: options.fault_files,
            hosts: options.hosts.clone(),
            env: Default::default(),
        };
        for i in 0..nodes {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        self.starts[i] += 1;
        let log = std::fs::File::create(self.dir.path().join(format!(
            "n{}-{}.log",
            i + 1,
            self.starts[i]
        )))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(self.config(i))
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.fault_files {
            command.env(crate::fault_filter::FAULT_FILE_ENV, self.fault_file(i));
        }
        for (key, value) in self.env.get(&i).into_iter().flatten() {
            command.env(key, value);
        }
        let child = command.spawn()?;
        self.procs[i] = Some(child);
        Ok(())
    }

    /// Starts one more node outside the ring (on the address after the last node's when each
    /// has its own): its config lists no members, only the first node as a seed, so it announces itself by gossip and waits for `ringkv join`. Returns
    /// its index (its id is the index plus one).
    pub fn add_node(&mut self, tables_toml: &str) -> Result<usize, ClusterError> {
        let i = self.addrs.len();
        // Beside the others: the next 127.0.0.x when each node has its own address.
        let ip = match self.hosts.last() {
            Some(last) => {
                let next = std::net::Ipv4Addr::from(u32::from(*last) + 1);
                self.hosts.push(next);
                next
            }
            None => std::net::Ipv4Addr::LOCALHOST,
        };
        let addr = std::net::UdpSocket::bind((ip, 0))?.local_addr()?;
        let seeds = format!("seeds = [\"{}\"]\n", self.addrs[0]);
        write_node_files(
            self.dir.path(),
            &self.ca,
            i + 1,
            addr,
            self.partitions,
            &format!("{seeds}{tables_toml}"),
            "",
        )?;
        self.addrs.push(addr);
        self.procs.push(None);
        self.starts.push(0);
        self.spawn(i)?;
        Ok(i)
    }

    /// Sets `key=value` in node `i`'s environment from its next start on (`i` may be the
    /// index the next [`ProcessCluster::add_node`] will return).
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        let vars = self.env.entry(i).or_default();
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value.to_owned()));
    }

    /// Stops node `i` as an operator would: SIGTERM, then waits up to `grace` for it to
    /// exit, and SIGKILLs it after that. Returns whether it exited on its own (a no-op
    /// returning true if it is not running).
    pub fn stop(&mut self, i: usize, grace: std::time::Duration) -> Result<bool, ClusterError> {
        let slot = self
            .procs
            .get_mut(i)
            .ok_or(ClusterError::NoSuchNode { index: i })?;
        let Some(child) = slot.as_mut() else {
            return Ok(true);
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let deadline = std::time::Instant::now() + grace;
        let mut exited = false;
        while status.success() && std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !exited {
            child.kill()?;
        }
        child.wait()?;
        *slot = None;
        Ok(exited)
    }

    /// Waits up to `timeout` for node `i` to exit on its own; its exit status if it did
    /// (the process is then reaped), `None` if it still runs.
    pub fn wait_exit(
        &mut self,
        i: usize,
        timeout: std::time::Duration,
    ) -> Result<Option<std::process::ExitStatus>, ClusterError> {
        let slot = self
            .procs
            .get_mut(i)
            .ok_or(ClusterError::NoSuchNode { index: i })?;
        let Some(child) = slot.as_mut() else {
            return Ok(None);
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                *slot = None;
                return Ok(Some(status));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The log of node `i`'s latest start (its stdout and stderr).
    pub fn log(&self, i: usize) -> String {
        let start = self.starts.get(i).copied().unwrap_or(0);
        std::fs::read_to_string(self.dir.path().join(format!("n{}-{start}.log", i + 1)))
            .unwrap_or_default()
    }

    /// Starts node `i` if it is not running (after [`ProcessCluster::stop`] or
    /// [`ProcessCluster::kill`]).
    pub fn start_node(&mut self, i: usize) -> Result<(), ClusterError> {
        match self.procs.get(i) {
            None => Err(ClusterError::NoSuchNode { index: i }),
            Some(Some(_)) => Ok(()),
            Some(None) => self.spawn(i),
        }
    }

    /// Node `i`'s fault file (used when started with `fault_files`).
    pub fn fault_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("faults-n{}.txt", i + 1))
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data/n{}", i + 1))
    }

    /// Node `i`'s process id, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs.get(i)?.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to node `i`'s process.
    pub fn signal(&self, i: usize, signal: &str) -> Result<(), ClusterError> {
        let pid = self.pid(i).ok_or(ClusterError::NoSuchNode { index: i })?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            return Err(ClusterError::Io(std::io::Error::other(format!(
                "kill -{signal} {pid} failed"
            ))));
        }
        Ok(())
    }

    /// SIGKILLs node `i`, deletes its data directory and starts it again: a replica that lost
    /// its disk.
    pub fn wipe(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i)?;
        match std::fs::remove_dir_all(self.data_dir(i)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.spawn(i)
    }

    /// Every node's QUIC address, in index order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// TLS material the cluster trusts: an operator's certificate (the harness reads, writes,
    /// inspects and administers).
    pub fn client_tls(&self) -> TlsIdentity {
        self.client_tls.clone()
    }

    /// TLS material for a new certificate of `role` named `name`, signed by the cluster CA.
    pub fn issue_tls(&self, role: &Role, name: &str) -> Result<TlsIdentity, ClusterError> {
        self.issue_tls_valid_for(role, name, crate::certs::LEAF_DAYS)
    }

    /// [`ProcessCluster::issue_tls`], valid for `days`.
    pub fn issue_tls_valid_for(
        &self,
        role: &Role,
        name: &str,
        days: u32,
    ) -> Result<TlsIdentity, ClusterError> {
        Ok(self.ca.identity_valid_for(role, name, days)?)
    }

    /// The working directory (certificates, configs, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file of node `i`.
    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.toml", i + 1))
    }

    /// SIGKILLs node `i` and reaps it (a no-op if it is not running).
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        if let Some(mut child) = self
            .procs
            .get_mut(i)
            .ok_or(ClusterError::NoSuchNode { index: i })?
            .take()
        {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Kills node `i` if it runs, and starts it again with its config and data.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i)?;
        self.spawn(i)
    }

    /// Resident memory of each node process in bytes (0 for a node not running, or off Linux).
    pub fn resident_bytes(&self) -> Vec<u64> {
        self.procs
            .iter()
            .map(|p| {
                p.as_ref()
                    .and_then(|p| std::fs::read_to_string(format!("/proc/{}/statm", p.id())).ok())
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .map_or(0, |pages| pages * 4096)
            })
            .collect()
    }
}

/// Writes node `id`'s certificate, key and config into `dir`. `top_toml` goes before the
/// tables (top-level keys such as `seeds`, then tables such as `[background]`).
fn write_node_files(
    dir: &Path,
    ca: &DevCa,
    id: usize,
    addr: SocketAddr,
    partitions: u32,
    top_toml: &str,
    members: &str,
) -> Result<(), ClusterError> {
    let leaf = ca.issue(
        &Role::Node(ringkv_shared::NodeId(id as u32)),
        &format!("n{id}"),
    )?;
    write_pem(&dir.join(format!("n{id}.pem")), &leaf.cert_pem, false)?;
    write_pem(&dir.join(format!("n{id}-key.pem")), &leaf.key_pem, true)?;
    std::fs::write(
        dir.join(format!("n{id}.toml")),
        format!(
            "id = {id}\nlisten = \"{addr}\"\ndata_dir = \"data/n{id}\"\npartitions = {partitions}\n\
             {top_toml}\n[tls]\nca = \"ca.pem\"\ncert = \"n{id}.pem\"\nkey = \"n{id}-key.pem\"\n{members}"
        ),
    )?;
    Ok(())
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            let _ = self.kill(i);
        }
    }
}
