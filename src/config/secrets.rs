//! Where secrets come from: a file (0600 or stricter), an environment
//! variable or a systemd credential; read once, at load time.

use std::path::Path;

use super::{ConnectionConfig, OAuthSettings, TokenKind, validate::KeyProblem};
use secrecy::SecretString;

/// Where one secret comes from: a file, an environment variable, or a
/// systemd credential. `field` is the config key stem (`token`, ...).
pub(super) struct SecretSource<'a> {
    /// `connections.NAME` or `custody`.
    pub(super) section: String,
    pub(super) field: &'a str,
    pub(super) file: Option<&'a Path>,
    pub(super) env: Option<&'a str>,
    pub(super) credential: Option<&'a str>,
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
    pub(super) fn load(&self) -> Result<Option<(SecretString, String)>, KeyProblem> {
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
pub(super) fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
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

pub(super) fn load_token(
    name: &str,
    conn: &ConnectionConfig,
) -> Result<(SecretString, String), KeyProblem> {
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
pub(super) fn load_oauth(
    name: &str,
    conn: &ConnectionConfig,
) -> Result<Option<OAuthSettings>, KeyProblem> {
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
