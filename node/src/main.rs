//! `ringkv-node`: run a storage node, or make development certificates.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ringkv_node::certs::{DevCa, Role, read_pem, write_pem};
use ringkv_node::storage::Durability;
use ringkv_node::{Node, NodeConfig};
use std::path::PathBuf;

/// mimalloc instead of the system allocator: a request allocates and frees frames, objects and
/// tasks across threads, where glibc's malloc spent about 14% of a loaded node's time
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A ringkv storage node.
#[derive(Parser)]
#[command(name = "ringkv-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Node configuration file (TOML).
    #[arg(long, short, env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    /// Override `listen` (`ip:port` or `host:port`).
    #[arg(long, value_parser = ringkv_node::host_addr::HostAddr::parse)]
    listen: Option<ringkv_node::host_addr::HostAddr>,
    /// Override `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override `storage.durability` (sync, buffered, none).
    #[arg(long, value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Log format on stderr: `text` (coloured only when stderr is a terminal) or `json` (one
    /// object per line, for log shippers). The level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "RINGKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How the node writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Make development certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Make this node's data directory (the config's `data_dir`, which must be absent or
    /// empty) from a backup taken with `ringkv backup`; the node then starts from it and
    /// catches up from its replicas. A backup older than the tombstone grace period is
    /// refused.
    Restore {
        /// The node's configuration file (TOML): its id, data directory and grace period.
        #[arg(long, short, env = "RINGKV_CONFIG")]
        config: PathBuf,
        /// The backup's directory.
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a cluster CA: OUT/ca.pem and OUT/ca-key.pem. Keep OUT off the nodes: only
    /// ca.pem goes to hosts (leaf commands copy it next to the certificates they write).
    Ca {
        /// Output directory.
        #[arg(long, default_value = "ca")]
        out: PathBuf,
        /// Days the CA is valid for.
        #[arg(long, default_value_t = ringkv_node::certs::CA_DAYS)]
        days: u32,
    },
    /// Issue a node certificate: OUT/NAME.pem, OUT/NAME-key.pem (and OUT/ca.pem). It names
    /// the node's id (its role `ringkv://node/<id>`).
    Node {
        /// Name, e.g. n1.
        name: String,
        /// The node's id (the `id` in its config); taken from NAME when it is `n<id>`.
        #[arg(long)]
        id: Option<u32>,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// Issue an operator's certificate (for the `ringkv` admin CLI): membership changes and
    /// inspection, besides reads and writes.
    Admin {
        /// Name, e.g. admin or alice.
        name: String,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// Issue an application's certificate: reads and writes through the coordinators,
    /// nothing a node or an operator does.
    Client {
        /// Name, e.g. cart-api.
        name: String,
        #[command(flatten)]
        leaf: LeafArgs,
    },
}

/// Where a leaf certificate comes from and goes.
#[derive(Args)]
struct LeafArgs {
    /// Directory holding the CA's ca.pem and ca-key.pem.
    #[arg(long, default_value = "ca")]
    ca_dir: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Days the certificate is valid for.
    #[arg(long, default_value_t = ringkv_node::certs::LEAF_DAYS)]
    days: u32,
    /// Write into a directory that holds the CA key (refused otherwise: leaf files are
    /// copied to hosts, and the CA key must not travel with them).
    #[arg(long)]
    beside_ca_key: bool,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "sync" => Ok(Durability::Sync),
        "buffered" => Ok(Durability::Buffered),
        "none" => Ok(Durability::None),
        other => Err(format!("`{other}` is not one of sync, buffered, none")),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Certs(c)) => certs(c),
        Some(Command::Restore { config, from }) => restore(&config, &from),
        None => run(cli.run),
    };
    // One line, each cause once, and no backtrace whatever RUST_BACKTRACE says: the
    // message names what is wrong (the file, the field, the directory).
    if let Err(e) = result {
        eprintln!("ringkv-node: {}", ringkv_node::error_line::one_line(&e));
        std::process::exit(1);
    }
}

fn certs(cmd: CertsCommand) -> Result<()> {
    match cmd {
        CertsCommand::Ca { out, days } => {
            let cert = out.join("ca.pem");
            let key = out.join("ca-key.pem");
            if key.exists() {
                anyhow::bail!("{} exists; refusing to replace a CA key", key.display());
            }
            let ca = DevCa::generate_valid_for(days)?;
            write_pem(&cert, ca.cert_pem(), false)?;
            write_pem(&key, &ca.key_pem(), true)?;
            println!(
                "wrote {} and {} (valid {days} days)",
                cert.display(),
                key.display()
            );
        }
        CertsCommand::Node { name, id, leaf } => {
            let id = match id.or_else(|| name.strip_prefix('n').and_then(|n| n.parse().ok())) {
                Some(id) if id > 0 => id,
                _ => anyhow::bail!(
                    "which node is {name}? pass --id <its config's id> (a name n<id> implies it)"
                ),
            };
            issue(&Role::Node(ringkv_shared::NodeId(id)), &name, &leaf)?
        }
        CertsCommand::Admin { name, leaf } => issue(&Role::Admin, &name, &leaf)?,
        CertsCommand::Client { name, leaf } => issue(&Role::Client, &name, &leaf)?,
    }
    Ok(())
}

