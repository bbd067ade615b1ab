//! The status page for people and its JSON API, served by `glwarden run`
//! beside `/metrics`: the overview (connections, counts, the last sweep, the
//! components that need attention, filtered and paginated) and a page per
//! project (its components with what to do, its key and expected hook URL,
//! its history and events). Server-rendered HTML (askama templates in
//! `src/daemon/templates/`, escaped), no JavaScript. A project is named by
//! its GitLab id or its path (`/projects/main/42`, `/projects/main/acme/app`:
//! the alerts link to the path, their label). Read-only: nothing
//! here changes the store or GitLab.
//!
//! The counts and the last sweep are what `/metrics` last published; the
//! list and the project page are read from the store per request, a page
//! at a time (`store/attention.rs`), so a page costs the same at 100,000
//! projects as at 100.

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::metrics::LastSweep;
use super::server::AppState;
use crate::config::Config;
use crate::health::{Component, State as HealthState};
use crate::report::LeaderLine;
use crate::store::{AttentionFilter, AttentionPage, EventRow, StoreError, TransitionRow};

/// The query string of the overview and of `/api/v1/projects`; empty
/// fields are no filter, and a word that names no component or state is a
/// 400 naming it.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    connection: String,
    #[serde(default)]
    component: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<i64>,
}

impl Filter {
    fn parse(&self) -> Result<AttentionFilter, String> {
        let component = match self.component.as_str() {
            "" => None,
            c => Some(
                c.parse::<Component>()
                    .map_err(|_| format!("component `{c}` is not one of glwarden's"))?,
            ),
        };
        let state = match self.state.as_str() {
            "" => None,
            s => Some(
                s.parse::<HealthState>()
                    .map_err(|_| format!("state `{s}` is not one of glwarden's"))?,
            ),
        };
        Ok(AttentionFilter {
            connection: Some(self.connection.clone()).filter(|c| !c.is_empty()),
            component,
            state,
            path: Some(self.q.clone()).filter(|q| !q.is_empty()),
            page: self.page.unwrap_or(1),
        })
    }
}

/// One connection as the overview shows it.
#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub name: String,
    pub state: HealthState,
    pub since: Option<DateTime<Utc>>,
    pub detail: String,
    /// The token as GitLab last described it (kind, scopes, expiry).
    pub token: Option<crate::report::TokenLine>,
}

/// How many project components are in a state.
#[derive(Debug, Serialize)]
pub struct Count {
    pub component: String,
    pub state: String,
    pub count: i64,
}

/// How far the sweep under way has come.
#[derive(Debug, Serialize)]
pub struct SweepRunning {
    pub done: u64,
    pub total: u64,
    pub per_second: f64,
    /// The line people read: `1234 of 100000 projects (1%), 308/s, about 5 min left`.
    pub text: String,
}

/// Automatic repairs paused by the storm guard.
#[derive(Debug, Serialize)]
pub struct Paused {
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// The overview, as the page and `/api/v1/overview` give it.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    /// On a store shared by replicas, who leads.
    pub leader: Option<LeaderLine>,
    /// The last sweep this replica finished (none on a standby).
    pub last_sweep: Option<LastSweep>,
    /// The sweep under way on this replica.
    pub sweep_running: Option<SweepRunning>,
    pub repairs_paused: Option<Paused>,
    pub connections: Vec<ConnectionView>,
    pub counts: Vec<Count>,
    pub attention: AttentionPage,
}

/// One component of a project, on its page.
#[derive(Debug, Serialize)]
pub struct ComponentView {
    pub component: Component,
    pub state: HealthState,
    pub since: Option<DateTime<Utc>>,
    pub last_checked: Option<DateTime<Utc>>,
    pub detail: String,
    pub what_to_do: &'static str,
}

/// A project's page, as `/api/v1/projects/{connection}/{id}` gives it.
#[derive(Debug, Serialize)]
pub struct ProjectView {
    pub connection: String,
    pub gitlab_id: i64,
    pub path: String,
    /// The project at GitLab.
    pub web_url: String,
    pub components: Vec<ComponentView>,
    pub deploy_key_public: Option<String>,
    pub deploy_key_fingerprint: Option<String>,
    /// The URL the webhook must have; a query string is not shown (it may
    /// carry a receiver's secret).
    pub expected_webhook_url: Option<String>,
    pub transitions: Vec<TransitionRow>,
    pub events: Vec<EventRow>,
}

