//! A shopping-cart HTTP service on ringkv, and a demo of Dynamo's cart story.
//!
//! ```text
//! cargo run --release --example shopping-cart                 # embedded 3-node cluster, http://127.0.0.1:8080
//! cargo run --release --example shopping-cart -- demo         # the network-cut story, printed
//! cargo run --release --example shopping-cart -- --seed 127.0.0.1:7001 --certs examples/cluster/certs
//! ```
//!
//! Then: `curl -X POST localhost:8080/carts/alice/items -H 'content-type: application/json'
//! -d '{"item":"book","quantity":1}'`, `curl localhost:8080/carts/alice`,
//! `curl -X DELETE localhost:8080/carts/alice/items/book`.

mod demo;
mod service;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ringkv::Client;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "A shopping-cart service on ringkv")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Cluster nodes to connect to; without any, an embedded 3-node cluster is started.
    #[arg(long = "seed")]
    seeds: Vec<SocketAddr>,
    /// Directory with ca.pem, NAME.pem and NAME-key.pem (with --seed).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// Client certificate name (with --seed).
    #[arg(long, default_value = "app")]
    name: String,
    /// HTTP address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[derive(Subcommand)]
enum Command {
    /// Tell Dynamo's story: a cut, adds and removes on both sides, a heal, a merged cart.
    Demo,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Demo) = cli.command {
        let report = demo::run(|line| println!("{line}")).await?;
        println!(
            "\nduring the cut A saw {:?} and B saw {:?}; after it, {} siblings merged into {:?}",
            report.side_a, report.side_b, report.siblings_after_heal, report.merged
        );
        anyhow::ensure!(
            report.merged == report.expected,
            "expected {:?}",
            report.expected
        );
        return Ok(());
    }
    let mut _embedded = None;
    let client = if cli.seeds.is_empty() {
        let cluster = ringkv_node::testing::LocalCluster::start(3).await?;
        println!(
            "started an embedded 3-node cluster at {:?}",
            cluster.addrs()
        );
        let client = Client::builder()
            .seeds(cluster.addrs())
            .tls(cluster.client_tls())
            .build()
            .await?;
        _embedded = Some(cluster);
        client
    } else {
        let dir = cli.certs.context("--certs DIR is required with --seed")?;
        Client::builder()
            .seeds(cli.seeds.iter().copied())
            .tls_files(
                &dir.join("ca.pem"),
                &dir.join(format!("{}.pem", cli.name)),
                &dir.join(format!("{}-key.pem", cli.name)),
            )?
            .build()
            .await
            .context("connecting to the cluster")?
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    println!("cart service on http://{}", listener.local_addr()?);
    axum::serve(listener, service::router(client))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
