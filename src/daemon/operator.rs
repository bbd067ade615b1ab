//! The status page's buttons: sign-in with the operator token
//! (`[http] operator_token_file`), a signed session cookie (HttpOnly,
//! SameSite=Strict), a CSRF token in every form, and the actions: check
//! now, regenerate the deploy key, fix the webhook (a new secret, created
//! if missing), follow a move. Each runs the command line's code path
//! (`repair/manual.rs`: the same repairer, journal and events, the event's
//! cause "status page (operator)") on the replica that leads.
//!
//! Without an operator token nothing here acts: the page is read-only.
//! Sessions are signed with a key made when the daemon starts: they end
//! with it, and one replica's session is not another's.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::server::AppState;
use crate::health::Component;
use crate::repair::ManualCause;
use crate::sweep::Sweeper;

/// The session cookie's name.
pub const COOKIE: &str = "glwarden_session";
/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(8 * 3600);
/// How long a wrong token waits before its refusal.
pub const WRONG_TOKEN_DELAY: Duration = Duration::from_secs(1);

/// The operator token and the key sessions are signed with.
pub struct Operator {
    token: SecretString,
    key: [u8; 32],
}

impl Operator {
    pub fn new(token: SecretString) -> Self {
        Self {
            token,
            key: rand::random(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session: `EXPIRES.NONCE.MAC`, hex.
    fn new_session(&self) -> String {
        let expires = (Utc::now() + SESSION).timestamp().to_string();
        let nonce = hex(&rand::random::<[u8; 16]>());
        let mac = hex(&self.mac(&[b"session", expires.as_bytes(), nonce.as_bytes()]));
        format!("{expires}.{nonce}.{mac}")
    }

    /// Whether `session` is one this daemon signed and it has not expired.
    fn valid(&self, session: &str) -> bool {
        let mut parts = session.splitn(3, '.');
        let (Some(expires), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(until) = expires.parse::<i64>() else {
            return false;
        };
        let expected = hex(&self.mac(&[b"session", expires.as_bytes(), nonce.as_bytes()]));
        same(mac.as_bytes(), expected.as_bytes()) && Utc::now().timestamp() < until
    }

    /// The CSRF token that goes with `session`.
    pub fn csrf(&self, session: &str) -> String {
        hex(&self.mac(&[b"csrf", session.as_bytes()]))
    }

    fn token_is(&self, offered: &str) -> bool {
        same(offered.as_bytes(), self.token.expose_secret().as_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session the request's cookie carries, if this daemon signed it.
pub fn session(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let operator = state.operator.as_ref()?;
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|s| operator.valid(s))
        .map(str::to_owned)
}

/// What a page offers its reader: nothing (no operator token), a sign-in
/// link, or the buttons with the session's CSRF token.
pub enum Acting {
    Off,
    SignIn,
    On { csrf: String },
}

pub fn acting(state: &AppState, headers: &HeaderMap) -> Acting {
    match (&state.operator, session(state, headers)) {
        (None, _) => Acting::Off,
        (Some(_), None) => Acting::SignIn,
        (Some(operator), Some(session)) => Acting::On {
            csrf: operator.csrf(&session),
        },
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInTemplate {
    generated: super::pages::When,
    enabled: bool,
    refused: bool,
}

fn sign_in_page(state: &AppState, refused: bool) -> Html<String> {
    let now = Utc::now();
    let page = SignInTemplate {
        generated: super::pages::when(Some(now), now).expect("a time"),
        enabled: state.operator.is_some(),
        refused,
    };
    Html(
        page.render()
            .unwrap_or_else(|e| format!("rendering failed: {e}")),
    )
}

pub async fn sign_in_form(State(state): State<AppState>) -> Response {
    sign_in_page(&state, false).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

pub async fn sign_in(State(state): State<AppState>, Form(form): Form<SignIn>) -> Response {
    let Some(operator) = &state.operator else {
        return (StatusCode::FORBIDDEN, sign_in_page(&state, false)).into_response();
    };
    if !operator.token_is(form.token.trim()) {
        tracing::warn!("status page: a sign-in with a wrong operator token");
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        return (StatusCode::FORBIDDEN, sign_in_page(&state, true)).into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        operator.new_session(),
        SESSION.as_secs()
    );
    tracing::info!("status page: an operator signed in");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[derive(Deserialize)]
pub struct SignOut {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Response {
    if let Err(why) = authorized(&state, &headers, &form.csrf) {
        return forbidden(why);
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// A signed-in session whose CSRF token is `csrf`, or why not (a 403).
fn authorized(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<(), &'static str> {
    let Some(operator) = &state.operator else {
        return Err(
            "actions are off: set http.operator_token_file or http.operator_token_credential",
        );
    };
    let Some(session) = session(state, headers) else {
        return Err("sign in first (/sign-in)");
    };
    if !same(csrf.as_bytes(), operator.csrf(&session).as_bytes()) {
        return Err("the form's CSRF token is missing or wrong: reload the page");
    }
    Ok(())
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{why}\n")).into_response()
}

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    CheckNow,
    RegenerateDeployKey,
    FixWebhook,
    FollowMove,
}

impl ActionKind {
    fn describe(self) -> &'static str {
        match self {
            ActionKind::CheckNow => "check now",
            ActionKind::RegenerateDeployKey => "regenerate the deploy key",
            ActionKind::FixWebhook => "fix the webhook",
            ActionKind::FollowMove => "follow the move",
        }
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    connection: String,
    project: i64,
    action: ActionKind,
    #[serde(default)]
    csrf: String,
}

#[derive(Template)]
#[template(path = "action.html")]
struct ActionTemplate {
    generated: super::pages::When,
    what: &'static str,
    path: String,
    back: String,
    ok: bool,
    outcome: String,
}

pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(why) = authorized(&state, &headers, &form.csrf) {
        return forbidden(why);
    }
    let Some(sweeper) = leading(&state) else {
        return (
            StatusCode::CONFLICT,
            "this replica stands by: act on the one that leads (see the overview)\n",
        )
            .into_response();
    };
    let row = match sweeper
        .store()
        .projects_named(&form.project.to_string(), true)
        .await
    {
        Ok(rows) => rows.into_iter().find(|p| p.connection == form.connection),
        Err(e) => {
            tracing::error!(error = %e, "status page: the store failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not be read\n",
            )
                .into_response();
        }
    };
    let Some(row) = row else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no project {} of connection `{}` in the inventory\n",
                form.project, form.connection
            ),
        )
            .into_response();
    };
    let cause = ManualCause::StatusPage;
    tracing::info!(project = %row.path, action = form.action.describe(), "status page: an operator acts");
    let done = match form.action {
        ActionKind::CheckNow => sweeper
            .check_now(&row)
            .await
            .map(|changes| format!("checked; {changes} state changes")),
        ActionKind::RegenerateDeployKey => {
            sweeper.regenerate(&row, Component::DeployKey, cause).await
        }
        ActionKind::FixWebhook => sweeper.regenerate(&row, Component::Webhook, cause).await,
        ActionKind::FollowMove => sweeper.follow_move(&row, cause).await,
    };
    let now = Utc::now();
    let (status, ok, outcome) = match done {
        Ok(outcome) => (StatusCode::OK, true, outcome),
        Err(e) => (StatusCode::OK, false, format!("failed: {e:#}")),
    };
    let page = ActionTemplate {
        generated: super::pages::when(Some(now), now).expect("a time"),
        what: form.action.describe(),
        back: format!("/projects/{}/{}", urlencode(&row.connection), row.gitlab_id),
        path: row.path,
        ok,
        outcome,
    };
    (
        status,
        Html(
            page.render()
                .unwrap_or_else(|e| format!("rendering failed: {e}")),
        ),
    )
        .into_response()
}

/// The sweeper of the replica that leads (this one), if it does.
fn leading(state: &AppState) -> Option<Arc<Sweeper>> {
    state.leading.read().expect("leading lock").clone()
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let op = Operator::new(SecretString::from("x".repeat(32)));
        let s = op.new_session();
        assert!(op.valid(&s));
        let other = Operator::new(SecretString::from("x".repeat(32)));
        assert!(!other.valid(&s), "another daemon's key");
        let (expires, rest) = s.split_once('.').unwrap();
        let later = format!("{}.{rest}", expires.parse::<i64>().unwrap() + 3600);
        assert!(!op.valid(&later), "a longer life is a forgery");
        let expired = {
            let expires = (Utc::now().timestamp() - 1).to_string();
            let nonce = "00";
            let mac = hex(&op.mac(&[b"session", expires.as_bytes(), nonce.as_bytes()]));
            format!("{expires}.{nonce}.{mac}")
        };
        assert!(!op.valid(&expired));
        assert!(!op.valid("") && !op.valid("1.2") && !op.valid("x.y.z"));
        assert_ne!(op.csrf(&s), op.csrf(&op.new_session()), "CSRF per session");
    }
}
