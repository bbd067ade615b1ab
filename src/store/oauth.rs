//! The `oauth_tokens` table: a connection's rotated OAuth pair, sealed,
//! with the seed (the configured refresh token's digest) it descends from.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::custody::{Custody, CustodyError, OAuthToken, Owner};
use crate::gitlab::oauth::OAuthPair;
use secrecy::{ExposeSecret, SecretString};

impl Store {
    /// The seed a connection's stored OAuth pair descends from, without
    /// opening the pair: a pair the configuration has replaced is never
    /// opened, so a re-authorization also recovers from one that cannot be.
    pub async fn oauth_seed(&self, connection: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT seed FROM oauth_tokens WHERE connection = $1"
        )
        .bind(connection)
        .fetch_optional(pool)
        .await)?)
    }

    /// The stored OAuth pair of a connection, opened, and the seed it
    /// descends from.
    pub async fn oauth_pair(
        &self,
        connection: &str,
        custody: &Custody,
    ) -> Result<Option<(OAuthPair, String)>, StoreError> {
        // The stored tokens (custody format), their expiry and their seed.
        type Row = (Vec<u8>, Vec<u8>, Option<DateTime<Utc>>, String);
        let row: Option<Row> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT access_token, refresh_token, expires_at, seed FROM oauth_tokens WHERE connection = $1",
        )
        .bind(connection)
        .fetch_optional(pool)
        .await
        })?;
        let Some((access, refresh, expires_at, seed)) = row else {
            return Ok(None);
        };
        let (access, refresh) = (
            zeroize::Zeroizing::new(access),
            zeroize::Zeroizing::new(refresh),
        );
        let token = |which: OAuthToken, stored: &[u8]| -> Result<SecretString, CustodyError> {
            custody.open_text(Owner::Connection(connection, which), stored)
        };
        Ok(Some((
            OAuthPair {
                access: token(OAuthToken::Access, &access)?,
                refresh: token(OAuthToken::Refresh, &refresh)?,
                expires_at,
            },
            seed,
        )))
    }

    /// Replaces a connection's OAuth pair in one statement (atomic), each
    /// token sealed under the master key when one is configured.
    pub async fn save_oauth_pair(
        &self,
        connection: &str,
        pair: &OAuthPair,
        seed: &str,
        custody: &Custody,
    ) -> Result<(), StoreError> {
        let access = custody.seal_for(
            Owner::Connection(connection, OAuthToken::Access),
            pair.access.expose_secret().as_bytes(),
        )?;
        let refresh = custody.seal_for(
            Owner::Connection(connection, OAuthToken::Refresh),
            pair.refresh.expose_secret().as_bytes(),
        )?;
        let (access, refresh) = (
            zeroize::Zeroizing::new(access),
            zeroize::Zeroizing::new(refresh),
        );
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO oauth_tokens (connection, access_token, refresh_token, expires_at, seed, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (connection) DO UPDATE SET access_token = excluded.access_token,
                 refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
                 seed = excluded.seed, updated_at = excluded.updated_at",
        )
        .bind(connection)
        .bind(access.as_slice())
        .bind(refresh.as_slice())
        .bind(pair.expires_at)
        .bind(seed)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }
}
