//! The configuration file as written: every section and key, with its
//! default (`config/glwarden.example.toml` shows them all).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration, as written (before secrets are loaded).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub ha: HaConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub check: CheckConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub repair: RepairConfig,
    #[serde(default)]
    pub custody: CustodyConfig,
    #[serde(default)]
    pub expect: Expectations,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    #[serde(default)]
    pub discover: Vec<DiscoveryRule>,
}

/// Replicas on one PostgreSQL database: one leads (sweeps, repairs, OAuth
/// refresh) while it holds the lease; the others stand by.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// How long a lease lasts unless renewed (renewed every third of it); a
    /// standby takes over within about one lease and a third of a leader's death.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            lease_seconds: default_lease_seconds(),
        }
    }
}

fn default_lease_seconds() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file, the embedded default. Default:
    /// `$STATE_DIRECTORY/glwarden.db` under systemd, else `./glwarden.db`.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// PostgreSQL instead: `postgres://USER@HOST[:PORT]/DATABASE`, TLS
    /// options (`sslmode`, `sslrootcert`) in its query; never a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The PostgreSQL password: one of a file, an environment variable or
    /// a systemd credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credential: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            url: None,
            password_file: None,
            password_env: None,
            password_credential: None,
        }
    }
}

pub(super) fn default_store_path() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several colon-separated directories; the first is ours.
        Some(dirs) => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or(".")
                .to_owned();
            PathBuf::from(first).join("glwarden.db")
        }
        None => PathBuf::from("glwarden.db"),
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `glwarden=debug`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// How checks talk to GitLab.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Projects checked at the same time, per run.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whole-request timeout, seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// TCP/TLS connect timeout, seconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Largest response body accepted, bytes; a larger one is a transient failure.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Longest pause honoured after a 429 before the request is retried once;
    /// a longer `Retry-After` leaves the component `unknown` for this run.
    #[serde(default = "default_max_rate_limit_wait")]
    pub max_rate_limit_wait_seconds: u64,
    /// Read each webhook's recent deliveries (one more request per project) to
    /// detect the `failing` state.
    #[serde(default)]
    pub webhook_deliveries: bool,
    /// A token that expires within this many days makes its connection `expiring`.
    #[serde(default = "default_warning_days")]
    pub token_expiry_warning_days: u32,
    /// A connection with at least this many projects reads their metadata in
    /// bulk (`GET /projects?membership=true`, 100 a page) once per sweep
    /// instead of one `GET /projects/:id` each.
    #[serde(default = "default_bulk_list_min_projects")]
    pub bulk_list_min_projects: usize,
    /// Most entries glwarden holds from one list (a project's hooks or deploy
    /// keys, a discovered group's projects): a `next` link that never ends
    /// fails the list at this count instead of filling memory.
    #[serde(default = "default_max_list_items")]
    pub max_list_items: usize,
}

fn default_max_list_items() -> usize {
    50_000
}

fn default_bulk_list_min_projects() -> usize {
    20
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            request_timeout_seconds: default_request_timeout(),
            connect_timeout_seconds: default_connect_timeout(),
            max_response_bytes: default_max_response_bytes(),
            max_rate_limit_wait_seconds: default_max_rate_limit_wait(),
            webhook_deliveries: false,
            token_expiry_warning_days: default_warning_days(),
            bulk_list_min_projects: default_bulk_list_min_projects(),
            max_list_items: default_max_list_items(),
        }
    }
}

impl CheckConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }
}

fn default_concurrency() -> usize {
    8
}
fn default_request_timeout() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_max_response_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_rate_limit_wait() -> u64 {
    120
}
fn default_warning_days() -> u32 {
    14
}

/// When the daemon sweeps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression with a seconds field (sec min hour day month weekday).
    #[serde(default = "default_cron")]
    pub cron: String,
    /// Share of the interval between two sweeps over which a sweep's project
    /// checks are spread, so that GitLab sees a steady trickle, not a burst.
    #[serde(default = "default_spread")]
    pub spread: f64,
    /// On SIGTERM, how long checks already started may take to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// A sweep still running after this many intervals is cancelled: its
    /// started checks finish, the rest wait for the next sweep.
    #[serde(default = "default_sweep_deadline")]
    pub sweep_deadline_intervals: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            cron: default_cron(),
            spread: default_spread(),
            shutdown_grace_seconds: default_grace(),
            sweep_deadline_intervals: default_sweep_deadline(),
        }
    }
}

fn default_cron() -> String {
    "0 */5 * * * *".into()
}
fn default_spread() -> f64 {
    0.8
}
fn default_grace() -> u64 {
    30
}

/// Generous: a sweep longer than its interval is normal for a large fleet
/// under a request budget (ticks meanwhile are skipped, never queued); the
/// deadline is for a sweep that no longer gets anywhere.
fn default_sweep_deadline() -> f64 {
    4.0
}

