//! Stateful fake GitLab REST v4 server, following what glwarden relies on in
//! GitLab's own source (`docs/gitlab-contract.md` in the glwarden repository,
//! each row with its file in `gitlabhq/gitlabhq`). The [`Sim`] handle owns the world behind a std mutex and
//! a background axum server on loopback; tests, `glwarden demo` and the
//! benchmark mutate the world through the methods below or, from another
//! process, through the `/_sim` control API.

mod api;
mod auth;
mod control;
mod entities;
mod faults;
mod keys;
mod oauth;
mod pagination;
mod reply;
mod server;
mod throttle;
mod version;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use keys::{fingerprint_md5, fingerprint_sha256};
pub use version::SimVersion;
use world::World;

/// Handle on a running simulator. Dropping it stops the server.
pub struct Sim {
    world: Arc<Mutex<World>>,
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// A deploy key as linked to one project (the `DeployKeysProject` entity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDeployKey {
    pub id: u64,
    pub title: String,
    /// The key as GitLab stores it: `<type> <base64> [first comment word]`.
    pub key: String,
    pub fingerprint: String,
    /// As GitLab serves it: unpadded base64, no `SHA256:` prefix.
    pub fingerprint_sha256: String,
    pub can_push: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl SimDeployKey {
    /// The fingerprint as `ssh-keygen -lf` (and glwarden) writes it.
    pub fn ssh_fingerprint(&self) -> String {
        format!("SHA256:{}", self.fingerprint_sha256)
    }
}

/// A personal, project or group access token as the simulator stores it.
/// `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAccessToken {
    pub id: u64,
    pub user_id: u64,
    pub name: String,
    /// The secret.
    pub token: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<NaiveDate>,
    pub revoked: bool,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The token this one replaced by rotation; `None` for a token that was
    /// not made by a rotation.
    pub previous_personal_access_token_id: Option<u64>,
}

impl SimAccessToken {
    /// Neither revoked nor expired.
    pub fn active(&self) -> bool {
        self.active_on(Utc::now().date_naive())
    }

    /// `PersonalAccessToken#active?` on `today`.
    pub(crate) fn active_on(&self, today: NaiveDate) -> bool {
        !self.revoked && !self.expired(today)
    }

    /// GitLab tokens expire at midnight UTC starting their expiry date.
    pub(crate) fn expired(&self, today: NaiveDate) -> bool {
        self.expires_at.is_some_and(|d| d <= today)
    }
}

impl std::fmt::Debug for SimAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAccessToken")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("token", &"[REDACTED]")
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .field("last_used_at", &self.last_used_at)
            .field(
                "previous_personal_access_token_id",
                &self.previous_personal_access_token_id,
            )
            .finish()
    }
}

/// Per-user application limits on project reads: `GET /projects/:id` per
/// minute, `GET /projects` per 10 minutes, `GET /groups/:id/projects` per
/// minute (GitLab.com: 400, 2,000, 600).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointLimits {
    pub project: u32,
    pub projects: u32,
    pub group_projects: u32,
}

/// What a test wants a new hook to look like; the rest takes GitLab defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookSpec {
    pub url: String,
    pub push_events: bool,
    pub tag_push_events: bool,
    pub merge_requests_events: bool,
    pub enable_ssl_verification: bool,
    pub token: Option<String>,
}

impl Default for HookSpec {
    fn default() -> Self {
        // GitLab's column defaults: push on, everything else off, SSL checked.
        HookSpec {
            url: String::new(),
            push_events: true,
            tag_push_events: false,
            merge_requests_events: false,
            enable_ssl_verification: true,
            token: None,
        }
    }
}

