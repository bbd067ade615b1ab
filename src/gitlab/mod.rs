//! Typed GitLab REST v4 client over reqwest: authentication, bounded bodies,
//! pagination, error classification and rate-limit bookkeeping.
//!
//! One [`GitLab`] per connection. Every request waits on the connection's
//! [`RateGate`], so a 429 on one request pauses all of that connection's
//! requests until GitLab's `Retry-After` (or `RateLimit-Reset`) has passed.

pub mod error;
pub mod types;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

pub use error::{ApiError, ErrorKind, TokenProblem};
use types::*;

use crate::config::TokenKind;

/// Upper bound on pages followed for one list, so a `next` link that loops
/// cannot keep a check busy forever (100 per page: a million entries).
const MAX_PAGES: usize = 10_000;

/// Settings for one client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    /// Longest 429 pause after which the request is retried once.
    pub max_rate_limit_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 8 * 1024 * 1024,
            max_rate_limit_wait: Duration::from_secs(120),
        }
    }
}

/// What GitLab last told us about this connection's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix time when the window resets.
    pub reset: Option<u64>,
}

/// Per-connection pause after a 429, shared by every request of the connection.
#[derive(Debug, Default)]
pub struct RateGate {
    paused_until: Mutex<Option<Instant>>,
    info: Mutex<RateLimitInfo>,
}

