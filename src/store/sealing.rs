//! Sealing in place, once. When a master key is first configured, every
//! secret the store still holds in plaintext (written under
//! `custody.allow_plaintext`, or an OAuth pair stored without a master key)
//! is sealed, and the `custody_sealed` row records it, in one transaction:
//! a crash leaves either all of it or none. From then on `Custody` refuses
//! a plaintext secret as planted, and this never runs again, so it cannot
//! seal (and so launder) a row planted later.
//!
//! The row lives in the database it guards: someone who can write the
//! database can delete it, and the next start seals what they planted.
//! It guards against a plaintext row appearing in a store glwarden sealed,
//! not against a writer who also removes the record.

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::{BeginWrite, Store, StoreError};
use crate::custody::{Custody, OAuthToken, Owner, SecretKind};

/// How many values one sealing sealed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    pub deploy_keys: u64,
    pub hook_tokens: u64,
    /// Secrets of unfinished repairs in the journal.
    pub journal_secrets: u64,
    /// OAuth tokens (an access and a refresh token each pair).
    pub oauth_tokens: u64,
    /// Access tokens glwarden rotated a connection's token into.
    pub rotated_tokens: u64,
}

impl Sealed {
    pub fn total(&self) -> u64 {
        self.deploy_keys
            + self.hook_tokens
            + self.journal_secrets
            + self.oauth_tokens
            + self.rotated_tokens
    }
}

impl std::fmt::Display for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deploy keys, {} hook tokens, {} journal secrets, {} OAuth tokens, {} rotated tokens",
            self.deploy_keys,
            self.hook_tokens,
            self.journal_secrets,
            self.oauth_tokens,
            self.rotated_tokens
        )
    }
}

/// A stored value read for sealing, wiped from memory when dropped.
type Stored = Option<Zeroizing<Vec<u8>>>;

/// The sealed form of `stored` when it is plaintext.
fn resealed(
    custody: &Custody,
    owner: Owner<'_>,
    stored: &Stored,
) -> Result<Option<Vec<u8>>, StoreError> {
    match stored {
        Some(value) => Ok(custody.reseal(owner, value)?),
        None => Ok(None),
    }
}

/// The first byte of a plaintext value (custody.rs), bound rather than
/// written as a literal: SQLite reads `x'00'` as a blob, PostgreSQL as a bit string.
const PLAIN_MARK: &[u8] = &[0];

