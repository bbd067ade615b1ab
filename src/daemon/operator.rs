//! The status page's buttons: sign-in with the operator token
//! (`[http] operator_token_file`), a signed session cookie (HttpOnly,
//! SameSite=Strict), a CSRF token in every form, and the actions: check
//! now, regenerate the deploy key, fix the webhook (a new secret, created
//! if missing), follow a move. Each runs the command line's code path
//! (`repair/manual.rs`: the same repairer, journal and events, the event's
//! cause "status page (operator)") on the replica that leads.
//!
//! Without an operator token nothing here acts: the page is read-only.
//! With a read token (`[http] read_token_file`) the pages themselves ask
//! for a session (either token signs in) or `Authorization: Bearer`.
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

use super::server::{AppState, same_secret as same};
use crate::health::Component;
use crate::repair::ManualCause;
use crate::sweep::Sweeper;

/// The session cookie's name.
pub const COOKIE: &str = "glwarden_session";
/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(8 * 3600);
/// How long a wrong token waits before its refusal.
pub const WRONG_TOKEN_DELAY: Duration = Duration::from_secs(1);

/// Who a session or a token is: one who may read the pages (the read
/// token, when pages are guarded), or the operator, who may also act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Operator,
}

impl Role {
    fn mark(self) -> &'static str {
        match self {
            Role::Reader => "r",
            Role::Operator => "o",
        }
    }
}

/// The tokens people sign in with and the key sessions are signed with.
/// Present when `[http]` names an operator token, a read token, or both.
pub struct Access {
    key: [u8; 32],
    operator: Option<SecretString>,
    reader: Option<SecretString>,
}