impl RateGate {
    /// Waits until no 429 pause is in force.
    async fn wait(&self) {
        loop {
            let until = *self.paused_until.lock().expect("rate gate lock");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Pauses the connection until `now + d` (never shortens a longer pause).
    fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut guard = self.paused_until.lock().expect("rate gate lock");
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    pub fn info(&self) -> RateLimitInfo {
        *self.info.lock().expect("rate gate lock")
    }
}

/// A typed client for one connection.
pub struct GitLab {
    http: reqwest::Client,
    api: Url,
    web: Url,
    kind: TokenKind,
    token: SecretString,
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
        let http = reqwest::Client::builder()
            .user_agent(concat!("glwarden/", env!("CARGO_PKG_VERSION")))
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(policy)
            .build()
            .map_err(|e| ApiError {
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
            token: token.clone(),
            options,
            gate: Arc::new(RateGate::default()),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far (every attempt, including retries).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn rate_limit(&self) -> RateLimitInfo {
        self.gate.info()
    }

    fn auth_header(&self) -> (&'static str, HeaderValue) {
        let (name, value) = match self.kind {
            TokenKind::AccessToken => ("PRIVATE-TOKEN", self.token.expose_secret().to_owned()),
            TokenKind::Oauth => (
                "Authorization",
                format!("Bearer {}", self.token.expose_secret()),
            ),
        };
        let mut value =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        value.set_sensitive(true);
        (name, value)
    }

    /// Sends one request, honouring and recording rate limits; retries once
    /// after a 429 whose pause is short enough.
    async fn send(&self, method: Method, url: Url, endpoint: &str) -> Result<Answer, ApiError> {
        let method_name: &'static str = method_name(&method);
        let fail = |kind: ErrorKind| ApiError {
            method: method_name,
            endpoint: endpoint.to_owned(),
            kind,
        };
        let mut retried = false;
        loop {
            self.gate.wait().await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (name, value) = self.auth_header();
            let response = self
                .http
                .request(method.clone(), url.clone())
                .header(name, value)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|e| fail(transport_error(&e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            self.record_rate_limit(&headers);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(&headers);
                self.gate.pause_for(wait.unwrap_or(Duration::from_secs(60)));
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
            let body = self.read_body(response).await.map_err(&fail)?;
            if status.is_success() {
                return Ok(Answer { headers, body });
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

    /// Reads the body, refusing more than `max_response_bytes`.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ErrorKind> {
        let status = response.status().as_u16();
        let limit = self.options.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|n| n as usize > limit)
        {
            return Err(ErrorKind::BadResponse {
                status,
                message: format!("body larger than {limit} bytes"),
            });
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(ErrorKind::BadResponse {
                            status,
                            message: format!("body larger than {limit} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(transport_error(&e)),
            }
        }
    }

    fn record_rate_limit(&self, headers: &HeaderMap) {
        let num = |name| header_str(headers, name).and_then(|v| v.trim().parse::<u64>().ok());
        let (limit, remaining, reset) = (
            num("ratelimit-limit"),
            num("ratelimit-remaining"),
            num("ratelimit-reset"),
        );
        if limit.is_some() || remaining.is_some() || reset.is_some() {
            *self.gate.info.lock().expect("rate gate lock") = RateLimitInfo {
                limit,
                remaining,
                reset,
            };
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
            .send(Method::GET, self.api_url(path_and_query), &endpoint)
            .await?;
        decode(&answer.body, "GET", &endpoint)
    }

    /// GET every page of a list, following `Link: rel="next"` (offset or
    /// keyset) or `x-next-page`, 100 entries a page.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let mut all = Vec::new();
        self.for_each_page(path, query, |page: Vec<T>| {
            all.extend(page);
            true
        })
        .await?;
        Ok(all)
    }

    /// Walks the pages of a list, handing each to `visit`; stops early when it returns false.
    pub async fn for_each_page<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        mut visit: impl FnMut(Vec<T>) -> bool,
    ) -> Result<(), ApiError> {
        let endpoint = endpoint_of(path);
        let mut url = self.api_url(path);
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if !query.iter().any(|(k, _)| *k == "per_page") {
                pairs.append_pair("per_page", "100");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.as_str().to_owned()) {
                return Err(ApiError {
                    method: "GET",
                    endpoint,
                    kind: ErrorKind::BadResponse {
                        status: 200,
                        message: "pagination loops: a next link points to a page already read"
                            .into(),
                    },
                });
            }
            let answer = self.send(Method::GET, url.clone(), &endpoint).await?;
            let page: Vec<T> = decode(&answer.body, "GET", &endpoint)?;
            let empty = page.is_empty();
            if !visit(page) || empty {
                return Ok(());
            }
            match self.next_page(&url, &answer.headers) {
                Some(next) => url = next,
                None => return Ok(()),
            }
        }
        Err(ApiError {
            method: "GET",
            endpoint,
            kind: ErrorKind::BadResponse {
                status: 200,
                message: format!("more than {MAX_PAGES} pages"),
            },
        })
    }

    /// The next page's URL, kept on our own origin whatever host GitLab wrote
    /// into the link (it builds links from the request's Host header).
    fn next_page(&self, current: &Url, headers: &HeaderMap) -> Option<Url> {
        if let Some(link) = header_str(headers, "link").and_then(|l| next_link(&l)) {
            let parsed = Url::parse(&link).ok()?;
            let mut next = self.web.clone();
            next.set_path(parsed.path());
            next.set_query(parsed.query());
            return Some(next);
        }
        let page = header_str(headers, "x-next-page").filter(|p| !p.trim().is_empty())?;
        let mut next = current.clone();
        let pairs: Vec<(String, String)> = current
            .query_pairs()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        next.query_pairs_mut()
            .clear()
            .extend_pairs(pairs)
            .append_pair("page", page.trim());
        Some(next)
    }

    // ---- typed endpoints -------------------------------------------------

    pub async fn current_user(&self) -> Result<User, ApiError> {
        self.get("user").await
    }

    pub async fn access_token_self(&self) -> Result<AccessTokenInfo, ApiError> {
        self.get("personal_access_tokens/self").await
    }

    /// `GET /oauth/token/info` at the web root (reference §9).
    pub async fn oauth_token_info(&self) -> Result<OauthTokenInfo, ApiError> {
        let url = self.web.join("oauth/token/info").expect("static path");
        let answer = self.send(Method::GET, url, "/oauth/token/info").await?;
        decode(&answer.body, "GET", "/oauth/token/info")
    }

    /// A project by numeric id or path (a path is URL-encoded; GitLab redirects
    /// an old path to the numeric id, which we follow).
    pub async fn project(&self, id_or_path: &str) -> Result<Project, ApiError> {
        self.get(&format!("projects/{}", encode_id(id_or_path)))
            .await
    }

    pub async fn group(&self, id_or_path: &str) -> Result<Group, ApiError> {
        self.get(&format!("groups/{}", encode_id(id_or_path))).await
    }

    /// Every project of a group (optionally with subgroups) where we are Maintainer or higher.
    pub async fn group_projects(
        &self,
        group: &str,
        include_subgroups: bool,
    ) -> Result<Vec<Project>, ApiError> {
        let subgroups = if include_subgroups { "true" } else { "false" };
        self.get_all(
            &format!("groups/{}/projects", encode_id(group)),
            &[
                ("include_subgroups", subgroups),
                ("min_access_level", "40"),
                ("order_by", "id"),
                ("sort", "asc"),
                ("pagination", "keyset"),
            ],
        )
        .await
    }

    pub async fn deploy_key(&self, project: u64, key: u64) -> Result<DeployKey, ApiError> {
        self.get(&format!("projects/{project}/deploy_keys/{key}"))
            .await
    }

    pub async fn deploy_keys(&self, project: u64) -> Result<Vec<DeployKey>, ApiError> {
        self.get_all(&format!("projects/{project}/deploy_keys"), &[])
            .await
    }

    pub async fn hook(&self, project: u64, hook: u64) -> Result<Hook, ApiError> {
        self.get(&format!("projects/{project}/hooks/{hook}")).await
    }

    pub async fn hooks(&self, project: u64) -> Result<Vec<Hook>, ApiError> {
        self.get_all(&format!("projects/{project}/hooks"), &[])
            .await
    }

    /// The most recent deliveries of a hook (one page of at most 20, newest first).
    pub async fn hook_events(&self, project: u64, hook: u64) -> Result<Vec<HookEvent>, ApiError> {
        self.get(&format!(
            "projects/{project}/hooks/{hook}/events?per_page=20"
        ))
        .await
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

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// How long GitLab asks us to wait: `Retry-After` seconds, else the
/// `RateLimit-Reset` unix time.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(secs) =
        header_str(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    let reset =
        header_str(headers, "ratelimit-reset").and_then(|v| v.trim().parse::<i64>().ok())?;
    let now = chrono::Utc::now().timestamp();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1) as u64))
}

/// The `rel="next"` target of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        (is_next && target.starts_with('<') && target.ends_with('>'))
            .then(|| target[1..target.len() - 1].to_owned())
    })
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
