//! `/_sim` control API: the `Sim` mutators over JSON for tests that drive a
//! simulator in another process (no auth: it is a test tool). Everything
//! goes through the same `World` methods as the Rust API.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::reply::{Reply, Res};
use super::world::World;
use super::{Fault, HookSpec};

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| Reply::error(400, format!("bad control body: {e}")))
}

fn id(s: &str) -> Result<u64, Reply> {
    s.parse()
        .map_err(|_| Reply::error(400, format!("bad id: {s}")))
}

fn ok() -> Reply {
    Reply::ok(json!({ "ok": true }))
}

fn created(id: u64) -> Reply {
    Reply::created(json!({ "id": id }))
}

#[derive(Deserialize)]
struct PathBody {
    path: String,
}

#[derive(Deserialize)]
struct UserBody {
    username: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct NewToken {
    user: u64,
    token: String,
    #[serde(default)]
    scopes: Vec<String>,
    expires_at: Option<NaiveDate>,
}

#[derive(Deserialize)]
struct NewApp {
    client_id: String,
    client_secret: String,
}

#[derive(Deserialize)]
struct NewOAuth {
    user: u64,
    client_id: String,
    access: String,
    refresh: String,
    #[serde(default)]
    scopes: Vec<String>,
    expires_in: i64,
}

#[derive(Deserialize)]
struct Member {
    user: u64,
    access_level: u32,
}

#[derive(Deserialize)]
struct Archive {
    archived: bool,
}

#[derive(Deserialize)]
struct NewKey {
    title: String,
    key: String,
    #[serde(default)]
    can_push: bool,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct CanPush {
    can_push: bool,
}

#[derive(Deserialize)]
struct Deliveries {
    status: u16,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct Receiver {
    url: String,
    status: u16,
}

#[derive(Deserialize)]
struct Required {
    required: bool,
}

#[derive(Deserialize)]
struct Latency {
    ms: u64,
}

#[derive(Deserialize)]
struct RateLimit {
    per_minute: Option<u32>,
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub(crate) fn handle(w: &mut World, method: &str, path: &str, body: &[u8]) -> Reply {
    match route(w, method, path, body) {
        Ok(r) | Err(r) => r,
    }
}

fn route(w: &mut World, method: &str, path: &str, body: &[u8]) -> Res {
    let segs: Vec<&str> = path
        .trim_start_matches("/_sim")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    Ok(match (method, segs.as_slice()) {
        ("GET", ["state"]) => Reply::ok(serde_json::to_value(&*w).unwrap_or(Value::Null)),
        ("GET", ["requests"]) => Reply::ok(json!(w.requests.records())),
        ("DELETE", ["requests"]) => {
            w.requests.clear();
            ok()
        }
        ("POST", ["users"]) => created(w.add_user(&parse::<UserBody>(body)?.username)),
        ("POST", ["tokens"]) => {
            let t: NewToken = parse(body)?;
            created(w.add_access_token(t.user, &t.token, &strs(&t.scopes), t.expires_at))
        }
        ("POST", ["tokens", "revoke"]) => {
            w.revoke_token(&parse::<TokenBody>(body)?.token);
            ok()
        }
        ("POST", ["tokens", "expire"]) => {
            w.expire_token(&parse::<TokenBody>(body)?.token);
            ok()
        }
        ("POST", ["tokens", "expiry_required"]) => {
            w.token_expiry_required = parse::<Required>(body)?.required;
            ok()
        }
        ("POST", ["oauth_apps"]) => {
            let a: NewApp = parse(body)?;
            w.add_oauth_app(&a.client_id, &a.client_secret);
            ok()
        }
        ("POST", ["oauth_tokens"]) => {
            let t: NewOAuth = parse(body)?;
            let scopes = strs(&t.scopes);
            w.add_oauth_token(
                t.user,
                &t.client_id,
                &t.access,
                &t.refresh,
                &scopes,
                t.expires_in,
            );
            ok()
        }
        ("POST", ["groups"]) => created(w.ensure_group(&parse::<PathBody>(body)?.path)),
        ("POST", ["groups", g, "members"]) => {
            let m: Member = parse(body)?;
            w.set_group_member(id(g)?, m.user, m.access_level);
            ok()
        }
        ("POST", ["projects"]) => created(w.add_project(&parse::<PathBody>(body)?.path)),
        ("DELETE", ["projects", p]) => {
            w.delete_project(id(p)?);
            ok()
        }
        ("POST", ["projects", p, "members"]) => {
            let m: Member = parse(body)?;
            w.set_member(id(p)?, m.user, m.access_level);
            ok()
        }
        ("POST", ["projects", p, "rename"]) => {
            w.rename_project(id(p)?, &parse::<PathBody>(body)?.path);
            ok()
        }
        ("POST", ["projects", p, "archive"]) => {
            w.set_archived(id(p)?, parse::<Archive>(body)?.archived);
            ok()
        }
        ("POST", ["projects", p, "schedule_deletion"]) => {
            w.schedule_deletion(id(p)?);
            ok()
        }
        ("POST", ["projects", p, "deploy_keys"]) => {
            let k: NewKey = parse(body)?;
            let kid = w
                .add_deploy_key(id(p)?, &k.title, &k.key, k.can_push, k.expires_at, None)
                .ok_or_else(|| Reply::error(400, "invalid OpenSSH public key"))?;
            created(kid)
        }
        ("DELETE", ["projects", p, "deploy_keys", k]) => {
            w.unlink_deploy_key(id(p)?, id(k)?);
            ok()
        }
        ("POST", ["projects", p, "deploy_keys", k, "can_push"]) => {
            w.set_deploy_key_can_push(id(p)?, id(k)?, parse::<CanPush>(body)?.can_push);
            ok()
        }
        ("POST", ["projects", p, "hooks"]) => created(w.add_hook(id(p)?, parse::<HookSpec>(body)?)),
        ("DELETE", ["projects", p, "hooks", h]) => {
            w.remove_hook(id(p)?, id(h)?);
            ok()
        }
        ("POST", ["projects", p, "hooks", h, "deliveries"]) => {
            let d: Deliveries = parse(body)?;
            let (p, h) = (id(p)?, id(h)?);
            for _ in 0..d.count {
                if !w.record_delivery(p, h, d.status, "push_hooks") {
                    return Err(Reply::error(404, "404 Not Found"));
                }
            }
            ok()
        }
        ("POST", ["receivers"]) => {
            let rcv: Receiver = parse(body)?;
            w.receivers.insert(rcv.url, rcv.status);
            ok()
        }
        ("POST", ["faults"]) => {
            w.faults.push(parse::<Fault>(body)?);
            ok()
        }
        ("DELETE", ["faults"]) => {
            w.faults.clear();
            ok()
        }
        ("POST", ["latency"]) => {
            w.latency = std::time::Duration::from_millis(parse::<Latency>(body)?.ms);
            ok()
        }
        ("POST", ["rate_limit"]) => {
            w.set_rate_limit(parse::<RateLimit>(body)?.per_minute);
            ok()
        }
        _ => return Err(Reply::route_not_found()),
    })
}