impl Store {
    /// When the store was sealed under a master key, if it was.
    pub async fn custody_sealed_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT sealed_at FROM custody_sealed WHERE id = 1"
        )
        .fetch_optional(pool)
        .await)?)
    }

    /// Seals every plaintext secret in place and records that the store is
    /// sealed, unless it was before; the counts when it sealed now. Without
    /// a master key nothing changes. Called at start by every command that
    /// opens the store with custody (the CLI and `Sweeper::new`).
    pub async fn seal_plaintext(&self, custody: &Custody) -> Result<Option<Sealed>, StoreError> {
        if !custody.encrypts() {
            return Ok(None);
        }
        // Every start after the first ends here, with no write lock taken.
        if self.custody_sealed_at().await?.is_some() {
            return Ok(None);
        }
        let counts = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Again under the write lock: another glwarden (the daemon, a CLI
            // command) may have sealed since the read above.
            let done: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT sealed_at FROM custody_sealed WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                return Ok(None);
            }
            let mut counts = Sealed::default();

            // Plaintext values start with a zero byte (custody.rs); removed
            // projects keep theirs, and are sealed too.
            // A project's id, private key and hook token.
            type Secrets = (i64, Option<Vec<u8>>, Option<Vec<u8>>);
            let projects: Vec<Secrets> = sqlx::query_as(
                "SELECT id, private_key, hook_token FROM projects
                 WHERE substr(private_key, 1, 1) = $1 OR substr(hook_token, 1, 1) = $1",
            )
            .bind(PLAIN_MARK)
            .fetch_all(&mut *tx)
            .await?;
            for (id, key, token) in projects {
                let (key, token): (Stored, Stored) =
                    (key.map(Zeroizing::new), token.map(Zeroizing::new));
                let columns = [
                    (
                        "private_key",
                        SecretKind::DeployKey,
                        &key,
                        &mut counts.deploy_keys,
                    ),
                    (
                        "hook_token",
                        SecretKind::HookToken,
                        &token,
                        &mut counts.hook_tokens,
                    ),
                ];
                for (column, kind, stored, count) in columns {
                    if let Some(sealed) = resealed(custody, Owner::Project(id, kind), stored)? {
                        sqlx::query(&format!("UPDATE projects SET {column} = $2 WHERE id = $1"))
                            .bind(id)
                            .bind(sealed)
                            .execute(&mut *tx)
                            .await?;
                        *count += 1;
                    }
                }
            }

            // An unfinished repair's secret is bound to its project and to the
            // kind repair.rs seals it as: the key of a `deploy_key` entry, the
            // token of a `webhook` one.
            let journal: Vec<(i64, i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT id, project_id, component, secret FROM repair_journal
                 WHERE substr(secret, 1, 1) = $1",
            )
            .bind(PLAIN_MARK)
            .fetch_all(&mut *tx)
            .await?;
            for (id, project, component, secret) in journal {
                let secret: Stored = Some(Zeroizing::new(secret));
                let kind = match component.as_str() {
                    "deploy_key" => SecretKind::DeployKey,
                    "webhook" => SecretKind::HookToken,
                    // Not an entry glwarden writes a secret for: left for
                    // `Custody` to refuse when the entry is resumed.
                    _ => continue,
                };
                if let Some(sealed) = resealed(custody, Owner::Project(project, kind), &secret)? {
                    sqlx::query("UPDATE repair_journal SET secret = $2 WHERE id = $1")
                        .bind(id)
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?;
                    counts.journal_secrets += 1;
                }
            }

            let pairs: Vec<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
                "SELECT connection, access_token, refresh_token FROM oauth_tokens
                 WHERE substr(access_token, 1, 1) = $1 OR substr(refresh_token, 1, 1) = $1",
            )
            .bind(PLAIN_MARK)
            .fetch_all(&mut *tx)
            .await?;
            for (connection, access, refresh) in pairs {
                for (which, column, stored) in [
                    (OAuthToken::Access, "access_token", access),
                    (OAuthToken::Refresh, "refresh_token", refresh),
                ] {
                    let stored: Stored = Some(Zeroizing::new(stored));
                    let owner = Owner::Connection(&connection, which);
                    if let Some(sealed) = resealed(custody, owner, &stored)? {
                        sqlx::query(&format!(
                            "UPDATE oauth_tokens SET {column} = $2 WHERE connection = $1"
                        ))
                        .bind(&connection)
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?;
                        counts.oauth_tokens += 1;
                    }
                }
            }

            let rotated: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT connection, token FROM rotated_tokens WHERE substr(token, 1, 1) = $1",
            )
            .bind(PLAIN_MARK)
            .fetch_all(&mut *tx)
            .await?;
            for (connection, token) in rotated {
                let stored: Stored = Some(Zeroizing::new(token));
                if let Some(sealed) = resealed(custody, Owner::RotatedToken(&connection), &stored)?
                {
                    sqlx::query("UPDATE rotated_tokens SET token = $2 WHERE connection = $1")
                        .bind(&connection)
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?;
                    counts.rotated_tokens += 1;
                }
            }

            let now = Utc::now();
            sqlx::query("INSERT INTO custody_sealed (id, sealed_at) VALUES (1, $1)")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            // An event only when something was sealed: a new store with a
            // master key from the start has nothing to tell. Counts only: which
            // rows were plaintext is no one's business.
            if counts.total() > 0 {
                sqlx::query(
                    "INSERT INTO events (at, project_id, component, action, cause, before, after, outcome)
                     VALUES ($1, NULL, 'custody', 'seal_plaintext', 'a master key is configured', '', $2, 'ok')",
                )
                .bind(now)
                .bind(counts.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(counts)
        })?;
        tracing::info!(
            deploy_keys = counts.deploy_keys,
            hook_tokens = counts.hook_tokens,
            journal_secrets = counts.journal_secrets,
            oauth_tokens = counts.oauth_tokens,
            rotated_tokens = counts.rotated_tokens,
            "custody: the store is sealed under the master key; {} plaintext values sealed",
            counts.total()
        );
        Ok(Some(counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::oauth::OAuthPair;
    use crate::store::Engine;
    use crate::store::tests::{ENGINE, empty_store, on_both_engines};
    use secrecy::{ExposeSecret, SecretString};

    const PRIVATE: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY----- plain";
    const TOKEN: &[u8] = b"hook-token-SECRET";
    const ACCESS: &str = "oat-SECRET-access";
    const REFRESH: &str = "ort-SECRET-refresh";

    fn with_key() -> Custody {
        let key = SecretString::from("00112233445566778899aabbccddeeff".repeat(2));
        Custody::new(Some(&key), false).unwrap()
    }

    fn plaintext() -> Custody {
        Custody::new(None, true).unwrap()
    }

    fn pair() -> OAuthPair {
        OAuthPair {
            access: SecretString::from(ACCESS.to_owned()),
            refresh: SecretString::from(REFRESH.to_owned()),
            expires_at: None,
        }
    }

    /// Project 42 on connection `main`; its store row id.
    async fn project(store: &Store) -> i64 {
        let conn = store
            .connection_id("main", "https://gitlab.example.com")
            .await
            .unwrap();
        store
            .upsert_project(&crate::store::tests::added_by_hand(conn))
            .await
            .unwrap()
    }

    async fn raw(store: &Store, query: &str) -> Vec<u8> {
        on_pool!(store, |pool| sqlx::query_scalar(query)
            .fetch_one(pool)
            .await)
        .unwrap()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    on_both_engines! {
        async fn plaintext_secrets_are_sealed_once_at_start_and_open_to_the_same_bytes() {
            let (_dir, store) = empty_store().await;
            let id = project(&store).await;
            // Written under custody.allow_plaintext, without a master key.
            let plain = plaintext();
            let key = plain.seal(id, SecretKind::DeployKey, PRIVATE).unwrap();
            store
                .set_deploy_key(id, Some(5), "ssh-ed25519 AAAA", "SHA256:x", Some(&key))
                .await
                .unwrap();
            let token = plain.seal(id, SecretKind::HookToken, TOKEN).unwrap();
            store.set_hook(id, 9, Some(&token)).await.unwrap();
            let data = serde_json::json!({});
            for (component, secret) in [
                (crate::health::Component::DeployKey, &key),
                (crate::health::Component::Webhook, &token),
            ] {
                store
                    .journal_begin(id, component, "repair", &data, Some(secret), "test")
                    .await
                    .unwrap();
            }
            store
                .save_oauth_pair("main", &pair(), "seed", &plain)
                .await
                .unwrap();

            // Without a master key nothing changes.
            assert_eq!(store.seal_plaintext(&plain).await.unwrap(), None);
            assert_eq!(store.custody_sealed_at().await.unwrap(), None);
            assert_eq!(
                raw(&store, "SELECT hook_token FROM projects").await,
                token,
                "left as it was"
            );

            let custody = with_key();
            let counts = store.seal_plaintext(&custody).await.unwrap();
            assert_eq!(
                counts,
                Some(Sealed {
                    deploy_keys: 1,
                    hook_tokens: 1,
                    journal_secrets: 2,
                    oauth_tokens: 2,
                    rotated_tokens: 0,
                })
            );
            assert!(store.custody_sealed_at().await.unwrap().is_some());

            // Sealed at rest, and they open to the same bytes.
            for (query, secret) in [
                ("SELECT private_key FROM projects", PRIVATE),
                ("SELECT hook_token FROM projects", TOKEN),
                ("SELECT access_token FROM oauth_tokens", ACCESS.as_bytes()),
                ("SELECT refresh_token FROM oauth_tokens", REFRESH.as_bytes()),
            ] {
                let stored = raw(&store, query).await;
                assert_eq!(stored[0], 1, "{query}: sealed format");
                assert!(!contains(&stored, secret), "{query}: no plaintext");
            }
            for (kind, secret) in [
                (SecretKind::DeployKey, PRIVATE),
                (SecretKind::HookToken, TOKEN),
            ] {
                let stored = store.project_secret(id, kind).await.unwrap().unwrap();
                assert_eq!(&*custody.open(id, kind, &stored).unwrap(), secret);
            }
            for entry in store.journal().await.unwrap() {
                let (kind, secret) = match entry.component.as_str() {
                    "deploy_key" => (SecretKind::DeployKey, PRIVATE),
                    _ => (SecretKind::HookToken, TOKEN),
                };
                let stored = entry.secret.unwrap();
                assert_eq!(stored[0], 1);
                assert_eq!(&*custody.open(id, kind, &stored).unwrap(), secret);
            }
            let (opened, seed) = store.oauth_pair("main", &custody).await.unwrap().unwrap();
            assert_eq!(opened.access.expose_secret(), ACCESS);
            assert_eq!(opened.refresh.expose_secret(), REFRESH);
            assert_eq!(seed, "seed");

            // Recorded, by counts only.
            let events = store.events(None, None, 10).await.unwrap();
            let event = events
                .iter()
                .find(|e| e.action == "seal_plaintext")
                .expect("an audit event");
            assert_eq!(
                event.after,
                "1 deploy keys, 1 hook tokens, 2 journal secrets, 2 OAuth tokens, 0 rotated tokens"
            );

            // Never again.
            assert_eq!(store.seal_plaintext(&custody).await.unwrap(), None);
        }

        async fn a_fresh_store_is_marked_sealed_at_its_first_start_with_a_master_key() {
            let (_dir, store) = empty_store().await;
            let custody = with_key();
            assert_eq!(
                store.seal_plaintext(&custody).await.unwrap(),
                Some(Sealed::default())
            );
            assert!(store.custody_sealed_at().await.unwrap().is_some());
            assert!(
                store.events(None, None, 10).await.unwrap().is_empty(),
                "nothing sealed, nothing to tell"
            );
        }

        async fn a_plaintext_value_planted_after_sealing_is_refused_and_never_sealed() {
            let (_dir, store) = empty_store().await;
            let id = project(&store).await;
            let custody = with_key();
            store.seal_plaintext(&custody).await.unwrap();

            let planted = plaintext()
                .seal(id, SecretKind::HookToken, b"attacker-token")
                .unwrap();
            store.set_hook(id, 9, Some(&planted)).await.unwrap();
            store
                .save_oauth_pair("main", &pair(), "seed", &plaintext())
                .await
                .unwrap();

            // A later start does not seal it...
            assert_eq!(store.seal_plaintext(&custody).await.unwrap(), None);
            assert_eq!(
                raw(&store, "SELECT hook_token FROM projects").await,
                planted
            );
            // ...and it is refused.
            let stored = store
                .project_secret(id, SecretKind::HookToken)
                .await
                .unwrap()
                .unwrap();
            let err = custody
                .open(id, SecretKind::HookToken, &stored)
                .unwrap_err()
                .to_string();
            assert!(err.contains("stored unencrypted"), "{err}");
            let err = store
                .oauth_pair("main", &custody)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("connection `main`"), "{err}");
            assert!(err.contains("stored unencrypted"), "{err}");
            assert!(!err.contains(ACCESS) && !err.contains("attacker-token"));
        }
    }

    #[tokio::test]
    async fn an_oauth_pair_saved_with_a_master_key_is_sealed_at_rest_and_round_trips() {
        let (_dir, store) = empty_store().await;
        let custody = with_key();
        store
            .save_oauth_pair("main", &pair(), "seed", &custody)
            .await
            .unwrap();
        let (kinds, row): (String, Vec<u8>) = sqlx::query_as(
            "SELECT typeof(access_token) || ',' || typeof(refresh_token),
                    access_token || refresh_token FROM oauth_tokens",
        )
        .fetch_one(store.sqlite())
        .await
        .unwrap();
        assert_eq!(kinds, "blob,blob");
        for secret in [ACCESS, REFRESH, "SECRET"] {
            assert!(!contains(&row, secret.as_bytes()), "{secret} at rest");
        }
        let (opened, _) = store.oauth_pair("main", &custody).await.unwrap().unwrap();
        assert_eq!(opened.access.expose_secret(), ACCESS);
        assert_eq!(opened.refresh.expose_secret(), REFRESH);
        assert_eq!(
            store.oauth_seed("main").await.unwrap().as_deref(),
            Some("seed")
        );
    }

    #[tokio::test]
    async fn a_sealed_pair_does_not_open_under_another_connection_or_swapped() {
        let (_dir, store) = empty_store().await;
        let custody = with_key();
        store
            .save_oauth_pair("main", &pair(), "seed", &custody)
            .await
            .unwrap();
        // Copied whole to another connection's row.
        sqlx::query(
            "INSERT INTO oauth_tokens (connection, access_token, refresh_token, expires_at, seed, updated_at)
             SELECT 'other', access_token, refresh_token, expires_at, seed, updated_at
             FROM oauth_tokens WHERE connection = 'main'",
        )
        .execute(store.sqlite())
        .await
        .unwrap();
        let err = store
            .oauth_pair("other", &custody)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection `other`"), "{err}");
        // Access and refresh token swapped in their own row.
        sqlx::query(
            "UPDATE oauth_tokens SET access_token = refresh_token, refresh_token = access_token
             WHERE connection = 'main'",
        )
        .execute(store.sqlite())
        .await
        .unwrap();
        let err = store
            .oauth_pair("main", &custody)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection `main`"), "{err}");
        assert!(!err.contains(ACCESS) && !err.contains(REFRESH));
    }

    #[tokio::test]
    async fn pairs_stored_before_custody_are_read_and_then_sealed() {
        // A database as glwarden left it before migration 0008: the pair
        // in two TEXT columns.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("glwarden.db");
        let all = sqlx::migrate!("./migrations");
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(all.migrations[..7].to_vec()),
            ..all
        };
        assert_eq!(before.migrations.last().unwrap().version, 7);
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        before.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO oauth_tokens (connection, access_token, refresh_token, expires_at, seed, updated_at)
             VALUES ('main', $1, $2, NULL, 'seed', '2025-01-01T00:00:00Z')",
        )
        .bind(ACCESS)
        .bind(REFRESH)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open(&path).await.unwrap();
        let kinds: String = sqlx::query_scalar("SELECT typeof(access_token) FROM oauth_tokens")
            .fetch_one(store.sqlite())
            .await
            .unwrap();
        assert_eq!(kinds, "blob");
        // Without a master key it reads as before, whatever allow_plaintext says.
        let keyless = Custody::new(None, false).unwrap();
        let (opened, _) = store.oauth_pair("main", &keyless).await.unwrap().unwrap();
        assert_eq!(opened.access.expose_secret(), ACCESS);
        assert_eq!(opened.refresh.expose_secret(), REFRESH);
        // With one, it is sealed at start.
        let custody = with_key();
        let counts = store.seal_plaintext(&custody).await.unwrap().unwrap();
        assert_eq!(counts.oauth_tokens, 2);
        let (opened, _) = store.oauth_pair("main", &custody).await.unwrap().unwrap();
        assert_eq!(opened.refresh.expose_secret(), REFRESH);
    }
}