/// A project webhook with every field GitLab stores, including the
/// write-only `token` (never rendered by the API, kept for assertions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimHook {
    pub id: u64,
    pub project_id: u64,
    pub url: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub token: Option<String>,
    pub push_events: bool,
    /// `null` until set (a text column without default).
    pub push_events_branch_filter: Option<String>,
    pub branch_filter_strategy: String,
    pub tag_push_events: bool,
    pub merge_requests_events: bool,
    pub repository_update_events: bool,
    pub issues_events: bool,
    pub confidential_issues_events: bool,
    pub note_events: bool,
    /// `null` on a new hook until set (docs/gitlab-contract.md §10.9).
    pub confidential_note_events: Option<bool>,
    pub pipeline_events: bool,
    pub wiki_page_events: bool,
    pub deployment_events: bool,
    pub feature_flag_events: bool,
    pub job_events: bool,
    pub releases_events: bool,
    pub milestone_events: bool,
    pub emoji_events: bool,
    pub resource_access_token_events: bool,
    pub resource_deploy_token_events: bool,
    pub vulnerability_events: bool,
    pub enable_ssl_verification: bool,
    pub custom_webhook_template: Option<String>,
    /// `(key, value)`; values are never rendered.
    pub custom_headers: Vec<(String, String)>,
    /// `(key, value)`; values are never rendered.
    pub url_variables: Vec<(String, String)>,
    pub created_at: DateTime<Utc>,
    pub recent_failures: u32,
    pub disabled_until: Option<DateTime<Utc>>,
}

/// GitLab's auto-disabling constants (AUTO-new, 18.x model).
pub const TEMPORARILY_DISABLED_FAILURE_THRESHOLD: u32 = 3;
pub const PERMANENTLY_DISABLED_FAILURE_THRESHOLD: u32 = 39;

impl SimHook {
    /// `executable`, `temporarily_disabled` or `disabled`, as rendered now.
    pub fn alert_status(&self) -> &'static str {
        self.alert_status_at(Utc::now())
    }

    pub fn alert_status_at(&self, now: DateTime<Utc>) -> &'static str {
        if self.temporarily_disabled(now) {
            "temporarily_disabled"
        } else if self.permanently_disabled() {
            "disabled"
        } else {
            "executable"
        }
    }

    fn temporarily_disabled(&self, now: DateTime<Utc>) -> bool {
        (TEMPORARILY_DISABLED_FAILURE_THRESHOLD + 1..=PERMANENTLY_DISABLED_FAILURE_THRESHOLD)
            .contains(&self.recent_failures)
            && self.disabled_until.is_some_and(|d| d >= now)
    }

    fn permanently_disabled(&self) -> bool {
        self.recent_failures > PERMANENTLY_DISABLED_FAILURE_THRESHOLD
            || (self.recent_failures > TEMPORARILY_DISABLED_FAILURE_THRESHOLD
                && self.disabled_until.is_none())
    }
}

/// One request as the simulator saw it (control API requests excluded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// Raw path, without the query string.
    pub path: String,
    pub query: String,
    /// 0 when no response was sent (hang, reset).
    pub status: u16,
    pub user: Option<u64>,
    /// When the request arrived (before any injected latency).
    pub at: DateTime<Utc>,
}

/// A fault to inject into matching requests (API and OAuth, not `/_sim`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_contains: Option<String>,
    pub kind: FaultKind,
    /// How many matching requests it hits; `None` = until cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

impl Fault {
    /// `kind` on every request whose path contains `path`, whatever its
    /// method, until cleared.
    pub fn on(path: impl Into<String>, kind: FaultKind) -> Fault {
        Fault {
            path_contains: Some(path.into()),
            ..Fault::everywhere(kind)
        }
    }

    /// `kind` on every request, until cleared.
    pub fn everywhere(kind: FaultKind) -> Fault {
        Fault {
            method: None,
            path_contains: None,
            kind,
            times: None,
        }
    }

    /// Only on requests with this method.
    pub fn method(self, method: &str) -> Fault {
        Fault {
            method: Some(method.into()),
            ..self
        }
    }

    /// Only on the next `n` matching requests.
    pub fn times(self, n: u32) -> Fault {
        Fault {
            times: Some(n),
            ..self
        }
    }
}

