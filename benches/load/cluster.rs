//! Where the harness's node processes come from: the release `ringkv-node` binary, built on
//! demand, run by [`ringkv_node::testing::ProcessCluster`].

use anyhow::{Context as _, Result, bail};
use ringkv_node::testing::ProcessCluster;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // Cargo set these for this bench process. A build script that reads one (ring's reads
    // CARGO_MANIFEST_DIR) would otherwise see it change between this build and the user's
    // `cargo bench`, and each would rebuild half the dependency tree after the other.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*name,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            build.env_remove(&*name);
        }
    }
    let built = build
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "ringkv-node",
            "--bin",
            "ringkv-node",
        ])
        .status()
        .is_ok_and(|s| s.success());
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
