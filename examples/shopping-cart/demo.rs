//! Dynamo's story, told by the cart service: a network cut splits two service instances and
//! the cluster, both keep taking adds and removes, the cut heals, and every add survives.

use crate::service::{CartView, router};
use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ringkv::Client;
use ringkv_node::config::BackgroundConfig;
use ringkv_node::testing::LocalCluster;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// What the demo saw.
#[derive(Debug)]
pub struct Report {
    /// Side A's cart during the cut.
    pub side_a: BTreeMap<String, i64>,
    /// Side B's cart during the cut.
    pub side_b: BTreeMap<String, i64>,
    /// Siblings the first read after convergence found.
    pub siblings_after_heal: usize,
    /// The merged cart.
    pub merged: BTreeMap<String, i64>,
    /// What it must be: every add survived, the remove removed what it saw.
    pub expected: BTreeMap<String, i64>,
}

/// Sends one request to a service instance and decodes the cart it answers.
pub async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value)> {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&b)?)
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body)?).await?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

async fn cart(app: &Router, uri: &str) -> Result<CartView> {
    let (status, json) = call(app, Method::GET, uri, None).await?;
    if status != StatusCode::OK {
        bail!("GET {uri}: {status} {json}");
    }
    Ok(serde_json::from_value(json)?)
}

async fn must(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
) -> Result<CartView> {
    let (status, json) = call(app, method.clone(), uri, body).await?;
    if status != StatusCode::OK {
        bail!("{method} {uri}: {status} {json}");
    }
    Ok(serde_json::from_value(json)?)
}

fn add(item: &str, quantity: i64) -> Option<serde_json::Value> {
    Some(serde_json::json!({ "item": item, "quantity": quantity }))
}

/// Runs the demo, reporting each step through `say`.
pub async fn run(mut say: impl FnMut(String)) -> Result<Report> {
    let background = BackgroundConfig {
        hint_interval_ms: 200,
        ae_interval_ms: 200,
        ..BackgroundConfig::default()
    };
    let cluster = LocalCluster::builder(5)
        .background(background)
        .start()
        .await?;
    let addrs = cluster.addrs();
    let client_a = Client::builder()
        .seeds(addrs.clone())
        .tls(cluster.client_tls())
        .build()
        .await?;
    let client_b = Client::builder()
        .seeds(addrs.clone())
        .tls(cluster.client_tls())
        .build()
        .await?;
    let (a, b) = (router(client_a.clone()), router(client_b.clone()));
    let uri = "/carts/alice";
    say("5 nodes started; two cart service instances, A and B, share the cluster".into());

    // The cut gives each side one owner of the cart's key and one stand-in, so each side can
    // still reach W=2 nodes (sloppy quorum) and has an owner to coordinate.
    let ring = client_a.ring();
    let prefs: Vec<ringkv_shared::NodeId> = ring.preference_list_for_key(b"cart:alice").to_vec();
    let index =
        |id: ringkv_shared::NodeId| (0..5).find(|i| cluster.node_id(*i) == id).context("node");
    let side_a = [index(prefs[0])?, index(prefs[3])?];
    let side_b: Vec<usize> = (0..5).filter(|i| !side_a.contains(i)).collect();
    let names = |s: &[usize]| {
        s.iter()
            .map(|i| cluster.node_id(*i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    say(format!(
        "cart:alice is owned by {}, {}, {} (N=3); stand-ins {}, {}",
        prefs[0], prefs[1], prefs[2], prefs[3], prefs[4]
    ));

    must(&a, Method::POST, "/carts/alice/items", add("book", 1)).await?;
    must(&b, Method::POST, "/carts/alice/items", add("pen", 2)).await?;
    say(format!(
        "before the cut: A adds 1 book, B adds 2 pens -> {:?}",
        cart(&a, uri).await?.items
    ));

    let addr_of = |s: &[usize]| -> Vec<SocketAddr> { s.iter().map(|i| addrs[*i]).collect() };
    for &i in &side_a {
        cluster.node(i).context("running")?.block(addr_of(&side_b));
    }
    for &i in &side_b {
        cluster.node(i).context("running")?.block(addr_of(&side_a));
    }
    client_a.block_for_testing(addr_of(&side_b));
    client_b.block_for_testing(addr_of(&side_a));
    say(format!(
        "network cut: {{A, {}}} | {{B, {}}}",
        names(&side_a),
        names(&side_b)
    ));

    must(&a, Method::POST, "/carts/alice/items", add("lamp", 1)).await?;
    must(&a, Method::DELETE, "/carts/alice/items/pen", None).await?;
    let seen_a = cart(&a, uri).await?.items;
    say(format!(
        "  A adds a lamp and removes the pens -> A sees {seen_a:?}"
    ));
    must(&b, Method::POST, "/carts/alice/items", add("mug", 1)).await?;
    must(&b, Method::POST, "/carts/alice/items", add("book", 1)).await?;
    let seen_b = cart(&b, uri).await?.items;
    say(format!(
        "  B adds a mug and another book -> B sees {seen_b:?}"
    ));

    for i in 0..5 {
        cluster.node(i).context("running")?.heal();
    }
    client_a.heal_for_testing();
    client_b.heal_for_testing();
    say("the cut heals; hinted handoff and anti-entropy reconcile the replicas".into());

    let expected: BTreeMap<String, i64> = [("book", 2), ("lamp", 1), ("mug", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let started = Instant::now();
    let converged = loop {
        let view = cart(&a, uri).await?;
        if view.items == expected {
            break view;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("no convergence within 30 s: {:?}", view.items);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    say(format!(
        "after {:?}: the read found {} siblings and merged them -> {:?}",
        started.elapsed(),
        converged.siblings,
        converged.items
    ));
    let after = must(&a, Method::POST, "/carts/alice/items", add("gift-wrap", 1)).await?;
    say(format!(
        "the next change writes the merge back: {} sibling(s) remain -> {:?}",
        cart(&b, uri).await?.siblings,
        after.items
    ));
    say("every add survived the cut; the pens stayed removed, because the remove saw them".into());
    cluster.shutdown().await;
    Ok(Report {
        side_a: seen_a,
        side_b: seen_b,
        siblings_after_heal: converged.siblings,
        merged: converged.items,
        expected,
    })
}
