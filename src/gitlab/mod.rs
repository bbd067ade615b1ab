//! Typed GitLab REST v4 client over reqwest: authentication, bounded bodies,
//! pagination, error classification and rate-limit bookkeeping.
//!
//! One [`GitLab`] per connection. Every request waits on the connection's
//! [`RateGate`], so a 429 on one request pauses all of that connection's
//! requests until GitLab's `Retry-After` (or `RateLimit-Reset`) has passed.

mod endpoints;
pub mod error;
pub mod listing;
pub mod oauth;
mod pages;
mod rate;
pub mod types;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

pub use error::{ApiError, ErrorKind, TokenProblem};
pub use rate::{RateGate, RateLimitInfo};
use rate::{is_endpoint_limit, retry_after};

use crate::config::TokenKind;

/// Settings for one client.
#[derive(Clone)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    /// Most entries [`GitLab::get_all`] holds from one list.
    pub max_list_items: usize,
    /// Longest 429 pause after which the request is retried once.
    pub max_rate_limit_wait: Duration,
    /// Request budget per minute; `None` for no client-side pacing.
    pub requests_per_minute: Option<u32>,
    /// Told about every request (metrics).
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// For OAuth connections that can refresh their access token.
    pub oauth: Option<Arc<oauth::OAuthSession>>,
    /// CA certificates trusted besides the built-in roots. Verification is
    /// never turned off.
    pub root_certificates: Vec<reqwest::Certificate>,
    /// A leader's writes: none is sent once its lease may have run out.
    pub write_gate: Option<WriteGate>,
}

/// Until when this replica may change anything at GitLab: the end of its
/// leader's lease as last renewed, on the monotonic clock (which keeps
/// counting while the process is stopped, so a leader resumed after
/// SIGSTOP finds its gate shut). Checked right before each write and each
/// OAuth refresh; the database refuses the journal step that follows
/// (`migrations/postgres/0002_leader_lease.sql`), so what slips through is
/// at most a write already on the wire when the lease ran out.
#[derive(Debug, Clone)]
pub struct WriteGate(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl WriteGate {
    /// Open until `until`.
    pub fn until(until: tokio::time::Instant) -> Self {
        Self(Arc::new(std::sync::Mutex::new(until)))
    }

    /// A renewal moved the end of the lease.
    pub fn extend(&self, until: tokio::time::Instant) {
        *self.0.lock().expect("write gate lock") = until;
    }

    /// Shut at once (leadership given up).
    pub fn shut(&self) {
        self.extend(tokio::time::Instant::now());
    }

    pub fn is_open(&self) -> bool {
        tokio::time::Instant::now() < *self.0.lock().expect("write gate lock")
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 8 * 1024 * 1024,
            max_list_items: 50_000,
            max_rate_limit_wait: Duration::from_secs(120),
            requests_per_minute: None,
            observer: None,
            oauth: None,
            root_certificates: Vec::new(),
            write_gate: None,
        }
    }
}

/// Receives what the client sees, for metrics. Labels are bounded: an
/// endpoint class, a status class.
pub trait RequestObserver: Send + Sync {
    fn request_done(&self, endpoint: &'static str, status_class: &'static str, elapsed: Duration);
    fn rate_limit(&self, info: RateLimitInfo);
}

/// Retries of a read that many others depend on (a page of a list, the
/// connection probe) after a transient failure.
const READ_RETRIES: u32 = 2;

/// Runs `read` again (at most [`READ_RETRIES`] times) while it fails
/// transiently (not a 429: `send` handles those). Each attempt waits on the
/// connection's gate, so the back-off after a 5xx or timeout comes first.
async fn retry_transient<T, Fut>(mut read: impl FnMut() -> Fut) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut retries = 0;
    loop {
        match read().await {
            // A 429 was already waited out (or is too long to wait) in `send`.
            Err(e)
                if e.is_transient()
                    && !matches!(
                        e.kind,
                        ErrorKind::RateLimited { .. } | ErrorKind::RateLimitedUntil { .. }
                    )
                    && retries < READ_RETRIES =>
            {
                retries += 1;
                tracing::debug!(error = %e, retries, "read failed transiently; retrying it");
            }
            other => return other,
        }
    }
}