/// JSON form: `{"kind":"status","value":{"code":502,"html":true}}`,
/// `{"kind":"delay","value":250}` (milliseconds), `{"kind":"hang"}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum FaultKind {
    Status {
        code: u16,
        #[serde(default)]
        html: bool,
    },
    /// Waits, then answers normally (the handler runs after the wait).
    Delay(#[serde(with = "duration_ms")] Duration),
    /// No answer for an hour (or until shutdown) and the handler never
    /// runs: the client times out and GitLab did nothing.
    Hang,
    /// The connection is dropped before the handler runs: nothing done.
    Reset,
    GarbageJson,
    TruncatedJson,
    WrongShape,
    /// The real answer, its body released 8 bytes per `chunk_delay`. The
    /// handler has run and its changes stand; with a delay longer than the
    /// client's timeout the status line and headers arrive but the body
    /// does not: GitLab acted and the answer (a rotated token's secret,
    /// say) is lost.
    SlowBody {
        #[serde(with = "duration_ms")]
        chunk_delay: Duration,
    },
    Oversized {
        bytes: usize,
    },
    RateLimited {
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// The answer's deploy keys carry another key's material (`key` and
    /// fingerprints): GitLab never confirms the key glwarden added.
    ForeignKey,
    /// The real answer, saying the rate-limit window is spent until `reset`
    /// (Unix seconds): `RateLimit-Remaining: 0`, `RateLimit-Reset: reset`.
    SpentWindow {
        reset: u64,
    },
}

impl FaultKind {
    /// An error answer with an HTML body, as a proxy or GitLab's own error
    /// pages give it.
    pub fn error_page(code: u16) -> FaultKind {
        FaultKind::Status { code, html: true }
    }
}

/// Durations travel as integer milliseconds in the control API.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Sim {
    /// Binds 127.0.0.1:0 and serves in a background tokio task.
    pub async fn start() -> std::io::Result<Sim> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds the given address and serves in a background tokio task.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let world = Arc::new(Mutex::new(World::new(&format!("http://{addr}"))));
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        server::spawn(listener, world.clone(), rx);
        Ok(Sim {
            world,
            addr,
            shutdown,
        })
    }

    /// Acts as GitLab `version` from now on (the latest release by default).
    pub fn set_version(&self, version: SimVersion) {
        self.w().version = version;
    }

    /// Switches the per-endpoint application limits on (or off with `None`).
    pub fn set_endpoint_limits(&self, limits: Option<EndpointLimits>) {
        self.w().endpoint_limits = limits;
    }

    /// The admin setting that lets hooks point at local and private addresses.
    pub fn allow_local_hook_urls(&self, allow: bool) {
        self.w().allow_local_hook_urls = allow;
    }

    /// "http://127.0.0.1:PORT": API under /api/v4, OAuth under /oauth.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; hung and delayed requests are released too.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    fn w(&self) -> MutexGuard<'_, World> {
        world::lock(&self.world)
    }

    // users and tokens

    pub fn add_user(&self, username: &str) -> u64 {
        self.w().add_user(username)
    }

    /// Personal/project/group access token (all stored as PAT type).
    pub fn add_access_token(
        &self,
        user: u64,
        token: &str,
        scopes: &[&str],
        expires_at: Option<NaiveDate>,
    ) -> u64 {
        self.w().add_access_token(user, token, scopes, expires_at)
    }

    pub fn revoke_token(&self, token: &str) {
        self.w().revoke_token(token);
    }

    pub fn expire_token(&self, token: &str) {
        self.w().expire_token(token);
    }

    /// The access token with this secret, revoked and expired ones included.
    pub fn token_by_secret(&self, token: &str) -> Option<SimAccessToken> {
        self.w().access_token(token)
    }

    /// The user's access tokens that are neither revoked nor expired,
    /// oldest first: after rotations, the one each family left in use.
    pub fn active_tokens_of(&self, user: u64) -> Vec<SimAccessToken> {
        self.w().active_access_tokens(user)
    }

    /// Successful `POST /personal_access_tokens/self/rotate` requests so far.
    pub fn rotations(&self) -> u64 {
        self.w().rotations
    }

    /// The admin setting `require_personal_access_token_expiry` (on by
    /// default): on, a rotation without `expires_at` gets today + 7 days and
    /// one beyond today + 365 days is a 400; off, no `expires_at` means no
    /// expiry and any date is taken.
    pub fn set_token_expiry_required(&self, required: bool) {
        self.w().token_expiry_required = required;
    }

    pub fn add_oauth_app(&self, client_id: &str, client_secret: &str) {
        self.w().add_oauth_app(client_id, client_secret);
    }

    pub fn add_oauth_token(
        &self,
        user: u64,
        client_id: &str,
        access: &str,
        refresh: &str,
        scopes: &[&str],
        expires_in_secs: i64,
    ) {
        self.w()
            .add_oauth_token(user, client_id, access, refresh, scopes, expires_in_secs);
    }

    // groups and projects

    pub fn add_group(&self, full_path: &str) -> u64 {
        self.w().ensure_group(full_path)
    }

    pub fn set_group_member(&self, group: u64, user: u64, access_level: u32) {
        self.w().set_group_member(group, user, access_level);
    }

    pub fn add_project(&self, path_with_namespace: &str) -> u64 {
        self.w().add_project(path_with_namespace)
    }

    /// Shares `project` with `group` at most at `max_level` (0 removes it).
    pub fn share_project(&self, project: u64, group: u64, max_level: u32) {
        self.w().share_project(project, group, max_level)
    }

    pub fn set_member(&self, project: u64, user: u64, access_level: u32) {
        self.w().set_member(project, user, access_level);
    }

    pub fn rename_project(&self, project: u64, new_path_with_namespace: &str) {
        self.w().rename_project(project, new_path_with_namespace);
    }

    pub fn set_archived(&self, project: u64, archived: bool) {
        self.w().set_archived(project, archived);
    }

    pub fn schedule_deletion(&self, project: u64) {
        self.w().schedule_deletion(project);
    }

    pub fn delete_project(&self, project: u64) {
        self.w().delete_project(project);
    }

    // deploy keys

    /// Panics when `public_key_openssh` is not a valid OpenSSH public key.
    pub fn add_deploy_key(
        &self,
        project: u64,
        title: &str,
        public_key_openssh: &str,
        can_push: bool,
        expires_at: Option<DateTime<Utc>>,
    ) -> u64 {
        self.w()
            .add_deploy_key(
                project,
                title,
                public_key_openssh,
                can_push,
                expires_at,
                None,
            )
            .expect("add_deploy_key: invalid OpenSSH public key")
    }

    pub fn remove_deploy_key(&self, project: u64, key_id: u64) {
        self.w().unlink_deploy_key(project, key_id);
    }

    pub fn set_deploy_key_can_push(&self, project: u64, key_id: u64, can_push: bool) {
        self.w().set_deploy_key_can_push(project, key_id, can_push);
    }

    /// A key's expiry as if it had been set when the key was added (time
    /// passing towards it).
    pub fn set_deploy_key_expires_at(&self, key_id: u64, expires_at: Option<DateTime<Utc>>) {
        self.w().set_deploy_key_expires_at(key_id, expires_at);
    }

    pub fn deploy_keys(&self, project: u64) -> Vec<SimDeployKey> {
        self.w().deploy_keys(project)
    }

    // hooks

    pub fn add_hook(&self, project: u64, spec: HookSpec) -> u64 {
        self.w().add_hook(project, spec)
    }

    pub fn update_hook(&self, project: u64, hook: u64, f: impl FnOnce(&mut SimHook)) {
        if let Some(h) = self.w().hook_mut(project, hook) {
            f(h);
        }
    }

    pub fn remove_hook(&self, project: u64, hook: u64) {
        self.w().remove_hook(project, hook);
    }

    pub fn hooks(&self, project: u64) -> Vec<SimHook> {
        self.w().hooks(project)
    }

    /// A delivery to this hook answered `status` (0 = connection error).
    pub fn record_delivery(&self, project: u64, hook: u64, status: u16) {
        self.w()
            .record_delivery(project, hook, status, "push_hooks");
    }

    /// What deliveries and tests to this receiver URL answer (default 200).
    pub fn set_receiver_status(&self, url: &str, status: u16) {
        self.w().receivers.insert(url.to_string(), status);
    }

    // faults, latency, rate limit

    pub fn inject(&self, fault: Fault) {
        self.w().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.w().faults.clear();
    }

    /// Added to every API and OAuth request.
    pub fn set_latency(&self, d: Duration) {
        self.w().latency = d;
    }

    /// At most `per_minute` requests per user per fixed 60 s window.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        self.w().set_rate_limit(per_minute);
    }

    // observation

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.w().requests.records().to_vec()
    }

    pub fn clear_requests(&self) {
        self.w().requests.clear();
    }

    /// Requests ever received, whether their records are kept or not.
    pub fn request_total(&self) -> u64 {
        self.w().requests.total()
    }

    /// 429 answers ever sent.
    pub fn too_many_requests_sent(&self) -> u64 {
        self.w().requests.too_many
    }

    /// Keep a record of every request (the default) or only count them
    /// (a benchmark's millions of requests).
    pub fn keep_request_log(&self, keep: bool) {
        self.w().requests.discard = !keep;
    }

    /// The whole world as JSON (what `GET /_sim/state` returns).
    pub fn state(&self) -> serde_json::Value {
        serde_json::to_value(&*self.w()).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
    }
}
