//! Doorkeeper's OAuth endpoints at the web root (GitLab's
//! `config/initializers/doorkeeper.rb`: `use_refresh_token`, 2-hour tokens):
//! refresh rotates both tokens and invalidates the old pair; token info;
//! revoke.

use chrono::Utc;
use rand::Rng;
use serde_json::json;

use super::api::Req;
use super::reply::{Reply, Res};
use super::world::{OAuthToken, World};

/// OAuth access tokens live two hours (AUTHN).
const EXPIRES_IN: i64 = 7200;

fn random_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        json!({ "error": error, "error_description": description }),
    )
    .header("cache-control", "no-store")
}

pub(crate) fn route(w: &mut World, r: &Req, rest: &str) -> Res {
    match (r.method, rest) {
        ("POST", "token") => token(w, r),
        ("GET", "token/info") => info(w, r),
        ("POST", "revoke") => {
            if let Some(t) = r.string("token") {
                w.revoke_token(&t);
            }
            Ok(Reply::ok(json!({})))
        }
        _ => Err(Reply::route_not_found()),
    }
}

fn token(w: &mut World, r: &Req) -> Res {
    let grant = r.string("grant_type").unwrap_or_default();
    if grant != "refresh_token" {
        return Err(oauth_error(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        ));
    }
    let invalid_grant = || {
        oauth_error(
            400,
            "invalid_grant",
            "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
        )
    };
    let refresh = r.string("refresh_token").unwrap_or_default();
    let access = w
        .oauth_refresh
        .get(&refresh)
        .cloned()
        .ok_or_else(invalid_grant)?;
    let old = w
        .oauth_tokens
        .get(&access)
        .cloned()
        .ok_or_else(invalid_grant)?;
    if let Some(client) = r.string("client_id") {
        let secret_ok = |app: &super::world::OAuthApp| {
            r.string("client_secret").is_none_or(|s| s == app.secret)
        };
        let app_ok = client == old.client_id && w.oauth_apps.get(&client).is_some_and(secret_ok);
        if !app_ok {
            return Err(oauth_error(
                401,
                "invalid_client",
                "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
            ));
        }
    }
    w.revoke_token(&access);
    let now = Utc::now();
    let new = OAuthToken {
        access: random_token(),
        refresh: random_token(),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(EXPIRES_IN),
        revoked: false,
        ..old
    };
    let body = json!({
        "access_token": new.access,
        "token_type": "bearer",
        "expires_in": EXPIRES_IN,
        "refresh_token": new.refresh,
        "scope": new.scopes.join(" "),
        "created_at": now.timestamp(),
    });
    w.insert_oauth(new);
    Ok(Reply::ok(body)
        .header("cache-control", "no-store")
        .header("pragma", "no-cache"))
}

fn info(w: &World, r: &Req) -> Res {
    let t = r
        .token
        .and_then(|t| w.oauth_tokens.get(t))
        .ok_or_else(|| oauth_error(401, "invalid_token", "The access token is invalid"))?;
    let now = Utc::now();
    if t.revoked {
        return Err(oauth_error(
            401,
            "invalid_token",
            "The access token was revoked",
        ));
    }
    if t.expires_at <= now {
        return Err(oauth_error(
            401,
            "invalid_token",
            "The access token expired",
        ));
    }
    let left = (t.expires_at - now).num_seconds();
    Ok(Reply::ok(json!({
        "resource_owner_id": t.user_id,
        "scope": t.scopes,
        "scopes": t.scopes,
        "expires_in": left,
        "expires_in_seconds": left,
        "application": { "uid": t.client_id },
        "created_at": t.created_at.timestamp(),
    })))
}