/// A typed client for one connection.
pub struct GitLab {
    http: reqwest::Client,
    api: Url,
    web: Url,
    kind: TokenKind,
    /// The token's header (marked sensitive, so never logged): the
    /// configured token's, or the one it was rotated into.
    token_header: std::sync::RwLock<(&'static str, HeaderValue)>,
    options: ClientOptions,
    gate: Arc<RateGate>,
    requests: AtomicU64,
}

impl std::fmt::Debug for GitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLab")
            .field("api", &self.api.as_str())
            .field("kind", &self.kind)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// One successful answer: status, the headers we use, the body.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitLab {
    pub fn new(
        base_url: &Url,
        kind: TokenKind,
        token: SecretString,
        options: ClientOptions,
    ) -> Result<Self, ApiError> {
        let origin = base_url.clone();
        // Follow redirects (GitLab's 301 for a renamed project) only within the
        // same origin: our PRIVATE-TOKEN header must never travel elsewhere.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let same = attempt.url().scheme() == origin.scheme()
                && attempt.url().host_str() == origin.host_str()
                && attempt.url().port_or_known_default() == origin.port_or_known_default();
            if attempt.previous().len() >= 5 || !same {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            // `HTTP(S)_PROXY` from the environment is not followed: a token
            // must not travel in clear to a proxy nobody configured here.
            .no_proxy()
            .user_agent(concat!("glwarden/", env!("CARGO_PKG_VERSION")))
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(policy);
        for certificate in &options.root_certificates {
            builder = builder.add_root_certificate(certificate.clone());
        }
        let http = builder.build().map_err(|e| ApiError {
            method: "INIT",
            endpoint: base_url.to_string(),
            kind: ErrorKind::Connection(e.to_string()),
        })?;
        let mut root = base_url.clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let api = root.join("api/v4/").expect("static path joins");
        Ok(Self {
            http,
            api,
            web: root,
            kind,
            token_header: std::sync::RwLock::new(Self::auth_header(kind, &token)),
            gate: Arc::new(RateGate::new(options.requests_per_minute)),
            options,
            requests: AtomicU64::new(0),
        })
    }

    /// Uses `token` from the next request on: the token a rotation gave.
    pub fn set_token(&self, token: &SecretString) {
        *self.token_header.write().expect("token lock") = Self::auth_header(self.kind, token);
    }

    /// Lets the next request ask GitLab again after it asked for a wait
    /// beyond the cap (each sweep starts so).
    pub fn forget_refusal(&self) {
        *self.gate.refused_until.lock().expect("rate gate lock") = None;
    }

    /// Requests sent so far (every attempt, including retries).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn rate_limit(&self) -> RateLimitInfo {
        self.gate.info()
    }

    fn auth_header(kind: TokenKind, token: &SecretString) -> (&'static str, HeaderValue) {
        // Wiped once the header holds it (marked sensitive, never logged).
        let (name, value) = match kind {
            TokenKind::AccessToken => (
                "PRIVATE-TOKEN",
                zeroize::Zeroizing::new(token.expose_secret().to_owned()),
            ),
            TokenKind::Oauth => (
                "Authorization",
                zeroize::Zeroizing::new(format!("Bearer {}", token.expose_secret())),
            ),
        };
        let mut value =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        value.set_sensitive(true);
        (name, value)
    }

