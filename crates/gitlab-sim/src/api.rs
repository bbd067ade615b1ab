//! REST v4 routes. Each request is routed by path shape first (unknown
//! shapes are Grape's 404, wrong methods its 405), then authenticated, then
//! resolved to a project (404 / 301 / 405 per HELP), then role-checked.

use std::collections::Bound;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::auth::{self, Caller, Need, TokenKind};
use super::entities;
use super::pagination::{self, Offset};
use super::reply::{Reply, Res};
use super::world::{self, GUEST, Lookup, MAINTAINER, Window, World};
use super::{HookSpec, SimHook, keys, oauth};

/// A parsed request: query and body parameters merged (body wins), as
/// Grape's `params`.
pub(crate) struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub params: Map<String, Value>,
    pub token: Option<&'a str>,
}

impl<'a> Req<'a> {
    pub fn new(
        method: &'a str,
        path: &'a str,
        query: &'a [(String, String)],
        body: &[u8],
        content_type: &str,
        token: Option<&'a str>,
    ) -> Req<'a> {
        let mut params: Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if content_type.starts_with("application/json") {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
                params.extend(m);
            }
        } else if !body.is_empty() {
            params.extend(
                url::form_urlencoded::parse(body)
                    .into_owned()
                    .map(|(k, v)| (k, Value::String(v))),
            );
        }
        Req {
            method,
            path,
            query,
            params,
            token,
        }
    }

    /// GET or HEAD.
    pub fn is_read(&self) -> bool {
        self.method == "GET" || self.method == "HEAD"
    }

    pub fn has(&self, key: &str) -> bool {
        self.params.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Option<String> {
        match self.params.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Grape's Boolean coercion; anything else is `<key> is invalid`.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, Reply> {
        let invalid = || Reply::error(400, format!("{key} is invalid"));
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "t" => Ok(Some(true)),
                "false" | "0" | "no" | "f" => Ok(Some(false)),
                _ => Err(invalid()),
            },
            Some(Value::Number(n)) => Ok(Some(n.as_i64() != Some(0))),
            Some(_) => Err(invalid()),
        }
    }

    pub fn number(&self, key: &str) -> Result<Option<u64>, Reply> {
        match self.string(key) {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| Reply::error(400, format!("{key} is invalid"))),
        }
    }

    /// Grape's `requires` check: `a is missing, b is missing`.
    fn require(&self, keys: &[&str]) -> Result<(), Reply> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| self.string(k).is_none_or(|v| v.trim().is_empty()))
            .map(|k| format!("{k} is missing"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Reply::error(400, missing.join(", ")))
        }
    }
}

pub(crate) fn dispatch(w: &mut World, r: &Req) -> Reply {
    match route(w, r) {
        Ok(reply) | Err(reply) => reply,
    }
}

/// Grape's answer when the path exists but not for this method. HEAD is
/// served wherever GET is (hyper drops the body).
fn allow(r: &Req, methods: &[&str]) -> Result<(), Reply> {
    if methods.contains(&r.method) || (r.is_read() && methods.contains(&"GET")) {
        Ok(())
    } else {
        Err(Reply::error(405, "405 Not Allowed"))
    }
}

fn id_param(name: &str, s: &str) -> Result<u64, Reply> {
    s.parse()
        .map_err(|_| Reply::error(400, format!("{name} is invalid")))
}

fn need_for(r: &Req) -> Need {
    if r.is_read() { Need::Read } else { Need::Write }
}

/// A project sub-route, parsed before authentication.
enum ProjectRoute {
    Show,
    Keys,
    Key(u64),
    KeyEnable(u64),
    Hooks,
    Hook(u64),
    HookTest(u64, String),
    HookEvents(u64),
    HookResend(u64, u64),
}

fn project_route(r: &Req, rest: &[&str]) -> Result<ProjectRoute, Reply> {
    use ProjectRoute::*;
    Ok(match rest {
        [] => {
            allow(r, &["GET"])?;
            Show
        }
        ["deploy_keys"] => {
            allow(r, &["GET", "POST"])?;
            Keys
        }
        ["deploy_keys", k] => {
            allow(r, &["GET", "PUT", "DELETE"])?;
            Key(id_param("key_id", k)?)
        }
        ["deploy_keys", k, "enable"] => {
            allow(r, &["POST"])?;
            KeyEnable(id_param("key_id", k)?)
        }
        ["hooks"] => {
            allow(r, &["GET", "POST"])?;
            Hooks
        }
        ["hooks", h] => {
            allow(r, &["GET", "PUT", "DELETE"])?;
            Hook(id_param("hook_id", h)?)
        }
        ["hooks", h, "test", t] => {
            allow(r, &["POST"])?;
            HookTest(id_param("hook_id", h)?, t.to_string())
        }
        ["hooks", h, "events"] => {
            allow(r, &["GET"])?;
            HookEvents(id_param("hook_id", h)?)
        }
        ["hooks", h, "events", e, "resend"] => {
            allow(r, &["POST"])?;
            HookResend(id_param("hook_id", h)?, id_param("hook_event_id", e)?)
        }
        _ => return Err(Reply::route_not_found()),
    })
}

