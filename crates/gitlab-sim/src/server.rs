//! The HTTP front: one fallback handler that records the request, applies
//! latency and faults, then answers from the world under a single short
//! lock (no await while it is held). `/_sim` goes to the control API.

use chrono::Utc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use tokio::sync::watch;

use super::reply::Reply;
use super::world::{World, lock};
use super::{FaultKind, RequestRecord, api, auth, control, faults, throttle};

/// Largest request body accepted (a deploy key or hook is tiny).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Clone)]
struct App {
    world: Arc<Mutex<World>>,
    shutdown: watch::Receiver<bool>,
}

pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    world: Arc<Mutex<World>>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let router = Router::new()
        .fallback(entry)
        .with_state(App { world, shutdown });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
}

/// Sleeps, but wakes early when the simulator shuts down.
async fn pause(app: &App, d: Duration) {
    let mut stop = app.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn entry(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let query: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return Reply::error(413, "413 Request Entity Too Large").into_response();
    };
    if path == "/_sim" || path.starts_with("/_sim/") {
        let mut w = lock(&app.world);
        return control::handle(&mut w, parts.method.as_str(), &path, &body).into_response();
    }

    let method = parts.method.as_str().to_string();
    let token = auth::presented_token(&parts.headers, &query);
    let (seq, user, latency, fault) = {
        let mut w = lock(&app.world);
        let user = auth::token_owner(&w, token.as_deref());
        let seq = w.requests.start(RequestRecord {
            method: method.clone(),
            path: path.clone(),
            query: raw_query.clone(),
            status: 0,
            user,
            at: Utc::now(),
        });
        let fault = faults::take(&mut w, &method, &path);
        (seq, user, w.latency, fault)
    };
    let finish = |status: u16| lock(&app.world).requests.finish(seq, status, user);

    if !latency.is_zero() {
        pause(&app, latency).await;
    }
    match &fault {
        Some(FaultKind::Hang) => {
            pause(&app, Duration::from_secs(3600)).await;
            return Reply::message(503, "503 Service Unavailable").into_response();
        }
        Some(FaultKind::Reset) => {
            // Unwinding out of the connection task drops the socket before
            // any byte of a response is written; `resume_unwind` skips the
            // panic hook, so nothing is printed.
            std::panic::resume_unwind(Box::new("glwarden sim: injected connection reset"));
        }
        Some(FaultKind::Delay(d)) => pause(&app, *d).await,
        Some(kind) => {
            if let Some((status, resp)) = faults::replacement(kind) {
                finish(status);
                return resp;
            }
        }
        None => {}
    }

    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let reply = {
        let mut w = lock(&app.world);
        let is_api = path.starts_with("/api/");
        let limited = if is_api {
            throttle::check(&mut w, user)
        } else {
            Ok(Vec::new())
        };
        let reply = match limited {
            Ok(headers) => {
                let req = api::Req::new(
                    &method,
                    &path,
                    &query,
                    &body,
                    &content_type,
                    token.as_deref(),
                );
                api::dispatch(&mut w, &req).headers(headers)
            }
            Err(too_many) => too_many,
        };
        let sent = match fault {
            Some(FaultKind::TruncatedJson | FaultKind::WrongShape) => 200,
            _ => reply.status,
        };
        w.requests.finish(seq, sent, user);
        reply
    };
    faults::damage(fault.as_ref(), reply)
}
