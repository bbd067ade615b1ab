//! Configuration: a TOML file layered with `GLWARDEN__SECTION__KEY` environment
//! overrides (the `config` crate), validated into typed settings.
//!
//! Secrets never live in the file: a connection names where its token is
//! (a file, an environment variable or a systemd credential), and the token is
//! read into a [`SecretString`] at load time so that a bad credential is a
//! configuration error, reported before anything talks to GitLab.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

/// Environment variable prefix for overrides: `GLWARDEN__STORE__PATH=/tmp/x.db`.
pub const ENV_PREFIX: &str = "GLWARDEN";

/// A configuration problem, always naming the file and the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {file}: cannot be read: {reason}")]
    Unreadable { file: PathBuf, reason: String },
    #[error("config file {file}: {reason}")]
    Syntax { file: PathBuf, reason: String },
    #[error("config file {file}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// The whole configuration, as written (before secrets are loaded).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub store: StoreConfig,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file. Default: `$STATE_DIRECTORY/glwarden.db` under
    /// systemd, else `./glwarden.db`.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
        }
    }
}

fn default_store_path() -> PathBuf {
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

/// The daemon's HTTP listener (`/metrics`, `/healthz`, `/readyz`).
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_token_file: None,
            metrics_token_credential: None,
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

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
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
}

/// A validated configuration with its secrets loaded.
pub struct Config {
    pub file: PathBuf,
    pub raw: RawConfig,
    pub connections: BTreeMap<String, Connection>,
    pub custody: std::sync::Arc<crate::custody::Custody>,
    /// The bearer token `/metrics` asks for, when one is configured.
    pub metrics_token: Option<SecretString>,
    /// `schedule.cron`, parsed once here (validation checked it).
    pub cron: croner::Cron,
}

/// A connection ready to use: where it points and its credential.
pub struct Connection {
    pub name: String,
    pub base_url: Url,
    pub kind: TokenKind,
    pub token: SecretString,
    /// Human description of where the token came from, for `config check`.
    pub token_source: String,
    pub requests_per_minute: u32,
    /// How to refresh an OAuth access token, when configured.
    pub oauth: Option<OAuthSettings>,
    /// Extra trusted CA certificates (`ca_file`), parsed.
    pub ca_certificates: Vec<reqwest::Certificate>,
}

/// What refreshing an OAuth token takes.
#[derive(Clone)]
pub struct OAuthSettings {
    pub refresh_token: SecretString,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub redirect_uri: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("base_url", &self.base_url.as_str())
            .field("kind", &self.kind)
            .field("token", &"<redacted>")
            .field("token_source", &self.token_source)
            .finish()
    }
}

impl Config {
    /// Each connection's name and `url` in the form the store keeps.
    pub fn connection_urls(&self) -> impl Iterator<Item = (&str, &str)> {
        self.connections
            .iter()
            .map(|(name, conn)| (name.as_str(), conn.base_url.as_str()))
    }

    /// What is valid but may not work everywhere: expected event flags that
    /// older GitLab releases do not return (a hook there is judged without
    /// them; the detail says so). Each names the key at fault.
    pub fn warnings(&self) -> Vec<String> {
        self.raw
            .expect
            .webhook_events
            .iter()
            .enumerate()
            .filter_map(|(i, event)| {
                crate::gitlab::types::hook_event_since(event).map(|since| {
                    format!(
                        "{}: expect.webhook_events[{i}]: GitLab returns `{event}` only since {since}; on older GitLab it cannot be verified",
                        self.file.display()
                    )
                })
            })
            .collect()
    }