fn route(w: &mut World, r: &Req) -> Res {
    if let Some(rest) = r.path.strip_prefix("/oauth/") {
        return oauth::route(w, r, rest);
    }
    let Some(rest) = r.path.strip_prefix("/api/v4/") else {
        return Err(Reply::route_not_found());
    };
    let raw: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let decoded: Vec<String> = raw
        .iter()
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["user"] => {
            allow(r, &["GET"])?;
            let c = auth::authenticate(w, r.token, Need::ReadUser)?;
            let u = w.users.get(&c.user).ok_or_else(Reply::forbidden)?;
            Ok(Reply::ok(entities::user(w, u)))
        }
        ["personal_access_tokens", "self"] => {
            allow(r, &["GET"])?;
            let c = auth::authenticate(w, r.token, Need::Any)?;
            match c.kind {
                TokenKind::Pat(t) => Ok(Reply::ok(entities::access_token(&w.tokens[&t]))),
                TokenKind::OAuth => Err(Reply::message(
                    400,
                    "400 Bad request - This endpoint requires token type to be a personal access token",
                )),
            }
        }
        ["personal_access_tokens", "self", "rotate"] => {
            // A release without the route answers Grape's plain 404, before
            // authentication (docs/gitlab-contract.md §13).
            if !w.version.has_token_rotation() {
                return Err(Reply::route_not_found());
            }
            allow(r, &["POST"])?;
            rotate_self(w, r)
        }
        ["projects"] => {
            allow(r, &["GET"])?;
            let c = auth::authenticate(w, r.token, Need::Read)?;
            project_read_limit(w, r, c.user, ProjectRead::List)?;
            list_projects(w, r, &c)
        }
        ["version"] => {
            allow(r, &["GET"])?;
            auth::authenticate(w, r.token, Need::ReadUser)?;
            Ok(Reply::ok(entities::version(w.version)))
        }
        ["projects", id, rest @ ..] => {
            let route = project_route(r, rest)?;
            // Routes a release does not have are Grape's plain 404, before
            // authentication (docs/gitlab-contract.md §9, §10.4, §10.5).
            match route {
                ProjectRoute::HookTest(..) if !w.version.has_hook_test() => {
                    return Err(Reply::route_not_found());
                }
                ProjectRoute::HookEvents(_) if !w.version.has_hook_events() => {
                    return Err(Reply::route_not_found());
                }
                _ => {}
            }
            let c = auth::authenticate(w, r.token, need_for(r))?;
            if let ProjectRoute::Show = route {
                project_read_limit(w, r, c.user, ProjectRead::One)?;
            }
            let pid = find_project(w, r, &c, id, &raw[2..])?;
            project_action(w, r, &c, pid, route)
        }
        ["groups", id] => {
            allow(r, &["GET"])?;
            let c = auth::authenticate(w, r.token, Need::Read)?;
            let gid = find_group(w, &c, id)?;
            show_group(w, r, &c, gid)
        }
        ["groups", id, "projects"] => {
            allow(r, &["GET"])?;
            let c = auth::authenticate(w, r.token, Need::Read)?;
            project_read_limit(w, r, c.user, ProjectRead::Group)?;
            let gid = find_group(w, &c, id)?;
            list_group_projects(w, r, &c, gid)
        }
        _ => Err(Reply::route_not_found()),
    }
}

/// `PersonalAccessToken::MAX_PERSONAL_ACCESS_TOKEN_LIFETIME_IN_DAYS`.
const MAX_TOKEN_LIFETIME_DAYS: u64 = 365;

/// An optional Grape `Date` parameter: `YYYY-MM-DD` (or a full timestamp,
/// whose date is taken); anything else is `<key> is invalid`.
fn parse_date(r: &Req, key: &str) -> Result<Option<NaiveDate>, Reply> {
    let Some(s) = r.string(key).filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| DateTime::parse_from_rfc3339(s).map(|d| d.date_naive()))
        .map(Some)
        .map_err(|_| Reply::error(400, format!("{key} is invalid")))
}

