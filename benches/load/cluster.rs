//! Real `ringkv-node` processes on 127.0.0.1 for the harness, killed when dropped.

use anyhow::{Context as _, Result, bail};
use ringkv::TlsIdentity;
use ringkv_node::certs::{CertKind, DevCa, write_pem};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The release `ringkv-node` binary, built if missing.
pub fn node_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected bench binary location")?;
    let bin = dir.join(format!("ringkv-node{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        eprintln!("building ringkv-node (release)...");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "ringkv-node",
                "--bin",
                "ringkv-node",
            ])
            .status()?
            .success();
        if !ok || !bin.exists() {
            bail!("could not build {}", bin.display());
        }
    }
    Ok(bin)
}

/// A cluster of node processes in a temporary directory.
pub struct Cluster {
    _dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
    pub tls: TlsIdentity,
    procs: Vec<Child>,
}

impl Cluster {
    pub fn start(nodes: usize, durability: &str) -> Result<Self> {
        let bin = node_binary()?;
        let dir = tempfile::Builder::new().prefix("ringkv-load-").tempdir()?;
        let ca = DevCa::generate()?;
        write_pem(&dir.path().join("ca.pem"), ca.cert_pem(), false)?;
        let addrs: Vec<SocketAddr> = (0..nodes)
            .map(|_| Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?))
            .collect::<Result<_>>()?;
        let members: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("[[members]]\nid = {}\naddr = \"{a}\"\n", i + 1))
            .collect();
        let mut procs = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i + 1;
            let leaf = ca.issue(CertKind::Node, &format!("n{id}"))?;
            write_pem(
                &dir.path().join(format!("n{id}.pem")),
                &leaf.cert_pem,
                false,
            )?;
            write_pem(
                &dir.path().join(format!("n{id}-key.pem")),
                &leaf.key_pem,
                true,
            )?;
            let config = dir.path().join(format!("n{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "id = {id}\nlisten = \"{addr}\"\ndata_dir = \"data/n{id}\"\n\
                     [storage]\ndurability = \"{durability}\"\n\
                     [tls]\nca = \"ca.pem\"\ncert = \"n{id}.pem\"\nkey = \"n{id}-key.pem\"\n{members}"
                ),
            )?;
            let log = std::fs::File::create(dir.path().join(format!("n{id}.log")))?;
            procs.push(
                Command::new(&bin)
                    .arg("--config")
                    .arg(&config)
                    .env("RUST_LOG", "warn")
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?,
            );
        }
        let client = ca.issue(CertKind::Client, "load")?;
        Ok(Cluster {
            _dir: dir,
            addrs,
            tls: TlsIdentity {
                ca_pem: ca.cert_pem().as_bytes().to_vec(),
                cert_pem: client.cert_pem.into_bytes(),
                key_pem: client.key_pem.into_bytes(),
            },
            procs,
        })
    }

    /// Resident memory of each node process, in bytes (Linux; 0 elsewhere).
    pub fn resident_bytes(&self) -> Vec<u64> {
        self.procs
            .iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{}/statm", p.id()))
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .map_or(0, |pages| pages * 4096)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