    /// Reads `file`, applies environment overrides, validates, loads secrets.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let raw = load_raw(file)?;
        Self::from_raw(file, raw)
    }

    /// Validates an already-parsed configuration and loads its secrets.
    pub fn from_raw(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            reason,
        };
        validate(&raw).map_err(|(key, reason)| invalid(key, reason))?;
        let mut connections = BTreeMap::new();
        for (name, conn) in &raw.connections {
            let base_url = parse_base_url(&conn.url)
                .map_err(|reason| invalid(format!("connections.{name}.url"), reason))?;
            let (token, token_source) =
                load_token(name, conn).map_err(|(key, reason)| invalid(key, reason))?;
            let oauth = load_oauth(name, conn).map_err(|(key, reason)| invalid(key, reason))?;
            let ca_certificates = match &conn.ca_file {
                Some(path) => load_ca_bundle(path)
                    .map_err(|reason| invalid(format!("connections.{name}.ca_file"), reason))?,
                None => Vec::new(),
            };
            connections.insert(
                name.clone(),
                Connection {
                    name: name.clone(),
                    base_url,
                    kind: conn.token_kind,
                    token,
                    token_source,
                    requests_per_minute: conn.requests_per_minute,
                    oauth,
                    ca_certificates,
                },
            );
        }
        let master_key = SecretSource {
            section: "custody".into(),
            field: "master_key",
            file: raw.custody.master_key_file.as_deref(),
            env: None,
            credential: raw.custody.master_key_credential.as_deref(),
        }
        .load()
        .map_err(|(key, reason)| invalid(key, reason))?;
        let custody = crate::custody::Custody::new(
            master_key.as_ref().map(|(k, _)| k),
            raw.custody.allow_plaintext,
        )
        .map_err(|e| invalid("custody.master_key_file".into(), e.to_string()))?;
        let metrics_token = SecretSource {
            section: "http".into(),
            field: "metrics_token",
            file: raw.http.metrics_token_file.as_deref(),
            env: None,
            credential: raw.http.metrics_token_credential.as_deref(),
        }
        .load()
        .map_err(|(key, reason)| invalid(key, reason))?
        .map(|(token, _)| token);
        let cron = parse_cron(&raw.schedule.cron)
            .map_err(|reason| invalid("schedule.cron".into(), reason))?;
        Ok(Config {
            file: file.to_owned(),
            raw,
            connections,
            custody: std::sync::Arc::new(custody),
            metrics_token,
            cron,
        })
    }

    /// The effective configuration as TOML, secrets replaced by where they come from.
    pub fn render_redacted(&self) -> String {
        let mut out = toml::to_string_pretty(&self.raw)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"));
        out.push_str("\n# credentials (values redacted)\n");
        for conn in self.connections.values() {
            out.push_str(&format!(
                "# connections.{}: token <redacted>, {}\n",
                conn.name, conn.token_source
            ));
        }
        out
    }
}

