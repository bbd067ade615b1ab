//! The `connection_tokens` table: each connection's token as GitLab last
//! described it (kind, id, scopes, expiry), for `status`, the status page
//! and `glwarden_connection_token_expiry_timestamp_seconds`; and the
//! `rotated_tokens` table: the token a rotation gave, sealed, and the
//! rotation under way (migrations/0012_connection_tokens.sql).

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::{Store, StoreError};
use crate::config::TokenKind;
use crate::custody::{Custody, Owner};
use crate::probe::TokenFacts;

/// A connection's row of `rotated_tokens`, its token opened.
#[derive(sqlx::FromRow)]
pub struct Rotation {
    /// The configured token's digest this descends from.
    pub seed: String,
    /// The token as stored (custody format), opened into `token`.
    #[sqlx(rename = "token")]
    sealed: Option<Vec<u8>>,
    /// The token the last rotation gave, if its answer was stored.
    #[sqlx(skip)]
    pub token: Option<SecretString>,
    pub token_id: Option<i64>,
    pub expires_at: Option<NaiveDate>,
    pub rotated_at: Option<DateTime<Utc>>,
    /// A rotation asked of GitLab whose answer was not stored (yet).
    pub begun_at: Option<DateTime<Utc>>,
    /// GitLab's id of the token that rotation was of.
    pub begun_from: Option<i64>,
    /// Why the last rotation failed; empty when it did not.
    pub failure: String,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .field("begun_at", &self.begun_at)
            .field("failure", &self.failure)
            .finish()
    }
}

impl Store {
    /// Records what GitLab said of `connection`'s token. A deposed leader
    /// records nothing, as for observations (`Store::record`).
    pub async fn record_token(
        &self,
        connection: &str,
        facts: &TokenFacts,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !self.leads() {
            return Ok(());
        }
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO connection_tokens (connection, kind, token_id, scopes, expires_at, read_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (connection) DO UPDATE SET kind = excluded.kind,
                 token_id = excluded.token_id, scopes = excluded.scopes,
                 expires_at = excluded.expires_at, read_at = excluded.read_at",
        )
        .bind(connection)
        .bind(facts.kind)
        .bind(facts.id.map(|id| id as i64))
        .bind(facts.scopes.join(" "))
        .bind(facts.expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Every connection's token as last described, by connection name.
    pub async fn tokens(&self) -> Result<Vec<(String, TokenFacts)>, StoreError> {
        type Row = (String, TokenKind, Option<i64>, String, Option<NaiveDate>);
        let rows: Vec<Row> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT connection, kind, token_id, scopes, expires_at FROM connection_tokens
             ORDER BY connection"
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(name, kind, id, scopes, expires_at)| {
                (
                    name,
                    TokenFacts {
                        kind,
                        id: id.map(|id| id as u64),
                        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                        expires_at,
                    },
                )
            })
            .collect())
    }
}