    /// Sends one request, honouring and recording rate limits; retries once
    /// after a 429 whose pause is short enough.
    async fn send(
        &self,
        method: Method,
        url: Url,
        endpoint: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, ApiError> {
        let method_name: &'static str = method_name(&method);
        let fail = |kind: ErrorKind| ApiError {
            method: method_name,
            endpoint: endpoint.to_owned(),
            kind,
        };
        let class = endpoint_class(endpoint);
        let mut retried = false;
        let mut refreshed = false;
        loop {
            if let Some(session) = &self.options.oauth {
                if session.due(chrono::Utc::now()) {
                    self.refresh_oauth(session, &session.access())
                        .await
                        .map_err(&fail)?;
                }
            }
            if let Some(until) = self.gate.refusal() {
                return Err(fail(ErrorKind::RateLimitedUntil { until }));
            }
            self.gate.wait(class).await;
            // A refusal may have come while we waited for a slot.
            if let Some(until) = self.gate.refusal() {
                return Err(fail(ErrorKind::RateLimitedUntil { until }));
            }
            // Last: the rate gate's wait may have outlived the lease.
            if method != Method::GET && !self.may_write() {
                return Err(fail(ErrorKind::NotLeading));
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            // A refreshing session's token changes, so its header is made
            // each time; the configured token's was made once.
            let (name, value, sent_token) = match &self.options.oauth {
                Some(session) => {
                    let token = session.access();
                    let (name, value) = Self::auth_header(self.kind, &token);
                    (name, value, Some(token))
                }
                None => {
                    let (name, value) = self.token_header.read().expect("token lock").clone();
                    (name, value, None)
                }
            };
            let started = Instant::now();
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let sent = request
                .header(name, value)
                .header("Accept", "application/json")
                .send()
                .await;
            let mut response = match sent {
                Ok(r) => r,
                Err(e) => {
                    let kind = transport_error(&e);
                    self.observe(class, "error", started);
                    self.gate.failed();
                    return Err(fail(kind));
                }
            };
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            self.record_rate_limit(&headers);
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.observe(class, "429", started);
                let wait = retry_after(&headers);
                if let Some(until) =
                    wait.and_then(|w| self.gate.refuse_beyond(w, self.options.max_rate_limit_wait))
                {
                    // Longer than the cap: this sweep does without the
                    // connection rather than wait (or wait in slices forever).
                    tracing::warn!(
                        endpoint,
                        until = %until,
                        "GitLab asks for a wait beyond check.max_rate_limit_wait_seconds; this connection is not asked again this sweep"
                    );
                    return Err(fail(ErrorKind::RateLimitedUntil { until }));
                }
                // Never longer than the configured cap, whatever GitLab says.
                let pause = wait
                    .unwrap_or(Duration::from_secs(60))
                    .min(self.options.max_rate_limit_wait);
                if is_endpoint_limit(&headers) {
                    // One endpoint's application limit (a JSON 429 without
                    // `RateLimit-*`): the rest of the connection goes on.
                    self.gate.pause_endpoint_for(class, pause);
                } else {
                    self.gate.pause_for(pause);
                }
                if !retried && wait.is_some_and(|w| w <= self.options.max_rate_limit_wait) {
                    retried = true;
                    tracing::warn!(
                        endpoint,
                        wait_seconds = wait.map(|w| w.as_secs()),
                        "GitLab rate limit hit; pausing this connection"
                    );
                    continue;
                }
                return Err(fail(ErrorKind::RateLimited { retry_after: wait }));
            }
            let body = self.read_body(response).await;
            self.observe(class, status_class(status.as_u16(), body.is_ok()), started);
            let body = body.map_err(|k| {
                if matches!(k, ErrorKind::Timeout | ErrorKind::Connection(_)) {
                    self.gate.failed();
                }
                fail(k)
            })?;
            if status.is_server_error() {
                self.gate.failed();
            } else {
                self.gate.succeeded();
            }
            if status.is_success() {
                return Ok(Answer { headers, body });
            }
            // An expired OAuth access token: refresh once and try again.
            if let (Some(session), Some(seen), StatusCode::UNAUTHORIZED, false) =
                (&self.options.oauth, &sent_token, status, refreshed)
            {
                refreshed = true;
                self.refresh_oauth(session, seen).await.map_err(&fail)?;
                continue;
            }
            let content_type = header_str(&headers, "content-type").unwrap_or_default();
            return Err(fail(error::classify(
                status.as_u16(),
                &content_type,
                &body,
                None,
            )));
        }
    }

    fn may_write(&self) -> bool {
        self.options
            .write_gate
            .as_ref()
            .is_none_or(WriteGate::is_open)
    }

    async fn refresh_oauth(
        &self,
        session: &oauth::OAuthSession,
        seen: &SecretString,
    ) -> Result<(), ErrorKind> {
        // GitLab revokes the old refresh token as it answers: a deposed
        // leader's refresh would leave the new leader a dead pair.
        if !self.may_write() {
            return Err(ErrorKind::NotLeading);
        }
        let url = self.web.join("oauth/token").expect("static path");
        session
            .refresh(&self.http, url, seen, self.options.max_response_bytes)
            .await
            .map_err(|e| match e {
                oauth::RefreshError::Refused(reason) => {
                    tracing::warn!(
                        reason = reason.as_str(),
                        "GitLab refused the OAuth refresh token"
                    );
                    ErrorKind::Unauthorized {
                        problem: TokenProblem::RefreshRefused,
                    }
                }
                oauth::RefreshError::Transient(reason) => {
                    ErrorKind::Connection(format!("OAuth refresh: {reason}"))
                }
            })
    }

    /// Reads the body, refusing more than `max_response_bytes`.
    async fn read_body(&self, response: reqwest::Response) -> Result<Vec<u8>, ErrorKind> {
        read_bounded(response, self.options.max_response_bytes).await
    }

    fn observe(&self, class: &'static str, status_class: &'static str, started: Instant) {
        if let Some(o) = &self.options.observer {
            o.request_done(class, status_class, started.elapsed());
        }
    }

    /// Keeps GitLab's `RateLimit-*` figures, and pauses the connection until
    /// the window resets when GitLab says it is spent.
    fn record_rate_limit(&self, headers: &HeaderMap) {
        let num = |name| header_str(headers, name).and_then(|v| v.trim().parse::<u64>().ok());
        let info = RateLimitInfo {
            limit: num("ratelimit-limit"),
            remaining: num("ratelimit-remaining"),
            reset: num("ratelimit-reset"),
        };
        if info == RateLimitInfo::default() {
            return;
        }
        *self.gate.info.lock().expect("rate gate lock") = info;
        if let (Some(0), Some(reset)) = (info.remaining, info.reset) {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            if reset > now {
                // A far-future reset must not stall the connection for
                // good: beyond the cap the rest of this sweep does without it.
                let wait = Duration::from_secs(reset - now);
                if self
                    .gate
                    .refuse_beyond(wait, self.options.max_rate_limit_wait)
                    .is_none()
                {
                    self.gate.pause_for(wait);
                }
            }
        }
        if let Some(o) = &self.options.observer {
            o.rate_limit(info);
        }
    }

    fn api_url(&self, path_and_query: &str) -> Url {
        self.api
            .join(path_and_query.trim_start_matches('/'))
            .expect("API paths are relative URLs")
    }

    /// GET a JSON document below `/api/v4`.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ApiError> {
        let endpoint = endpoint_of(path_and_query);
        let answer = self
            .send(Method::GET, self.api_url(path_and_query), &endpoint, None)
            .await?;
        decode(&answer.body, "GET", &endpoint)
    }