/// Parses a cron expression the way the scheduler does (seconds required).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a cron expression with a seconds field (e.g. \"0 */5 * * * *\"): {e}"))
}

/// The daemon's HTTP listener (`/metrics`, `/healthz`, `/readyz`, the status page).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Loopback by default: metrics are not for the whole network.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A bearer token `/metrics` asks for (project paths are in the series),
    /// from a file only its owner may read...
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// ...or from `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`).
    #[serde(default)]
    pub metrics_token_credential: Option<String>,
    /// The token a person signs in to the status page with to press its
    /// buttons (check, regenerate, fix, follow a move); without one the
    /// page is read-only. From a file only its owner may read...
    #[serde(default)]
    pub operator_token_file: Option<PathBuf>,
    /// ...or from `$CREDENTIALS_DIRECTORY/<name>`.
    #[serde(default)]
    pub operator_token_credential: Option<String>,
    /// With a read token the status page and its API are not open to
    /// whoever reaches the listener: they ask for a session (either token
    /// signs in) or `Authorization: Bearer`. From a file...
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// ...or from `$CREDENTIALS_DIRECTORY/<name>`.
    #[serde(default)]
    pub read_token_credential: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_token_file: None,
            metrics_token_credential: None,
            operator_token_file: None,
            operator_token_credential: None,
            read_token_file: None,
            read_token_credential: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9184".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PerProjectSeries {
    /// A series per project only while one of its components is not healthy.
    #[default]
    Unhealthy,
    /// Also a 0/1 health gauge per project and component (small fleets).
    All,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub per_project: PerProjectSeries,
}

/// What glwarden may do about a broken component on its own.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Not checked, not repaired.
    Off,
    /// Checked, recorded, alerted; GitLab is never changed (the plan is logged).
    #[default]
    Report,
    /// Repaired when the rules allow.
    Auto,
}

/// What to do when a repository was renamed or transferred.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MovedPolicy {
    /// Take GitLab's new path as ours and re-check key and hook.
    Follow,
    #[default]
    Report,
}

/// How a `disabled` webhook is brought back.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookReenable {
    /// A test delivery (`POST .../hooks/:id/test/:trigger`, GitLab 16.11+):
    /// GitLab sends sample data for one event the hook subscribes to (for a
    /// push: the default branch's last commits) to the CI's receiver with
    /// the hook's real token, so it can start a build.
    Test,
    /// Reported only: a person re-enables the hook.
    #[default]
    Off,
}

/// Repair policy and the rules that keep automatic repairs safe.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepairConfig {
    #[serde(default)]
    pub deploy_key: Policy,
    #[serde(default)]
    pub webhook: Policy,
    #[serde(default)]
    pub moved: MovedPolicy,
    /// A broken state must be seen this many checks in a row before a repair.
    #[serde(default = "default_confirm_checks")]
    pub confirm_checks: u32,
    /// At most one automatic repair per project and component in this long.
    #[serde(default = "default_cooldown_minutes")]
    pub cooldown_minutes: u64,
    /// At most this many automatic repairs per hour, all projects together.
    #[serde(default = "default_budget_per_hour")]
    pub budget_per_hour: u32,
    /// When one sweep sees more than this share of projects newly broken,
    /// automatic repairs pause (a GitLab incident, not that many breakages).
    #[serde(default = "default_storm_share")]
    pub storm_share: f64,
    /// ...and at least this many: a small fleet is not paused by one breakage.
    #[serde(default = "default_storm_min_projects")]
    pub storm_min_projects: usize,
    /// Title of the deploy keys glwarden adds; `{path}` and `{id}` are filled in.
    #[serde(default = "default_key_title")]
    pub key_title: String,
    /// Give new deploy keys an expiry this many days ahead (none by default).
    #[serde(default)]
    pub key_expires_days: Option<u32>,
    /// How a `disabled` webhook is re-enabled: `test` (a real sample
    /// delivery to the receiver) or `off` (reported only).
    #[serde(default)]
    pub webhook_reenable: WebhookReenable,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            deploy_key: Policy::Report,
            webhook: Policy::Report,
            moved: MovedPolicy::Report,
            confirm_checks: default_confirm_checks(),
            cooldown_minutes: default_cooldown_minutes(),
            budget_per_hour: default_budget_per_hour(),
            storm_share: default_storm_share(),
            storm_min_projects: default_storm_min_projects(),
            key_title: default_key_title(),
            key_expires_days: None,
            webhook_reenable: WebhookReenable::Off,
        }
    }
}

fn default_confirm_checks() -> u32 {
    2
}
fn default_cooldown_minutes() -> u64 {
    60
}
fn default_budget_per_hour() -> u32 {
    100
}
fn default_storm_share() -> f64 {
    0.2
}
fn default_storm_min_projects() -> usize {
    5
}
fn default_key_title() -> String {
    "glwarden {path}".into()
}