/// Parses the file and the environment overrides into [`RawConfig`].
pub fn load_raw(file: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Unreadable {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
    serde_path_to_error::deserialize::<_, RawConfig>(built).map_err(|e| {
        let key = e.path().to_string();
        let reason = strip_key_suffix(&e.into_inner().to_string());
        ConfigError::Invalid {
            file: file.to_owned(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            reason,
        }
    })
}

/// The config crate appends " for key `x`" to type errors; we print the key ourselves.
fn strip_key_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// A connection's `url`, checked, in the form the store keeps it.
pub fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{raw}` has no host"));
    }
    // The token travels in every request: plain HTTP only where it cannot
    // leave the machine (the simulator, a local TLS-terminating proxy).
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(format!(
            "`{raw}` would send the token unencrypted: use https:// (http:// is accepted only for a loopback address)"
        ));
    }
    Ok(url)
}

type KeyProblem = (String, String);

fn validate(raw: &RawConfig) -> Result<(), KeyProblem> {
    let c = &raw.check;
    if c.concurrency == 0 || c.concurrency > 256 {
        return Err((
            "check.concurrency".into(),
            "must be between 1 and 256".into(),
        ));
    }
    if c.request_timeout_seconds == 0 {
        return Err((
            "check.request_timeout_seconds".into(),
            "must be at least 1".into(),
        ));
    }
    if c.connect_timeout_seconds == 0 {
        return Err((
            "check.connect_timeout_seconds".into(),
            "must be at least 1".into(),
        ));
    }
    if c.max_response_bytes < 1024 {
        return Err((
            "check.max_response_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    parse_cron(&raw.schedule.cron).map_err(|r| ("schedule.cron".to_owned(), r))?;
    let r = &raw.repair;
    if r.confirm_checks == 0 {
        return Err(("repair.confirm_checks".into(), "must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&r.storm_share) || r.storm_share == 0.0 {
        return Err((
            "repair.storm_share".into(),
            "must be above 0 and at most 1".into(),
        ));
    }
    if r.key_title.trim().is_empty() {
        return Err(("repair.key_title".into(), "must not be empty".into()));
    }
    if !(0.0..=1.0).contains(&raw.schedule.spread) {
        return Err(("schedule.spread".into(), "must be between 0 and 1".into()));
    }
    // Past the spread, or a paced sweep would be cancelled before its last check.
    if !(raw.schedule.sweep_deadline_intervals.is_finite()
        && raw.schedule.sweep_deadline_intervals > raw.schedule.spread
        && raw.schedule.sweep_deadline_intervals <= 1000.0)
    {
        return Err((
            "schedule.sweep_deadline_intervals".into(),
            "must be more than schedule.spread and at most 1000".into(),
        ));
    }
    raw.http
        .listen
        .parse::<std::net::SocketAddr>()
        .map_err(|e| {
            (
                "http.listen".to_owned(),
                format!("`{}` is not an address:port: {e}", raw.http.listen),
            )
        })?;
    for (name, conn) in &raw.connections {
        if conn.requests_per_minute == 0 {
            return Err((
                format!("connections.{name}.requests_per_minute"),
                "must be at least 1".into(),
            ));
        }
    }
    if let Some(template) = &raw.expect.webhook_url {
        validate_url_template(template).map_err(|r| ("expect.webhook_url".to_owned(), r))?;
    }
    for (i, event) in raw.expect.webhook_events.iter().enumerate() {
        if !crate::gitlab::types::HOOK_EVENTS.contains(&event.as_str()) {
            return Err((
                format!("expect.webhook_events[{i}]"),
                format!(
                    "`{event}` is not a GitLab webhook event flag (known: {})",
                    crate::gitlab::types::HOOK_EVENTS.join(", ")
                ),
            ));
        }
    }
    for name in raw.connections.keys() {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                format!("connections.{name}"),
                "a connection name may use only letters, digits, `-` and `_`".into(),
            ));
        }
    }
    for (i, p) in raw.projects.iter().enumerate() {
        let key = |field: &str| format!("projects[{i}].{field}");
        if !raw.connections.contains_key(&p.connection) {
            return Err((
                key("connection"),
                format!("no connection named `{}` is configured", p.connection),
            ));
        }
        match (&p.id, &p.path) {
            (None, None) => return Err((key("id"), "a project needs `id` or `path`".into())),
            (Some(_), Some(_)) => {
                return Err((key("path"), "give `id` or `path`, not both".into()));
            }
            (None, Some(path)) if !path.contains('/') => {
                return Err((
                    key("path"),
                    format!("`{path}` is not a path with namespace (group/project)"),
                ));
            }
            _ => {}
        }
        if let Some(t) = &p.webhook_url {
            validate_url_template(t).map_err(|r| (key("webhook_url"), r))?;
        }
        if let Some(k) = &p.deploy_key {
            crate::keys::fingerprint_of(k).map_err(|e| (key("deploy_key"), e.to_string()))?;
        }
    }
    for (i, d) in raw.discover.iter().enumerate() {
        if !raw.connections.contains_key(&d.connection) {
            return Err((
                format!("discover[{i}].connection"),
                format!("no connection named `{}` is configured", d.connection),
            ));
        }
        if d.group.trim().is_empty() {
            return Err((
                format!("discover[{i}].group"),
                "must name a group id or path".into(),
            ));
        }
    }
    Ok(())
}

/// Fills a webhook URL template for one project.
/// The webhook URL glwarden expects for a project: its own `webhook_url`,
/// else `expect.webhook_url` filled in; `None` when neither is set.
pub fn expected_hook_url(
    cfg: &Config,
    own: Option<&str>,
    project_id: u64,
    path: &str,
) -> Option<String> {
    own.map(str::to_owned).or_else(|| {
        cfg.raw
            .expect
            .webhook_url
            .as_deref()
            .map(|t| expand_url_template(t, project_id, path))
    })
}

pub fn expand_url_template(template: &str, project_id: u64, path: &str) -> String {
    template
        .replace("{id}", &project_id.to_string())
        .replace("{path}", path)
}

/// Checks a webhook URL (or template with `{id}`, `{path}`) as the
/// configuration does: known placeholders, http(s), https unless loopback.
/// Every way a URL reaches glwarden (config, `project add`) goes through here.
pub fn validate_url_template(template: &str) -> Result<(), String> {
    let sample = expand_url_template(template, 1, "group/project");
    if let Some(bad) = sample.find(['{', '}']) {
        return Err(format!(
            "`{template}` has an unknown placeholder near position {bad} (known: {{id}}, {{path}})"
        ));
    }
    parse_base_url(&sample).map(|_| ())
}

/// Where one secret comes from: a file, an environment variable, or a
/// systemd credential. `field` is the config key stem (`token`, ...).
struct SecretSource<'a> {
    /// `connections.NAME` or `custody`.
    section: String,
    field: &'a str,
    file: Option<&'a Path>,
    env: Option<&'a str>,
    credential: Option<&'a str>,
}

impl SecretSource<'_> {
    fn given(&self) -> usize {
        [
            self.file.is_some(),
            self.env.is_some(),
            self.credential.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// Loads the secret; `Ok(None)` when no source is given.
    fn load(&self) -> Result<Option<(SecretString, String)>, KeyProblem> {
        let field = self.field;
        let section = &self.section;
        let key = |suffix: &str| format!("{section}.{field}_{suffix}");
        match self.given() {
            0 => return Ok(None),
            1 => {}
            _ => {
                return Err((
                    key("file"),
                    format!("set only one of `{field}_file`, `{field}_env`, `{field}_credential`"),
                ));
            }
        }
        if let Some(path) = self.file {
            let secret = read_secret_file(path).map_err(|r| (key("file"), r))?;
            return Ok(Some((secret, format!("from file {}", path.display()))));
        }
        if let Some(var) = self.env {
            let value = std::env::var(var).map_err(|_| {
                (
                    key("env"),
                    format!("environment variable `{var}` is not set"),
                )
            })?;
            let value = value.trim();
            if value.is_empty() {
                return Err((key("env"), format!("environment variable `{var}` is empty")));
            }
            return Ok(Some((
                SecretString::from(value.to_owned()),
                format!("from environment variable {var}"),
            )));
        }
        let cred = self.credential.unwrap_or_default();
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            (
                key("credential"),
                "CREDENTIALS_DIRECTORY is not set (use systemd LoadCredential=)".to_owned(),
            )
        })?;
        let path = Path::new(&dir).join(cred);
        let secret = read_secret_file(&path).map_err(|r| (key("credential"), r))?;
        Ok(Some((secret, format!("from credential {cred}"))))
    }
}

/// The certificates of a PEM bundle; an error says what is wrong with the file.
fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&bytes)
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

fn load_token(name: &str, conn: &ConnectionConfig) -> Result<(SecretString, String), KeyProblem> {
    let source = SecretSource {
        section: format!("connections.{name}"),
        field: "token",
        file: conn.token_file.as_deref(),
        env: conn.token_env.as_deref(),
        credential: conn.token_credential.as_deref(),
    };
    source.load()?.ok_or_else(|| {
        (
            format!("connections.{name}.token_file"),
            "set exactly one of `token_file`, `token_env`, `token_credential`".into(),
        )
    })
}

/// The refresh side of an OAuth connection, when configured.
fn load_oauth(name: &str, conn: &ConnectionConfig) -> Result<Option<OAuthSettings>, KeyProblem> {
    let key = |field: &str| format!("connections.{name}.{field}");
    let refresh = SecretSource {
        section: format!("connections.{name}"),
        field: "refresh_token",
        file: conn.refresh_token_file.as_deref(),
        env: conn.refresh_token_env.as_deref(),
        credential: conn.refresh_token_credential.as_deref(),
    }
    .load()?;
    let secret = SecretSource {
        section: format!("connections.{name}"),
        field: "client_secret",
        file: conn.client_secret_file.as_deref(),
        env: conn.client_secret_env.as_deref(),
        credential: conn.client_secret_credential.as_deref(),
    }
    .load()?;
    let Some((refresh_token, _)) = refresh else {
        if conn.client_id.is_some() || secret.is_some() {
            return Err((
                key("refresh_token_file"),
                "an OAuth client is configured but no refresh token".into(),
            ));
        }
        return Ok(None);
    };
    if conn.token_kind != TokenKind::Oauth {
        return Err((
            key("refresh_token_file"),
            "a refresh token needs token_kind = \"oauth\"".into(),
        ));
    }
    let client_id = conn.client_id.clone().ok_or_else(|| {
        (
            key("client_id"),
            "needed to refresh the OAuth token".to_owned(),
        )
    })?;
    Ok(Some(OAuthSettings {
        refresh_token,
        client_id,
        client_secret: secret.map(|(s, _)| s),
        redirect_uri: conn.redirect_uri.clone(),
    }))
}

/// Reads a secret from a file that only its owner may read.
pub fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    // The file's text is wiped when dropped; only the trimmed secret lives on.
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn config_with(dir: &Path, body: &str) -> Result<Config, ConfigError> {
        write(dir, "token", "glpat-secret-value\n", 0o600);
        let text = format!(
            "[connections.main]\nurl = \"https://gitlab.example.com\"\ntoken_file = \"{}\"\n{body}",
            dir.join("token").display()
        );
        let file = write(dir, "glwarden.toml", &text, 0o644);
        Config::load(&file)
    }

    #[test]
    fn loads_a_minimal_file_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            config_with(dir.path(), "[[projects]]\nconnection = \"main\"\nid = 42\n").unwrap();
        assert_eq!(cfg.raw.check.concurrency, 8);
        assert_eq!(cfg.raw.projects[0].reference(), "42");
        assert_eq!(
            cfg.connections["main"].base_url.as_str(),
            "https://gitlab.example.com/"
        );
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = config_with(dir.path(), "[check]\nconcurency = 3\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("glwarden.toml"), "{err}");
        assert!(err.contains("concurency"), "{err}");
    }

    #[test]
    fn wrong_type_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = config_with(dir.path(), "[check]\nconcurrency = \"many\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("check.concurrency"), "{err}");
    }

    #[test]
    fn bad_url_and_undefined_connection_are_reported_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = config_with(dir.path(), "[[projects]]\nconnection = \"other\"\nid = 1\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("projects[0].connection"), "{err}");
        let err = config_with(dir.path(), "[expect]\nwebhook_url = \"ci/{id}\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expect.webhook_url"), "{err}");
        let err = config_with(
            dir.path(),
            "[expect]\nwebhook_url = \"https://ci/{nope}\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("unknown placeholder"), "{err}");
    }

    #[test]
    fn world_readable_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let token = write(dir.path(), "loose", "glpat-x", 0o644);
        let err = read_secret_file(&token).err().unwrap();
        assert!(err.contains("readable by others"), "{err}");
    }

    #[test]
    fn redacted_rendering_never_contains_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_with(dir.path(), "").unwrap();
        let text = cfg.render_redacted();
        assert!(!text.contains("glpat-secret-value"));
        assert!(text.contains("<redacted>"));
        assert!(!format!("{:?}", cfg.connections["main"]).contains("glpat-secret-value"));
    }

    #[test]
    fn bad_cron_and_listen_address_are_reported_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = config_with(dir.path(), "[schedule]\ncron = \"every five minutes\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("schedule.cron"), "{err}");
        let err = config_with(dir.path(), "[schedule]\ncron = \"*/5 * * * *\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("schedule.cron"),
            "five fields lack seconds: {err}"
        );
        let err = config_with(dir.path(), "[http]\nlisten = \"localhost\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        assert!(config_with(dir.path(), "[schedule]\ncron = \"*/10 * * * * *\"\n").is_ok());
    }

    #[test]
    fn url_template_expands_id_and_path() {
        assert_eq!(
            expand_url_template("https://ci.example/{id}/{path}", 7, "g/p"),
            "https://ci.example/7/g/p"
        );
    }
}
