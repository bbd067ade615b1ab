//! JSON entities as GitLab's Grape entities expose them, including fields a
//! client ignores, with GitLab's timestamp format (UTC, milliseconds, `Z`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::world::{AccessToken, DeployKey, Group, HookEvent, KeyLink, Project, User, World};
use super::{SimHook, SimVersion};

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_ts(t: &Option<DateTime<Utc>>) -> Value {
    t.as_ref().map_or(Value::Null, |t| json!(ts(t)))
}

pub(crate) fn user(w: &World, u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "name": u.name,
        "state": "active",
        "locked": false,
        "avatar_url": null,
        "web_url": format!("{}/{}", w.base_url, u.username),
        "created_at": ts(&u.created_at),
        "bio": "",
        "location": "",
        "public_email": null,
        "organization": "",
        "job_title": "",
        "bot": false,
        "last_sign_in_at": ts(&u.created_at),
        "confirmed_at": ts(&u.created_at),
        "email": format!("{}@example.com", u.username),
        "theme_id": 1,
        "color_scheme_id": 1,
        "projects_limit": 100000,
        "identities": [],
        "can_create_group": true,
        "can_create_project": true,
        "two_factor_enabled": false,
        "external": false,
        "private_profile": false,
        "commit_email": format!("{}@example.com", u.username),
        "is_admin": false,
    })
}

pub(crate) fn access_token(t: &AccessToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "revoked": t.revoked,
        "created_at": ts(&t.created_at),
        "description": "",
        "scopes": t.scopes,
        "user_id": t.user_id,
        "last_used_at": opt_ts(&t.last_used_at),
        "active": !t.revoked && !t.expired(Utc::now().date_naive()),
        "expires_at": t.expires_at.map(|d| d.format("%Y-%m-%d").to_string()),
    })
}

/// `Entities::PersonalAccessTokenWithToken`, what a rotation answers: the
/// token entity plus `expired` and the secret (docs/gitlab-contract.md §13).
pub(crate) fn access_token_with_token(t: &AccessToken) -> Value {
    let mut v = access_token(t);
    v["expired"] = json!(t.expired(Utc::now().date_naive()));
    v["token"] = json!(t.token);
    v
}

fn namespace(w: &World, g: &Group) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "path": g.path,
        "kind": "group",
        "full_path": g.full_path,
        "parent_id": g.parent_id,
        "avatar_url": null,
        "web_url": format!("{}/groups/{}", w.base_url, g.full_path),
    })
}

fn access(level: Option<u32>) -> Value {
    level.map_or(
        Value::Null,
        |l| json!({ "access_level": l, "notification_level": 3 }),
    )
}

/// The full project entity as seen by `user`.
pub(crate) fn project(w: &World, p: &Project, user: Option<u64>) -> Value {
    let chain = w.group_chain(p.namespace_id);
    let ns_names: Vec<&str> = chain.iter().rev().map(|g| g.name.as_str()).collect();
    let web_url = format!("{}/{}", w.base_url, p.path_with_namespace);
    let api = format!("{}/api/v4/projects/{}", w.base_url, p.id);
    let mut v = json!({
        "id": p.id,
        "description": p.description,
        "name": p.name,
        "name_with_namespace": format!("{} / {}", ns_names.join(" / "), p.name),
        "path": p.path,
        "path_with_namespace": p.path_with_namespace,
        "created_at": ts(&p.created_at),
        "default_branch": p.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": format!("git@{}:{}.git", w.host(), p.path_with_namespace),
        "http_url_to_repo": format!("{web_url}.git"),
        "web_url": web_url,
        "readme_url": format!("{web_url}/-/blob/{}/README.md", p.default_branch),
        "forks_count": 0,
        "avatar_url": null,
        "star_count": 0,
        "last_activity_at": ts(&p.last_activity_at),
        "namespace": chain.first().map_or(Value::Null, |g| namespace(w, g)),
        "_links": {
            "self": api,
            "issues": format!("{api}/issues"),
            "merge_requests": format!("{api}/merge_requests"),
            "repo_branches": format!("{api}/repository/branches"),
            "labels": format!("{api}/labels"),
            "events": format!("{api}/events"),
            "members": format!("{api}/members"),
            "cluster_agents": format!("{api}/cluster_agents"),
        },
        "empty_repo": p.empty_repo,
        "archived": p.archived,
        "visibility": p.visibility,
    });
    // A second literal: one json! this size exceeds the macro recursion limit.
    let settings = json!({
        "resolve_outdated_diff_discussions": false,
        "container_registry_enabled": true,
        "issues_enabled": true,
        "merge_requests_enabled": true,
        "wiki_enabled": true,
        "jobs_enabled": true,
        "snippets_enabled": true,
        "shared_runners_enabled": true,
        "creator_id": 1,
        "import_status": "none",
        "open_issues_count": 0,
        "ci_default_git_depth": 20,
        "public_jobs": true,
        "shared_with_groups": [],
        "only_allow_merge_if_pipeline_succeeds": false,
        "request_access_enabled": true,
        "merge_method": "merge",
        "marked_for_deletion_at": p.marked_for_deletion_on.map(|d| d.to_string()),
        "marked_for_deletion_on": p.marked_for_deletion_on.map(|d| d.to_string()),
    });
    if let (Some(m), Value::Object(extra)) = (v.as_object_mut(), settings) {
        m.extend(extra);
    }
    if let Some(u) = user {
        v["permissions"] = json!({
            "project_access": access(p.members.get(&u).copied()),
            "group_access": access(w.inherited_level(p, u)),
        });
    }
    v
}