/// Per-project exceptions to `[repair]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepairOverride {
    #[serde(default)]
    pub deploy_key: Option<Policy>,
    #[serde(default)]
    pub webhook: Option<Policy>,
    #[serde(default)]
    pub moved: Option<MovedPolicy>,
}

/// Where secrets are kept.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustodyConfig {
    /// 32-byte master key (64 hex digits or base64) in a file only its owner may read...
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// ...or in `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`).
    #[serde(default)]
    pub master_key_credential: Option<String>,
    /// Store secrets unencrypted (in the 0600 database) when no master key is set.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Also write each project's private deploy key to
    /// `<key_dir>/<connection>/<project id>` (0600 in 0700 folders, replaced atomically).
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
}

/// What every project is expected to have, unless the project overrides it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Webhook URL the CI receives pushes on. Placeholders: `{id}` (numeric
    /// project id), `{path}` (path with namespace).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Event flags that must be on for our hook.
    #[serde(default = "default_events")]
    pub webhook_events: Vec<String>,
    #[serde(default = "default_true")]
    pub enable_ssl_verification: bool,
    /// The deploy key must not be able to push.
    #[serde(default = "default_true")]
    pub read_only_key: bool,
    /// A deploy key expiring within this many days is `expiring`.
    #[serde(default = "default_warning_days")]
    pub key_expiry_warning_days: u32,
}

impl Default for Expectations {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_events: default_events(),
            enable_ssl_verification: true,
            read_only_key: true,
            key_expiry_warning_days: default_warning_days(),
        }
    }
}

fn default_events() -> Vec<String> {
    vec![
        "push_events".into(),
        "tag_push_events".into(),
        "merge_requests_events".into(),
    ]
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum TokenKind {
    /// Personal, project or group access token (`PRIVATE-TOKEN`).
    #[default]
    AccessToken,
    /// OAuth 2 access token (`Authorization: Bearer`).
    Oauth,
}

/// One GitLab credential on one instance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Base URL of the instance, e.g. `https://gitlab.com`.
    pub url: String,
    #[serde(default)]
    pub token_kind: TokenKind,
    /// Read the token from this file (it must not be readable by others).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Read the token from this environment variable.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Read the token from `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`).
    #[serde(default)]
    pub token_credential: Option<String>,
    /// OAuth only: where the refresh token is (one of three, as for the token).
    #[serde(default)]
    pub refresh_token_file: Option<PathBuf>,
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    #[serde(default)]
    pub refresh_token_credential: Option<String>,
    /// OAuth only: the application's id, and its secret (omit for PKCE apps).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_credential: Option<String>,
    /// OAuth only: the redirect URI the token was first issued for, if GitLab needs it.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Request budget per minute for this connection. GitLab.com allows 2,000
    /// per user; the default leaves headroom for other tools of the same user.
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    /// Access tokens only: rotate the token with GitLab's self-rotation
    /// endpoint (16.10+) once it expires within this many days; the new
    /// token is kept sealed in the store. Off when absent.
    #[serde(default)]
    pub rotate_before_days: Option<u32>,
    /// PEM file of CA certificates trusted for this connection besides the
    /// built-in roots (a self-managed GitLab behind an internal CA). TLS
    /// verification itself is always on: there is no setting to turn it off.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_requests_per_minute() -> u32 {
    1800
}

/// One explicitly listed project.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub connection: String,
    /// Numeric GitLab project id (preferred: stable across renames).
    #[serde(default)]
    pub id: Option<u64>,
    /// Path with namespace; resolved to the numeric id once and stored.
    #[serde(default)]
    pub path: Option<String>,
    /// Overrides `expect.webhook_url` for this project.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// OpenSSH public key of the deploy key the CI clones with.
    #[serde(default)]
    pub deploy_key: Option<String>,
    /// Exceptions to `[repair]` for this project.
    #[serde(default)]
    pub repair: Option<RepairOverride>,
}

impl ProjectConfig {
    /// How the config names this project (`42` or `group/app`).
    pub fn reference(&self) -> String {
        match (&self.id, &self.path) {
            (Some(id), _) => id.to_string(),
            (None, Some(path)) => path.clone(),
            (None, None) => String::new(),
        }
    }
}

/// Every project of a group (and its subgroups) where the token is Maintainer or higher.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryRule {
    pub connection: String,
    /// Group id or full path.
    pub group: String,
    #[serde(default = "default_true")]
    pub include_subgroups: bool,
    /// A project that leaves the group (or the token's reach) has
    /// glwarden's deploy key and webhook deleted from GitLab before it
    /// leaves the inventory. Off: it leaves the inventory, and its key and
    /// hook stay at GitLab.
    #[serde(default)]
    pub purge_on_leave: bool,
}
