//! A minimal command-line client for a running cluster.
//!
//! ```text
//! cargo run --example kv -- --seed 127.0.0.1:7001 --certs examples/cluster/certs --name app put greeting hello
//! cargo run --example kv -- --seed 127.0.0.1:7001 --certs examples/cluster/certs --name app get greeting
//! ```
//!
//! Reads print every sibling; `put` and `delete` first read the key and write back with its
//! context, so they replace what is there (and resolve siblings).

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ringkv::{CallOptions, Client, Mode};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Talk to a ringkv cluster")]
struct Cli {
    /// A node to learn the ring from (repeatable).
    #[arg(long = "seed", required = true)]
    seeds: Vec<SocketAddr>,
    /// Directory with ca.pem, NAME.pem and NAME-key.pem.
    #[arg(long)]
    certs: PathBuf,
    /// Client certificate name (made with `ringkv-node certs client NAME`).
    #[arg(long, default_value = "app")]
    name: String,
    /// Coordinate through a random node instead of client-side.
    #[arg(long)]
    router: bool,
    /// R for reads, W for writes (default 2).
    #[arg(long)]
    quorum: Option<u8>,
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand)]
enum Op {
    /// Print every value (sibling) of a key.
    Get { key: String },
    /// Replace a key's value(s) with VALUE.
    Put { key: String, value: String },
    /// Delete a key.
    Delete { key: String },
    /// Every node's counters: hints, anti-entropy, tombstones.
    Stats,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let c = &cli.certs;
    let client = Client::builder()
        .seeds(cli.seeds.iter().copied())
        .tls_files(
            &c.join("ca.pem"),
            &c.join(format!("{}.pem", cli.name)),
            &c.join(format!("{}-key.pem", cli.name)),
        )?
        .mode(if cli.router {
            Mode::Router
        } else {
            Mode::Direct
        })
        .build()
        .await
        .context("connecting to the cluster")?;
    let opts = CallOptions {
        quorum: cli.quorum,
        ..CallOptions::default()
    };
    match cli.op {
        Op::Get { key } => {
            let read = client.get_with(key.clone(), opts).await?;
            if read.is_not_found() {
                println!("{key}: not found");
            }
            for v in &read.values {
                println!("{key}: {}", String::from_utf8_lossy(v));
            }
        }
        Op::Put { key, value } => {
            let read = client.get(key.clone()).await?;
            client
                .put_with(key.clone(), value, &read.context, opts)
                .await?;
            println!("{key}: stored");
        }
        Op::Stats => {
            println!(
                "{:<5} {:>9} {:>9} {:>10} {:>9} {:>11} {:>12} {:>10}",
                "node",
                "objects",
                "hints",
                "delivered",
                "ae_rounds",
                "ae_repaired",
                "ae_bytes",
                "reaped"
            );
            for (node, stats) in client.stats().await {
                match stats {
                    Ok(s) => println!(
                        "{:<5} {:>9} {:>9} {:>10} {:>9} {:>11} {:>12} {:>10}",
                        node.to_string(),
                        s.objects,
                        s.hints_pending,
                        s.hints_delivered,
                        s.ae_rounds,
                        s.ae_keys_repaired,
                        s.ae_bytes_sent + s.ae_bytes_received,
                        s.tombstones_reaped
                    ),
                    Err(e) => println!("{node:<5} unavailable: {e}"),
                }
            }
        }
        Op::Delete { key } => {
            let read = client.get(key.clone()).await?;
            client.delete_with(key.clone(), &read.context, opts).await?;
            println!("{key}: deleted");
        }
    }
    Ok(())
}
