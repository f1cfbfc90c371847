//! `ringkv`: the admin CLI. Shows members, ring ownership and handoffs; stages joins and
//! leaves, shows the plan, commits it.
//!
//! It talks to any one node (`--node`) over QUIC with an operator (admin) certificate;
//! that node answers from its gossiped view and spreads changes to the others at once.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_net::quic::{OperatorKey, QuicTransport, TlsIdentity, TransportOptions, client_config};
use ringkv_net::transport::TransportError;
use ringkv_node::{admin_json, admin_report};
use ringkv_shared::handoff::{Progress, Transfer};
use ringkv_shared::proto::{AdminReply, AdminRequest, NodeStatus, Request, Response};
use ringkv_shared::{Limits, NodeId};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Administer a ringkv cluster.
#[derive(Parser)]
#[command(
    name = "ringkv",
    version,
    about = "ringkv's admin CLI: members, ring ownership and handoffs; stage joins and leaves, \
             show the plan, commit it",
    long_about = None
)]
struct Cli {
    /// Any node of the cluster: `ip:port` or `host:port`.
    #[arg(long, env = "RINGKV_NODE", default_value = "127.0.0.1:7001", value_parser = ringkv_node::host_addr::resolve)]
    node: SocketAddr,
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "RINGKV_CA", default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// An operator's certificate signed by the cluster CA (PEM; `ringkv-node certs admin`).
    #[arg(long, env = "RINGKV_CERT", default_value = "certs/admin.pem")]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, env = "RINGKV_KEY", default_value = "certs/admin-key.pem")]
    key: PathBuf,
    /// Print what read commands (members, status, ring, plan, handoffs) find as one JSON
    /// document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every known node: address, status, partitions owned.
    Members,
    /// Every node: its stage and partitions in the asked node's view, and whether it answers
    /// (asked directly, with its ring epoch).
    Status,
    /// Ownership per node, balance, and placement checks.
    Ring,
    /// Stage a node to join: its id (it started with this cluster's seeds) or its address.
    Join {
        /// Node id, or its address (`ip:port` or `host:port`).
        node: String,
    },
    /// Stage a node to leave (it hands its data over first).
    Leave {
        /// Node id.
        node: u32,
    },
    /// Stage a dead node (host or disk lost for good) to be removed by force: its
    /// partitions are copied from their other replicas, and nothing waits for it. It must
    /// never come back with its data.
    Remove {
        /// Node id.
        node: u32,
        /// Required: the node is dead for good (for a live node, use `leave`).
        #[arg(long)]
        force: bool,
    },
    /// Stage a dead node to be removed by force and a new node to join in its place, in one
    /// change.
    Replace {
        /// The dead node's id.
        dead: u32,
        /// The new node: its id (it started with this cluster's seeds) or its address.
        new: String,
    },
    /// Show what the staged changes would move.
    Plan,
    /// Commit the staged changes, signed with the key of --cert/--key (an admin
    /// certificate): data moves, then the new ring takes over.
    Commit {
        /// The node ids the staged change removes by force, confirmed (comma-separated): a
        /// change that removes any is signed only when they are named here exactly.
        #[arg(long, value_delimiter = ',')]
        forced: Vec<u32>,
    },
    /// Abort the ring change that is moving data (committed, not finished): the owners stay
    /// as they were. Signed with the key of --cert/--key; sent to the node that completes
    /// changes.
    Abort,
    /// Forget the staged changes.
    Clear,
    /// Copy the node's storage (--node), as it is at one instant, into DIR on that node's
    /// host, while it keeps serving. Restore with `ringkv-node restore`.
    Backup {
        /// An absolute path on the node's host: a new or empty directory.
        dir: String,
    },
    /// Transfers in progress, with a progress bar and bytes/s.
    Handoffs {
        /// Follow until the ring change completes.
        #[arg(long)]
        watch: bool,
    },
}