/// `POST /personal_access_tokens/self/rotate` as `self_rotation.rb` and
/// `PersonalAccessTokens::RotateService` do it (docs/gitlab-contract.md
/// §13): `authenticate!` (a revoked token also revokes its family here),
/// then the `expires_at` validation, then `not_allowed!` for anything but
/// an access token; the old token is revoked and its successor created in
/// one step, or nothing changes.
fn rotate_self(w: &mut World, r: &Req) -> Res {
    let need = if w.version.has_self_rotate_scope() {
        Need::Rotate
    } else {
        Need::Write
    };
    let c = auth::authenticate_rotation(w, r.token, need)?;
    let requested = parse_date(r, "expires_at")?;
    let TokenKind::Pat(old) = c.kind else {
        return Err(Reply::message(405, "405 Method Not Allowed"));
    };
    let today = Utc::now().date_naive();
    let required = w.token_expiry_required;
    let expires_at = requested.or_else(|| required.then(|| today + chrono::Days::new(7)));
    if required {
        // `expires_at_before_instance_max_expiry_date`: the message names
        // the last date allowed.
        let max = today + chrono::Days::new(MAX_TOKEN_LIFETIME_DAYS);
        if expires_at.is_some_and(|d| d > max) {
            return Err(Reply::message(
                400,
                format!("400 Bad request - Expiration date must be before {max}"),
            ));
        }
    }
    let new = w
        .rotate_access_token(&old, expires_at)
        .ok_or_else(|| Reply::message(400, "400 Bad request - Token already revoked"))?;
    Ok(Reply::ok(entities::access_token_with_token(
        &w.tokens[&new],
    )))
}

fn can_read(w: &World, pid: u64, user: u64) -> bool {
    w.access_level(pid, user).is_some_and(|l| l >= GUEST)
        || w.projects
            .get(&pid)
            .is_some_and(|p| p.visibility == "public")
}

/// `find_project!` + `project_moved?`: invisible projects are 404; an old
/// path answers GET with a 301 to the numeric-id URL (sub-route and query
/// kept) and anything else with a 405.
fn find_project(w: &World, r: &Req, c: &Caller, id: &str, raw_rest: &[&str]) -> Result<u64, Reply> {
    let (pid, moved) = match w.lookup_project(id) {
        Lookup::Found(p) => (p, false),
        Lookup::Moved(p) => (p, true),
        Lookup::Missing => return Err(Reply::not_found("Project")),
    };
    if !can_read(w, pid, c.user) {
        return Err(Reply::not_found("Project"));
    }
    if !moved {
        return Ok(pid);
    }
    if r.method != "GET" {
        return Err(Reply::message(
            405,
            "Non GET methods are not allowed for moved projects",
        ));
    }
    let mut location = format!("{}/api/v4/projects/{pid}", w.base_url);
    for s in raw_rest {
        location.push('/');
        location.push_str(s);
    }
    if !r.query.is_empty() {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(r.query)
            .finish();
        location.push('?');
        location.push_str(&q);
    }
    Err(Reply::text(
        301,
        format!("This resource has been moved permanently to {location}."),
    )
    .header("location", location))
}

/// `authorize_admin_project` and friends: readable but below the role is 403.
fn require_maintainer(w: &World, pid: u64, c: &Caller) -> Result<(), Reply> {
    if w.access_level(pid, c.user).is_some_and(|l| l >= MAINTAINER) {
        Ok(())
    } else {
        Err(Reply::forbidden())
    }
}

fn project_action(w: &mut World, r: &Req, c: &Caller, pid: u64, route: ProjectRoute) -> Res {
    use ProjectRoute::*;
    if let Show = route {
        return Ok(Reply::ok(entities::project(
            w,
            &w.projects[&pid],
            Some(c.user),
        )));
    }
    require_maintainer(w, pid, c)?;
    match route {
        Show => unreachable!("handled above"),
        Keys if r.is_read() => list_keys(w, r, pid),
        Keys => create_key(w, r, c, pid),
        Key(k) if r.is_read() => {
            let p = &w.projects[&pid];
            let link = p.deploy_keys.get(&k).ok_or_else(Reply::record_not_found)?;
            Ok(Reply::ok(entities::deploy_key(
                &w.deploy_keys[&k],
                Some(link),
            )))
        }
        Key(k) if r.method == "PUT" => update_key(w, r, pid, k),
        Key(k) => {
            if w.unlink_deploy_key(pid, k) {
                Ok(Reply::no_content())
            } else {
                Err(Reply::not_found("Deploy key"))
            }
        }
        KeyEnable(k) => enable_key(w, c, pid, k),
        Hooks if r.is_read() => list_hooks(w, r, pid),
        Hooks => create_hook(w, r, pid),
        Hook(h) if r.is_read() => {
            let hook = w.projects[&pid].hooks.get(&h);
            Ok(Reply::ok(entities::hook(
                hook.ok_or_else(Reply::record_not_found)?,
                true,
                w.version,
            )))
        }
        Hook(h) if r.method == "PUT" => update_hook(w, r, pid, h),
        Hook(h) => {
            if w.remove_hook(pid, h) {
                Ok(Reply::no_content())
            } else {
                Err(Reply::record_not_found())
            }
        }
        HookTest(h, trigger) => test_hook(w, c, pid, h, &trigger),
        HookEvents(h) => hook_events(w, r, pid, h),
        HookResend(h, e) => resend_event(w, c, pid, h, e),
    }
}

