//! The daemon's HTTP listener (axum): `/metrics`, `/healthz`, `/readyz`, the
//! read-only status page and its JSON API (`pages.rs`), and nothing else. It binds to loopback unless configured otherwise. [`serve`]
//! bounds what any local client can hold: connections at once, the time to
//! send a request's headers, and the time a connection lives, so that
//! half-sent requests cannot use up the daemon's files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::ExposeSecret;

use crate::daemon::metrics::Metrics;
use crate::store::Store;

/// What `/healthz` and `/readyz` report, updated by the scheduler loop.
#[derive(Debug)]
pub struct Liveness {
    /// Unix milliseconds of the scheduler loop's last turn.
    heartbeat_ms: AtomicI64,
    first_sweep_done: AtomicBool,
    /// Silence after which the loop counts as wedged.
    max_silence: Duration,
    /// Why the loop stopped vouching for itself (a sweep that outlived its
    /// deadline and the grace after it), while it lasts.
    stalled: std::sync::Mutex<Option<String>>,
}

impl Liveness {
    pub fn new(max_silence: Duration) -> Self {
        let l = Self {
            heartbeat_ms: AtomicI64::new(0),
            first_sweep_done: AtomicBool::new(false),
            max_silence,
            stalled: std::sync::Mutex::new(None),
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
        self.stalled(None);
    }

    /// A standby serves the leader's results from the store: ready without
    /// a sweep of its own.
    pub fn standing_by(&self) {
        self.first_sweep_done.store(true, Ordering::Relaxed);
    }

    /// Sets (or clears) why `/healthz` fails although the loop turns.
    pub fn stalled(&self, why: Option<String>) {
        *self.stalled.lock().expect("liveness lock") = why;
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
    /// The bearer token `/metrics` asks for (`[http] metrics_token_file`).
    pub metrics_token: Option<Arc<secrecy::SecretString>>,
    /// The configuration in force (the status page's GitLab links and
    /// expected webhook URLs); a reload replaces it.
    pub config: Arc<std::sync::RwLock<Option<Arc<crate::config::Config>>>>,
    /// The status page's operator and read tokens and session key; `None`:
    /// read-only and open to whoever reaches the listener.
    pub access: Option<Arc<super::operator::Access>>,
    /// The sweeper while this replica leads (the status page's buttons act
    /// through it); `None` on standby.
    pub leading: Arc<std::sync::RwLock<Option<Arc<crate::sweep::Sweeper>>>>,
}

impl AppState {
    /// The configuration in force, if the daemon has one.
    pub fn config(&self) -> Option<Arc<crate::config::Config>> {
        self.config.read().expect("config lock").clone()
    }
}

/// Connections served at once; more are closed on arrival (Prometheus and a
/// person's curl need a handful).
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lives, requests and answers together.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `stop`, under the bounds above.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio_util::sync::CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of files, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("HTTP connection limit reached; closing a new connection");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(super::pages::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token {
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(offered.as_bytes(), token.expose_secret().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is needed for /metrics\n",
            )
                .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Compares two secrets in time that depends on their lengths only.
pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Alive: the scheduler loop has turned recently and its sweep is not stuck.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(why) = state
        .liveness
        .stalled
        .lock()
        .expect("liveness lock")
        .clone()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
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

/// Ready: the store answers, and this replica has finished its first sweep
/// or stands by (it serves the leader's results).
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
