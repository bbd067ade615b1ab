//! The sweep's first step: each connection's credential asked about
//! (`GET /user`, the token's own details, `GET /version`), and the OAuth
//! session a connection with a refresh token runs on.

use std::sync::Arc;

use chrono::Utc;

use crate::config::TokenKind;
use crate::gitlab::GitLab;
use crate::gitlab::oauth::{OAuthClient, OAuthPair, OAuthSession, Persist};
use crate::gitlab::types::GitLabVersion;
use crate::probe::{self, ConnectionVerdict, TokenDetails};
use crate::store::{Store, StoreError};

/// The OAuth session of a connection: the stored (rotated) pair when it
/// descends from the configured refresh token, else the configured pair.
/// Every refreshed pair is written to the store (sealed under the master
/// key, if one is configured) before it is used.
pub(super) async fn oauth_session(
    store: &Store,
    custody: &Arc<crate::custody::Custody>,
    name: &str,
    conn: &crate::config::Connection,
    settings: &crate::config::OAuthSettings,
) -> Result<Arc<OAuthSession>, StoreError> {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let seed = format!(
        "{:x}",
        sha2::Sha256::digest(settings.refresh_token.expose_secret().as_bytes())
    );
    // Only a pair that descends from the configured refresh token is
    // opened: one that cannot be (a lost master key) is then mended by
    // configuring a new refresh token.
    let stored = match store.oauth_seed(name).await? {
        Some(stored_seed) if stored_seed == seed => store.oauth_pair(name, custody).await?,
        _ => None,
    };
    let pair = match stored {
        Some((stored, _)) => stored,
        None => OAuthPair {
            access: conn.token.clone(),
            refresh: settings.refresh_token.clone(),
            expires_at: None,
        },
    };
    let (store, connection, custody) = (store.clone(), name.to_owned(), custody.clone());
    let persist: Persist = Arc::new(move |pair: OAuthPair| {
        let (store, connection, seed, custody) = (
            store.clone(),
            connection.clone(),
            seed.clone(),
            custody.clone(),
        );
        Box::pin(async move {
            store
                .save_oauth_pair(&connection, &pair, &seed, &custody)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let client = OAuthClient {
        client_id: settings.client_id.clone(),
        client_secret: settings.client_secret.clone(),
        redirect_uri: settings.redirect_uri.clone(),
    };
    Ok(Arc::new(OAuthSession::new(pair, client, persist)))
}

/// Asks GitLab about the credential: `GET /user`, then the token's own details.
pub async fn probe_connection(
    client: &GitLab,
    kind: TokenKind,
    warning_days: u32,
) -> ConnectionVerdict {
    let user = client.current_user().await;
    let token = match (&user, kind) {
        (Err(_), _) => None,
        (Ok(_), TokenKind::AccessToken) => {
            Some(client.access_token_self().await.map(TokenDetails::Access))
        }
        (Ok(_), TokenKind::Oauth) => Some(client.oauth_token_info().await.map(TokenDetails::Oauth)),
    };
    let mut verdict =
        probe::connection(&user, token.as_ref(), Utc::now().date_naive(), warning_days);
    if verdict.usable {
        // Once a sweep: which hook endpoints this GitLab has (docs/gitlab-contract.md §10.4, §10.5).
        verdict.version = match client.version().await {
            Ok(info) => {
                let parsed = GitLabVersion::parse(&info.version);
                if parsed.is_none() {
                    tracing::warn!(
                        version = info.version.as_str(),
                        "GitLab's version is not MAJOR.MINOR..."
                    );
                }
                parsed
            }
            Err(e) => {
                tracing::warn!(error = %e, "GitLab's version could not be read this sweep");
                None
            }
        };
    }
    verdict
}