    /// A write (POST, PUT, DELETE) with an optional JSON body, serialized by
    /// the caller; returns the answer's body (empty for 204).
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ApiError> {
        let endpoint = endpoint_of(path);
        Ok(self
            .send(method, self.api_url(path), &endpoint, body)
            .await?
            .body)
    }

    /// A `DELETE`; a 404 means already gone, which is what was wanted.
    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        match self.write(Method::DELETE, path, None).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

fn decode<T: DeserializeOwned>(
    body: &[u8],
    method: &'static str,
    endpoint: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        method,
        endpoint: endpoint.to_owned(),
        kind: ErrorKind::BadResponse {
            status: 200,
            message: if body.first().is_some_and(|b| *b == b'{' || *b == b'[') {
                format!("JSON not of the expected shape: {e}")
            } else {
                format!("not JSON: {}", error::text_summary(200, "", body))
            },
        },
    })
}

/// A bounded label for an API path: what kind of thing was asked for.
pub fn endpoint_class(endpoint: &str) -> &'static str {
    let parts: Vec<&str> = endpoint.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["user"] => "user",
        ["version"] => "version",
        ["personal_access_tokens", ..] => "token",
        ["oauth", ..] => "oauth",
        ["projects"] => "projects",
        ["projects", _] => "project",
        ["projects", _, "deploy_keys", ..] => "deploy_keys",
        ["projects", _, "hooks", _, "events", ..] => "hook_events",
        ["projects", _, "hooks", ..] => "hooks",
        ["groups", _, "projects"] => "group_projects",
        ["groups", _] => "group",
        _ => "other",
    }
}