fn restore(config: &std::path::Path, from: &std::path::Path) -> Result<()> {
    let config = NodeConfig::load(config)?;
    config.validate()?;
    let grace = std::time::Duration::from_millis(config.background.tombstone_grace_ms);
    let done = ringkv_node::storage::restore(
        from,
        &config.data_dir,
        config.node_id(),
        &config.store_options(),
        grace,
    )
    .with_context(|| {
        format!(
            "restoring {} from {}",
            config.data_dir.display(),
            from.display()
        )
    })?;
    println!(
        "restored {} ({} files) from a backup {} s old; start the node: anti-entropy brings it up to date",
        done.data_dir.display(),
        done.files,
        done.backup_age.as_secs()
    );
    Ok(())
}

fn issue(role: &Role, name: &str, leaf: &LeafArgs) -> Result<()> {
    let LeafArgs {
        ca_dir,
        out,
        days,
        beside_ca_key,
    } = leaf;
    if out.join("ca-key.pem").exists() && !beside_ca_key {
        anyhow::bail!(
            "{} holds the CA key; refusing to write certificates next to it (they are copied \
             to hosts, and the CA key must not go with them): pass --out <another directory>, \
             or --beside-ca-key",
            out.display()
        );
    }
    let ca_pem = read_pem(&ca_dir.join("ca.pem"))?;
    let ca = DevCa::from_pem(ca_pem.clone(), &read_pem(&ca_dir.join("ca-key.pem"))?)
        .with_context(|| format!("loading the CA from {}", ca_dir.display()))?;
    // The CA certificate (never its key) goes beside the leaf: every host needs it.
    let out_ca = out.join("ca.pem");
    match std::fs::read_to_string(&out_ca) {
        Ok(existing) if existing != ca_pem => anyhow::bail!(
            "{} is another CA's certificate; issue into another directory",
            out_ca.display()
        ),
        Ok(_) => {}
        Err(_) => write_pem(&out_ca, &ca_pem, false)?,
    }
    let issued = ca.issue_valid_for(role, name, *days)?;
    let cert = out.join(format!("{name}.pem"));
    let key = out.join(format!("{name}-key.pem"));
    write_pem(&cert, &issued.cert_pem, false)?;
    write_pem(&key, &issued.key_pem, true)?;
    println!(
        "wrote {} and {} ({}, valid {days} days)",
        cert.display(),
        key.display(),
        role.uri(name)
    );
    Ok(())
}

/// Logs go to stderr (stdout carries only the "listening on" line); colours only when stderr
/// is a terminal, so that files and journald get plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

fn run(args: RunArgs) -> Result<()> {
    init_logging(args.log_format);
    let path = args
        .config
        .context("no configuration: pass --config FILE (see the README for an example)")?;
    let mut config = NodeConfig::load(&path)?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(d) = args.durability {
        config.storage.durability = d;
    }
    config.validate()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let advertise = config.advertise.clone();
    runtime.block_on(async move {
        let node = Node::start(config).await?;
        match advertise {
            Some(a) if a.addr != node.addr() || a.name.is_some() => println!(
                "ringkv-node {} listening on {}, announced to the cluster as {a}",
                node.id(),
                node.addr()
            ),
            _ => println!("ringkv-node {} listening on {}", node.id(), node.addr()),
        }
        let departed = tokio::select! {
            signal = wait_for_signal(&node) => {
                signal?;
                None
            }
            reason = node.departed() => Some(reason),
        };
        tracing::info!("shutting down");
        node.shutdown().await?;
        if let Some(reason) = departed {
            // Exit 0: a unit restarted on failure stays down.
            eprintln!("ringkv-node: {reason}");
        }
        Ok(())
    })
}

/// Waits for SIGTERM or Ctrl-C; on SIGHUP reloads the certificates and keeps running.
async fn wait_for_signal(node: &ringkv_node::NodeHandle) -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => return Ok(r?),
                _ = term.recv() => return Ok(()),
                _ = hup.recv() => {
                    if let Err(e) = node.reload_tls() {
                        tracing::warn!(error = %e, "certificates not reloaded; the old ones stay in use");
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = node;
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