/// A node named on the command line: its id, or its address (`ip:port` or `host:port`).
fn node_or_addr(node: &str) -> Result<(Option<NodeId>, Option<SocketAddr>)> {
    match (node.parse::<u32>(), ringkv_node::host_addr::resolve(node)) {
        (Ok(id), _) => Ok((Some(NodeId(id)), None)),
        (_, Ok(addr)) => Ok((None, Some(addr))),
        (_, Err(why)) => {
            bail!("{node:?} is neither a node id nor an address (ip:port or host:port): {why}")
        }
    }
}

/// Writes to stdout; a reader that went away (`ringkv members | head`) ends the program
/// quietly, as it would a Unix tool, instead of a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ringkv: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($t:tt)*) => { emit(&format!("{}\n", format_args!($($t)*))) };
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("ringkv: {}", ringkv_node::error_line::one_line(&e));
        std::process::exit(1);
    }
}

struct Admin {
    transport: QuicTransport,
    node: SocketAddr,
    /// The operator's TLS material (its key signs ring changes).
    tls: TlsIdentity,
}

impl Admin {
    async fn connect(cli: &Cli) -> Result<Admin> {
        let tls = TlsIdentity::load(&cli.ca, &cli.cert, &cli.key)
            .with_context(|| "loading the TLS files (see --ca, --cert, --key)")?;
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .context("binding a local UDP socket")?;
        let transport = QuicTransport::new(
            endpoint,
            client_config(&tls, &Limits::default())?,
            TransportOptions::default(),
        );
        Ok(Admin {
            transport,
            node: cli.node,
            tls,
        })
    }

    async fn call_at(&self, addr: SocketAddr, request: AdminRequest) -> Result<AdminReply> {
        admin_reply(self.call_raw(addr, request).await?)
    }

    /// Sends `request` to `addr`; the node's answer as it is, refusals included.
    async fn call_raw(&self, addr: SocketAddr, request: AdminRequest) -> Result<Response> {
        self.call_raw_within(addr, request, Duration::from_secs(10))
            .await
    }

    /// [`Admin::call_raw`], waiting up to `wait` for the answer.
    async fn call_raw_within(
        &self,
        addr: SocketAddr,
        request: AdminRequest,
        wait: Duration,
    ) -> Result<Response> {
        tokio::time::timeout(
            wait,
            self.transport.call_addr(addr, Request::Admin(request)),
        )
        .await
        .with_context(|| format!("{addr} did not answer within {} s", wait.as_secs()))?
        .map_err(|e| match e {
            // The handshake failed on a certificate: not a network problem.
            TransportError::Refused { .. } => anyhow::anyhow!(
                "{addr} and this CLI do not accept each other's certificates: {e} (are --ca, \
                 --cert and --key from this cluster's CA, and --cert an admin certificate?)"
            ),
            other => anyhow::Error::new(other).context(format!("cannot reach {addr}")),
        })
    }

    async fn call(&self, request: AdminRequest) -> Result<AdminReply> {
        self.call_at(self.node, request).await
    }

