//! The store (sqlx) on SQLite, embedded, or PostgreSQL, one file per table:
//! [`connections`], the [`projects`] inventory, current component
//! [`health`] (with its [`quiet`] checks), the history of [`transitions`],
//! events and the repair journal ([`repairs`]), [`oauth`] pairs and the
//! sealing of secrets ([`sealing`]).
//!
//! One store API over both engines: a statement is written once (`$N`
//! placeholders, which sqlx's SQLite driver also reads) and run by
//! [`on_pool!`] on whichever pool holds the store, its code compiled once
//! per engine; where the engines' SQL differs, [`Engine::pick`] chooses the
//! text.
//!
//! SQLite: the file is created 0600 before SQLite opens it (SQLite gives its
//! WAL and shared-memory files the same mode), runs in WAL mode with a busy
//! timeout, and its schema comes from the embedded migrations in
//! `migrations/`. PostgreSQL: its schema from `migrations/postgres/`.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Runs the same statement code on the store's pool, whichever engine it
/// is: `on_pool!(store, |pool| sqlx::query(..).execute(pool).await.map(|done| done.rows_affected()))`. The
/// body is compiled once per engine.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
    ($store:expr, |$pool:ident, $engine:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite($pool) => {
                let $engine = $crate::store::Engine::Sqlite;
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                let $engine = $crate::store::Engine::Postgres;
                $body
            }
        }
    };
}

mod attention;
mod connections;
mod copy;
mod health;
mod lease;
mod oauth;
mod projects;
mod quiet;
mod repairs;
mod sealing;
mod summary;
mod tokens;
mod transitions;

pub use attention::{AttentionFilter, AttentionPage, AttentionRow, PAGE_SIZE};
pub use copy::{Copied, copy_sqlite_to};
pub use health::HealthRow;
pub use lease::{CommandLease, Leader, Lease};
pub use projects::{CheckTarget, NewProject, ProjectRow, Source};
pub use repairs::{EventRow, JournalRow, JournalStep, MANUAL_CAUSE, NewEvent, WEB_CAUSE};
pub use sealing::Sealed;
pub use summary::{HealthSummary, Problem};
pub use tokens::Rotation;
pub use transitions::{Transition, TransitionRow};

use crate::custody::CustodyError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("database {path}: migrations failed: {reason}")]
    Migrate { path: String, reason: String },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// The stored ids of a connection belong to the instance at `stored`;
    /// applying them to another GitLab would touch other people's keys and
    /// hooks (project 42 there is another project).
    #[error(
        "connection `{name}`: the store's project, key and hook ids belong to {stored}, but its url is now {configured}. \
         If {configured} is the same GitLab instance under a new address, run `glwarden connection move {name} --to {configured}`; \
         if it is another instance, give it a new connection name (the old name's history stays in the store)"
    )]
    ConnectionMoved {
        name: String,
        stored: String,
        configured: String,
    },
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// A command that writes as the leader found the lease held.
    #[error(
        "a glwarden daemon leads this database ({leader}): it sweeps and repairs on its schedule; this command would be a second writer. Read with `glwarden status`, or stop the daemons first"
    )]
    Led { leader: String },
    #[error("store copy: {reason}")]
    Copy { reason: String },
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// A leader's store ([`Store::fenced`]): until when it may write to GitLab.
    gate: Option<crate::gitlab::WriteGate>,
}

/// The engine's pool.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which engine a statement runs on, where their SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub(crate) fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Engine::Sqlite => sqlite,
            Engine::Postgres => postgres,
        }
    }
}

