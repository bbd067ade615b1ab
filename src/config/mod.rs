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

use secrecy::SecretString;
use url::Url;

mod schema;
mod secrets;
mod store;
mod validate;

pub use schema::*;
pub use secrets::read_secret_file;
use secrets::{SecretSource, load_ca_bundle, load_oauth, load_token};
pub use store::StoreTarget;
use validate::validate;
pub use validate::{expand_url_template, expected_hook_url, parse_base_url, validate_url_template};

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

impl Config {
    /// The PostgreSQL database at `url` (`store copy --to`), checked like
    /// `[store] url` and with its password from `[store] password_*`.
    pub fn store_at(&self, url: &str) -> Result<StoreTarget, ConfigError> {
        let mut store = self.raw.store.clone();
        store.url = Some(url.to_owned());
        store::store_target(&store).map_err(|(key, reason)| ConfigError::Invalid {
            file: self.file.clone(),
            key: format!("{key} (given as --to)"),
            reason,
        })
    }
}

/// A validated configuration with its secrets loaded.
pub struct Config {
    pub file: PathBuf,
    pub raw: RawConfig,
    pub connections: BTreeMap<String, Connection>,
    pub custody: std::sync::Arc<crate::custody::Custody>,
    /// The bearer token `/metrics` asks for, when one is configured.
    pub metrics_token: Option<SecretString>,
    /// The status page's operator token (`[http] operator_token_file`).
    pub operator_token: Option<SecretString>,
    /// The status page's read token (`[http] read_token_file`).
    pub read_token: Option<SecretString>,
    /// `schedule.cron`, parsed once here (validation checked it).
    pub cron: croner::Cron,
    /// The store: a SQLite file or a PostgreSQL database, its password loaded.
    pub store: StoreTarget,
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
    /// Rotate the access token once it expires within this many days.
    pub rotate_before_days: Option<u32>,
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
        let mut warnings: Vec<String> = self
            .raw
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
            .collect();
        if store::path_is_ignored(&self.raw.store) {
            warnings.push(format!(
                "{}: store.path is not used: store.url names a PostgreSQL database",
                self.file.display()
            ));
        }
        warnings
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
                    rotate_before_days: conn.rotate_before_days,
                },
            );
        }
        // A rotation revokes the token it rotates: another connection using
        // the same one would be left with a revoked token.
        for (name, conn) in connections
            .iter()
            .filter(|(_, c)| c.rotate_before_days.is_some())
        {
            use secrecy::ExposeSecret;
            if let Some(other) = connections
                .values()
                .find(|o| o.name != *name && o.token.expose_secret() == conn.token.expose_secret())
            {
                return Err(invalid(
                    format!("connections.{name}.rotate_before_days"),
                    format!(
                        "connection `{}` uses the same token, and a rotation revokes it: give each connection its own token",
                        other.name
                    ),
                ));
            }
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
        // Guessed at one try a second (a wrong one waits), a short token
        // would fall in days.
        let sign_in_token = |field: &'static str,
                             file: Option<&std::path::Path>,
                             credential: Option<&str>|
         -> Result<Option<SecretString>, ConfigError> {
            let token = SecretSource {
                section: "http".into(),
                field,
                file,
                env: None,
                credential,
            }
            .load()
            .map_err(|(key, reason)| invalid(key, reason))?
            .map(|(token, _)| token);
            use secrecy::ExposeSecret;
            if token
                .as_ref()
                .is_some_and(|t| t.expose_secret().chars().count() < 20)
            {
                let key = match file {
                    Some(_) => format!("http.{field}_file"),
                    None => format!("http.{field}_credential"),
                };
                return Err(invalid(
                    key,
                    "shorter than 20 characters: make one with `openssl rand -hex 32`".into(),
                ));
            }
            Ok(token)
        };
        let operator_token = sign_in_token(
            "operator_token",
            raw.http.operator_token_file.as_deref(),
            raw.http.operator_token_credential.as_deref(),
        )?;
        let read_token = sign_in_token(
            "read_token",
            raw.http.read_token_file.as_deref(),
            raw.http.read_token_credential.as_deref(),
        )?;
        let cron = parse_cron(&raw.schedule.cron)
            .map_err(|reason| invalid("schedule.cron".into(), reason))?;
        let store =
            store::store_target(&raw.store).map_err(|(key, reason)| invalid(key, reason))?;
        Ok(Config {
            file: file.to_owned(),
            raw,
            connections,
            custody: std::sync::Arc::new(custody),
            metrics_token,
            operator_token,
            read_token,
            cron,
            store,
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
    fn rotation_is_refused_where_gitlab_cannot_rotate_or_would_rotate_every_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_with(dir.path(), "rotate_before_days = 7\n").unwrap();
        assert_eq!(cfg.connections["main"].rotate_before_days, Some(7));
        for (body, says) in [
            ("rotate_before_days = 0\n", "between 1 and 364"),
            ("rotate_before_days = 365\n", "between 1 and 364"),
            (
                "token_kind = \"oauth\"\nrotate_before_days = 7\n",
                "an OAuth token gets 405",
            ),
        ] {
            let err = config_with(dir.path(), body).err().unwrap().to_string();
            assert!(err.contains("glwarden.toml"), "{err}");
            assert!(err.contains("connections.main.rotate_before_days"), "{err}");
            assert!(err.contains(says), "{err}");
        }
        // Another connection with the same token would be left with a revoked one.
        let shared = format!(
            "rotate_before_days = 7\n[connections.other]\nurl = \"https://other.example.com\"\ntoken_file = \"{}\"\n",
            dir.path().join("token").display()
        );
        let err = config_with(dir.path(), &shared).err().unwrap().to_string();
        assert!(err.contains("connections.main.rotate_before_days"), "{err}");
        assert!(
            err.contains("connection `other` uses the same token"),
            "{err}"
        );
    }

    #[test]
    fn discovery_rules_of_one_connection_must_agree_on_purging() {
        let dir = tempfile::tempdir().unwrap();
        let rule = |group: &str, purge: bool| {
            format!(
                "[[discover]]\nconnection = \"main\"\ngroup = \"{group}\"\npurge_on_leave = {purge}\n"
            )
        };
        let agree = format!("{}{}", rule("a", true), rule("b", true));
        assert!(config_with(dir.path(), &agree).is_ok());
        let disagree = format!("{}{}", rule("a", true), rule("b", false));
        let err = config_with(dir.path(), &disagree)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("discover[1].purge_on_leave"), "{err}");
        assert!(err.contains("must agree"), "{err}");
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
