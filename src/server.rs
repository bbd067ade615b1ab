//! The daemon's HTTP listener (axum): `/metrics`, `/healthz`, `/readyz`, and
//! nothing else. It binds to loopback unless configured otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::store::Store;

/// What `/healthz` and `/readyz` report, updated by the scheduler loop.
#[derive(Debug)]
pub struct Liveness {
    /// Unix milliseconds of the scheduler loop's last turn.
    heartbeat_ms: AtomicI64,
    first_sweep_done: AtomicBool,
    /// Silence after which the loop counts as wedged.
    max_silence: Duration,
}

impl Liveness {
    pub fn new(max_silence: Duration) -> Self {
        let l = Self {
            heartbeat_ms: AtomicI64::new(0),
            first_sweep_done: AtomicBool::new(false),
            max_silence,
        };
        l.beat();
        l
    }

    pub fn beat(&self) {
        self.heartbeat_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn sweep_done(&self) {
        self.first_sweep_done.store(true, Ordering::Relaxed);
    }

    fn silence(&self) -> Duration {
        let ms = chrono::Utc::now().timestamp_millis() - self.heartbeat_ms.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub liveness: Arc<Liveness>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Alive: the scheduler loop has turned recently.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let silence = state.liveness.silence();
    if silence <= state.liveness.max_silence {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scheduler loop silent for {}s\n", silence.as_secs()),
        )
    }
}

/// Ready: the store answers and the first sweep has finished.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "store: no answer within 2s\n".to_owned(),
            );
        }
    }
    if !state.liveness.first_sweep_done.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "first sweep not finished\n".to_owned(),
        );
    }
    (StatusCode::OK, "ready\n".to_owned())
}