    async fn status_at(&self, addr: SocketAddr) -> Result<NodeStatus> {
        match self.call_at(addr, AdminRequest::Status).await? {
            AdminReply::Status(s) => Ok(*s),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Every member's outgoing transfers, and the asked node's view.
    async fn handoffs(&self) -> Result<(NodeStatus, Vec<(Transfer, Progress)>)> {
        let status = self.status_at(self.node).await?;
        let mut sending = Vec::new();
        for m in status.view.gossip_peers(NodeId(u32::MAX)) {
            if let Ok(s) = self.status_at(where_now(&m).await).await {
                sending.extend(s.sending);
            }
        }
        Ok((status, sending))
    }
}

async fn run(cli: Cli) -> Result<()> {
    let admin = Admin::connect(&cli).await?;
    match &cli.command {
        Command::Members => {
            let view = admin.status_at(cli.node).await?.view;
            if cli.json {
                print_json(&admin_json::members(&view));
            } else {
                out!("{}", admin_report::members(&view));
            }
        }
        Command::Status => status(&admin, cli.json).await?,
        Command::Ring => {
            let s = admin.status_at(cli.node).await?;
            if cli.json {
                print_json(&admin_json::ring(&s.view.ring, s.n));
            } else {
                out!("{}", admin_report::ring(&s.view.ring, s.n));
            }
        }
        Command::Join { node } => {
            let (node, addr) = node_or_addr(node)?;
            done(admin.call(AdminRequest::Join { node, addr }).await?)?;
        }
        Command::Remove { node, force } => {
            if !*force {
                bail!(
                    "`remove` is for a node that is dead for good and needs --force; for a node that is up, use `ringkv leave {node}` (it hands its data over first)"
                );
            }
            done(
                admin
                    .call(AdminRequest::RemoveForced {
                        node: NodeId(*node),
                    })
                    .await?,
            )?;
        }
        Command::Replace { dead, new } => {
            let (node, addr) = node_or_addr(new)?;
            done(
                admin
                    .call(AdminRequest::Replace {
                        dead: NodeId(*dead),
                        node,
                        addr,
                    })
                    .await?,
            )?;
        }
        Command::Leave { node } => done(
            admin
                .call(AdminRequest::Leave {
                    node: NodeId(*node),
                })
                .await?,
        )?,
        Command::Plan => match admin.call(AdminRequest::Plan).await? {
            AdminReply::Plan {
                current,
                target,
                transfers,
            } => {
                // The nodes removed by force are signed with the plan at commit.
                let forced: Vec<u32> = admin
                    .status_at(cli.node)
                    .await?
                    .view
                    .staged
                    .forced
                    .iter()
                    .map(|id| id.0)
                    .collect();
                if cli.json {
                    let mut plan = admin_json::plan(&current, &target, &transfers);
                    plan["removed_by_force"] = serde_json::json!(forced);
                    print_json(&plan);
                } else {
                    out!("{}", admin_report::plan(&current, &target, &transfers));
                    if !forced.is_empty() {
                        outln!(
                            "removed by force: {forced:?} (dead for good: nothing is copied from them or waits for them; they must never come back with their data). Confirm with `ringkv commit --forced {}`",
                            forced
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                    }
                }
            }
            other => bail!("unexpected answer {other:?}"),
        },
        Command::Commit { forced } => {
            let forced: std::collections::BTreeSet<NodeId> =
                forced.iter().map(|id| NodeId(*id)).collect();
            // Signed before anything is sent: a certificate that cannot sign fails here,
            // with a message about the certificate, not the cluster.
            let key = OperatorKey::from_identity(&admin.tls)
                .with_context(|| format!("signing the ring change with {}", cli.cert.display()))?;
            let reply = ringkv_node::operator::signed_commit(
                |request| async { admin.call_raw(admin.node, request).await },
                &key,
                &forced,
            )
            .await?;
            done(admin_reply(reply)?)?
        }
        Command::Abort => {
            let key = OperatorKey::from_identity(&admin.tls)
                .with_context(|| format!("signing the abort with {}", cli.cert.display()))?;
            let admin = &admin;
            let reply = ringkv_node::operator::signed_abort(
                |at, request| async move { admin.call_raw(at, request).await },
                admin.node,
                &key,
            )
            .await?;
            done(admin_reply(reply)?)?
        }
        Command::Clear => done(admin.call(AdminRequest::Clear).await?)?,
        Command::Backup { dir } => {
            // A large store takes a while to copy: the node answers when it is done.
            let reply = admin
                .call_raw_within(
                    admin.node,
                    AdminRequest::Backup { dir: dir.clone() },
                    Duration::from_secs(24 * 3600),
                )
                .await?;
            done(admin_reply(reply)?)?
        }
        Command::Handoffs { watch } => handoffs(&admin, *watch, cli.json).await?,
    }
    Ok(())
}

/// A node's answer to an admin request: its reply, or its refusal as an error.
fn admin_reply(reply: Response) -> Result<AdminReply> {
    match reply {
        Response::Admin(a) => Ok(a),
        Response::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {}", other.kind()),
    }
}

fn done(reply: AdminReply) -> Result<()> {
    match reply {
        AdminReply::Done { message } => {
            outln!("{message}");
            Ok(())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(e) => eprintln!("ringkv: cannot print JSON: {e}"),
    }
}

/// Where member `m` is now: its name resolved again if it was given one (a host that moved
/// is asked at its new address), else the address the cluster knows.
async fn where_now(m: &ringkv_shared::Member) -> SocketAddr {
    match &m.host {
        Some(host) => ringkv_net::quic::resolve_host(host.as_str())
            .await
            .map_or(m.addr, |addrs| addrs[0]),
        None => m.addr,
    }
}

/// `ringkv status`: every member of the asked node's view, asked directly.
async fn status(admin: &Admin, json: bool) -> Result<()> {
    let view = admin.status_at(admin.node).await?.view;
    let counts = view.ring.ownership_counts();
    let mut nodes = Vec::new();
    for (id, record) in &view.members {
        let answered = match tokio::time::timeout(
            Duration::from_secs(3),
            admin.status_at(where_now(&record.member(*id)).await),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s.view.ring.epoch()),
            Ok(Err(e)) => Err(ringkv_node::error_line::one_line(&e)),
            Err(_) => Err("no answer within 3 s".to_string()),
        };
        nodes.push(admin_json::NodeSeen {
            id: *id,
            addr: admin_json::shown_address(record),
            stage: record.status.to_string(),
            partitions: counts.get(id).copied().unwrap_or(0),
            answered,
        });
    }
    if json {
        print_json(&admin_json::status(&view, &nodes));
    } else {
        out!("{}", admin_json::status_text(&view, &nodes));
    }
    Ok(())
}

/// `ringkv handoffs [--watch]`: a progress bar on a terminal; elsewhere (a pipe, a file, a
/// CI log) a plain line per change, or one JSON document with `--json` (no `--watch`).
async fn handoffs(admin: &Admin, watch: bool, json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let (status, sending) = admin.handoffs().await?;
    let totals = admin_report::handoff_totals(&status.view, &sending);
    if json {
        if watch {
            bail!("--json prints one document: use it without --watch, and poll");
        }
        print_json(&admin_json::handoffs(
            status.view.ring.epoch(),
            totals.as_ref(),
            &sending,
        ));
        return Ok(());
    }
    let Some(totals) = totals else {
        outln!(
            "no ring change under way (ring epoch {})",
            status.view.ring.epoch()
        );
        return Ok(());
    };
    let line = |t: &admin_report::HandoffTotals| {
        format!(
            "{}/{} transfers, {} keys, {:.1} MiB in flight transfers, {:.1} MiB/s",
            t.done,
            t.total,
            t.keys,
            t.bytes as f64 / (1 << 20) as f64,
            t.bytes_per_sec / (1 << 20) as f64
        )
    };
    if !std::io::stdout().is_terminal() {
        outln!("{}", line(&totals));
        if !watch {
            for (t, p) in sending.iter().take(20) {
                outln!("  {t}: {} keys, {} bytes", p.keys, p.bytes);
            }
            return Ok(());
        }
        let mut last = line(&totals);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, sending) = admin.handoffs().await?;
            match admin_report::handoff_totals(&status.view, &sending) {
                Some(t) => {
                    let now = line(&t);
                    if now != last {
                        outln!("{now}");
                        last = now;
                    }
                }
                None => {
                    outln!("done: ring epoch {} in force", status.view.ring.epoch());
                    return Ok(());
                }
            }
        }
    }
    let bar = ProgressBar::new(totals.total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} transfers  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let show = |bar: &ProgressBar, t: &admin_report::HandoffTotals| {
        bar.set_length(t.total as u64);
        bar.set_position(t.done as u64);
        bar.set_message(format!(
            "{} keys, {:.1} MiB in flight transfers, {:.1} MiB/s",
            t.keys,
            t.bytes as f64 / (1 << 20) as f64,
            t.bytes_per_sec / (1 << 20) as f64
        ));
    };
    show(&bar, &totals);
    if !watch {
        bar.abandon();
        for (t, p) in sending.iter().take(20) {
            outln!("  {t}: {} keys, {} bytes", p.keys, p.bytes);
        }
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, sending) = admin.handoffs().await?;
        match admin_report::handoff_totals(&status.view, &sending) {
            Some(t) => show(&bar, &t),
            None => {
                bar.finish_with_message(format!(
                    "done: ring epoch {} in force",
                    status.view.ring.epoch()
                ));
                return Ok(());
            }
        }
    }
}