/// An offset-paginated JSON array with the §5.1 headers.
fn offset_list<T>(
    w: &World,
    r: &Req,
    items: impl Iterator<Item = T>,
    o: Offset,
    render: impl Fn(T) -> Value,
) -> Res {
    let page = pagination::paginate(items, o);
    let headers = pagination::offset_headers(&w.base_url, r.path, r.query, o, &page);
    let body: Vec<Value> = page.items.into_iter().map(render).collect();
    Ok(Reply::ok(Value::Array(body)).headers(headers))
}

// ---- deploy keys ----

fn list_keys(w: &World, r: &Req, pid: u64) -> Res {
    let o = pagination::offset(r.query, 20, 100, false)?;
    let p = &w.projects[&pid];
    offset_list(w, r, p.deploy_keys.iter(), o, |(k, link)| {
        entities::deploy_key(&w.deploy_keys[k], Some(link))
    })
}

fn parse_time(r: &Req, key: &str) -> Result<Option<DateTime<Utc>>, Reply> {
    let Some(s) = r.string(key).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&s)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        })
        .map(Some)
        .map_err(|_| Reply::error(400, format!("{key} is invalid")))
}

/// `current_user.accessible_deploy_keys`: keys the user created or that
/// sit on a project the user maintains.
fn key_accessible(w: &World, key: u64, user: u64) -> bool {
    w.deploy_keys.get(&key).is_some_and(|k| {
        k.owner == Some(user)
            || k.projects
                .iter()
                .any(|p| w.access_level(*p, user).is_some_and(|l| l >= MAINTAINER))
    })
}

/// `POST /projects/:id/deploy_keys` as `lib/api/deploy_keys.rb` does it: the
/// stripped `key` parameter is compared, as text, with the stored
/// (sanitised) keys, first those on this project (the existing link comes
/// back, 201, title and `can_push` untouched), then the caller's accessible
/// keys (linked with this `can_push`). Anything else is a new key, which
/// fails uniqueness (400) when its material is already stored: so a key
/// re-posted with a multi-word comment is refused (docs/gitlab-contract.md §2).
fn create_key(w: &mut World, r: &Req, c: &Caller, pid: u64) -> Res {
    r.require(&["key", "title"])?;
    let can_push = r.boolean("can_push")?.unwrap_or(false);
    let expires_at = parse_time(r, "expires_at")?;
    let title = r.string("title").unwrap_or_default();
    let raw = r.string("key").unwrap_or_default().trim().to_string();
    let same_text = |id: &u64| w.deploy_keys.get(id).is_some_and(|k| k.key == raw);
    let here = w.projects[&pid].deploy_keys.keys().copied().find(same_text);
    if let Some(id) = here {
        let link = &w.projects[&pid].deploy_keys[&id];
        return Ok(Reply::created(entities::deploy_key(
            &w.deploy_keys[&id],
            Some(link),
        )));
    }
    let accessible = w
        .deploy_keys
        .keys()
        .copied()
        .find(|id| same_text(id) && key_accessible(w, *id, c.user));
    if let Some(id) = accessible {
        w.link_key(pid, id, can_push);
        let link = &w.projects[&pid].deploy_keys[&id];
        return Ok(Reply::created(entities::deploy_key(
            &w.deploy_keys[&id],
            Some(link),
        )));
    }
    let Some(parsed) = keys::parse(&raw) else {
        return Err(Reply::json(
            400,
            json!({ "message": {
                "deploy_key.key": ["is invalid"],
                "deploy_key.fingerprint_sha256": ["cannot be generated"],
            }}),
        ));
    };
    if w.key_by_fingerprint(&keys::fingerprint_sha256(&parsed.blob))
        .is_some()
    {
        return Err(Reply::json(
            400,
            json!({ "message": {
                "deploy_key.fingerprint": ["has already been taken"],
                "deploy_key.fingerprint_sha256": ["has already been taken"],
            }}),
        ));
    }
    let id = w.link_or_create_key(pid, &title, &parsed, can_push, expires_at, Some(c.user));
    let link = &w.projects[&pid].deploy_keys[&id];
    Ok(Reply::created(entities::deploy_key(
        &w.deploy_keys[&id],
        Some(link),
    )))
}

fn update_key(w: &mut World, r: &Req, pid: u64, k: u64) -> Res {
    if !w.projects[&pid].deploy_keys.contains_key(&k) {
        return Err(Reply::record_not_found());
    }
    let title = r.string("title");
    let can_push = r.boolean("can_push")?;
    if title.is_none() && can_push.is_none() {
        return Err(Reply::error(
            400,
            "title, can_push are missing, at least one parameter must be provided",
        ));
    }
    if let (Some(t), Some(key)) = (title, w.deploy_keys.get_mut(&k)) {
        // A key shared by several projects keeps its title (DK-user).
        if key.projects.len() == 1 {
            key.title = t;
        }
    }
    if let Some(cp) = can_push {
        w.set_deploy_key_can_push(pid, k, cp);
    }
    let link = &w.projects[&pid].deploy_keys[&k];
    Ok(Reply::ok(entities::deploy_key(
        &w.deploy_keys[&k],
        Some(link),
    )))
}

