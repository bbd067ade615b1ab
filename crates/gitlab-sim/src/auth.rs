//! Token authentication as `API::APIGuard` does it: OAuth access tokens are
//! looked up first, then access tokens (PAT records); unknown tokens get the
//! helper's 401 `message`, expired/revoked ones rack-oauth2's
//! `invalid_token`, a missing scope `insufficient_scope` (403).

use axum::http::HeaderMap;
use chrono::Utc;
use serde_json::json;

use super::reply::Reply;
use super::world::World;

/// What a route needs from the token's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any scope (`/personal_access_tokens/self`).
    Any,
    /// `read_user`, `read_api` or `api` (`/user`).
    ReadUser,
    /// `read_api` or `api` (GET routes).
    Read,
    /// `api` (everything that writes).
    Write,
    /// `api` or `self_rotate` (`POST /personal_access_tokens/self/rotate`
    /// on releases with the `self_rotate` scope).
    Rotate,
}

impl Need {
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Need::Any => &[],
            Need::ReadUser => &["api", "read_api", "read_user"],
            Need::Read => &["api", "read_api"],
            Need::Write => &["api"],
            Need::Rotate => &["api", "self_rotate"],
        }
    }

    fn satisfied_by(self, scopes: &[String]) -> bool {
        self == Need::Any || scopes.iter().any(|s| self.allowed().contains(&s.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Personal/project/group access token, by its token string.
    Pat(String),
    OAuth,
}

#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: u64,
    pub kind: TokenKind,
}

/// The token a request carries: `PRIVATE-TOKEN`, `Authorization: Bearer`,
/// or the `private_token` / `access_token` query parameters.
pub(crate) fn presented_token(headers: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = header("private-token") {
        return Some(t.trim().to_string());
    }
    if let Some(a) = header("authorization") {
        let mut parts = a.trim().splitn(2, ' ');
        if parts
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            return parts.next().map(|t| t.trim().to_string());
        }
    }
    query
        .iter()
        .find(|(k, _)| k == "private_token" || k == "access_token")
        .map(|(_, v)| v.clone())
}

/// The user a token belongs to, valid or not (rate limiting, request log).
pub(crate) fn token_owner(w: &World, token: Option<&str>) -> Option<u64> {
    let t = token?;
    w.oauth_tokens
        .get(t)
        .map(|o| o.user_id)
        .or_else(|| w.tokens.get(t).map(|p| p.user_id))
}

fn invalid_token(description: &str) -> Reply {
    Reply::json(
        401,
        json!({ "error": "invalid_token", "error_description": description }),
    )
    .header(
        "www-authenticate",
        format!(
            "Bearer realm=\"The API\", error=\"invalid_token\", error_description=\"{description}\""
        ),
    )
}

const EXPIRED: &str = "Token is expired. You can either do re-authorization or token refresh.";
const REVOKED: &str = "Token was revoked. You have to re-authorize from the user.";

/// [`authenticate`] on a token rotation path (GitLab's
/// `access_token_rotation_request?`): a revoked access token presented
/// here also revokes every active descendant of it (`revoke_token_family`,
/// docs/gitlab-contract.md §13), then gets the usual 401.
pub(crate) fn authenticate_rotation(
    w: &mut World,
    token: Option<&str>,
    need: Need,
) -> Result<Caller, Reply> {
    let revoked_pat = token
        .filter(|t| !w.oauth_tokens.contains_key(*t))
        .and_then(|t| w.tokens.get(t))
        .filter(|p| p.revoked)
        .map(|p| p.id);
    let result = authenticate(w, token, need);
    if let (Err(_), Some(id)) = (&result, revoked_pat) {
        w.revoke_token_family(id);
    }
    result
}

/// Validates the token for a route needing `need`.
pub(crate) fn authenticate(
    w: &mut World,
    token: Option<&str>,
    need: Need,
) -> Result<Caller, Reply> {
    let unauthorized = || Reply::message(401, "401 Unauthorized");
    let token = token.ok_or_else(unauthorized)?;
    let now = Utc::now();
    let (caller, scopes) = if let Some(o) = w.oauth_tokens.get(token) {
        if o.revoked {
            return Err(invalid_token(REVOKED));
        }
        if o.expires_at <= now {
            return Err(invalid_token(EXPIRED));
        }
        let caller = Caller {
            user: o.user_id,
            kind: TokenKind::OAuth,
        };
        (caller, o.scopes.clone())
    } else if let Some(p) = w.tokens.get_mut(token) {
        if p.revoked {
            return Err(invalid_token(REVOKED));
        }
        if p.expired(now.date_naive()) {
            return Err(invalid_token(EXPIRED));
        }
        p.last_used_at = Some(now);
        let caller = Caller {
            user: p.user_id,
            kind: TokenKind::Pat(token.to_string()),
        };
        (caller, p.scopes.clone())
    } else {
        return Err(unauthorized());
    };
    if !w.users.contains_key(&caller.user) {
        return Err(unauthorized());
    }
    if !need.satisfied_by(&scopes) {
        return Err(Reply::json(
            403,
            json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": need.allowed().join(" "),
            }),
        ));
    }
    Ok(caller)
}
