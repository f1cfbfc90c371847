//! The HTTP listener on `metrics_listen`:
//!
//! - `GET /metrics` — Prometheus metrics (OpenMetrics text);
//! - `GET /health` — `200 ok` while the process runs (liveness);
//! - `GET /ready` — `200` when the node may be sent traffic, `503` otherwise, with a JSON body
//!   saying why (`readiness`): storage answers, a ring is known, this node is in it.

use crate::readiness::{Readiness, readiness};
use crate::state::NodeState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::watch;

async fn metrics(
    State(state): State<Arc<NodeState>>,
) -> ([(&'static str, &'static str); 1], String) {
    crate::stats::sample_gauges(&state);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<Arc<NodeState>>) -> (StatusCode, Json<Readiness>) {
    let storage = state
        .store
        .meta_get(crate::cluster_view::VIEW_RECORD)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let answer = readiness(&state.view(), state.id, storage);
    let code = if answer.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(answer))
}

/// Serves metrics, health and readiness on `listener` until `stop` turns true.
pub(crate) async fn serve(
    state: Arc<NodeState>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}
