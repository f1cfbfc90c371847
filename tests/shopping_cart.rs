//! The shopping-cart example: its HTTP API and its network-cut demo, as tests.

#[path = "../examples/shopping-cart/demo.rs"]
mod demo;
#[path = "../examples/shopping-cart/service.rs"]
mod service;
mod support;

use anyhow::Result;
use axum::http::{Method, StatusCode};
use demo::call;
use ringkv::Mode;
use ringkv_node::testing::LocalCluster;
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_every_add_across_a_network_cut() -> Result<()> {
    let report = demo::run(|line| println!("{line}")).await?;
    assert_eq!(report.side_a.get("lamp"), Some(&1));
    assert!(
        !report.side_a.contains_key("pen"),
        "A removed the pens on its side"
    );
    assert_eq!(report.side_b.get("mug"), Some(&1));
    assert_eq!(report.side_b.get("book"), Some(&2));
    assert!(
        report.siblings_after_heal >= 2,
        "both sides' versions were found"
    );
    assert_eq!(report.merged, report.expected);
    Ok(())
}

fn items(json: &serde_json::Value) -> BTreeMap<String, i64> {
    serde_json::from_value(json["items"].clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_its_bad_input() -> Result<()> {
    let mut cluster = LocalCluster::start(3).await?;
    let app = service::router(support::client(&cluster, Mode::Direct).await?);

    // An unknown cart is an empty cart.
    let (s, j) = call(&app, Method::GET, "/carts/nobody", None).await?;
    assert_eq!((s, items(&j).len()), (StatusCode::OK, 0), "{j}");

    // Add, add again, read.
    let (s, j) = call(
        &app,
        Method::POST,
        "/carts/bob/items",
        Some(json!({"item": "book", "quantity": 2})),
    )
    .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    let (s, _) = call(
        &app,
        Method::POST,
        "/carts/bob/items",
        Some(json!({"item": "book", "quantity": 1})),
    )
    .await?;
    assert_eq!(s, StatusCode::OK);
    call(
        &app,
        Method::POST,
        "/carts/bob/items",
        Some(json!({"item": "pen", "quantity": 5})),
    )
    .await?;
    let (s, j) = call(&app, Method::GET, "/carts/bob", None).await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        items(&j),
        BTreeMap::from([("book".into(), 3), ("pen".into(), 5)])
    );
    assert_eq!(j["cart"], "bob");

    // Remove; removing an item that is not there is harmless.
    let (s, j) = call(&app, Method::DELETE, "/carts/bob/items/book", None).await?;
    assert_eq!(
        (s, items(&j)),
        (StatusCode::OK, BTreeMap::from([("pen".into(), 5)]))
    );
    let (s, j) = call(&app, Method::DELETE, "/carts/bob/items/nothing", None).await?;
    assert_eq!(
        (s, items(&j)),
        (StatusCode::OK, BTreeMap::from([("pen".into(), 5)]))
    );

    // Bad input: 400 with a reason, and nothing changes.
    let long = "x".repeat(service::MAX_NAME + 1);
    let bad_bodies = [
        json!({"item": "book", "quantity": -1}),
        json!({"item": "book", "quantity": 0}),
        json!({"item": "book", "quantity": service::MAX_QUANTITY + 1}),
        json!({"item": "", "quantity": 1}),
        json!({"item": long, "quantity": 1}),
        json!({"item": "book"}),
        json!({"quantity": 1}),
        json!("not an object"),
    ];
    for body in bad_bodies {
        let (s, j) = call(&app, Method::POST, "/carts/bob/items", Some(body.clone())).await?;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {j}");
        assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()), "{j}");
    }
    let (s, _) = call(&app, Method::GET, &format!("/carts/{long}"), None).await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, j) = call(&app, Method::GET, "/carts/bob", None).await?;
    assert_eq!(
        (s, items(&j)),
        (StatusCode::OK, BTreeMap::from([("pen".into(), 5)]))
    );

    // Two of three replicas down: W=2 cannot be met, the service says so with 503.
    cluster.stop(1).await?;
    cluster.stop(2).await?;
    let (s, j) = call(
        &app,
        Method::POST,
        "/carts/bob/items",
        Some(json!({"item": "book", "quantity": 1})),
    )
    .await?;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{j}");
    assert!(
        j["error"].as_str().is_some_and(|e| e.contains("quorum")),
        "{j}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// Many concurrent requests on the same cart through one service instance (one `Client`):
/// every acknowledged add is counted exactly, two concurrent removes of one item remove it
/// once, and an add after them counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_cart_lose_nothing() -> Result<()> {
    const TASKS: usize = 24;
    const ADDS: usize = 6;
    let cluster = LocalCluster::start(3).await?;
    let app = service::router(support::client(&cluster, Mode::Direct).await?);
    // Three books to start with, for the concurrent removes below.
    let (s, j) = call(
        &app,
        Method::POST,
        "/carts/crowd/items",
        Some(json!({"item": "book", "quantity": 3})),
    )
    .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let app = app.clone();
        tasks.spawn(async move {
            let mut acked = BTreeMap::<String, i64>::new();
            for _ in 0..ADDS {
                let item = format!("item{}", t % 4);
                let (s, j) = call(
                    &app,
                    Method::POST,
                    "/carts/crowd/items",
                    Some(json!({"item": item, "quantity": 1})),
                )
                .await?;
                anyhow::ensure!(s == StatusCode::OK, "add answered {s}: {j}");
                *acked.entry(item).or_default() += 1;
            }
            // Two tasks remove the books at the same time.
            if t < 2 {
                let (s, j) = call(&app, Method::DELETE, "/carts/crowd/items/book", None).await?;
                anyhow::ensure!(s == StatusCode::OK, "remove answered {s}: {j}");
            }
            anyhow::Ok(acked)
        });
    }
    let mut expected = BTreeMap::<String, i64>::new();
    while let Some(r) = tasks.join_next().await {
        for (item, n) in r?? {
            *expected.entry(item).or_default() += n;
        }
    }
    // After both removes: one more book, which must count once, not be swallowed.
    call(
        &app,
        Method::POST,
        "/carts/crowd/items",
        Some(json!({"item": "book", "quantity": 1})),
    )
    .await?;
    expected.insert("book".into(), 1);
    let (s, j) = call(&app, Method::GET, "/carts/crowd", None).await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items(&j), expected, "{j}");
    cluster.shutdown().await;
    Ok(())
}