impl Access {
    pub fn new(operator: Option<SecretString>, reader: Option<SecretString>) -> Option<Self> {
        (operator.is_some() || reader.is_some()).then(|| Self {
            key: rand::random(),
            operator,
            reader,
        })
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session: `ROLE.EXPIRES.NONCE.MAC`, the MAC over the rest.
    fn new_session(&self, role: Role) -> String {
        let expires = (Utc::now() + SESSION).timestamp().to_string();
        let nonce = hex(&rand::random::<[u8; 16]>());
        let mac = hex(&self.mac(&[
            b"session",
            role.mark().as_bytes(),
            expires.as_bytes(),
            nonce.as_bytes(),
        ]));
        format!("{}.{expires}.{nonce}.{mac}", role.mark())
    }

    /// The role of `session` if this daemon signed it and it has not expired.
    fn valid(&self, session: &str) -> Option<Role> {
        let mut parts = session.splitn(4, '.');
        let (mark, expires, nonce, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let role = match mark {
            "o" => Role::Operator,
            "r" => Role::Reader,
            _ => return None,
        };
        let until = expires.parse::<i64>().ok()?;
        let expected = hex(&self.mac(&[
            b"session",
            mark.as_bytes(),
            expires.as_bytes(),
            nonce.as_bytes(),
        ]));
        (same(mac.as_bytes(), expected.as_bytes()) && Utc::now().timestamp() < until)
            .then_some(role)
    }

    /// The CSRF token that goes with `session`.
    pub fn csrf(&self, session: &str) -> String {
        hex(&self.mac(&[b"csrf", session.as_bytes()]))
    }

    /// Who `offered` makes its bearer (the operator token first).
    fn role_of(&self, offered: &str) -> Option<Role> {
        let is = |token: &Option<SecretString>| {
            token
                .as_ref()
                .is_some_and(|t| same(offered.as_bytes(), t.expose_secret().as_bytes()))
        };
        if is(&self.operator) {
            Some(Role::Operator)
        } else if is(&self.reader) {
            Some(Role::Reader)
        } else {
            None
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session the request's cookie carries, with its role, if this daemon signed it.
pub fn session(state: &AppState, headers: &HeaderMap) -> Option<(String, Role)> {
    let access = state.access.as_ref()?;
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(|s| access.valid(s).map(|role| (s.to_owned(), role)))
}

/// Whether the request may read the pages: always, unless `[http]` names a
/// read token; then with a session, or `Authorization: Bearer` with either token.
pub fn may_read(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(access) = &state.access else {
        return true;
    };
    if access.reader.is_none() || session(state, headers).is_some() {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| access.role_of(token).is_some())
}

/// What a page offers its reader: nothing (no operator token), a sign-in
/// link, or the buttons with the session's CSRF token.
pub enum Acting {
    Off,
    SignIn,
    On { csrf: String },
}

pub fn acting(state: &AppState, headers: &HeaderMap) -> Acting {
    let Some(access) = state.access.as_ref().filter(|a| a.operator.is_some()) else {
        return Acting::Off;
    };
    match session(state, headers) {
        Some((session, Role::Operator)) => Acting::On {
            csrf: access.csrf(&session),
        },
        _ => Acting::SignIn,
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
        enabled: state.access.is_some(),
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
    let Some(access) = &state.access else {
        return (StatusCode::FORBIDDEN, sign_in_page(&state, false)).into_response();
    };
    let Some(role) = access.role_of(form.token.trim()) else {
        tracing::warn!("status page: a sign-in with a wrong token");
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        return (StatusCode::FORBIDDEN, sign_in_page(&state, true)).into_response();
    };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        access.new_session(role),
        SESSION.as_secs()
    );
    tracing::info!(?role, "status page: signed in");
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
    let signed = state.access.as_ref().zip(session(&state, &headers));
    match signed {
        Some((access, (session, _)))
            if same(form.csrf.as_bytes(), access.csrf(&session).as_bytes()) => {}
        _ => return forbidden("no session, or its CSRF token is wrong"),
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// An operator's session whose CSRF token is `csrf`, or why not (a 403).
fn authorized(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<(), &'static str> {
    let Some(access) = state.access.as_ref().filter(|a| a.operator.is_some()) else {
        return Err(
            "actions are off: set http.operator_token_file or http.operator_token_credential",
        );
    };
    let Some((session, role)) = session(state, headers) else {
        return Err("sign in first (/sign-in)");
    };
    if !same(csrf.as_bytes(), access.csrf(&session).as_bytes()) {
        return Err("the form's CSRF token is missing or wrong: reload the page");
    }
    if role != Role::Operator {
        return Err("signed in with the read token: sign in with the operator token to act");
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
    fn sessions_are_signed_carry_their_role_and_expire() {
        let access = Access::new(
            Some(SecretString::from("o".repeat(32))),
            Some(SecretString::from("r".repeat(32))),
        )
        .unwrap();
        assert_eq!(access.role_of(&"o".repeat(32)), Some(Role::Operator));
        assert_eq!(access.role_of(&"r".repeat(32)), Some(Role::Reader));
        assert_eq!(access.role_of("x"), None);
        let s = access.new_session(Role::Operator);
        assert_eq!(access.valid(&s), Some(Role::Operator));
        let other = Access::new(Some(SecretString::from("o".repeat(32))), None).unwrap();
        assert_eq!(other.valid(&s), None, "another daemon's key");
        // A reader's session made an operator's is a forgery.
        let read = access.new_session(Role::Reader);
        assert_eq!(access.valid(&read), Some(Role::Reader));
        assert_eq!(access.valid(&format!("o{}", &read[1..])), None);
        let (role, rest) = s.split_once('.').unwrap();
        let (expires, rest) = rest.split_once('.').unwrap();
        let later = format!("{role}.{}.{rest}", expires.parse::<i64>().unwrap() + 3600);
        assert_eq!(access.valid(&later), None, "a longer life is a forgery");
        let expired = {
            let expires = (Utc::now().timestamp() - 1).to_string();
            let mac = hex(&access.mac(&[b"session", b"o", expires.as_bytes(), b"00"]));
            format!("o.{expires}.00.{mac}")
        };
        assert_eq!(access.valid(&expired), None);
        assert!(access.valid("").is_none() && access.valid("o.1.2").is_none());
        assert_ne!(access.csrf(&s), access.csrf(&read), "CSRF per session");
        assert!(Access::new(None, None).is_none());
    }
}