fn status_class(status: u16, body_complete: bool) -> &'static str {
    match (status, body_complete) {
        (_, false) => "error",
        (200..=299, _) => "2xx",
        (300..=399, _) => "3xx",
        (429, _) => "429",
        (400..=499, _) => "4xx",
        _ => "5xx",
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "REQUEST",
    }
}

fn transport_error(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    // reqwest's Display names the URL; we say only what happened.
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let what = if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "answer cut off"
    } else {
        "request failed"
    };
    if cause.is_empty() {
        ErrorKind::Connection(what.to_owned())
    } else {
        ErrorKind::Connection(format!("{what}: {}", error::sanitize(&cause)))
    }
}

/// Reads a body of at most `limit` bytes: every answer glwarden reads
/// (API and OAuth) goes through here, so no answer can grow memory unbounded.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ErrorKind> {
    let status = response.status().as_u16();
    let too_large = || ErrorKind::BadResponse {
        status,
        message: format!("body larger than {limit} bytes"),
    };
    let announced = response.content_length().unwrap_or(0) as usize;
    if announced > limit {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(announced);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(&e)),
        }
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A request body as JSON, in a buffer wiped when dropped (a hook's body
/// carries its secret token).
fn json_bytes(body: &impl serde::Serialize) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(serde_json::to_vec(body).expect("request bodies serialize"))
}

