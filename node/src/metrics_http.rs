//! `GET /metrics` on `metrics_listen`, for Prometheus.

use crate::state::NodeState;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
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

/// Serves metrics on `listener` until `stop` turns true.
pub(crate) async fn serve(
    state: Arc<NodeState>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
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