/// A write transaction that has the store to itself until it ends: on
/// SQLite `BEGIN IMMEDIATE` (a deferred one that reads first and then
/// writes fails at once, SQLITE_BUSY_SNAPSHOT, when another connection
/// wrote meanwhile, whatever the busy timeout); on PostgreSQL one
/// store-wide advisory lock, the same serialization (`record` reads the
/// last transition id before it writes and the ones after it).
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// The advisory lock key of store-wide writes (any constant unique to glwarden).
const WRITE_LOCK: i64 = 0x676c_7761_7264;

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl Store {
    /// Opens (creating it 0600 if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        create_private_file(path).map_err(|e| open_err(e.to_string()))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        Ok(Store {
            db: Db::Sqlite(pool),
            gate: None,
        })
    }

    /// Opens the store the configuration names.
    pub async fn connect(target: &crate::config::StoreTarget) -> Result<Store, StoreError> {
        match target {
            crate::config::StoreTarget::Sqlite(path) => Store::open(path).await,
            crate::config::StoreTarget::Postgres { options, shown } => {
                Store::open_postgres((**options).clone(), shown).await
            }
        }
    }

    /// Connects to PostgreSQL with `options` and migrates its schema.
    /// `shown` names the database in errors (never with a password).
    pub async fn open_postgres(
        options: sqlx::postgres::PgConnectOptions,
        shown: &str,
    ) -> Result<Store, StoreError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            // sqlx pings every connection it hands out by default: one more
            // round trip per statement.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open {
                path: shown.to_owned(),
                reason: e.to_string(),
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate {
                path: shown.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Store {
            db: Db::Postgres(pool),
            gate: None,
        })
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Closes the pool (on SQLite, checkpointing the WAL).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// The SQLite pool, for tests of SQLite's own behaviour (query plans, file modes).
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &SqlitePool {
        match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(_) => panic!("a SQLite store was expected"),
        }
    }
}

/// Ids as one statement parameter, a JSON array that SQL reads with
/// `json_each`: one parameter however many ids, and one statement text.
fn id_list(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("integers serialize")
}

/// Rows one multi-row statement writes (health upserts, quiet-check digests
/// and counts): at most five parameters each, well under SQLite's limit of
/// 32,766 a statement.
const ROWS_PER_STATEMENT: usize = 500;

