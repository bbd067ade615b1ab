//! The simulated GitLab instance: users, tokens, groups, projects, deploy
//! keys, hooks and the simulator's own knobs, with the indexes that keep
//! per-request work proportional to the answer rather than to the world
//! (paths, fingerprints, and each user's effective project access).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::keys::{self, ParsedKey};
use super::{Fault, HookSpec, RequestRecord, SimAccessToken, SimDeployKey, SimHook};

/// Locks the world, ignoring poisoning: a panicking test thread must not
/// take the simulator down with it.
pub(crate) fn lock(w: &Arc<Mutex<World>>) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) const GUEST: u32 = 10;
pub(crate) const MAINTAINER: u32 = 40;

/// At most this many delivery log entries are kept per hook.
const HOOK_LOG_CAP: usize = 1000;

#[derive(Debug, Default)]
struct Ids {
    user: u64,
    token: u64,
    group: u64,
    project: u64,
    key: u64,
    hook: u64,
    event: u64,
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct User {
    pub id: u64,
    pub username: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Personal, project and group access tokens (all PAT records in GitLab),
/// stored as the public API shows them.
pub(crate) type AccessToken = SimAccessToken;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OAuthApp {
    pub uid: String,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OAuthToken {
    pub user_id: u64,
    pub client_id: String,
    pub access: String,
    pub refresh: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Group {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub members: BTreeMap<u64, u32>,
    pub projects: BTreeSet<u64>,
    pub subgroups: BTreeSet<u64>,
    /// Projects of other groups shared into this one (`project_group_links`).
    pub shared_projects: BTreeSet<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyLink {
    pub can_push: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Project {
    pub id: u64,
    pub name: String,
    pub path: String,
    pub namespace_id: u64,
    pub path_with_namespace: String,
    pub description: Option<String>,
    pub archived: bool,
    pub empty_repo: bool,
    pub default_branch: String,
    pub visibility: String,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub marked_for_deletion_on: Option<NaiveDate>,
    pub members: BTreeMap<u64, u32>,
    /// Groups the project is shared with, and the highest role the share
    /// gives (`project_group_links.group_access`).
    pub shared_with: BTreeMap<u64, u32>,
    pub deploy_keys: BTreeMap<u64, KeyLink>,
    pub hooks: BTreeMap<u64, SimHook>,
    /// Effective access per user (direct or inherited), mirrored in
    /// `World::user_projects`.
    #[serde(skip)]
    effective: HashMap<u64, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DeployKey {
    pub id: u64,
    pub title: String,
    pub key: String,
    pub fingerprint: String,
    pub fingerprint_sha256: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub owner: Option<u64>,
    pub projects: BTreeSet<u64>,
}

/// One entry of a hook's delivery log (`WebHookLog`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HookEvent {
    pub id: u64,
    pub url: String,
    pub trigger: String,
    pub request_headers: Value,
    pub request_data: Value,
    pub response_headers: Value,
    pub response_body: String,
    pub execution_duration: f64,
    pub response_status: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub status_code: u16,
}

/// A new personal access token secret: `glpat-` and 20 random characters.
fn new_pat_secret() -> String {
    use rand::Rng;
    let body: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("glpat-{body}")
}

/// A fixed counting window (rate limits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    start: Instant,
    pub count: u32,
}

impl Window {
    /// Counts one hit in the window of `len` starting at the first hit;
    /// returns the count so far and the time left in the window.
    pub fn hit(slot: &mut Option<Window>, len: Duration, now: Instant) -> (u32, Duration) {
        let w = match slot {
            Some(w) if now.duration_since(w.start) < len => w,
            _ => slot.insert(Window {
                start: now,
                count: 0,
            }),
        };
        w.count += 1;
        (w.count, len.saturating_sub(now.duration_since(w.start)))
    }
}

/// Requests in arrival order; a request's status is filled in when it ends.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    records: Vec<RequestRecord>,
    /// Sequence number of `records[0]`.
    base: u64,
    /// Count only, keep no records (long benchmark runs).
    pub discard: bool,
    /// 429 answers ever sent, kept or not.
    pub too_many: u64,
}

impl RequestLog {
    pub fn start(&mut self, rec: RequestRecord) -> u64 {
        if self.discard {
            self.base += 1;
            return u64::MAX;
        }
        self.records.push(rec);
        self.base + self.records.len() as u64 - 1
    }

    /// Requests ever received (kept, cleared or discarded).
    pub fn total(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    pub fn finish(&mut self, seq: u64, status: u16, user: Option<u64>) {
        if status == 429 {
            self.too_many += 1;
        }
        if let Some(r) = seq
            .checked_sub(self.base)
            .and_then(|i| self.records.get_mut(i as usize))
        {
            r.status = status;
            r.user = user;
        }
    }

    pub fn clear(&mut self) {
        self.base += self.records.len() as u64;
        self.records.clear();
    }

    pub fn records(&self) -> &[RequestRecord] {
        &self.records
    }
}

/// How a `:id` path segment resolved.
pub(crate) enum Lookup {
    Found(u64),
    /// An old path kept as a redirect after a rename.
    Moved(u64),
    Missing,
}

#[derive(Debug, Serialize)]
pub(crate) struct World {
    pub base_url: String,
    /// The GitLab release the simulator acts as.
    pub version: super::SimVersion,
    /// Application limits on project reads, when switched on (GitLab.com,
    /// and self-managed defaults since 18.1); off as on older self-managed.
    pub endpoint_limits: Option<super::EndpointLimits>,
    /// The admin setting `allow_local_requests_from_web_hooks_and_services`
    /// (false by default, as on a new self-managed GitLab).
    pub allow_local_hook_urls: bool,
    /// The admin setting `require_personal_access_token_expiry` (true by
    /// default): a rotation without `expires_at` gets today + 7 days, and
    /// one beyond today + 365 days is refused.
    pub token_expiry_required: bool,
    /// Successful token rotations (`POST /personal_access_tokens/self/rotate`).
    pub rotations: u64,
    #[serde(skip)]
    ids: Ids,
    pub users: BTreeMap<u64, User>,
    pub tokens: HashMap<String, AccessToken>,
    pub oauth_apps: HashMap<String, OAuthApp>,
    /// By access token.
    pub oauth_tokens: HashMap<String, OAuthToken>,
    /// Refresh token -> access token of the live pair.
    #[serde(skip)]
    pub oauth_refresh: HashMap<String, String>,
    pub groups: BTreeMap<u64, Group>,
    #[serde(skip)]
    groups_by_path: HashMap<String, u64>,
    pub projects: BTreeMap<u64, Project>,
    #[serde(skip)]
    projects_by_path: HashMap<String, u64>,
    /// Old lower-cased path -> project id.
    pub redirects: HashMap<String, u64>,
    /// User -> project -> effective access level (keyset listing by range).
    #[serde(skip)]
    pub user_projects: HashMap<u64, BTreeMap<u64, u32>>,
    pub deploy_keys: BTreeMap<u64, DeployKey>,
    #[serde(skip)]
    keys_by_fp: HashMap<String, u64>,
    pub hook_events: HashMap<u64, Vec<HookEvent>>,
    pub receivers: HashMap<String, u16>,
    /// Application rate limits: (limit name, scope id, user) -> window.
    #[serde(skip)]
    pub app_limits: HashMap<(&'static str, u64, u64), Option<Window>>,
    pub faults: Vec<Fault>,
    pub latency: Duration,
    pub rate_limit: Option<u32>,
    #[serde(skip)]
    pub rate_windows: HashMap<String, Option<Window>>,
    #[serde(skip)]
    pub requests: RequestLog,
}

impl World {
    pub fn new(base_url: &str) -> World {
        World {
            base_url: base_url.to_string(),
            version: super::SimVersion::default(),
            allow_local_hook_urls: false,
            token_expiry_required: true,
            rotations: 0,
            endpoint_limits: None,
            ids: Ids::default(),
            users: BTreeMap::new(),
            tokens: HashMap::new(),
            oauth_apps: HashMap::new(),
            oauth_tokens: HashMap::new(),
            oauth_refresh: HashMap::new(),
            groups: BTreeMap::new(),
            groups_by_path: HashMap::new(),
            projects: BTreeMap::new(),
            projects_by_path: HashMap::new(),
            redirects: HashMap::new(),
            user_projects: HashMap::new(),
            deploy_keys: BTreeMap::new(),
            keys_by_fp: HashMap::new(),
            hook_events: HashMap::new(),
            receivers: HashMap::new(),
            app_limits: HashMap::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            rate_limit: None,
            rate_windows: HashMap::new(),
            requests: RequestLog::default(),
        }
    }

    /// The host part of the base URL, for `ssh_url_to_repo`.
    pub fn host(&self) -> String {
        url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".to_string())
    }

    // ---- users and tokens ----

    pub fn add_user(&mut self, username: &str) -> u64 {
        let id = next(&mut self.ids.user);
        self.users.insert(
            id,
            User {
                id,
                username: username.to_string(),
                name: username.to_string(),
                created_at: Utc::now(),
            },
        );
        id
    }

    pub fn add_access_token(
        &mut self,
        user: u64,
        token: &str,
        scopes: &[&str],
        expires_at: Option<NaiveDate>,
    ) -> u64 {
        let id = next(&mut self.ids.token);
        self.tokens.insert(
            token.to_string(),
            AccessToken {
                id,
                user_id: user,
                name: format!("token-{id}"),
                token: token.to_string(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                created_at: Utc::now(),
                expires_at,
                revoked: false,
                last_used_at: None,
                previous_personal_access_token_id: None,
            },
        );
        id
    }

    /// `PersonalAccessTokens::RotateService`, atomically under the world
    /// lock: revokes `old` and creates its successor (same user, name and
    /// scopes, a fresh `glpat-` secret, `previous_personal_access_token_id`
    /// set). Returns the new secret; `None` when `old` is unknown or
    /// already revoked (nothing changes). Expiry rules are the caller's.
    pub fn rotate_access_token(
        &mut self,
        old: &str,
        expires_at: Option<NaiveDate>,
    ) -> Option<String> {
        let prev = self.tokens.get_mut(old).filter(|t| !t.revoked)?;
        prev.revoked = true;
        let (user_id, name, scopes, previous) = (
            prev.user_id,
            prev.name.clone(),
            prev.scopes.clone(),
            prev.id,
        );
        let secret = loop {
            let s = new_pat_secret();
            if !self.tokens.contains_key(&s) && !self.oauth_tokens.contains_key(&s) {
                break s;
            }
        };
        let id = next(&mut self.ids.token);
        self.tokens.insert(
            secret.clone(),
            AccessToken {
                id,
                user_id,
                name,
                token: secret.clone(),
                scopes,
                created_at: Utc::now(),
                expires_at,
                revoked: false,
                last_used_at: None,
                previous_personal_access_token_id: Some(previous),
            },
        );
        self.rotations += 1;
        Some(secret)
    }

    /// `PersonalAccessTokens::RevokeTokenFamilyService`: revokes every
    /// active descendant (successor, its successor, ...) of token `id`.
    pub fn revoke_token_family(&mut self, id: u64) {
        let mut family = BTreeSet::from([id]);
        loop {
            let grown: Vec<u64> = self
                .tokens
                .values()
                .filter(|t| {
                    t.previous_personal_access_token_id
                        .is_some_and(|p| family.contains(&p))
                        && !family.contains(&t.id)
                })
                .map(|t| t.id)
                .collect();
            if grown.is_empty() {
                break;
            }
            family.extend(grown);
        }
        let today = Utc::now().date_naive();
        for t in self.tokens.values_mut() {
            if t.id != id && family.contains(&t.id) && t.active_on(today) {
                t.revoked = true;
            }
        }
    }

    /// An access token by its secret.
    pub fn access_token(&self, token: &str) -> Option<SimAccessToken> {
        self.tokens.get(token).cloned()
    }

    /// A user's active access tokens, oldest first.
    pub fn active_access_tokens(&self, user: u64) -> Vec<SimAccessToken> {
        let today = Utc::now().date_naive();
        let mut out: Vec<SimAccessToken> = self
            .tokens
            .values()
            .filter(|t| t.user_id == user && t.active_on(today))
            .cloned()
            .collect();
        out.sort_by_key(|t| t.id);
        out
    }

    /// Revokes a PAT, or an OAuth pair given either of its tokens.
    pub fn revoke_token(&mut self, token: &str) {
        if let Some(t) = self.tokens.get_mut(token) {
            t.revoked = true;
        }
        let access = self
            .oauth_refresh
            .get(token)
            .cloned()
            .unwrap_or_else(|| token.to_string());
        if let Some(t) = self.oauth_tokens.get_mut(&access) {
            t.revoked = true;
            self.oauth_refresh.remove(&t.refresh);
        }
    }

    pub fn expire_token(&mut self, token: &str) {
        let now = Utc::now();
        if let Some(t) = self.tokens.get_mut(token) {
            t.expires_at = Some(now.date_naive() - chrono::Days::new(1));
        }
        if let Some(t) = self.oauth_tokens.get_mut(token) {
            t.expires_at = now - chrono::Duration::seconds(1);
        }
    }

    pub fn add_oauth_app(&mut self, client_id: &str, client_secret: &str) {
        self.oauth_apps.insert(
            client_id.to_string(),
            OAuthApp {
                uid: client_id.to_string(),
                secret: client_secret.to_string(),
            },
        );
    }

    pub fn add_oauth_token(
        &mut self,
        user: u64,
        client_id: &str,
        access: &str,
        refresh: &str,
        scopes: &[&str],
        expires_in_secs: i64,
    ) {
        let now = Utc::now();
        self.insert_oauth(OAuthToken {
            user_id: user,
            client_id: client_id.to_string(),
            access: access.to_string(),
            refresh: refresh.to_string(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(expires_in_secs),
            revoked: false,
        });
    }

    pub fn insert_oauth(&mut self, t: OAuthToken) {
        self.oauth_refresh
            .insert(t.refresh.clone(), t.access.clone());
        self.oauth_tokens.insert(t.access.clone(), t);
    }

    // ---- groups and projects ----

    /// Returns the group at `full_path`, creating it and its parents.
    pub fn ensure_group(&mut self, full_path: &str) -> u64 {
        let full_path = full_path.trim_matches('/');
        if let Some(&id) = self.groups_by_path.get(&full_path.to_lowercase()) {
            return id;
        }
        let (parent_id, path) = match full_path.rsplit_once('/') {
            Some((parent, path)) => (Some(self.ensure_group(parent)), path),
            None => (None, full_path),
        };
        let id = next(&mut self.ids.group);
        self.groups.insert(
            id,
            Group {
                id,
                name: path.to_string(),
                path: path.to_string(),
                full_path: full_path.to_string(),
                parent_id,
                created_at: Utc::now(),
                members: BTreeMap::new(),
                projects: BTreeSet::new(),
                subgroups: BTreeSet::new(),
                shared_projects: BTreeSet::new(),
            },
        );
        if let Some(p) = parent_id.and_then(|p| self.groups.get_mut(&p)) {
            p.subgroups.insert(id);
        }
        self.groups_by_path.insert(full_path.to_lowercase(), id);
        id
    }

    pub fn group_by_path(&self, path: &str) -> Option<u64> {
        self.groups_by_path.get(&path.to_lowercase()).copied()
    }

    /// The group and its ancestors, nearest first.
    pub fn group_chain(&self, group: u64) -> Vec<&Group> {
        let mut out = Vec::new();
        let mut cur = self.groups.get(&group);
        while let Some(g) = cur {
            out.push(g);
            cur = g.parent_id.and_then(|p| self.groups.get(&p));
        }
        out
    }

    /// The group and all its subgroups.
    pub fn group_subtree(&self, group: u64) -> Vec<u64> {
        let mut out = vec![group];
        let mut i = 0;
        while i < out.len() {
            if let Some(g) = self.groups.get(&out[i]) {
                out.extend(g.subgroups.iter().copied());
            }
            i += 1;
        }
        out
    }

    pub fn set_group_member(&mut self, group: u64, user: u64, access_level: u32) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if access_level == 0 {
            g.members.remove(&user);
        } else {
            g.members.insert(user, access_level);
        }
        let projects: Vec<u64> = self
            .group_subtree(group)
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flat_map(|g| g.projects.iter().chain(&g.shared_projects).copied())
            .collect();
        for p in projects {
            self.recompute_access(p);
        }
    }

    /// Shares `project` with `group` (Settings > Members > Invite group):
    /// the group's members get the lower of their own role and `max_level`
    /// on the project. `max_level` 0 removes the share.
    pub fn share_project(&mut self, project: u64, group: u64, max_level: u32) {
        let (Some(p), Some(g)) = (self.projects.get_mut(&project), self.groups.get_mut(&group))
        else {
            return;
        };
        if max_level == 0 {
            p.shared_with.remove(&group);
            g.shared_projects.remove(&project);
        } else {
            p.shared_with.insert(group, max_level);
            g.shared_projects.insert(project);
        }
        self.recompute_access(project);
    }

    /// The highest level a user holds through the project's group chain.
    pub fn inherited_level(&self, project: &Project, user: u64) -> Option<u32> {
        self.group_chain(project.namespace_id)
            .iter()
            .filter_map(|g| g.members.get(&user).copied())
            .max()
    }

    /// Rebuilds one project's effective access and the per-user index.
    fn recompute_access(&mut self, pid: u64) {
        let Some(p) = self.projects.get(&pid) else {
            return;
        };
        let mut eff: HashMap<u64, u32> = p.members.iter().map(|(&u, &l)| (u, l)).collect();
        let mut grant = |u: u64, l: u32| {
            let e = eff.entry(u).or_insert(l);
            *e = (*e).max(l);
        };
        for g in self.group_chain(p.namespace_id) {
            for (&u, &l) in &g.members {
                grant(u, l);
            }
        }
        // A share gives the lower of the member's role and the share's
        // (GitLab's project_authorizations; docs/gitlab-contract.md §4).
        for (&shared, &max) in &p.shared_with {
            for g in self.group_chain(shared) {
                for (&u, &l) in &g.members {
                    grant(u, l.min(max));
                }
            }
        }
        let p = self.projects.get_mut(&pid).expect("checked above");
        let old = std::mem::replace(&mut p.effective, eff.clone());
        for u in old.keys().filter(|u| !eff.contains_key(u)) {
            if let Some(m) = self.user_projects.get_mut(u) {
                m.remove(&pid);
            }
        }
        for (u, l) in eff {
            self.user_projects.entry(u).or_default().insert(pid, l);
        }
    }

    /// Effective access level of `user` on `project`, if any.
    pub fn access_level(&self, project: u64, user: u64) -> Option<u32> {
        self.user_projects.get(&user)?.get(&project).copied()
    }

    pub fn add_project(&mut self, path_with_namespace: &str) -> u64 {
        let full = path_with_namespace.trim_matches('/');
        let (ns, path) = full.rsplit_once('/').unwrap_or(("root", full));
        let namespace_id = self.ensure_group(ns);
        let id = next(&mut self.ids.project);
        let now = Utc::now();
        let full_path = format!("{}/{path}", self.groups[&namespace_id].full_path);
        self.projects.insert(
            id,
            Project {
                id,
                name: path.to_string(),
                path: path.to_string(),
                namespace_id,
                path_with_namespace: full_path.clone(),
                description: None,
                archived: false,
                empty_repo: false,
                default_branch: "main".to_string(),
                visibility: "private".to_string(),
                created_at: now,
                last_activity_at: now,
                marked_for_deletion_on: None,
                members: BTreeMap::new(),
                shared_with: BTreeMap::new(),
                deploy_keys: BTreeMap::new(),
                hooks: BTreeMap::new(),
                effective: HashMap::new(),
            },
        );
        self.claim_path(&full_path, id);
        if let Some(g) = self.groups.get_mut(&namespace_id) {
            g.projects.insert(id);
        }
        self.recompute_access(id);
        id
    }

    /// Points `path` at `id`; a live project's path beats an old redirect.
    fn claim_path(&mut self, path: &str, id: u64) {
        let key = path.to_lowercase();
        self.redirects.remove(&key);
        self.projects_by_path.insert(key, id);
    }

    pub fn set_member(&mut self, project: u64, user: u64, access_level: u32) {
        let Some(p) = self.projects.get_mut(&project) else {
            return;
        };
        if access_level == 0 {
            p.members.remove(&user);
        } else {
            p.members.insert(user, access_level);
        }
        self.recompute_access(project);
    }

    /// Moves a project to a new full path, keeping a redirect from the old.
    pub fn rename_project(&mut self, project: u64, new_path_with_namespace: &str) {
        let full = new_path_with_namespace.trim_matches('/');
        let (ns, path) = full.rsplit_once('/').unwrap_or(("root", full));
        let Some(old) = self.projects.get(&project).cloned() else {
            return;
        };
        let namespace_id = self.ensure_group(ns);
        let full_path = format!("{}/{path}", self.groups[&namespace_id].full_path);
        self.set_path(project, namespace_id, path, &full_path);
        let p = self.projects.get_mut(&project).expect("exists");
        if old.name == old.path {
            p.name = path.to_string();
        }
        if namespace_id != old.namespace_id {
            if let Some(g) = self.groups.get_mut(&old.namespace_id) {
                g.projects.remove(&project);
            }
            if let Some(g) = self.groups.get_mut(&namespace_id) {
                g.projects.insert(project);
            }
            self.recompute_access(project);
        }
    }

    fn set_path(&mut self, project: u64, namespace_id: u64, path: &str, full_path: &str) {
        let p = self.projects.get_mut(&project).expect("caller checked");
        let old_key = p.path_with_namespace.to_lowercase();
        p.namespace_id = namespace_id;
        p.path = path.to_string();
        p.path_with_namespace = full_path.to_string();
        p.last_activity_at = Utc::now();
        if old_key != full_path.to_lowercase() {
            self.projects_by_path.remove(&old_key);
            self.redirects.insert(old_key, project);
        }
        self.claim_path(full_path, project);
    }

    pub fn set_archived(&mut self, project: u64, archived: bool) {
        if let Some(p) = self.projects.get_mut(&project) {
            p.archived = archived;
        }
    }

    /// GitLab's adjourned deletion: rename to `-deletion_scheduled-<id>`,
    /// archive, and stamp `marked_for_deletion_on`.
    pub fn schedule_deletion(&mut self, project: u64) {
        let Some(p) = self.projects.get(&project) else {
            return;
        };
        let suffix = format!("-deletion_scheduled-{project}");
        let path = format!("{}{suffix}", p.path);
        let ns = p.namespace_id;
        let full_path = format!("{}/{path}", self.groups[&ns].full_path);
        self.set_path(project, ns, &path, &full_path);
        let p = self.projects.get_mut(&project).expect("exists");
        p.name = format!("{}{suffix}", p.name);
        p.archived = true;
        p.marked_for_deletion_on = Some(Utc::now().date_naive());
    }

    pub fn delete_project(&mut self, project: u64) {
        let Some(mut p) = self.projects.remove(&project) else {
            return;
        };
        self.projects_by_path
            .remove(&p.path_with_namespace.to_lowercase());
        self.redirects.retain(|_, id| *id != project);
        if let Some(g) = self.groups.get_mut(&p.namespace_id) {
            g.projects.remove(&project);
        }
        for u in std::mem::take(&mut p.effective).keys() {
            if let Some(m) = self.user_projects.get_mut(u) {
                m.remove(&project);
            }
        }
        for key in p.deploy_keys.keys() {
            self.drop_key_link(project, *key);
        }
        for hook in p.hooks.keys() {
            self.hook_events.remove(hook);
        }
    }

    /// Resolves a decoded `:id` (numeric or full path, old paths included).
    pub fn lookup_project(&self, id: &str) -> Lookup {
        if let Ok(n) = id.parse::<u64>() {
            return if self.projects.contains_key(&n) {
                Lookup::Found(n)
            } else {
                Lookup::Missing
            };
        }
        let key = id.to_lowercase();
        if let Some(&n) = self.projects_by_path.get(&key) {
            Lookup::Found(n)
        } else if let Some(&n) = self.redirects.get(&key) {
            Lookup::Moved(n)
        } else {
            Lookup::Missing
        }
    }

    // ---- deploy keys ----

    pub fn key_by_fingerprint(&self, fp_sha256: &str) -> Option<u64> {
        self.keys_by_fp.get(fp_sha256).copied()
    }

    /// Creates the key (or reuses an existing one with the same blob) and
    /// links it to the project. Access rules are the caller's business.
    pub fn add_deploy_key(
        &mut self,
        project: u64,
        title: &str,
        openssh: &str,
        can_push: bool,
        expires_at: Option<DateTime<Utc>>,
        owner: Option<u64>,
    ) -> Option<u64> {
        let parsed = keys::parse(openssh)?;
        Some(self.link_or_create_key(project, title, &parsed, can_push, expires_at, owner))
    }

    pub fn link_or_create_key(
        &mut self,
        project: u64,
        title: &str,
        parsed: &ParsedKey,
        can_push: bool,
        expires_at: Option<DateTime<Utc>>,
        owner: Option<u64>,
    ) -> u64 {
        let fp = keys::fingerprint_sha256(&parsed.blob);
        let id = match self.keys_by_fp.get(&fp) {
            Some(&id) => id,
            None => {
                let id = next(&mut self.ids.key);
                self.deploy_keys.insert(
                    id,
                    DeployKey {
                        id,
                        title: title.to_string(),
                        key: parsed.text.clone(),
                        fingerprint: keys::fingerprint_md5(&parsed.blob),
                        fingerprint_sha256: fp.clone(),
                        created_at: Utc::now(),
                        expires_at,
                        owner,
                        projects: BTreeSet::new(),
                    },
                );
                self.keys_by_fp.insert(fp, id);
                id
            }
        };
        self.link_key(project, id, can_push);
        id
    }

    pub fn link_key(&mut self, project: u64, key: u64, can_push: bool) {
        if let Some(p) = self.projects.get_mut(&project) {
            p.deploy_keys.entry(key).or_insert(KeyLink {
                can_push,
                created_at: Utc::now(),
            });
            if let Some(k) = self.deploy_keys.get_mut(&key) {
                k.projects.insert(project);
            }
        }
    }

    /// Removes the link; the key itself goes when no project uses it.
    pub fn unlink_deploy_key(&mut self, project: u64, key: u64) -> bool {
        let removed = self
            .projects
            .get_mut(&project)
            .and_then(|p| p.deploy_keys.remove(&key))
            .is_some();
        if removed {
            self.drop_key_link(project, key);
        }
        removed
    }

    fn drop_key_link(&mut self, project: u64, key: u64) {
        let Some(k) = self.deploy_keys.get_mut(&key) else {
            return;
        };
        k.projects.remove(&project);
        if k.projects.is_empty() {
            let fp = k.fingerprint_sha256.clone();
            self.deploy_keys.remove(&key);
            self.keys_by_fp.remove(&fp);
        }
    }

    pub fn set_deploy_key_can_push(&mut self, project: u64, key: u64, can_push: bool) {
        if let Some(l) = self
            .projects
            .get_mut(&project)
            .and_then(|p| p.deploy_keys.get_mut(&key))
        {
            l.can_push = can_push;
        }
    }

    pub fn set_deploy_key_expires_at(&mut self, key: u64, expires_at: Option<DateTime<Utc>>) {
        if let Some(k) = self.deploy_keys.get_mut(&key) {
            k.expires_at = expires_at;
        }
    }

    pub fn sim_deploy_key(&self, project: u64, key: u64) -> Option<SimDeployKey> {
        let link = self.projects.get(&project)?.deploy_keys.get(&key)?;
        let k = self.deploy_keys.get(&key)?;
        Some(SimDeployKey {
            id: k.id,
            title: k.title.clone(),
            key: k.key.clone(),
            fingerprint: k.fingerprint.clone(),
            fingerprint_sha256: k.fingerprint_sha256.clone(),
            can_push: link.can_push,
            expires_at: k.expires_at,
            created_at: k.created_at,
        })
    }

    pub fn deploy_keys(&self, project: u64) -> Vec<SimDeployKey> {
        self.projects.get(&project).map_or_else(Vec::new, |p| {
            p.deploy_keys
                .keys()
                .filter_map(|&k| self.sim_deploy_key(project, k))
                .collect()
        })
    }

    // ---- hooks ----

    pub fn add_hook(&mut self, project: u64, spec: HookSpec) -> u64 {
        self.insert_hook(project, new_hook(project, spec))
    }

    /// Stores a hook under a fresh id (given id and timestamp are replaced).
    pub fn insert_hook(&mut self, project: u64, mut hook: SimHook) -> u64 {
        let id = next(&mut self.ids.hook);
        hook.id = id;
        hook.project_id = project;
        hook.created_at = Utc::now();
        if let Some(p) = self.projects.get_mut(&project) {
            p.hooks.insert(id, hook);
        }
        id
    }

    pub fn hook_mut(&mut self, project: u64, hook: u64) -> Option<&mut SimHook> {
        self.projects.get_mut(&project)?.hooks.get_mut(&hook)
    }

    pub fn remove_hook(&mut self, project: u64, hook: u64) -> bool {
        self.hook_events.remove(&hook);
        self.projects
            .get_mut(&project)
            .and_then(|p| p.hooks.remove(&hook))
            .is_some()
    }

    pub fn hooks(&self, project: u64) -> Vec<SimHook> {
        self.projects
            .get(&project)
            .map_or_else(Vec::new, |p| p.hooks.values().cloned().collect())
    }

    /// Executes a delivery answered with `status` (0 = connection error):
    /// logs it, then re-enables on 2xx or 3xx (`response_category` `:ok`)
    /// or backs off on anything else. Returns false when the hook does not
    /// exist.
    pub fn record_delivery(&mut self, project: u64, hook: u64, status: u16, trigger: &str) -> bool {
        let event_id = next(&mut self.ids.event);
        let Some(h) = self.hook_mut(project, hook) else {
            return false;
        };
        let now = Utc::now();
        let ok = (200..400).contains(&status);
        if ok {
            // WebHook#enable!
            h.recent_failures = 0;
            h.disabled_until = None;
        } else {
            backoff(h, now);
        }
        let event = delivery_event(event_id, h, status, trigger, now);
        let log = self.hook_events.entry(hook).or_default();
        log.push(event);
        if log.len() > HOOK_LOG_CAP {
            log.remove(0);
        }
        true
    }

    pub fn set_rate_limit(&mut self, per_minute: Option<u32>) {
        self.rate_limit = per_minute;
        self.rate_windows.clear();
    }
}

/// `WebHooks::AutoDisabling#backoff!`: only an executable hook backs off;
/// the delay uses the failure count from before this failure.
fn backoff(h: &mut SimHook, now: DateTime<Utc>) {
    if h.alert_status_at(now) != "executable" {
        return;
    }
    let old = h.recent_failures;
    let new = (old + 1).min(super::PERMANENTLY_DISABLED_FAILURE_THRESHOLD + 1);
    if new > super::TEMPORARILY_DISABLED_FAILURE_THRESHOLD {
        let exp = old
            .saturating_sub(super::TEMPORARILY_DISABLED_FAILURE_THRESHOLD)
            .min(20);
        let secs = (60u64 << exp).clamp(60, 86_400);
        h.disabled_until = Some(now + chrono::Duration::seconds(secs as i64));
    }
    h.recent_failures = new;
}

/// What GitLab logs for one delivery; the token is redacted as in WH-svc.
fn delivery_event(
    id: u64,
    h: &SimHook,
    status: u16,
    trigger: &str,
    now: DateTime<Utc>,
) -> HookEvent {
    let kind = trigger.trim_end_matches("_hooks");
    let event_name = match kind {
        "push" => "Push Hook".to_string(),
        "tag_push" => "Tag Push Hook".to_string(),
        "merge_request" => "Merge Request Hook".to_string(),
        other => format!("{} Hook", title_case(other)),
    };
    let mut headers = json!({
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.11.0",
        "Idempotency-Key": format!("sim-{id}"),
        "X-Gitlab-Event": event_name,
        "X-Gitlab-Webhook-UUID": format!("sim-hook-{}", h.id),
        "X-Gitlab-Instance": "glwarden-sim",
        "X-Gitlab-Event-UUID": format!("sim-event-{id}"),
    });
    if h.token.is_some() {
        headers["X-Gitlab-Token"] = json!("[REDACTED]");
    }
    let (response_status, response_body) = match status {
        0 => ("internal error".to_string(), String::new()),
        s => (s.to_string(), receiver_body(s)),
    };
    HookEvent {
        id,
        url: h.url.clone(),
        trigger: trigger.to_string(),
        request_headers: headers,
        request_data: json!({ "object_kind": kind, "project_id": h.project_id }),
        response_headers: json!({ "Content-Type": "text/plain; charset=utf-8" }),
        response_body,
        execution_duration: 0.05,
        response_status,
        created_at: now,
        status_code: status,
    }
}

fn title_case(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body a simulated receiver answers with.
pub(crate) fn receiver_body(status: u16) -> String {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
        .to_string()
}

/// A hook with GitLab's column defaults plus what the spec sets.
pub(crate) fn new_hook(project: u64, spec: HookSpec) -> SimHook {
    SimHook {
        id: 0,
        project_id: project,
        url: spec.url,
        name: None,
        description: None,
        token: spec.token,
        push_events: spec.push_events,
        push_events_branch_filter: None,
        branch_filter_strategy: "wildcard".to_string(),
        tag_push_events: spec.tag_push_events,
        merge_requests_events: spec.merge_requests_events,
        repository_update_events: false,
        issues_events: false,
        confidential_issues_events: false,
        note_events: false,
        // The column has no default: a new hook answers `null`.
        confidential_note_events: None,
        pipeline_events: false,
        wiki_page_events: false,
        deployment_events: false,
        feature_flag_events: false,
        job_events: false,
        releases_events: false,
        milestone_events: false,
        emoji_events: false,
        resource_access_token_events: false,
        resource_deploy_token_events: false,
        vulnerability_events: false,
        enable_ssl_verification: spec.enable_ssl_verification,
        custom_webhook_template: None,
        custom_headers: Vec::new(),
        url_variables: Vec::new(),
        created_at: Utc::now(),
        recent_failures: 0,
        disabled_until: None,
    }
}
