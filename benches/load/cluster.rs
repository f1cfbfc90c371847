//! Where the harness's node processes come from: the release `ringkv-node` binary, built on
//! demand, run by [`ringkv_node::testing::ProcessCluster`].

use anyhow::{Context as _, Result, bail};
use ringkv_node::testing::ProcessCluster;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// `nodes` node processes with Q = 1024 and the given durability.
pub fn start(nodes: usize, durability: &str) -> Result<ProcessCluster> {
    Ok(ProcessCluster::start(
        &node_binary()?,
        nodes,
        1024,
        &format!("[storage]\ndurability = \"{durability}\"\n"),
    )?)
}

/// A client built by `builder` once the cluster answers (nodes need a moment after their
/// processes start), giving up after a minute.
pub async fn connect(builder: impl Fn() -> ringkv::ClientBuilder) -> Result<ringkv::Client> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match builder().build().await {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e).context("the cluster did not answer");
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