/// Creates `path` with mode 0600 if it does not exist, so that SQLite never
/// creates it with the process umask (its folders 0700); an existing file is
/// tightened to 0600 through its own descriptor. A symbolic link is refused:
/// tightening or writing through it would act on a file someone else chose.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is a symbolic link; glwarden does not follow one to its database",
                ));
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            if file.metadata()?.permissions().mode() & 0o077 != 0 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::projects::{ACTIVE_PAGE, INVENTORY_PAGE};
    use super::*;
    use crate::health::{Component, Finding, Observation, State};
    use chrono::{DateTime, Utc};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Project 42, `acme/app`, as `glwarden project add` puts it in.
    pub(super) fn added_by_hand(connection_id: i64) -> NewProject<'static> {
        NewProject {
            connection_id,
            gitlab_id: 42,
            path: "acme/app",
            source: Source::Cli,
            config_ref: None,
            webhook_url: None,
            public_key: None,
            fingerprint: None,
            from_config: false,
        }
    }

    /// What keeps a test's store alive: its SQLite directory, or the
    /// PostgreSQL cluster its database is in.
    #[allow(dead_code)]
    pub(super) enum Kept {
        Dir(tempfile::TempDir),
        Cluster(std::sync::Arc<pg_fixture::Cluster>),
    }

    tokio::task_local! {
        /// The engine the running test's stores are on (SQLite outside `on_both_engines!`).
        pub(super) static ENGINE: Engine;
    }

    /// Each test body run once per engine, as `NAME::sqlite` and
    /// `NAME::postgres`: one store suite for both.
    macro_rules! on_both_engines {
        ($(async fn $name:ident() $body:block)*) => {$(
            mod $name {
                use super::*;

                async fn body() $body

                #[tokio::test]
                async fn sqlite() {
                    ENGINE.scope(Engine::Sqlite, body()).await
                }

                #[tokio::test]
                async fn postgres() {
                    ENGINE.scope(Engine::Postgres, body()).await
                }
            }
        )*};
    }
    pub(super) use on_both_engines;

    /// A new store of its own on the test's engine: a SQLite file in a
    /// directory of its own, or a new database in the test cluster, written
    /// through as its leader would (the lease taken, its token on every
    /// connection).
    pub(super) async fn empty_store() -> (Kept, Store) {
        let (kept, store) = unled_store().await;
        let lease = store
            .try_lead("test", std::time::Duration::from_secs(3600))
            .await
            .unwrap()
            .expect("a new store's lease is free");
        let fenced = store.fenced(&lease).await.unwrap();
        (kept, fenced)
    }

    /// [`empty_store`] without taking the lease (the lease's own tests).
    pub(super) async fn unled_store() -> (Kept, Store) {
        match ENGINE.try_with(|engine| *engine).unwrap_or(Engine::Sqlite) {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(&dir.path().join("glwarden.db")).await.unwrap();
                (Kept::Dir(dir), store)
            }
            Engine::Postgres => {
                let (cluster, database) = tokio::task::spawn_blocking(pg_fixture::database)
                    .await
                    .unwrap();
                let options: sqlx::postgres::PgConnectOptions =
                    cluster.url(&database).parse().unwrap();
                let store = Store::open_postgres(options.password(cluster.password()), &database)
                    .await
                    .unwrap();
                (Kept::Cluster(cluster), store)
            }
        }
    }

    /// The plan SQLite chose for `query`, one step a line.
    pub(super) async fn plan(store: &Store, query: &str) -> String {
        let steps: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(store.sqlite())
                .await
                .unwrap();
        steps.into_iter().map(|s| s.3 + "\n").collect()
    }

    /// A store with one connection and one project, for folding observations.
    async fn one_project() -> (Kept, Store, i64) {
        let (dir, store) = empty_store().await;
        let conn = store
            .connection_id("main", "https://gitlab.example.com")
            .await
            .unwrap();
        let id = store.upsert_project(&added_by_hand(conn)).await.unwrap();
        (dir, store, id)
    }

    /// Records one observation; returns the row after it and the transitions written.
    async fn observe(
        store: &Store,
        component: Component,
        id: i64,
        observation: Observation,
        at: &str,
    ) -> (HealthRow, Vec<Transition>) {
        let written = store
            .record(&[(component, id, observation)], t(at))
            .await
            .unwrap();
        let row = store.health(component, id).await.unwrap().unwrap();
        (row, written.into_iter().map(|(_, _, tr)| tr).collect())
    }

    on_both_engines! {
        async fn findings_go_with_their_state_or_their_pending_condition() {
            let (_dir, store, id) = one_project().await;
            let (hook, repo) = (Component::Webhook, Component::Repository);
            let duplicates = || {
                Observation::definite(State::Healthy, "hook 3; duplicate hooks to the same URL: 4")
                    .with_finding(Finding::DuplicateHooks)
            };
            let (h, _) = observe(&store, hook, id, duplicates(), "2026-01-01T00:00:00Z").await;
            assert_eq!(
                (h.finding, h.pending_finding),
                (Some(Finding::DuplicateHooks), None)
            );
            // An outage keeps the last definite finding, as it keeps the detail.
            let outage = Observation::unknown("HTTP 502");
            let (h, _) = observe(&store, hook, id, outage, "2026-01-01T00:05:00Z").await;
            assert_eq!(
                (h.finding, h.pending),
                (Some(Finding::DuplicateHooks), Some(State::Unknown))
            );
            // A definite answer without duplicates clears it.
            let clean = Observation::definite(State::Healthy, "hook 3");
            let (h, _) = observe(&store, hook, id, clean, "2026-01-01T00:10:00Z").await;
            assert_eq!((h.finding, h.pending), (None, None));
            assert!(store.repair_candidates().await.unwrap().is_empty());

            // A first 404 is a pending condition with its finding; the next
            // definite answer clears both.
            let ok = || Observation::definite(State::Ok, "a/b");
            observe(&store, repo, id, ok(), "2026-01-01T00:00:00Z").await;
            let once = Observation::unknown("GitLab answers 404 for the project")
                .with_finding(Finding::NotFoundOnce);
            let (h, _) = observe(&store, repo, id, once, "2026-01-01T00:05:00Z").await;
            assert_eq!(
                (h.state, h.pending, h.pending_finding, h.finding),
                (
                    Some(State::Ok),
                    Some(State::Unknown),
                    Some(Finding::NotFoundOnce),
                    None
                )
            );
            let (h, _) = observe(&store, repo, id, ok(), "2026-01-01T00:10:00Z").await;
            assert_eq!((h.pending, h.pending_finding), (None, None));
        }

        async fn a_finding_makes_a_healthy_component_a_repair_candidate() {
            let (_dir, store, id) = one_project().await;
            let batch = |hook: Observation| {
                vec![
                    (
                        Component::Repository,
                        id,
                        Observation::definite(State::Ok, "a/b"),
                    ),
                    (
                        Component::DeployKey,
                        id,
                        Observation::definite(State::Healthy, "key 1"),
                    ),
                    (Component::Webhook, id, hook),
                ]
            };
            let duplicates = Observation::definite(State::Healthy, "hook 3; duplicate hooks")
                .with_finding(Finding::DuplicateHooks);
            store
                .record(&batch(duplicates.clone()), t("2026-01-01T00:00:00Z"))
                .await
                .unwrap();
            // The same answers again: a quiet check, the finding still read.
            store
                .record(&batch(duplicates), t("2026-01-01T00:05:00Z"))
                .await
                .unwrap();
            let candidates = store.repair_candidates().await.unwrap();
            assert_eq!(candidates.len(), 1, "{candidates:?}");
            assert_eq!(
                (
                    candidates[0].component,
                    candidates[0].finding,
                    candidates[0].consecutive
                ),
                (Component::Webhook, Some(Finding::DuplicateHooks), 2)
            );
        }

        async fn definite_states_count_and_transition() {
            let (_dir, store, id) = one_project().await;
            let key = Component::DeployKey;
            let healthy = || Observation::definite(State::Healthy, "key 1");
            let (h1, tr) = observe(&store, key, id, healthy(), "2026-01-01T00:00:00Z").await;
            assert_eq!(tr.len(), 1);
            assert_eq!((tr[0].from, tr[0].to), (None, State::Healthy));
            assert_eq!(h1.consecutive, 1);
            let (h2, tr) = observe(&store, key, id, healthy(), "2026-01-01T00:05:00Z").await;
            assert!(tr.is_empty());
            assert_eq!(h2.consecutive, 2);
            assert_eq!(h2.since, h1.since);
            assert_eq!(h2.last_checked, Some(t("2026-01-01T00:05:00Z")));
            let missing = Observation::definite(State::Missing, "gone");
            let (h3, tr) = observe(&store, key, id, missing, "2026-01-01T00:10:00Z").await;
            assert_eq!(
                tr,
                vec![Transition {
                    from: Some(State::Healthy),
                    to: State::Missing,
                    detail: "gone".into()
                }]
            );
            assert_eq!(h3.consecutive, 1);
            assert_eq!(h3.since, Some(t("2026-01-01T00:10:00Z")));
            assert_eq!(h3.detail, "gone");
            let history = store.transitions(Some(id), 10).await.unwrap();
            assert_eq!(history.len(), 2, "one row per change, none for the repeat");
            assert_eq!(history[0].at, t("2026-01-01T00:10:00Z"));
        }

        async fn unknown_keeps_the_last_known_state() {
            let (_dir, store, id) = one_project().await;
            let hook = Component::Webhook;
            let healthy = || Observation::definite(State::Healthy, "hook 3");
            let unknown = || Observation::unknown("HTTP 502");
            // Undecided before anything is known: pending, no state, no history.
            let (h0, tr) = observe(&store, hook, id, unknown(), "2026-01-01T00:00:00Z").await;
            assert!(tr.is_empty());
            assert_eq!((h0.state.map(State::as_str), h0.consecutive), (None, 0));
            assert_eq!(h0.pending.map(State::as_str), Some("unknown"));
            let (h1, _) = observe(&store, hook, id, healthy(), "2026-01-01T00:01:00Z").await;
            assert_eq!(
                (h1.state.map(State::as_str), h1.pending.map(State::as_str)),
                (Some("healthy"), None)
            );
            let (h2, tr) = observe(&store, hook, id, unknown(), "2026-01-01T00:05:00Z").await;
            assert!(tr.is_empty(), "a transient failure is not a transition");
            assert_eq!(h2.state.map(State::as_str), Some("healthy"));
            assert_eq!((h2.detail.as_str(), h2.consecutive), ("hook 3", 1));
            assert_eq!(h2.shown_state(), State::Unknown);
            assert!(h2.shown_detail().contains("last known: healthy"));
            assert_eq!(h2.pending_since, Some(t("2026-01-01T00:05:00Z")));
            // Still failing: the pending condition keeps its start.
            let (h3, _) = observe(&store, hook, id, unknown(), "2026-01-01T00:06:00Z").await;
            assert_eq!(h3.pending_since, Some(t("2026-01-01T00:05:00Z")));
            assert_eq!(h3.last_checked, Some(t("2026-01-01T00:06:00Z")));
            // A different undecided condition starts over.
            let blocked = Observation::Blocked {
                cause: "connection is unauthorized".into(),
            };
            let (h4, _) = observe(&store, hook, id, blocked, "2026-01-01T00:07:00Z").await;
            assert_eq!(h4.pending.map(State::as_str), Some("blocked"));
            assert_eq!(h4.pending_since, Some(t("2026-01-01T00:07:00Z")));
            // Recovery clears the pending condition and keeps counting the same state.
            let (h5, tr) = observe(&store, hook, id, healthy(), "2026-01-01T00:10:00Z").await;
            assert!(tr.is_empty());
            assert_eq!(
                (&h5.pending, &h5.pending_detail, h5.pending_since),
                (&None, &None, None)
            );
            assert_eq!(h5.consecutive, 2);
            assert_eq!(h5.since, h1.since);
            assert_eq!(h5.shown_state(), State::Healthy);
        }

        async fn one_batch_folds_repeated_components_in_order() {
            let (_dir, store, id) = one_project().await;
            let repo = Component::Repository;
            let batch = [
                (repo, id, Observation::definite(State::Ok, "")),
                (repo, id, Observation::definite(State::Ok, "")),
                (repo, id, Observation::definite(State::AccessLost, "403")),
            ];
            let written = store
                .record(&batch, t("2026-01-01T00:00:00Z"))
                .await
                .unwrap();
            let moves: Vec<_> = written.iter().map(|(_, _, tr)| (tr.from, tr.to)).collect();
            assert_eq!(
                moves,
                vec![(None, State::Ok), (Some(State::Ok), State::AccessLost)]
            );
            let row = store.health(repo, id).await.unwrap().unwrap();
            assert_eq!((row.state, row.consecutive), (Some(State::AccessLost), 1));
        }

        async fn the_inventory_streams_page_by_page_in_listing_order() {
            use futures::StreamExt;
            let (_dir, store) = empty_store().await;
            let a = store
                .connection_id("a", "https://a.example.com")
                .await
                .unwrap();
            let b = store
                .connection_id("b", "https://b.example.com")
                .await
                .unwrap();
            // More than two pages, over two connections, inserted out of order.
            let n = 2 * INVENTORY_PAGE as u64 + 300;
            let paths: Vec<String> = (0..n).map(|i| format!("g/p{i}")).collect();
            let rows: Vec<NewProject> = (0..n)
                .rev()
                .map(|i| NewProject {
                    connection_id: if i % 3 == 0 { b } else { a },
                    gitlab_id: 1000 + i,
                    path: &paths[i as usize],
                    ..added_by_hand(a)
                })
                .collect();
            let ids = store.upsert_projects(&rows).await.unwrap();
            store.remove_project(ids[0]).await.unwrap();

            let mut streamed: Vec<(i64, i64)> = Vec::new();
            for connection in [a, b] {
                let of_one: Vec<(i64, i64)> = store
                    .stream_active_projects(connection)
                    .map(|p| p.map(|p| (p.connection_id, p.gitlab_id)).unwrap())
                    .collect()
                    .await;
                assert!(of_one.iter().all(|(c, _)| *c == connection));
                streamed.extend(of_one);
            }
            let mut expected: Vec<(i64, i64)> = rows[1..]
                .iter()
                .map(|p| (p.connection_id, p.gitlab_id as i64))
                .collect();
            expected.sort();
            assert_eq!(streamed.len(), n as usize - 1, "each active project once");
            assert_eq!(streamed, expected);

            // A sweep that stops early drops the stream and its reader.
            let first = store
                .stream_active_projects(a)
                .next()
                .await
                .unwrap()
                .unwrap();
            assert_eq!((first.connection_id, first.gitlab_id), expected[0]);
        }

        async fn a_connection_keeps_its_instance_until_a_person_moves_it() {
            let (_dir, store, _) = one_project().await;
            let (was, now) = ("https://gitlab.example.com", "https://other.example.com");
            let moved = |e: StoreError| match e {
                StoreError::ConnectionMoved {
                    name,
                    stored,
                    configured,
                } => (name, stored, configured),
                other => panic!("{other}"),
            };
            let expected = ("main".to_owned(), was.to_owned(), now.to_owned());
            // The same address written with or without its final slash is the same.
            store
                .verify_connections([("main", "https://gitlab.example.com/")])
                .await
                .unwrap();
            // Neither registering nor verifying takes the new url, or writes it.
            let e = store.connection_id("main", now).await.unwrap_err();
            assert!(
                e.to_string()
                    .contains("glwarden connection move main --to https://other.example.com"),
                "{e}"
            );
            assert_eq!(moved(e), expected);
            let e = store.verify_connections([("main", now)]).await.unwrap_err();
            assert_eq!(moved(e), expected);
            store
                .verify_connections([("main", was), ("new", now)])
                .await
                .unwrap();

            assert_eq!(
                store.move_connection("main", now).await.unwrap(),
                Some((was.to_owned(), 1))
            );
            store.verify_connections([("main", now)]).await.unwrap();
            assert!(store.connection_id("main", now).await.is_ok());
            assert_eq!(store.move_connection("absent", now).await.unwrap(), None);
        }

        async fn projects_are_named_by_id_path_or_config_name() {
            let (_dir, store, id) = one_project().await;
            let conn = store
                .connection_id("main", "https://gitlab.example.com")
                .await
                .unwrap();
            let other = store
                .upsert_project(&NewProject {
                    gitlab_id: 7,
                    path: "acme/tool",
                    source: Source::Config,
                    config_ref: Some("tools"),
                    ..added_by_hand(conn)
                })
                .await
                .unwrap();
            let named = |wanted: &'static str, active_only| {
                let store = store.clone();
                async move {
                    let rows = store.projects_named(wanted, active_only).await.unwrap();
                    rows.iter().map(|p| p.id).collect::<Vec<_>>()
                }
            };
            assert_eq!(named("42", true).await, vec![id]);
            assert_eq!(named("acme/app", true).await, vec![id]);
            assert_eq!(named("tools", true).await, vec![other]);
            assert_eq!(named("7", true).await, vec![other]);
            assert!(named("acme", true).await.is_empty(), "no partial paths");
            assert!(named("4", true).await.is_empty(), "no partial ids");

            // The health of the named project alone, not the fleet's.
            let ok = || Observation::definite(State::Ok, "");
            let batch = [
                (Component::Repository, id, ok()),
                (Component::Repository, other, ok()),
            ];
            store.record(&batch, Utc::now()).await.unwrap();
            let rows = store.health_of(&[id]).await.unwrap();
            assert_eq!(
                rows.iter().map(|h| h.subject_id).collect::<Vec<_>>(),
                vec![id]
            );
            assert!(store.health_of(&[]).await.unwrap().is_empty());

            store.remove_project(other).await.unwrap();
            assert!(named("tools", true).await.is_empty());
            assert_eq!(
                named("tools", false).await,
                vec![other],
                "removed, still known"
            );
        }
    }

    #[tokio::test]
    async fn quiet_checks_count_without_rewriting_health_rows() {
        use Component::*;
        let (_dir, store, id) = one_project().await;
        let answers = |hook: &str| {
            [
                (Repository, id, Observation::definite(State::Ok, "")),
                (
                    DeployKey,
                    id,
                    Observation::definite(State::Healthy, "key 1"),
                ),
                (Webhook, id, Observation::definite(State::Healthy, hook)),
            ]
        };
        let record = |batch: &[(Component, i64, Observation)], at: &str| {
            let (store, batch, at) = (store.clone(), batch.to_vec(), t(at));
            async move { store.record(&batch, at).await.unwrap().len() }
        };
        let seen = |component: Component| {
            let store = store.clone();
            async move {
                let row = store.health(component, id).await.unwrap().unwrap();
                (row.consecutive, row.last_checked.unwrap(), row.detail)
            }
        };
        assert_eq!(record(&answers("hook 3"), "2026-01-01T00:00:00Z").await, 3);
        assert_eq!(record(&answers("hook 3"), "2026-01-01T00:05:00Z").await, 0);
        assert_eq!(record(&answers("hook 3"), "2026-01-01T00:10:00Z").await, 0);
        // The health rows are as the first write left them ...
        let stored: Vec<(i64, DateTime<Utc>)> =
            sqlx::query_as("SELECT consecutive, last_checked FROM health WHERE subject_id = $1")
                .bind(id)
                .fetch_all(store.sqlite())
                .await
                .unwrap();
        assert_eq!(stored, vec![(1, t("2026-01-01T00:00:00Z")); 3]);
        // ... and readers see every check.
        let webhook = seen(Webhook).await;
        assert_eq!(webhook, (3, t("2026-01-01T00:10:00Z"), "hook 3".to_owned()));
        // A changed answer is written in full, after the quiet checks.
        record(&answers("hook 4"), "2026-01-01T00:15:00Z").await;
        let at_15 = t("2026-01-01T00:15:00Z");
        assert_eq!(seen(Webhook).await, (4, at_15, "hook 4".to_owned()));
        assert_eq!(seen(Repository).await, (4, at_15, String::new()));
        // Checking one component leaves the others as they were.
        let repository_only = &answers("hook 4")[..1];
        record(repository_only, "2026-01-01T00:20:00Z").await;
        record(repository_only, "2026-01-01T00:25:00Z").await;
        assert_eq!(seen(Repository).await.0, 6);
        assert_eq!(seen(Webhook).await, (4, at_15, "hook 4".to_owned()));
        // All three again: written in full, then quiet once more.
        record(&answers("hook 4"), "2026-01-01T00:30:00Z").await;
        record(&answers("hook 4"), "2026-01-01T00:35:00Z").await;
        assert_eq!(seen(Repository).await.0, 8);
        assert_eq!(
            seen(DeployKey).await,
            (6, t("2026-01-01T00:35:00Z"), "key 1".to_owned())
        );
        let history = store.transitions(Some(id), 10).await.unwrap();
        assert_eq!(history.len(), 3, "the first state of each component only");
        // Were the project's health rows ever deleted, its digest would go too.
        let digests = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM settled")
                .fetch_one(store.sqlite())
                .await
                .unwrap()
        };
        assert_eq!(digests().await, 1);
        sqlx::query("DELETE FROM health WHERE subject_id = $1")
            .bind(id)
            .execute(store.sqlite())
            .await
            .unwrap();
        assert_eq!(digests().await, 0);
    }

    #[tokio::test]
    async fn a_page_of_the_inventory_walks_the_unique_index_without_sorting() {
        let (_dir, store) = empty_store().await;
        let steps = plan(&store, ACTIVE_PAGE).await;
        assert!(
            steps.contains("(connection_id=? AND gitlab_id>?)") && !steps.contains("TEMP B-TREE"),
            "{steps}"
        );
    }

    #[tokio::test]
    async fn store_is_private_and_records_history() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/glwarden.db");
        let store = Store::open(&path).await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("sub"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700,
            "its folder is glwarden's own"
        );
        // A symbolic link in its place is refused, and its target untouched.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Store::open(&link).await.unwrap_err().to_string();
        assert!(
            err.contains("symbolic link") && err.contains("link.db"),
            "{err}"
        );
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o644
        );

        let conn = store
            .connection_id("main", "https://gitlab.example.com/")
            .await
            .unwrap();
        assert_eq!(
            store
                .connection_id("main", "https://gitlab.example.com/")
                .await
                .unwrap(),
            conn
        );
        let id = store
            .upsert_project(&NewProject {
                connection_id: conn,
                gitlab_id: 42,
                path: "acme/app",
                source: Source::Config,
                config_ref: Some("acme/app"),
                webhook_url: Some("https://ci/42"),
                public_key: None,
                fingerprint: None,
                from_config: false,
            })
            .await
            .unwrap();
        let now = Utc::now();
        let batch = vec![
            (
                Component::Repository,
                id,
                Observation::definite(State::Ok, ""),
            ),
            (
                Component::Webhook,
                id,
                Observation::definite(State::Missing, "no hook"),
            ),
        ];
        assert_eq!(store.record(&batch, now).await.unwrap().len(), 2);
        assert_eq!(store.record(&batch, now).await.unwrap().len(), 0);
        assert_eq!(store.transitions(Some(id), 10).await.unwrap().len(), 2);

        // Removal keeps health and history; re-adding brings the same row back.
        store.remove_project(id).await.unwrap();
        assert!(store.active_projects().await.unwrap().is_empty());
        assert_eq!(store.transitions(Some(id), 10).await.unwrap().len(), 2);
        let again = store.upsert_project(&added_by_hand(conn)).await.unwrap();
        assert_eq!(again, id);
        let rows = store.active_projects().await.unwrap();
        assert_eq!(
            rows[0].webhook_url.as_deref(),
            Some("https://ci/42"),
            "kept across re-add"
        );
        store.close().await;
    }
}
