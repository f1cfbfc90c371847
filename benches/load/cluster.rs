//! Where the harness's node processes come from: the release `ringkv-node` binary, built on
//! demand, run by [`ringkv_node::testing::ProcessCluster`].

use anyhow::{Context as _, Result, bail};
use ringkv_node::testing::ProcessCluster;
use std::path::{Path, PathBuf};

/// The release `ringkv-node` binary, brought up to date first (cargo does nothing when it is),
/// so that a measurement never runs a node older than the code beside it.
///
/// `RINGKV_NODE_BIN` names another binary instead (comparing two builds), used as it is.
pub fn node_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("RINGKV_NODE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected bench binary location")?;
    let bin = dir.join(format!("ringkv-node{}", std::env::consts::EXE_SUFFIX));
    eprintln!("building ringkv-node (release; nothing to do if it is up to date)...");
    let built = ringkv_node::testing::build_node_binaries(true);
    match (built, bin.exists()) {
        (true, true) => {}
        (false, true) => eprintln!(
            "warning: could not rebuild {}; measuring the existing binary",
            bin.display()
        ),
        (_, false) => bail!("could not build {}", bin.display()),
    }
    Ok(bin)
}

/// `nodes` node processes with Q = 1024 and `config` (TOML: top-level keys, then tables)
/// added to each node's configuration.
pub fn start(nodes: usize, config: &str) -> Result<ProcessCluster> {
    Ok(ProcessCluster::start(&node_binary()?, nodes, 1024, config)?)
}

/// Request-serving threads per node when `nodes` nodes share this host's cores: the cores
/// divided among them, at least one.
pub fn threads_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / nodes.max(1)).max(1)
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
