//! Where the store lives: a SQLite file (`store.path`, the embedded
//! default) or a PostgreSQL database (`store.url`, for more than one
//! replica), with its password read like every other secret.

use std::str::FromStr;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::secrets::SecretSource;
use super::validate::KeyProblem;
use super::{StoreConfig, default_store_path};

/// The store the configuration names.
#[derive(Clone)]
pub enum StoreTarget {
    Sqlite(std::path::PathBuf),
    Postgres {
        /// Connection options, the password included.
        options: Box<PgConnectOptions>,
        /// The URL as shown in messages: no password, no query.
        shown: String,
    },
}

impl std::fmt::Display for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreTarget::Sqlite(path) => write!(f, "{}", path.display()),
            StoreTarget::Postgres { shown, .. } => f.write_str(shown),
        }
    }
}

// PgConnectOptions' own Debug prints the password.
impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreTarget::Postgres { shown, .. } => f.debug_tuple("Postgres").field(shown).finish(),
        }
    }
}

/// The store `[store]` names, its password loaded.
pub(super) fn store_target(store: &StoreConfig) -> Result<StoreTarget, KeyProblem> {
    let password = SecretSource {
        section: "store".into(),
        field: "password",
        file: store.password_file.as_deref(),
        env: store.password_env.as_deref(),
        credential: store.password_credential.as_deref(),
    }
    .load()?;
    let Some(url) = &store.url else {
        if password.is_some() {
            return Err((
                "store.password_file".into(),
                "a password is given but no store.url: the SQLite store has none".into(),
            ));
        }
        return Ok(StoreTarget::Sqlite(store.path.clone()));
    };
    let key = || "store.url".to_owned();
    let (mut options, shown) = parse_postgres_url(url).map_err(|reason| (key(), reason))?;
    if let Some((password, _)) = password {
        options = options.password(password.expose_secret());
    }
    Ok(StoreTarget::Postgres {
        options: Box::new(options),
        shown,
    })
}

/// Whether `store.path` was set beside `store.url` (it is then not used).
pub(super) fn path_is_ignored(store: &StoreConfig) -> bool {
    store.url.is_some() && store.path != default_store_path()
}

/// A PostgreSQL URL, checked: the scheme, no password in it (it would be
/// in the file and in every message), and TLS verified unless the server
/// is reached through a Unix socket. Returns the options and the URL as
/// shown in messages.
fn parse_postgres_url(raw: &str) -> Result<(PgConnectOptions, String), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "scheme `{}` is not PostgreSQL: write postgres://USER@HOST/DATABASE (for SQLite, set store.path instead)",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        return Err(
            "the URL holds a password: put it in store.password_file, store.password_env or store.password_credential"
                .into(),
        );
    }
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    // `host=/run/postgresql`: a Unix socket, on this machine.
    let socket = query.get("host").is_some_and(|h| h.starts_with('/'));
    let options = PgConnectOptions::from_str(raw).map_err(|e| e.to_string())?;
    let options = match query.get("sslmode").map(String::as_str) {
        None if socket => options,
        None => options.ssl_mode(PgSslMode::VerifyFull),
        Some("verify-full" | "verify-ca" | "require") => options,
        Some(mode @ ("disable" | "allow" | "prefer")) if !socket => {
            return Err(format!(
                "sslmode={mode} would send the password and the store's contents unencrypted or unverified over the network: use verify-full (with sslrootcert for a private CA)"
            ));
        }
        Some(_) => options,
    };
    let mut shown = url.clone();
    shown.set_query(None);
    Ok((options, shown.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_checked() {
        let (_, shown) = parse_postgres_url(
            "postgres://glwarden@db.example.com:5433/glwarden?sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(shown, "postgres://glwarden@db.example.com:5433/glwarden");
        for (url, says) in [
            ("mysql://u@h/d", "is not PostgreSQL"),
            ("postgres://u:hunter2@h/d", "holds a password"),
            ("postgres://u@h/d?sslmode=disable", "sslmode=disable"),
            ("postgres://u@h/d?sslmode=prefer", "sslmode=prefer"),
            ("not a url", "not a URL"),
        ] {
            let err = parse_postgres_url(url).err().unwrap_or_default();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        // Through a Unix socket no TLS is needed.
        assert!(
            parse_postgres_url("postgres://u@localhost/d?host=/run/postgresql&sslmode=disable")
                .is_ok()
        );
    }
}