fn enable_key(w: &mut World, c: &Caller, pid: u64, k: u64) -> Res {
    if !key_accessible(w, k, c.user) {
        return Err(Reply::not_found("Deploy key"));
    }
    w.link_key(pid, k, false);
    Ok(Reply::created(entities::deploy_key(
        &w.deploy_keys[&k],
        None,
    )))
}

// ---- hooks ----

/// Boolean hook attributes settable by POST/PUT.
const HOOK_FLAGS: &[&str] = &[
    "push_events",
    "tag_push_events",
    "merge_requests_events",
    "repository_update_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "confidential_note_events",
    "pipeline_events",
    "wiki_page_events",
    "deployment_events",
    "feature_flag_events",
    "job_events",
    "releases_events",
    "milestone_events",
    "emoji_events",
    "resource_access_token_events",
    "resource_deploy_token_events",
    "vulnerability_events",
    "enable_ssl_verification",
];

/// Text hook attributes settable by POST/PUT.
const HOOK_TEXT: &[&str] = &[
    "url",
    "name",
    "description",
    "token",
    "push_events_branch_filter",
    "branch_filter_strategy",
    "custom_webhook_template",
];

/// Triggers `POST .../hooks/:id/test/:trigger` accepts (`ProjectHook.triggers`;
/// anything else is Grape's 400) and the log trigger name a test produces,
/// `None` for the ones `TestHooks::ProjectService` has no sample data for:
/// those answer 422 `Testing not available for this hook`
/// (docs/gitlab-contract.md §10.4).
const TRIGGERS: &[(&str, Option<&str>)] = &[
    ("push_events", Some("push_hooks")),
    ("tag_push_events", Some("tag_push_hooks")),
    ("issues_events", Some("issue_hooks")),
    (
        "confidential_issues_events",
        Some("confidential_issue_hooks"),
    ),
    ("note_events", Some("note_hooks")),
    ("confidential_note_events", None),
    ("merge_requests_events", Some("merge_request_hooks")),
    ("job_events", Some("job_hooks")),
    ("pipeline_events", Some("pipeline_hooks")),
    ("wiki_page_events", Some("wiki_page_hooks")),
    ("deployment_events", None),
    ("feature_flag_events", None),
    ("releases_events", Some("release_hooks")),
    ("emoji_events", Some("emoji_hooks")),
    (
        "resource_access_token_events",
        Some("resource_access_token_hooks"),
    ),
];

fn valid_hook_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

fn key_values(v: Option<&Value>) -> Option<Vec<(String, String)>> {
    let arr = v?.as_array()?;
    Some(
        arr.iter()
            .filter_map(|e| {
                let k = e.get("key")?.as_str()?.to_string();
                let v = e.get("value").and_then(Value::as_str).unwrap_or("");
                Some((k, v.to_string()))
            })
            .collect(),
    )
}

/// Applies POST/PUT parameters through the hook's JSON form so every
/// attribute is handled by name, then the URL-change resets (WH-model).
fn apply_hook_params(h: &mut SimHook, r: &Req) -> Result<(), Reply> {
    if let Some(u) = r.string("url") {
        if !valid_hook_url(&u) {
            return Err(Reply::error(422, "Invalid url given"));
        }
    }
    let old_url = h.url.clone();
    let mut v =
        serde_json::to_value(&*h).map_err(|_| Reply::message(500, "500 Internal Server Error"))?;
    for flag in HOOK_FLAGS {
        if let Some(b) = r.boolean(flag)? {
            v[*flag] = json!(b);
        }
    }
    for key in HOOK_TEXT {
        if let Some(s) = r.string(key) {
            v[*key] = json!(s);
        }
    }
    let mut updated: SimHook =
        serde_json::from_value(v).map_err(|_| Reply::message(500, "500 Internal Server Error"))?;
    let headers = key_values(r.params.get("custom_headers"));
    let variables = key_values(r.params.get("url_variables"));
    if updated.url != old_url {
        if !r.has("token") {
            updated.token = None;
        }
        updated.custom_headers.clear();
    }
    merge_pairs(&mut updated.custom_headers, headers);
    merge_pairs(&mut updated.url_variables, variables);
    *h = updated;
    Ok(())
}

/// PUT merges supplied pairs into the existing ones (WH-help).
fn merge_pairs(into: &mut Vec<(String, String)>, new: Option<Vec<(String, String)>>) {
    for (k, v) in new.unwrap_or_default() {
        match into.iter_mut().find(|(ek, _)| *ek == k) {
            Some(e) => e.1 = v,
            None => into.push((k, v)),
        }
    }
}