impl Store {
    /// A connection's rotation row, its token opened, when it descends
    /// from the configured token whose digest is `seed`: a row of another
    /// is never opened (a lost master key is then mended by configuring a
    /// new token, as for OAuth pairs).
    pub async fn rotation(
        &self,
        connection: &str,
        custody: &Custody,
        seed: &str,
    ) -> Result<Option<Rotation>, StoreError> {
        let row: Option<Rotation> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT seed, token, token_id, expires_at, rotated_at, begun_at, begun_from, failure
               FROM rotated_tokens WHERE connection = $1"
        )
        .bind(connection)
        .fetch_optional(pool)
        .await
        })?;
        let Some(mut rotation) = row.filter(|r| r.seed == seed) else {
            return Ok(None);
        };
        if let Some(sealed) = rotation.sealed.take().map(zeroize::Zeroizing::new) {
            rotation.token = Some(custody.open_text(Owner::RotatedToken(connection), &sealed)?);
        }
        Ok(Some(rotation))
    }

    /// Claims the rotation of token `from` of `connection` (descending
    /// from `seed`) before GitLab is asked; `false` when another glwarden
    /// process holds it: a rotation begun after `stale_before` and not
    /// ended, or a row whose token is already another (someone rotated
    /// `from` away). Two processes rotating one token would be the worst
    /// outcome there is: GitLab revokes the new token too when a rotated
    /// one is rotated again (docs/gitlab-contract.md §13). The claim is one
    /// statement, so the database decides between processes. A row of
    /// another seed (a person configured a new token since) is replaced.
    pub async fn rotation_begun(
        &self,
        connection: &str,
        seed: &str,
        from: i64,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let claimed = on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO rotated_tokens (connection, seed, begun_at, begun_from)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (connection) DO UPDATE SET
                 token = CASE WHEN rotated_tokens.seed = excluded.seed THEN rotated_tokens.token END,
                 token_id = CASE WHEN rotated_tokens.seed = excluded.seed THEN rotated_tokens.token_id END,
                 expires_at = CASE WHEN rotated_tokens.seed = excluded.seed THEN rotated_tokens.expires_at END,
                 seed = excluded.seed, begun_at = excluded.begun_at, begun_from = excluded.begun_from
             WHERE rotated_tokens.seed <> excluded.seed
                OR ((rotated_tokens.begun_at IS NULL OR rotated_tokens.begun_at < $5)
                    AND (rotated_tokens.token_id IS NULL OR rotated_tokens.token_id = excluded.begun_from))"
        )
        .bind(connection)
        .bind(seed)
        .bind(now)
        .bind(from)
        .bind(stale_before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(claimed == 1)
    }

    /// Stores the token a rotation gave, sealed, and ends the rotation: the
    /// first thing done with GitLab's answer. An upsert: the row is there
    /// whatever happened to it meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotation_answered(
        &self,
        connection: &str,
        seed: &str,
        token: &SecretString,
        token_id: i64,
        expires_at: Option<NaiveDate>,
        custody: &Custody,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sealed = zeroize::Zeroizing::new(custody.seal_for(
            Owner::RotatedToken(connection),
            token.expose_secret().as_bytes(),
        )?);
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO rotated_tokens (connection, seed, token, token_id, expires_at, rotated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (connection) DO UPDATE SET seed = excluded.seed, token = excluded.token,
                 token_id = excluded.token_id, expires_at = excluded.expires_at,
                 rotated_at = excluded.rotated_at, begun_at = NULL, begun_from = NULL, failure = ''"
        )
        .bind(connection)
        .bind(seed)
        .bind(sealed.as_slice())
        .bind(token_id)
        .bind(expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Records why a rotation failed. `answer_lost`: GitLab may have
    /// rotated, so the rotation stays begun (and is never asked again)
    /// until a person configures a new token.
    pub async fn rotation_failed(
        &self,
        connection: &str,
        failure: &str,
        answer_lost: bool,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE rotated_tokens SET failure = $2,
                    begun_at = CASE WHEN $3 THEN begun_at END,
                    begun_from = CASE WHEN $3 THEN begun_from END
              WHERE connection = $1"
        )
        .bind(connection)
        .bind(failure)
        .bind(answer_lost)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// The configured token's digest a connection's rotation row descends
    /// from, if it has one.
    pub async fn rotation_seed(&self, connection: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT seed FROM rotated_tokens WHERE connection = $1"
        )
        .bind(connection)
        .fetch_optional(pool)
        .await)?)
    }

    /// Forgets a connection's rotation row: a person configured a new
    /// token, and what was rotated (or failed to be) before is moot.
    pub async fn forget_rotation(&self, connection: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM rotated_tokens WHERE connection = $1"
        )
        .bind(connection)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Connections whose last rotation failed, with why.
    pub async fn rotation_failures(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as(
            "SELECT connection, failure FROM rotated_tokens WHERE failure <> '' ORDER BY connection"
        )
        .fetch_all(pool)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Engine;
    use crate::store::tests::{ENGINE, empty_store, on_both_engines};

    #[tokio::test]
    async fn a_rotation_is_claimed_by_one_process_at_a_time() {
        // SQLite, where a daemon and a command share the file and no lease.
        let (_kept, store) = empty_store().await;
        let custody = crate::custody::Custody::new(None, true).unwrap();
        let t = |minutes: i64| Utc::now() + chrono::TimeDelta::minutes(minutes);
        // A claim of token `from` at minute `at`, claims begun before minute `stale` being stale.
        let claim = async |from: i64, at: i64, stale: i64| {
            store
                .rotation_begun("main", "seed", from, t(at), t(stale))
                .await
                .unwrap()
        };
        // The first claim wins; a second one while it is under way does not.
        assert!(claim(7, 0, -5).await);
        assert!(!claim(7, 0, -5).await);
        // Once the first stored its answer (token 8), token 7 is not rotated again.
        let new = SecretString::from("glpat-new-SECRET");
        store
            .rotation_answered("main", "seed", &new, 8, None, &custody, t(0))
            .await
            .unwrap();
        assert!(!claim(7, 1, -4).await);
        // Token 8, due in turn, is.
        assert!(claim(8, 1, -4).await);
        // A claim nobody ended (a crash) is stale after a while, not for ever.
        assert!(!claim(8, 2, -3).await);
        assert!(claim(8, 10, 5).await);
        // A new configured token (another seed) replaces the row at once.
        assert!(
            store
                .rotation_begun("main", "other", 20, t(10), t(5))
                .await
                .unwrap()
        );
        let row = store
            .rotation("main", &custody, "other")
            .await
            .unwrap()
            .unwrap();
        assert!(row.token.is_none() && row.token_id.is_none());
    }

    on_both_engines! {
        async fn a_tokens_facts_are_kept_per_connection_and_replaced() {
            let (_kept, store) = empty_store().await;
            let now = Utc::now();
            let first = TokenFacts {
                kind: TokenKind::AccessToken,
                id: Some(7),
                scopes: vec!["api".into(), "self_rotate".into()],
                expires_at: NaiveDate::from_ymd_opt(2027, 1, 31),
            };
            let oauth = TokenFacts { kind: TokenKind::Oauth, id: None, scopes: vec!["api".into()], expires_at: None };
            store.record_token("main", &first, now).await.unwrap();
            store.record_token("other", &oauth, now).await.unwrap();
            assert_eq!(store.tokens().await.unwrap(), vec![("main".into(), first.clone()), ("other".into(), oauth.clone())]);
            let rotated = TokenFacts { id: Some(8), expires_at: NaiveDate::from_ymd_opt(2027, 3, 2), ..first };
            store.record_token("main", &rotated, now).await.unwrap();
            assert_eq!(store.tokens().await.unwrap()[0], ("main".into(), rotated));
        }
    }
}