/// `42` stays `42`; `group/app` becomes `group%2Fapp`.
pub fn encode_id(id_or_path: &str) -> String {
    percent_encoding::utf8_percent_encode(id_or_path, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

/// The path part of a request, for messages and metrics (no query string).
fn endpoint_of(path_and_query: &str) -> String {
    let path = path_and_query.split('?').next().unwrap_or_default();
    format!("/{}", path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::pages::next_link;
    use super::rate::*;
    use super::*;

    #[test]
    fn next_link_is_found_among_others() {
        let link = r#"<https://g/api/v4/x?page=1&per_page=3>; rel="prev", <https://g/api/v4/x?page=3&per_page=3>; rel="next", <https://g/api/v4/x?page=1>; rel="first""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://g/api/v4/x?page=3&per_page=3")
        );
        assert_eq!(next_link(r#"<https://g/x?page=1>; rel="first""#), None);
    }

    #[test]
    fn endpoint_classes_are_bounded() {
        assert_eq!(endpoint_class("/projects/42"), "project");
        assert_eq!(endpoint_class("/projects/42/hooks/7/events"), "hook_events");
        assert_eq!(endpoint_class("/projects/42/hooks"), "hooks");
        assert_eq!(endpoint_class("/projects/42/deploy_keys/9"), "deploy_keys");
        assert_eq!(
            endpoint_class("/groups/acme%2Fplatform/projects"),
            "group_projects"
        );
        assert_eq!(endpoint_class("/oauth/token/info"), "oauth");
        assert_eq!(endpoint_class("/something/else/entirely"), "other");
    }

    #[test]
    fn pacing_never_exceeds_the_budget_in_a_minute() {
        for budget in [2, 120, 1800, 2000, 100_000_000] {
            let (burst, rate) = pacer_shape(budget);
            assert!(burst.get() + rate <= budget, "{budget}: {burst} + {rate}");
            assert!(rate > 0);
        }
        assert_eq!(pacer_shape(1800).0.get(), 3);
    }

    #[test]
    fn failures_in_flight_together_are_one_incident() {
        let gate = RateGate::new(None);
        for _ in 0..5 {
            gate.failed();
        }
        assert_eq!(gate.consecutive_failures.load(Ordering::Relaxed), 1);
        // Once the pause is over, the next failure is a new one and escalates.
        *gate.paused_until.lock().unwrap() = Some(Instant::now());
        gate.failed();
        assert_eq!(gate.consecutive_failures.load(Ordering::Relaxed), 2);
        gate.succeeded();
        assert_eq!(gate.consecutive_failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..20 {
            let first = backoff(1);
            assert!(
                first >= Duration::from_millis(125) && first <= Duration::from_millis(375),
                "{first:?}"
            );
            assert!(backoff(30) <= BACKOFF_MAX.mul_f64(1.5));
        }
    }

    #[test]
    fn paths_are_encoded_and_ids_untouched() {
        assert_eq!(encode_id("42"), "42");
        assert_eq!(encode_id("group/sub/app"), "group%2Fsub%2Fapp");
    }

    #[test]
    fn endpoint_drops_the_query() {
        assert_eq!(
            endpoint_of("projects/1/hooks/2/events?per_page=20"),
            "/projects/1/hooks/2/events"
        );
    }

    #[test]
    fn retry_after_prefers_the_header_then_reset_time() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("12"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        let mut h = HeaderMap::new();
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        h.insert("ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let wait = retry_after(&h).unwrap().as_secs();
        assert!((29..=30).contains(&wait), "{wait}");
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn an_endpoints_own_limit_is_told_from_the_users_throttle() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        // `check_rate_limit!`: JSON, no RateLimit-* (maybe a Retry-After).
        assert!(is_endpoint_limit(&headers(&[
            ("content-type", "application/json"),
            ("retry-after", "60"),
        ])));
        // Rack::Attack: plain text with the RateLimit-* set.
        assert!(!is_endpoint_limit(&headers(&[
            ("content-type", "text/plain"),
            ("ratelimit-name", "throttle_authenticated_api"),
            ("ratelimit-limit", "2000"),
            ("retry-after", "30"),
        ])));
        assert!(!is_endpoint_limit(&headers(&[("retry-after", "30")])));
    }

    #[tokio::test]
    async fn a_next_link_that_never_ends_stops_at_the_item_limit() {
        use std::sync::atomic::AtomicUsize;
        // A hostile GitLab: every page links to a new next page, forever.
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let app = axum::Router::new().route(
            "/api/v4/projects/1/hooks",
            axum::routing::get(
                move |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >,
                      headers: axum::http::HeaderMap| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                        let host = headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let hooks: Vec<serde_json::Value> = (0..100)
                            .map(|i| serde_json::json!({"id": page * 100 + i, "url": "https://ci/x"}))
                            .collect();
                        (
                            [(
                                "link",
                                format!(
                                    "<http://{host}/api/v4/projects/1/hooks?page={}&per_page=100>; rel=\"next\"",
                                    page + 1
                                ),
                            )],
                            axum::Json(hooks),
                        )
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = GitLab::new(
            &Url::parse(&format!("http://{addr}")).unwrap(),
            TokenKind::AccessToken,
            SecretString::from("glpat-test".to_owned()),
            ClientOptions {
                max_list_items: 1_000,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let err = client.hooks(1).await.unwrap_err();
        assert!(
            err.to_string().contains("longer than 1000 entries"),
            "{err}"
        );
        assert_eq!(served.load(Ordering::Relaxed), 11, "pages read");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_pause_holds_that_endpoint_only() {
        let gate = RateGate::new(None);
        gate.pause_endpoint_for("project", Duration::from_secs(60));
        let start = Instant::now();
        gate.wait("hooks").await;
        gate.wait("deploy_keys").await;
        assert_eq!(Instant::now(), start, "other endpoints go on at once");
        gate.wait("project").await;
        assert!(Instant::now() - start >= Duration::from_secs(60));
        // A duration no clock can add does not panic; it pauses nothing.
        gate.pause_endpoint_for("project", Duration::MAX);
        gate.pause_for(Duration::MAX);
        let again = Instant::now();
        gate.wait("project").await;
        assert_eq!(Instant::now(), again);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let gl = GitLab::new(
            &Url::parse("https://gitlab.example.com").unwrap(),
            TokenKind::AccessToken,
            SecretString::from("glpat-very-secret".to_owned()),
            ClientOptions::default(),
        )
        .unwrap();
        assert!(!format!("{gl:?}").contains("glpat-very-secret"));
        assert_eq!(gl.api.as_str(), "https://gitlab.example.com/api/v4/");
    }
}