fn list_hooks(w: &World, r: &Req, pid: u64) -> Res {
    let o = pagination::offset(r.query, 20, 100, false)?;
    let p = &w.projects[&pid];
    offset_list(w, r, p.hooks.values(), o, |h| {
        entities::hook(h, false, w.version)
    })
}

/// GitLab's default on self-managed (`allow_local_requests_from_web_hooks_and_services`
/// false): a hook URL to a loopback, private or link-local address is a 422
/// `{"error":"Invalid url given"}` (docs/gitlab-contract.md §10.7).
fn refuse_local_url(w: &World, r: &Req) -> Result<(), Reply> {
    if w.allow_local_hook_urls {
        return Ok(());
    }
    let local = r
        .string("url")
        .and_then(|u| url::Url::parse(&u).ok())
        .is_some_and(|u| match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => {
                ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
            }
            Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
            None => false,
        });
    if local {
        return Err(Reply::error(422, "Invalid url given"));
    }
    Ok(())
}

fn create_hook(w: &mut World, r: &Req, pid: u64) -> Res {
    r.require(&["url"])?;
    refuse_local_url(w, r)?;
    let mut hook = world::new_hook(pid, HookSpec::default());
    apply_hook_params(&mut hook, r)?;
    let id = w.insert_hook(pid, hook);
    let version = w.version;
    let stored = w.hook_mut(pid, id).expect("just added");
    Ok(Reply::created(entities::hook(stored, true, version)))
}

fn update_hook(w: &mut World, r: &Req, pid: u64, hid: u64) -> Res {
    refuse_local_url(w, r)?;
    let version = w.version;
    let h = w.hook_mut(pid, hid).ok_or_else(Reply::record_not_found)?;
    let any = HOOK_FLAGS
        .iter()
        .chain(HOOK_TEXT)
        .chain(&["custom_headers", "url_variables"])
        .any(|k| r.has(k));
    if !any {
        return Err(Reply::error(400, "No parameters provided"));
    }
    let mut copy = h.clone();
    apply_hook_params(&mut copy, r)?;
    *h = copy;
    Ok(Reply::ok(entities::hook(h, true, version)))
}

/// GitLab's application rate limits (`check_rate_limit!`): 5 per minute
/// per scope and user, answered with the JSON 429 of §5.3 and no
/// `RateLimit-*` headers. Hook tests are scoped by project, resends by hook.
fn app_rate_limit(w: &mut World, name: &'static str, scope: u64, user: u64) -> Result<(), Reply> {
    app_limit(w, name, scope, user, 5, std::time::Duration::from_secs(60))
}

/// One application limit: `limit` requests per `window` and scope and user,
/// then the JSON 429 with `Retry-After: <window seconds>` and no
/// `RateLimit-*` headers (docs/gitlab-contract.md §8).
fn app_limit(
    w: &mut World,
    name: &'static str,
    scope: u64,
    user: u64,
    limit: u32,
    window: std::time::Duration,
) -> Result<(), Reply> {
    let slot = w.app_limits.entry((name, scope, user)).or_default();
    let (count, _) = Window::hit(slot, window, std::time::Instant::now());
    if count <= limit {
        return Ok(());
    }
    // Newer `API::Helpers::RateLimiter` sends the limit's whole interval.
    Err(Reply::json(
        429,
        json!({ "message": { "error": "This endpoint has been requested too many times. Try again later." } }),
    )
    .header("retry-after", window.as_secs().max(1).to_string()))
}

/// The per-user limits on project reads (`project_api`, `projects_api`,
/// `group_projects_api`), when the simulator has them switched on.
fn project_read_limit(w: &mut World, r: &Req, user: u64, what: ProjectRead) -> Result<(), Reply> {
    let Some(limits) = w.endpoint_limits else {
        return Ok(());
    };
    if !r.is_read() {
        return Ok(());
    }
    let minute = std::time::Duration::from_secs(60);
    match what {
        ProjectRead::One => app_limit(w, "project_api", 0, user, limits.project, minute),
        ProjectRead::List => app_limit(w, "projects_api", 0, user, limits.projects, minute * 10),
        ProjectRead::Group => app_limit(
            w,
            "group_projects_api",
            0,
            user,
            limits.group_projects,
            minute,
        ),
    }
}

enum ProjectRead {
    One,
    List,
    Group,
}

/// Delivers to the hook's receiver (its status set by
/// `set_receiver_status`), logging and applying back-off or re-enable.
/// Returns the receiver's status, or the 422 GitLab answers on failure.
fn deliver(w: &mut World, pid: u64, hid: u64, url: &str, trigger: &str) -> Result<u16, Reply> {
    let status = w.receivers.get(url).copied().unwrap_or(200);
    w.record_delivery(pid, hid, status, trigger);
    match status {
        200..=299 => Ok(status),
        0 => Err(Reply::message(422, "Failed to open TCP connection")),
        s => Err(Reply::message(422, world::receiver_body(s))),
    }
}