/// Why a page could not be served.
enum PageError {
    BadRequest(String),
    NotFound(String),
    Store(StoreError),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Store(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::BadRequest(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
            PageError::NotFound(why) => (StatusCode::NOT_FOUND, format!("{why}\n")),
            PageError::Store(e) => {
                tracing::error!(error = %e, "status page: the store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store could not be read; see the daemon's log\n".to_owned(),
                )
            }
        }
        .into_response()
    }
}

pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(overview_page))
        .route("/projects/{connection}/{*project}", get(project_page))
        .route("/api/v1/overview", get(overview_json))
        .route("/api/v1/projects", get(projects_json))
        .route(
            "/api/v1/projects/{connection}/{*project}",
            get(project_json),
        )
        .route(
            "/sign-in",
            get(super::operator::sign_in_form).post(super::operator::sign_in),
        )
        .route("/sign-out", axum::routing::post(super::operator::sign_out))
        .route("/actions", axum::routing::post(super::operator::act))
        .layer(axum::middleware::map_response(no_store))
}

/// Pages and API answers are live state, and a signed-in page carries the
/// session's CSRF token: no browser or proxy keeps a copy.
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

async fn overview(state: &AppState, filter: &Filter) -> Result<Overview, PageError> {
    let filter = filter.parse().map_err(PageError::BadRequest)?;
    let store = &state.store;
    let (counts, last_sweep) = state.metrics.published();
    let connection_rows = store.connections().await?;
    let ids: Vec<i64> = connection_rows.iter().map(|(id, _)| *id).collect();
    let health = store.health_of(&ids).await?;
    let mut tokens: std::collections::HashMap<_, _> = store.tokens().await?.into_iter().collect();
    let mut rotation_failures: std::collections::HashMap<_, _> =
        store.rotation_failures().await?.into_iter().collect();
    let today = Utc::now().date_naive();
    let connections = connection_rows
        .into_iter()
        .map(|(id, name)| {
            let row = health
                .iter()
                .find(|h| h.subject_id == id && h.component == Component::Connection);
            ConnectionView {
                token: tokens.remove(&name).map(|facts| {
                    crate::report::TokenLine::new(facts, today, rotation_failures.remove(&name))
                }),
                name,
                state: row.map_or(HealthState::Unknown, |h| h.shown_state()),
                since: row.and_then(|h| h.pending_since.or(h.since)),
                detail: row.map_or_else(|| "not checked yet".to_owned(), |h| h.shown_detail()),
            }
        })
        .collect();
    Ok(Overview {
        generated_at: Utc::now(),
        leader: store.leader().await?.map(LeaderLine::from),
        last_sweep,
        sweep_running: state.metrics.running_sweep().map(|r| SweepRunning {
            done: r.done,
            total: r.total,
            per_second: r.rate,
            text: r.to_string(),
        }),
        repairs_paused: store
            .repairs_paused()
            .await?
            .map(|(reason, since)| Paused { reason, since }),
        connections,
        counts: counts
            .into_iter()
            .map(|(component, state, count)| Count {
                component,
                state,
                count,
            })
            .collect(),
        attention: store.attention(&filter).await?,
    })
}