/// `Entities::BasicProjectDetails`, what `simple=true` lists present.
pub(crate) fn simple_project(full: Value) -> Value {
    const FIELDS: &[&str] = &[
        "id",
        "description",
        "name",
        "name_with_namespace",
        "path",
        "path_with_namespace",
        "created_at",
        "default_branch",
        "tag_list",
        "topics",
        "ssh_url_to_repo",
        "http_url_to_repo",
        "web_url",
        "readme_url",
        "forks_count",
        "avatar_url",
        "star_count",
        "last_activity_at",
        "namespace",
    ];
    match full {
        Value::Object(mut m) => {
            m.retain(|k, _| FIELDS.contains(&k.as_str()));
            Value::Object(m)
        }
        other => other,
    }
}

pub(crate) fn group(w: &World, g: &Group) -> Value {
    let full_name: Vec<&str> = w
        .group_chain(g.id)
        .iter()
        .rev()
        .map(|g| g.name.as_str())
        .collect();
    json!({
        "id": g.id,
        "web_url": format!("{}/groups/{}", w.base_url, g.full_path),
        "name": g.name,
        "path": g.path,
        "description": "",
        "visibility": "private",
        "share_with_group_lock": false,
        "require_two_factor_authentication": false,
        "project_creation_level": "developer",
        "subgroup_creation_level": "maintainer",
        "lfs_enabled": true,
        "avatar_url": null,
        "request_access_enabled": true,
        "full_name": full_name.join(" / "),
        "full_path": g.full_path,
        "parent_id": g.parent_id,
        "created_at": ts(&g.created_at),
        "marked_for_deletion_on": null,
    })
}

/// `Entities::DeployKey`; with a link, `DeployKeysProject` (adds `can_push`).
pub(crate) fn deploy_key(k: &DeployKey, link: Option<&KeyLink>) -> Value {
    let mut v = json!({
        "id": k.id,
        "title": k.title,
        "created_at": ts(&k.created_at),
        "expires_at": opt_ts(&k.expires_at),
        "key": k.key,
        "usage_type": "auth",
        "fingerprint": k.fingerprint,
        "fingerprint_sha256": k.fingerprint_sha256,
    });
    if let Some(l) = link {
        v["can_push"] = json!(l.can_push);
    }
    v
}

/// `Entities::ProjectHook`: never the token; header and variable values
/// masked; the list view omits both collections.
pub(crate) fn hook(h: &SimHook, full: bool, version: SimVersion) -> Value {
    let mut v = serde_json::to_value(h).unwrap_or_default();
    let Some(m) = v.as_object_mut() else {
        return v;
    };
    m.retain(|field, _| version.hook_has_field(field));
    for k in [
        "token",
        "recent_failures",
        "custom_headers",
        "url_variables",
    ] {
        m.remove(k);
    }
    m.insert("created_at".into(), json!(ts(&h.created_at)));
    m.insert("disabled_until".into(), opt_ts(&h.disabled_until));
    m.insert("alert_status".into(), json!(h.alert_status()));
    if full {
        let keys = |kv: &[(String, String)]| -> Value {
            kv.iter().map(|(k, _)| json!({ "key": k })).collect()
        };
        if version.hook_has_field("custom_headers") {
            m.insert("custom_headers".into(), keys(&h.custom_headers));
        }
        m.insert("url_variables".into(), keys(&h.url_variables));
    }
    v
}

/// `GET /version` (`lib/api/metadata.rb`): `version`, `revision`, and since
/// 15.6 `kas` (camelCase keys; `externalK8sProxyUrl` since 17.6) and
/// `enterprise` (docs/gitlab-contract.md §6).
pub(crate) fn version(v: SimVersion) -> Value {
    let mut body = json!({
        "version": v.version_string(),
        "revision": "6f5e2b3c1a0",
        "kas": { "enabled": false, "externalUrl": null, "version": null },
        "enterprise": false,
    });
    if v.has_kas_k8s_proxy_url() {
        body["kas"]["externalK8sProxyUrl"] = Value::Null;
    }
    body
}

pub(crate) fn hook_event(e: &HookEvent) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["created_at"] = json!(ts(&e.created_at));
    v
}