fn hook_url(w: &World, pid: u64, hid: u64) -> Result<String, Reply> {
    w.projects[&pid]
        .hooks
        .get(&hid)
        .map(|h| h.url.clone())
        .ok_or_else(Reply::record_not_found)
}

/// Grape validates `trigger` before the route body finds the hook; the
/// rate limit counts every test that reaches the service, testable or not.
fn test_hook(w: &mut World, c: &Caller, pid: u64, hid: u64, trigger: &str) -> Res {
    let Some(&(_, log_trigger)) = TRIGGERS.iter().find(|(t, _)| *t == trigger) else {
        return Err(Reply::error(400, "trigger does not have a valid value"));
    };
    let url = hook_url(w, pid, hid)?;
    app_rate_limit(w, "web_hook_test_api_endpoint", pid, c.user)?;
    let Some(log_trigger) = log_trigger else {
        return Err(Reply::message(422, "Testing not available for this hook"));
    };
    deliver(w, pid, hid, &url, log_trigger)?;
    Ok(Reply::created(json!({ "message": "201 Created" })))
}

/// `POST .../events/:hook_event_id/resend` (17.4+): 201 with the
/// receiver's status, 422 on failure, 5 per minute per hook and user.
fn resend_event(w: &mut World, c: &Caller, pid: u64, hid: u64, event: u64) -> Res {
    let url = hook_url(w, pid, hid)?;
    let trigger = w
        .hook_events
        .get(&hid)
        .and_then(|log| log.iter().find(|e| e.id == event))
        .map(|e| e.trigger.clone())
        .ok_or_else(Reply::record_not_found)?;
    app_rate_limit(w, "web_hook_event_resend_api_endpoint", hid, c.user)?;
    let status = deliver(w, pid, hid, &url, &trigger)?;
    Ok(Reply::created(json!({ "response_status": status })))
}

/// Whether a logged status matches one `status` filter value.
fn status_matches(filter: &str, code: u16) -> bool {
    match filter {
        "successful" => (200..300).contains(&code),
        "client_failure" => (400..500).contains(&code),
        "server_failure" => code >= 500 || code == 0,
        n => n.parse::<u16>().is_ok_and(|n| n == code),
    }
}

fn hook_events(w: &World, r: &Req, pid: u64, hid: u64) -> Res {
    if !w.projects[&pid].hooks.contains_key(&hid) {
        return Err(Reply::record_not_found());
    }
    let o = pagination::offset(r.query, 20, 20, true)?;
    let filters: Vec<String> = r
        .string("status")
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let since = Utc::now() - chrono::Duration::days(7);
    let events = w.hook_events.get(&hid).map(Vec::as_slice).unwrap_or(&[]);
    let iter = events.iter().rev().filter(|e| {
        e.created_at >= since
            && (filters.is_empty() || filters.iter().any(|f| status_matches(f, e.status_code)))
    });
    offset_list(w, r, iter, o, entities::hook_event)
}

// ---- project lists ----

struct ListOpts {
    keyset: bool,
    ascending: bool,
    /// `id_after` / `id_before`: plain filters on the project id whatever
    /// the pagination (`ProjectsFinder#by_ids`, docs/gitlab-contract.md §3, §4).
    id_after: Option<u64>,
    id_before: Option<u64>,
    min_level: u32,
    archived: Option<bool>,
    page: Offset,
}

impl ListOpts {
    /// Where a walk in the requested order may start (the other bound is
    /// left to [`keep`]).
    fn cursor(&self) -> Option<u64> {
        if self.ascending {
            self.id_after
        } else {
            self.id_before
        }
    }
}

/// `keyset_route`: whether `pagination=keyset` means anything here
/// (`GET /projects`); elsewhere it is an undeclared parameter, ignored.
fn list_opts(r: &Req, keyset_route: bool) -> Result<ListOpts, Reply> {
    let keyset = keyset_route && r.string("pagination").as_deref() == Some("keyset");
    let order_by = r.string("order_by").unwrap_or_else(|| "created_at".into());
    if keyset && order_by != "id" {
        return Err(Reply::error(
            405,
            "Keyset pagination is not yet available for this type of request",
        ));
    }
    Ok(ListOpts {
        keyset,
        ascending: r.string("sort").as_deref() == Some("asc"),
        id_after: r.number("id_after")?,
        id_before: r.number("id_before")?,
        min_level: r.number("min_access_level")?.unwrap_or(0) as u32,
        archived: r.boolean("archived")?,
        page: pagination::offset(r.query, 20, 100, false)?,
    })
}

fn keep(w: &World, user: u64, o: &ListOpts, pid: u64) -> bool {
    o.id_after.is_none_or(|a| pid > a)
        && o.id_before.is_none_or(|b| pid < b)
        && w.access_level(pid, user)
            .is_some_and(|l| l >= o.min_level.max(GUEST))
        && w.projects
            .get(&pid)
            .is_some_and(|p| o.archived.is_none_or(|a| p.archived == a))
}