/// The project `wanted` (its GitLab id or path, as the command line takes
/// them) of `connection`.
async fn project(
    state: &AppState,
    connection: &str,
    wanted: &str,
) -> Result<ProjectView, PageError> {
    let store = &state.store;
    let row = store.project_of(connection, wanted).await?.ok_or_else(|| {
        PageError::NotFound(format!(
            "no project `{wanted}` of connection `{connection}` in the inventory"
        ))
    })?;
    let health = store.health_of(&[row.id]).await?;
    let components = Component::PROJECT_COMPONENTS
        .into_iter()
        .map(|component| {
            let h = health.iter().find(|h| h.component == component);
            let shown = h.map_or(HealthState::Unknown, |h| h.shown_state());
            ComponentView {
                component,
                state: shown,
                since: h.and_then(|h| {
                    if h.pending.is_some() {
                        h.pending_since
                    } else {
                        h.since
                    }
                }),
                last_checked: h.and_then(|h| h.last_checked),
                detail: h.map_or_else(|| "not checked yet".to_owned(), |h| h.shown_detail()),
                what_to_do: component.what_to_do(shown),
            }
        })
        .collect();
    let cfg: Option<Arc<Config>> = state.config();
    let cfg = cfg.as_ref();
    let base = cfg
        .and_then(|c| c.connections.get(connection))
        .map(|c| c.base_url.to_string())
        .unwrap_or_default();
    let expected_webhook_url = cfg
        .and_then(|c| {
            crate::config::expected_hook_url(
                c,
                row.webhook_url.as_deref(),
                row.gitlab_id as u64,
                &row.path,
            )
        })
        .map(|url| without_query(&url));
    Ok(ProjectView {
        connection: row.connection.clone(),
        gitlab_id: row.gitlab_id,
        web_url: format!("{}/{}", base.trim_end_matches('/'), row.path),
        path: row.path.clone(),
        components,
        deploy_key_public: row.public_key.clone(),
        deploy_key_fingerprint: row.fingerprint.clone(),
        expected_webhook_url,
        transitions: store.transitions(Some(row.id), 50).await?,
        events: store.events(Some(row.id), None, 50).await?,
    })
}

/// `url` with its query string shown as `?…`.
fn without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

// ---- JSON ----------------------------------------------------------------

/// A page that may not be read: to the sign-in form.
fn sign_in_first() -> Response {
    axum::response::Redirect::to("/sign-in").into_response()
}

/// An API answer that may not be read: 401 with how to authenticate.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "send Authorization: Bearer with the read or operator token, or sign in at /sign-in\n",
    )
        .into_response()
}

