//! OAuth access-token refresh for one connection.
//!
//! GitLab rotates the refresh token on every use and invalidates the old pair
//! (`use_refresh_token` in GitLab's `config/initializers/doorkeeper.rb`;
//! Doorkeeper revokes a refresh token once used), so two concurrent refreshes would leave one of them with
//! a dead token: refreshes are single-flight behind an async mutex, and a
//! caller that waited re-checks whether someone else already refreshed. The
//! new pair is handed to the persister (the store) before it is used, so a
//! crash right after a refresh cannot lose the only valid refresh token.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Refresh this long before the access token expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// When a token given `seconds` of life at `now` expires. `expires_in` comes
/// from GitLab's answer: a value no clock can reach (2^62 seconds, say) is
/// "no known expiry", never a panic.
fn expiry_after(now: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
    now.checked_add_signed(chrono::TimeDelta::try_seconds(seconds)?)
}

/// An access token and the refresh token that replaces it.
#[derive(Clone)]
pub struct OAuthPair {
    pub access: SecretString,
    pub refresh: SecretString,
    /// `None` when unknown (a token taken from the configuration).
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for OAuthPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthPair")
            .field("access", &"<redacted>")
            .field("refresh", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Stores a freshly issued pair durably; an error is logged, not fatal.
pub type Persist =
    std::sync::Arc<dyn Fn(OAuthPair) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The client application that refreshes.
#[derive(Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub redirect_uri: Option<String>,
}

/// Why a refresh did not give a new pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// GitLab refused the refresh token (400 invalid_grant, 401): a person must re-authorize.
    Refused(String),
    /// GitLab could not be asked (network, 5xx): try again later.
    Transient(String),
}

/// One connection's OAuth state.
pub struct OAuthSession {
    current: Mutex<OAuthPair>,
    refresh_lock: tokio::sync::Mutex<()>,
    client: OAuthClient,
    persist: Persist,
    refused: AtomicBool,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

impl OAuthSession {
    pub fn new(pair: OAuthPair, client: OAuthClient, persist: Persist) -> Self {
        Self {
            current: Mutex::new(pair),
            refresh_lock: tokio::sync::Mutex::new(()),
            client,
            persist,
            refused: AtomicBool::new(false),
        }
    }

    pub fn access(&self) -> SecretString {
        self.current.lock().expect("oauth lock").access.clone()
    }

    /// Whether GitLab refused the refresh token (the connection needs a person).
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Records the access token's remaining life (from `/oauth/token/info`).
    pub fn set_expires_in(&self, seconds: i64) {
        self.current.lock().expect("oauth lock").expires_at = expiry_after(Utc::now(), seconds);
    }

    /// True when the access token expires within the refresh margin.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        let expires = self.current.lock().expect("oauth lock").expires_at;
        expires.is_some_and(|t| {
            t - now <= chrono::Duration::from_std(REFRESH_MARGIN).unwrap_or_default()
        })
    }

    /// Refreshes unless the access token is no longer `seen` (someone else
    /// refreshed while we waited for the lock).
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        token_url: url::Url,
        seen: &SecretString,
        max_bytes: usize,
    ) -> Result<(), RefreshError> {
        let _single_flight = self.refresh_lock.lock().await;
        let (current_access, refresh_token) = {
            let c = self.current.lock().expect("oauth lock");
            (c.access.clone(), c.refresh.clone())
        };
        if current_access.expose_secret() != seen.expose_secret() {
            return Ok(());
        }
        if self.refused() {
            return Err(RefreshError::Refused(
                "refresh token already refused".into(),
            ));
        }
        // Borrowed, not copied: the secrets stay in their wiped holders
        // (the HTTP stack's encoded copy is beyond reach).
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("client_id", self.client.client_id.as_str()),
        ];
        if let Some(secret) = &self.client.client_secret {
            form.push(("client_secret", secret.expose_secret()));
        }
        if let Some(uri) = &self.client.redirect_uri {
            form.push(("redirect_uri", uri.as_str()));
        }
        let answer = http.post(token_url).form(&form).send().await.map_err(|e| {
            RefreshError::Transient(if e.is_timeout() {
                "timed out".into()
            } else {
                "request failed".into()
            })
        })?;
        let status = answer.status();
        // The answer holds both new tokens: wiped once they are parsed out.
        let body = zeroize::Zeroizing::new(
            super::read_bounded(answer, max_bytes)
                .await
                .map_err(|e| RefreshError::Transient(format!("token answer unreadable: {e}")))?,
        );
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(RefreshError::Transient(format!("HTTP {status}")));
        }
        if !status.is_success() {
            self.refused.store(true, Ordering::Relaxed);
            let reason = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|j| j.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(RefreshError::Refused(super::error::sanitize(&reason)));
        }
        let parsed: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| RefreshError::Transient(format!("token answer not understood: {e}")))?;
        let pair = OAuthPair {
            access: SecretString::from(parsed.access_token),
            refresh: SecretString::from(parsed.refresh_token),
            expires_at: parsed.expires_in.and_then(|s| expiry_after(Utc::now(), s)),
        };
        // Durable first: the old refresh token is already dead at GitLab.
        if let Err(e) = (self.persist)(pair.clone()).await {
            tracing::error!(error = %e, "the refreshed OAuth tokens could not be stored; they are used from memory");
        }
        *self.current.lock().expect("oauth lock") = pair;
        tracing::info!("OAuth access token refreshed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_from_the_answer_never_panics() {
        let now = Utc::now();
        assert_eq!(
            expiry_after(now, 7200),
            Some(now + chrono::TimeDelta::seconds(7200))
        );
        for huge in [1_i64 << 62, i64::MAX, i64::MIN] {
            assert_eq!(expiry_after(now, huge), None, "{huge}");
        }
    }
}