/// Renders one page of projects from ids already in the requested order
/// (and, for keyset, starting after the cursor).
fn project_page(
    w: &World,
    r: &Req,
    c: &Caller,
    o: &ListOpts,
    ids: impl Iterator<Item = u64>,
) -> Res {
    // `/projects` presents `ProjectWithAccess` (permissions); a group's
    // project list the plain `Project` entity.
    // `simple=true` trims to `BasicProjectDetails` (no `archived`!).
    let viewer = (r.path == "/api/v4/projects").then_some(c.user);
    let simple = r.boolean("simple")?.unwrap_or(false);
    let render = |pid: u64| {
        let full = entities::project(w, &w.projects[&pid], viewer);
        if simple {
            entities::simple_project(full)
        } else {
            full
        }
    };
    let ids = ids.filter(|&pid| keep(w, c.user, o, pid));
    if !o.keyset {
        return offset_list(w, r, ids, o.page, render);
    }
    let per_page = o.page.per_page;
    let mut page: Vec<u64> = ids.take(per_page + 1).collect();
    let more = page.len() > per_page;
    page.truncate(per_page);
    let mut reply = Reply::ok(Value::Array(page.iter().map(|&p| render(p)).collect()));
    if let (true, Some(&last)) = (more, page.last()) {
        let (k, v) = pagination::keyset_header(&w.base_url, r.path, r.query, last, o.ascending);
        reply = reply.header(&k, v);
    }
    Ok(reply)
}

/// `GET /projects`: the caller's projects from the per-user index, so a
/// keyset page is a B-tree range walk.
fn list_projects(w: &World, r: &Req, c: &Caller) -> Res {
    let o = list_opts(r, true)?;
    let empty = Default::default();
    let mine = w.user_projects.get(&c.user).unwrap_or(&empty);
    let ids: Box<dyn Iterator<Item = u64>> = match (o.ascending, o.cursor()) {
        (true, Some(after)) => Box::new(
            mine.range((Bound::Excluded(after), Bound::Unbounded))
                .map(|(&k, _)| k),
        ),
        (true, None) => Box::new(mine.keys().copied()),
        (false, Some(before)) => Box::new(mine.range(..before).rev().map(|(&k, _)| k)),
        (false, None) => Box::new(mine.keys().rev().copied()),
    };
    project_page(w, r, c, &o, ids)
}

fn find_group(w: &World, c: &Caller, id: &str) -> Result<u64, Reply> {
    let gid = match id.parse::<u64>() {
        Ok(n) => Some(n).filter(|n| w.groups.contains_key(n)),
        Err(_) => w.group_by_path(id),
    };
    let visible = |gid: u64| {
        w.group_chain(gid)
            .iter()
            .any(|g| g.members.contains_key(&c.user))
            || w.group_subtree(gid).iter().any(|g| {
                w.groups[g]
                    .projects
                    .iter()
                    .any(|&p| w.access_level(p, c.user).is_some())
            })
    };
    gid.filter(|&g| visible(g))
        .ok_or_else(|| Reply::not_found("Group"))
}

fn show_group(w: &World, r: &Req, c: &Caller, gid: u64) -> Res {
    let g = &w.groups[&gid];
    let mut v = entities::group(w, g);
    if r.boolean("with_projects")?.unwrap_or(true) {
        let projects: Vec<Value> = g
            .projects
            .iter()
            .filter(|&&p| can_read(w, p, c.user))
            .take(100)
            .map(|p| entities::project(w, &w.projects[p], None))
            .collect();
        v["projects"] = Value::Array(projects);
        v["shared_projects"] = json!([]);
    }
    Ok(Reply::ok(v))
}

/// `GET /groups/:id/projects`: offset pagination only (`pagination=keyset`
/// is ignored, as GitLab's route does, even with the default `order_by`;
/// `id_after` / `id_before` still filter), and projects shared into the
/// group listed too unless `with_shared=false` (docs/gitlab-contract.md §3).
fn list_group_projects(w: &World, r: &Req, c: &Caller, gid: u64) -> Res {
    let o = list_opts(r, false)?;
    let groups = if r.boolean("include_subgroups")?.unwrap_or(false) {
        w.group_subtree(gid)
    } else {
        vec![gid]
    };
    let with_shared = r.boolean("with_shared")?.unwrap_or(true);
    let mut ids: Vec<u64> = Vec::new();
    for g in &groups {
        ids.extend(w.groups[g].projects.iter().copied());
    }
    if with_shared {
        ids.extend(w.groups[&gid].shared_projects.iter().copied());
    }
    ids.sort_unstable();
    ids.dedup();
    ids.retain(|&p| keep(w, c.user, &o, p));
    if !o.ascending {
        ids.reverse();
    }
    project_page(w, r, c, &o, ids.into_iter())
}