async fn overview_json(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !super::operator::may_read(&state, &headers) {
        return unauthorized();
    }
    match overview(&state, &filter).await {
        Ok(o) => Json(o).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn projects_json(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !super::operator::may_read(&state, &headers) {
        return unauthorized();
    }
    let page = async {
        let filter = filter.parse().map_err(PageError::BadRequest)?;
        Ok::<_, PageError>(state.store.attention(&filter).await?)
    };
    match page.await {
        Ok(p) => Json(p).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn project_json(
    State(state): State<AppState>,
    Path((connection, wanted)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !super::operator::may_read(&state, &headers) {
        return unauthorized();
    }
    match project(&state, &connection, &wanted).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => e.into_response(),
    }
}

// ---- HTML ----------------------------------------------------------------

/// A time as people read it: how long ago (or ahead), and exactly.
pub struct When {
    pub relative: String,
    pub exact: String,
    pub iso: String,
}

pub(super) fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<When> {
    let t = t?;
    let seconds = (now - t).num_seconds();
    let span = seconds.unsigned_abs();
    let amount = match span {
        0..=59 => format!("{span} s"),
        60..=3599 => format!("{} min", span / 60),
        3600..=86_399 => format!("{} h", span / 3600),
        _ => format!("{} d", span / 86_400),
    };
    Some(When {
        relative: if seconds >= 0 {
            format!("{amount} ago")
        } else {
            format!("in {amount}")
        },
        exact: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The CSS class of a state: its severity (the word is always shown too).
fn tone(state: HealthState) -> &'static str {
    match state.severity() {
        crate::health::Severity::Healthy => "ok",
        crate::health::Severity::Warning => "warn",
        crate::health::Severity::Unknown => "unknown",
        crate::health::Severity::Broken => "bad",
    }
}

struct Row {
    connection: String,
    gitlab_id: i64,
    path: String,
    component: &'static str,
    state: &'static str,
    tone: &'static str,
    since: Option<When>,
    detail: String,
}

struct ConnectionLine {
    name: String,
    state: &'static str,
    tone: &'static str,
    since: Option<When>,
    detail: String,
    token: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewTemplate {
    generated: When,
    csrf: Option<String>,
    can_sign_in: bool,
    leader: Option<String>,
    last_sweep: Option<(When, String, &'static str)>,
    sweep_running: Option<String>,
    paused: Option<(String, When)>,
    connections: Vec<ConnectionLine>,
    counts: Vec<Count>,
    rows: Vec<Row>,
    total: i64,
    page: i64,
    pages: i64,
    filter: Filter,
    connection_names: Vec<String>,
    components: Vec<&'static str>,
    states: Vec<&'static str>,
    previous: Option<String>,
    next: Option<String>,
}

struct ComponentLine {
    component: &'static str,
    state: &'static str,
    tone: &'static str,
    since: Option<When>,
    last_checked: Option<When>,
    detail: String,
    what_to_do: &'static str,
}

struct TransitionLine {
    at: When,
    component: &'static str,
    from: &'static str,
    to: &'static str,
    tone: &'static str,
    detail: String,
}

struct EventLine {
    at: When,
    component: String,
    action: String,
    cause: String,
    before: String,
    after: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectTemplate {
    generated: When,
    /// Signed in: the buttons carry this CSRF token.
    csrf: Option<String>,
    can_sign_in: bool,
    actions: [(&'static str, &'static str); 4],
    p: ProjectView,
    components: Vec<ComponentLine>,
    transitions: Vec<TransitionLine>,
    events: Vec<EventLine>,
}

fn html(rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status page: rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

/// The reader's CSRF token when signed in; whether a sign-in is offered.
fn signed_in(state: &AppState, headers: &axum::http::HeaderMap) -> (Option<String>, bool) {
    match super::operator::acting(state, headers) {
        super::operator::Acting::Off => (None, false),
        super::operator::Acting::SignIn => (None, true),
        super::operator::Acting::On { csrf } => (Some(csrf), false),
    }
}

/// The overview's query string for `page`, keeping the filter.
fn page_link(f: &Filter, page: i64) -> String {
    let query: Vec<(&str, String)> = [
        ("connection", f.connection.clone()),
        ("component", f.component.clone()),
        ("state", f.state.clone()),
        ("q", f.q.clone()),
        ("page", page.to_string()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    format!(
        "?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish()
    )
}

async fn overview_page(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !super::operator::may_read(&state, &headers) {
        return sign_in_first();
    }
    let (csrf, can_sign_in) = signed_in(&state, &headers);
    let o = match overview(&state, &filter).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let now = o.generated_at;
    let a = &o.attention;
    let template = OverviewTemplate {
        generated: when(Some(now), now).expect("a time"),
        csrf,
        can_sign_in,
        leader: o
            .leader
            .as_ref()
            .map(|l| match (&l.holder, l.lease_expires_at) {
                (Some(h), Some(_)) => format!("{h} (fencing token {})", l.token),
                _ => "none: no replica holds the lease, nothing sweeps or repairs".to_owned(),
            }),
        last_sweep: o.last_sweep.as_ref().map(|s| {
            (
                when(Some(s.finished_at), now).expect("a time"),
                format!("{:.1} s", s.seconds),
                s.outcome,
            )
        }),
        sweep_running: o.sweep_running.as_ref().map(|r| r.text.clone()),
        paused: o
            .repairs_paused
            .as_ref()
            .map(|p| (p.reason.clone(), when(Some(p.since), now).expect("a time"))),
        connection_names: o.connections.iter().map(|c| c.name.clone()).collect(),
        connections: o
            .connections
            .iter()
            .map(|c| ConnectionLine {
                name: c.name.clone(),
                state: c.state.as_str(),
                tone: tone(c.state),
                since: when(c.since, now),
                detail: c.detail.clone(),
                token: c
                    .token
                    .as_ref()
                    .map_or_else(|| "not read yet".to_owned(), |t| t.describe()),
            })
            .collect(),
        rows: a
            .rows
            .iter()
            .map(|r| Row {
                connection: r.connection.clone(),
                gitlab_id: r.gitlab_id,
                path: r.path.clone(),
                component: r.component.as_str(),
                state: r.state.as_str(),
                tone: tone(r.state),
                since: when(r.since, now),
                detail: r.detail.clone(),
            })
            .collect(),
        total: a.total,
        page: a.page,
        pages: a.pages,
        previous: (a.page > 1).then(|| page_link(&filter, a.page - 1)),
        next: (a.page < a.pages).then(|| page_link(&filter, a.page + 1)),
        components: Component::PROJECT_COMPONENTS
            .iter()
            .map(|c| c.as_str())
            .collect(),
        states: crate::health::ALL_STATES
            .iter()
            .map(|s| s.as_str())
            .collect(),
        counts: o.counts,
        filter,
    };
    html(template.render())
}

async fn project_page(
    State(state): State<AppState>,
    Path((connection, wanted)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !super::operator::may_read(&state, &headers) {
        return sign_in_first();
    }
    let (csrf, can_sign_in) = signed_in(&state, &headers);
    let p = match project(&state, &connection, &wanted).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let now = Utc::now();
    let template = ProjectTemplate {
        generated: when(Some(now), now).expect("a time"),
        csrf,
        can_sign_in,
        actions: [
            ("check_now", "Check now"),
            ("regenerate_deploy_key", "Regenerate deploy key"),
            ("fix_webhook", "Fix or recreate webhook"),
            ("follow_move", "Follow move"),
        ],
        components: p
            .components
            .iter()
            .map(|c| ComponentLine {
                component: c.component.as_str(),
                state: c.state.as_str(),
                tone: tone(c.state),
                since: when(c.since, now),
                last_checked: when(c.last_checked, now),
                detail: c.detail.clone(),
                what_to_do: c.what_to_do,
            })
            .collect(),
        transitions: p
            .transitions
            .iter()
            .map(|t| TransitionLine {
                at: when(Some(t.at), now).expect("a time"),
                component: t.component.as_str(),
                from: t.from_state.map_or("—", HealthState::as_str),
                to: t.to_state.as_str(),
                tone: tone(t.to_state),
                detail: t.detail.clone(),
            })
            .collect(),
        events: p
            .events
            .iter()
            .map(|e| EventLine {
                at: when(Some(e.at), now).expect("a time"),
                component: e.component.clone(),
                action: e.action.clone(),
                cause: e.cause.clone(),
                before: e.before.clone(),
                after: e.after.clone(),
                outcome: e.outcome.clone(),
            })
            .collect(),
        p,
    };
    html(template.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_and_exact() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let w = when(Some(now - chrono::Duration::minutes(90)), now).unwrap();
        assert_eq!(w.relative, "1 h ago");
        assert_eq!(w.exact, "2026-12-01 10:30:00 UTC");
        assert_eq!(w.iso, "2026-12-01T10:30:00Z");
        assert_eq!(
            when(Some(now + chrono::Duration::days(3)), now)
                .unwrap()
                .relative,
            "in 3 d"
        );
        assert!(when(None, now).is_none());
    }

    #[test]
    fn filters_name_what_they_cannot_read() {
        let f = Filter {
            component: "deploy_key".into(),
            state: "missing".into(),
            q: "acme".into(),
            page: Some(2),
            ..Filter::default()
        };
        let parsed = f.parse().unwrap();
        assert_eq!(parsed.component, Some(Component::DeployKey));
        assert_eq!(parsed.state, Some(HealthState::Missing));
        assert_eq!(parsed.path.as_deref(), Some("acme"));
        assert_eq!(
            page_link(&f, 3),
            "?component=deploy_key&state=missing&q=acme&page=3"
        );
        let bad = Filter {
            state: "broken".into(),
            ..Filter::default()
        };
        assert_eq!(
            bad.parse().unwrap_err(),
            "state `broken` is not one of glwarden's"
        );
    }

    #[test]
    fn a_query_string_is_not_shown() {
        assert_eq!(
            without_query("https://ci.example.com/hook?token=s3cret"),
            "https://ci.example.com/hook?…"
        );
        assert_eq!(without_query("https://ci/x"), "https://ci/x");
    }
}
