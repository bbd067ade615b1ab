//! The SQLite store (sqlx): connections, the project inventory, current
//! component health and the history of state transitions.
//!
//! The file is created 0600 before SQLite opens it (SQLite gives its WAL and
//! shared-memory files the same mode), runs in WAL mode with a busy timeout,
//! and its schema comes from the embedded migrations in `migrations/`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

mod quiet;
mod repairs;
mod sealing;
mod summary;

pub use repairs::{EventRow, JournalRow, MANUAL_CAUSE, NewEvent};
pub use sealing::Sealed;
pub use summary::{HealthSummary, Problem};

use crate::custody::{Custody, CustodyError, OAuthToken, Owner};
use crate::gitlab::oauth::OAuthPair;
use crate::health::{Component, Observation, State};
use secrecy::{ExposeSecret, SecretString};

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
}

/// Where a project in the inventory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Cli,
    Discovery,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Cli => "cli",
            Source::Discovery => "discovery",
        }
    }
}

/// A project of the inventory, with its connection's name.
#[derive(Debug, Clone, FromRow)]
pub struct ProjectRow {
    pub id: i64,
    pub connection_id: i64,
    pub connection: String,
    pub gitlab_id: i64,
    pub path: String,
    pub source: String,
    pub config_ref: Option<String>,
    pub webhook_url: Option<String>,
    pub deploy_key_id: Option<i64>,
    pub hook_id: Option<i64>,
    pub public_key: Option<String>,
    pub fingerprint: Option<String>,
    pub added_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
}

/// What checking a project reads from the inventory. A sweep streams these
/// rather than whole [`ProjectRow`]s: sqlx copies every column of every row
/// it reads (an allocation each), and a sweep reads every row.
#[derive(Debug, Clone, FromRow)]
pub struct CheckTarget {
    pub id: i64,
    pub connection_id: i64,
    pub connection: String,
    pub gitlab_id: i64,
    pub path: String,
    pub webhook_url: Option<String>,
    pub deploy_key_id: Option<i64>,
    pub hook_id: Option<i64>,
    pub fingerprint: Option<String>,
}

impl From<&ProjectRow> for CheckTarget {
    fn from(p: &ProjectRow) -> Self {
        CheckTarget {
            id: p.id,
            connection_id: p.connection_id,
            connection: p.connection.clone(),
            gitlab_id: p.gitlab_id,
            path: p.path.clone(),
            webhook_url: p.webhook_url.clone(),
            deploy_key_id: p.deploy_key_id,
            hook_id: p.hook_id,
            fingerprint: p.fingerprint.clone(),
        }
    }
}

/// What to put into the inventory.
#[derive(Debug, Clone)]
pub struct NewProject<'a> {
    pub connection_id: i64,
    pub gitlab_id: u64,
    pub path: &'a str,
    pub source: Source,
    pub config_ref: Option<&'a str>,
    pub webhook_url: Option<&'a str>,
    pub public_key: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    /// Set for keys named in the configuration: applied only when it changed
    /// since last time, so that a key glwarden rotated is not reset by a
    /// configuration that still names the first one.
    pub from_config: bool,
}

/// Current health of one component of one subject.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct HealthRow {
    pub component: Component,
    pub subject_id: i64,
    /// Last definite state; `None` before the first one.
    pub state: Option<State>,
    pub detail: String,
    pub since: Option<DateTime<Utc>>,
    pub consecutive: i64,
    pub last_checked: Option<DateTime<Utc>>,
    /// `unknown` or `blocked` while the last check could not decide.
    pub pending: Option<State>,
    pub pending_detail: Option<String>,
    pub pending_since: Option<DateTime<Utc>>,
}

impl HealthRow {
    /// The state to show: the pending condition if any, else the last definite state.
    pub fn shown_state(&self) -> State {
        self.pending.or(self.state).unwrap_or(State::Unknown)
    }

    /// The last definite state, unless an unknown or blocked check hides it.
    pub fn definite_state(&self) -> Option<State> {
        if self.pending.is_some() {
            return None;
        }
        self.state
    }

    /// The detail to show, with the last known state when it is hidden by a pending condition.
    pub fn shown_detail(&self) -> String {
        match (&self.pending, &self.state) {
            (Some(_), Some(last)) => format!(
                "{} (last known: {last})",
                self.pending_detail.as_deref().unwrap_or_default()
            ),
            (Some(_), None) => self.pending_detail.clone().unwrap_or_default(),
            (None, _) => self.detail.clone(),
        }
    }
}

/// One state change, as stored in the history.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TransitionRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub component: String,
    pub subject_id: i64,
    pub from_state: Option<String>,
    pub to_state: String,
    pub detail: String,
}

/// A change of state, as `record` wrote it to the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<String>,
    pub to: String,
    pub detail: String,
}

/// The database. Write transactions start with `BEGIN IMMEDIATE`: a
/// deferred one that reads first and then writes fails at once
/// (SQLITE_BUSY_SNAPSHOT) when another connection wrote meanwhile, whatever
/// the busy timeout.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
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
        Ok(Store { pool })
    }

    /// The seed a connection's stored OAuth pair descends from, without
    /// opening the pair: a pair the configuration has replaced is never
    /// opened, so a re-authorization also recovers from one that cannot be.
    pub async fn oauth_seed(&self, connection: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seed FROM oauth_tokens WHERE connection = ?1")
                .bind(connection)
                .fetch_optional(&self.pool)
                .await?,
        )
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
        let row: Option<Row> = sqlx::query_as(
            "SELECT access_token, refresh_token, expires_at, seed FROM oauth_tokens WHERE connection = ?1",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?;
        let Some((access, refresh, expires_at, seed)) = row else {
            return Ok(None);
        };
        let (access, refresh) = (
            zeroize::Zeroizing::new(access),
            zeroize::Zeroizing::new(refresh),
        );
        let token = |which: OAuthToken, stored: &[u8]| -> Result<SecretString, CustodyError> {
            let owner = Owner::Connection(connection, which);
            let bytes = custody.open_for(owner, stored)?;
            let text = std::str::from_utf8(&bytes).map_err(|_| CustodyError::Open {
                owner: owner.to_string(),
                reason: "it is not UTF-8 text".into(),
            })?;
            Ok(SecretString::from(text.to_owned()))
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
        sqlx::query(
            "INSERT INTO oauth_tokens (connection, access_token, refresh_token, expires_at, seed, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The id of a connection, registering it on first use.
    pub async fn connection_id(&self, name: &str, base_url: &str) -> Result<i64, StoreError> {
        // Registered once; a later url never overwrites the instance the
        // stored ids belong to (`move_connection` does, on a person's word).
        sqlx::query(
            "INSERT INTO connections (name, base_url, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(base_url)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        let (id, stored): (i64, String) =
            sqlx::query_as("SELECT id, base_url FROM connections WHERE name = ?1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        if !same_address(&stored, base_url) {
            return Err(StoreError::ConnectionMoved {
                name: name.to_owned(),
                stored,
                configured: base_url.to_owned(),
            });
        }
        Ok(id)
    }

    /// Refuses, reading only, when a configured connection's url is not the
    /// instance its stored ids belong to. Every command that talks to
    /// GitLab or hands out stored keys calls this before anything else.
    pub async fn verify_connections<'a>(
        &self,
        configured: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), StoreError> {
        let stored: std::collections::HashMap<String, String> =
            sqlx::query_as("SELECT name, base_url FROM connections")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        for (name, url) in configured {
            if let Some(was) = stored.get(name).filter(|was| !same_address(was, url)) {
                return Err(StoreError::ConnectionMoved {
                    name: name.to_owned(),
                    stored: was.clone(),
                    configured: url.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Points a connection's stored ids at a new address of the same
    /// instance; returns the old address and how many projects it holds,
    /// or `None` when nothing is stored under that name.
    pub async fn move_connection(
        &self,
        name: &str,
        to: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let found: Option<(i64, String)> =
            sqlx::query_as("SELECT id, base_url FROM connections WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((id, was)) = found else {
            return Ok(None);
        };
        sqlx::query("UPDATE connections SET base_url = ?2 WHERE id = ?1")
            .bind(id)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        let projects: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM projects WHERE connection_id = ?1 AND removed_at IS NULL",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((was, projects)))
    }

    /// Adds a project or brings a removed one back; returns its id.
    /// Key material and an owned id already stored are kept unless new ones are given.
    pub async fn upsert_project(&self, p: &NewProject<'_>) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let id = upsert_project_in(&mut tx, p).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Many projects in one transaction (discovery, large inventories).
    pub async fn upsert_projects(
        &self,
        projects: &[NewProject<'_>],
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut ids = Vec::with_capacity(projects.len());
        for p in projects {
            ids.push(upsert_project_in(&mut tx, p).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// The project a configuration entry was resolved to before, if any.
    pub async fn project_by_config_ref(
        &self,
        connection_id: i64,
        config_ref: &str,
    ) -> Result<Option<ProjectRow>, StoreError> {
        let row = sqlx::query_as::<_, ProjectRow>(&format!(
            "{PROJECT_SELECT} WHERE p.connection_id = ?1 AND p.config_ref = ?2"
        ))
        .bind(connection_id)
        .bind(config_ref)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Projects in the inventory (not removed), ordered by connection and path.
    pub async fn active_projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        let rows = sqlx::query_as::<_, ProjectRow>(&format!(
            "{PROJECT_SELECT} WHERE p.removed_at IS NULL ORDER BY c.name, p.path"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The inventory as a stream, for a sweep: what checking needs of each
    /// project, by connection and GitLab id (the order of the bulk listing,
    /// see `listing.rs`).
    ///
    /// Rows are read in keyset pages, each its own short query, rather than
    /// by one query open for the whole sweep: an open read holds a WAL
    /// snapshot, so no checkpoint can finish while it lasts, the WAL grows
    /// with every write batch and each commit's automatic checkpoint sorts
    /// the whole of it again.
    ///
    /// A task of its own reads the next page while the sweep works through
    /// the current one: a page of 1,000 took about 10 ms, and each read held
    /// up the start of every check behind it (7% of a sweep's time). Dropping
    /// the stream stops the task.
    pub fn stream_active_projects(
        &self,
        connection_id: i64,
    ) -> futures::stream::BoxStream<'static, Result<CheckTarget, StoreError>> {
        use futures::{StreamExt, TryStreamExt};
        let (pages, mut next_page) = tokio::sync::mpsc::channel(1);
        let store = self.clone();
        let reader = tokio::spawn(async move {
            let mut after = i64::MIN;
            loop {
                let page = store
                    .active_page(connection_id, after, INVENTORY_PAGE)
                    .await;
                // A full page may have more after it; a short one is the last.
                let more = match &page {
                    Ok(rows) if rows.len() as i64 == INVENTORY_PAGE => {
                        rows.last().map(|p| p.gitlab_id)
                    }
                    _ => None,
                };
                if pages.send(page).await.is_err() {
                    return; // the sweep ended
                }
                match more {
                    Some(key) => after = key,
                    None => return,
                }
            }
        });
        let reader = tokio_util::task::AbortOnDropHandle::new(reader);
        futures::stream::poll_fn(move |cx| {
            let _reader = &reader; // lives, and is aborted, with the stream
            next_page.poll_recv(cx)
        })
        .map_ok(|rows: Vec<CheckTarget>| futures::stream::iter(rows.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// Up to `limit` active projects of a connection after GitLab id `after`,
    /// in id order (the order of the bulk listing).
    async fn active_page(
        &self,
        connection_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<CheckTarget>, StoreError> {
        let rows = sqlx::query_as::<_, CheckTarget>(ACTIVE_PAGE)
            .bind(connection_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// How many projects each connection has in the inventory.
    pub async fn active_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, usize>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.name, COUNT(*) FROM projects p JOIN connections c ON c.id = p.connection_id
             WHERE p.removed_at IS NULL GROUP BY c.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(c, n)| (c, n as usize)).collect())
    }

    /// Takes a project out of the inventory, keeping its health and history.
    pub async fn remove_project(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE projects SET removed_at = ?2 WHERE id = ?1 AND removed_at IS NULL")
            .bind(id)
            .bind(Utc::now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes every project from one of `sources` whose id is not in `keep`.
    /// Only ids are read: each sweep calls this, and projects added by hand
    /// (`cli`), usually the bulk of a large inventory, are never candidates.
    pub async fn remove_missing(
        &self,
        sources: &[Source],
        keep: &std::collections::HashSet<i64>,
    ) -> Result<u64, StoreError> {
        if sources.is_empty() {
            return Ok(0);
        }
        let mut query = sqlx::QueryBuilder::new(
            "SELECT id FROM projects WHERE removed_at IS NULL AND source IN (",
        );
        let mut listed = query.separated(", ");
        for source in sources {
            listed.push_bind(source.as_str());
        }
        query.push(")");
        let ids: Vec<i64> = query.build_query_scalar().fetch_all(&self.pool).await?;
        let mut removed = 0;
        for id in ids.into_iter().filter(|id| !keep.contains(id)) {
            self.remove_project(id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Records the project's path as GitLab now reports it.
    pub async fn set_path(&self, id: i64, path: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE projects SET path = ?2 WHERE id = ?1")
            .bind(id)
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remembers the ids of the key and hook found to be ours.
    pub async fn set_owned_ids(
        &self,
        id: i64,
        deploy_key_id: Option<u64>,
        hook_id: Option<u64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE projects SET deploy_key_id = COALESCE(?2, deploy_key_id), hook_id = COALESCE(?3, hook_id)
             WHERE id = ?1",
        )
        .bind(id)
        .bind(deploy_key_id.map(|v| v as i64))
        .bind(hook_id.map(|v| v as i64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Current health of one component.
    pub async fn health(
        &self,
        component: Component,
        subject_id: i64,
    ) -> Result<Option<HealthRow>, StoreError> {
        Ok(sqlx::query_as::<_, HealthRow>(
            "SELECT * FROM health_now WHERE component = ?1 AND subject_id = ?2",
        )
        .bind(component.as_str())
        .bind(subject_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Current health of every component.
    pub async fn all_health(&self) -> Result<Vec<HealthRow>, StoreError> {
        Ok(sqlx::query_as::<_, HealthRow>("SELECT * FROM health_now")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The health rows of the given subjects, whatever their component (the
    /// caller tells a connection's rows from a project's by component).
    pub async fn health_of(&self, subject_ids: &[i64]) -> Result<Vec<HealthRow>, StoreError> {
        Ok(sqlx::query_as::<_, HealthRow>(
            "SELECT * FROM health_now WHERE subject_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(id_list(subject_ids))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a batch of observations in one transaction; returns the
    /// transitions it wrote.
    ///
    /// A project whose answers all match what is stored counts one more
    /// check on its `settled` row and leaves its health rows alone (see
    /// `quiet.rs`). Every other observation is folded into its component's
    /// health row by the upsert itself ([`FOLD_OBSERVATION`]), and the
    /// history is written by triggers when the last definite state changes
    /// (migration 0005): rows are written without first being read back.
    pub async fn record(
        &self,
        batch: &[(Component, i64, Observation)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(Component, i64, Transition)>, StoreError> {
        // As sqlx writes a DateTime<Utc>, so that rows read back the same.
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
        let digests = quiet::digests(batch);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let last_before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM transitions")
            .fetch_one(&mut *tx)
            .await?;
        let quiet = quiet::count_quiet(&mut tx, &digests, &at).await?;
        let loud: Vec<_> = batch
            .iter()
            .filter(|(component, id, _)| !component.is_project() || !quiet.contains(id))
            .collect();
        let mut loud_projects: Vec<i64> = loud
            .iter()
            .filter(|(component, ..)| component.is_project())
            .map(|(_, id, _)| *id)
            .collect();
        loud_projects.sort_unstable();
        loud_projects.dedup();
        quiet::unsettle(&mut tx, &loud_projects).await?;
        for chunk in loud.chunks(ROWS_PER_STATEMENT) {
            // The time is bound once; each observation binds only what it
            // says, and the first row it would make is derived from that.
            let mut upsert = sqlx::QueryBuilder::new("WITH now(at) AS (SELECT ");
            upsert.push_bind(at.as_str());
            upsert.push("), observed(component, subject_id, state, text, pending) AS (");
            upsert.push_values(chunk, |mut b, (component, subject_id, observation)| {
                let (state, pending, text) = match observation {
                    Observation::Definite { state, detail } => (Some(state.as_str()), None, detail),
                    Observation::Unknown { reason: text }
                    | Observation::Blocked { cause: text } => {
                        (None, Some(observation.state().as_str()), text)
                    }
                };
                b.push_bind(component.as_str())
                    .push_bind(*subject_id)
                    .push_bind(state)
                    .push_bind(text.as_str())
                    .push_bind(pending);
            });
            // A definite answer as a first row, or an undecided one as a
            // pending condition with no state yet; `WHERE true` lets SQLite
            // parse the ON CONFLICT that follows a SELECT.
            upsert.push(
                ")
                INSERT INTO health (component, subject_id, state, detail, since, consecutive,
                                    last_checked, pending, pending_detail, pending_since)
                SELECT component, subject_id, state,
                       CASE WHEN state IS NULL THEN '' ELSE text END,
                       CASE WHEN state IS NULL THEN NULL ELSE now.at END,
                       state IS NOT NULL,
                       now.at,
                       pending,
                       CASE WHEN pending IS NULL THEN NULL ELSE text END,
                       CASE WHEN pending IS NULL THEN NULL ELSE now.at END
                FROM observed, now WHERE true",
            );
            upsert.push(FOLD_OBSERVATION);
            upsert.build().execute(&mut *tx).await?;
        }
        let written_in_full: Vec<_> = digests
            .iter()
            .filter(|digest| !quiet.contains(&digest.project_id))
            .collect();
        quiet::settle(&mut tx, &written_in_full, &at).await?;
        let written = sqlx::query_as::<_, TransitionRow>(
            "SELECT * FROM transitions WHERE id > ?1 ORDER BY id",
        )
        .bind(last_before)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // Components are written from `Component::as_str`, so they parse back.
        Ok(written
            .into_iter()
            .filter_map(|row| {
                let component = row.component.parse().ok()?;
                let transition = Transition {
                    from: row.from_state,
                    to: row.to_state,
                    detail: row.detail,
                };
                Some((component, row.subject_id, transition))
            })
            .collect())
    }

    /// State transitions, newest first; of one project's components when `project` is given.
    pub async fn transitions(
        &self,
        project: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let rows =
            match project {
                Some(id) => sqlx::query_as::<_, TransitionRow>(
                    "SELECT * FROM transitions WHERE component != 'connection' AND subject_id = ?1
                     ORDER BY id DESC LIMIT ?2",
                )
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query_as::<_, TransitionRow>(
                        "SELECT * FROM transitions ORDER BY id DESC LIMIT ?1",
                    )
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        Ok(rows)
    }

    /// The projects a command line names with `wanted`: a numeric GitLab id,
    /// a path or the configuration's name for it. Removed ones too unless
    /// `active_only`; ordered by connection and path.
    pub async fn projects_named(
        &self,
        wanted: &str,
        active_only: bool,
    ) -> Result<Vec<ProjectRow>, StoreError> {
        Ok(sqlx::query_as::<_, ProjectRow>(&format!(
            "{PROJECT_SELECT}
             WHERE (CAST(p.gitlab_id AS TEXT) = ?1 OR p.path = ?1 OR p.config_ref = ?1)
               AND (p.removed_at IS NULL OR NOT ?2)
             ORDER BY c.name, p.path"
        ))
        .bind(wanted)
        .bind(active_only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every project ever known (including removed ones), for naming history rows.
    pub async fn all_projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        Ok(sqlx::query_as::<_, ProjectRow>(PROJECT_SELECT)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Connection names by id.
    pub async fn connections(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as::<_, (i64, String)>("SELECT id, name FROM connections ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// Adds or updates one project inside a transaction.
async fn upsert_project_in(
    conn: &mut sqlx::SqliteConnection,
    p: &NewProject<'_>,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO projects (connection_id, gitlab_id, path, source, config_ref, webhook_url,
                               public_key, fingerprint, added_at, config_fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (connection_id, gitlab_id) DO UPDATE SET
             source = excluded.source,
             config_ref = COALESCE(excluded.config_ref, projects.config_ref),
             webhook_url = COALESCE(excluded.webhook_url, projects.webhook_url),
             public_key = CASE
                 WHEN excluded.config_fingerprint IS NULL THEN COALESCE(excluded.public_key, projects.public_key)
                 WHEN excluded.config_fingerprint IS NOT projects.config_fingerprint THEN excluded.public_key
                 ELSE projects.public_key END,
             fingerprint = CASE
                 WHEN excluded.config_fingerprint IS NULL THEN COALESCE(excluded.fingerprint, projects.fingerprint)
                 WHEN excluded.config_fingerprint IS NOT projects.config_fingerprint THEN excluded.fingerprint
                 ELSE projects.fingerprint END,
             private_key = CASE
                 WHEN excluded.config_fingerprint IS NOT NULL
                  AND excluded.config_fingerprint IS NOT projects.config_fingerprint THEN NULL
                 ELSE projects.private_key END,
             config_fingerprint = COALESCE(excluded.config_fingerprint, projects.config_fingerprint),
             removed_at = NULL
         RETURNING id",
    )
    .bind(p.connection_id)
    .bind(p.gitlab_id as i64)
    .bind(p.path)
    .bind(p.source.as_str())
    .bind(p.config_ref)
    .bind(p.webhook_url)
    .bind(p.public_key)
    .bind(p.fingerprint)
    .bind(Utc::now())
    .bind(if p.from_config { p.fingerprint } else { None })
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

const PROJECT_SELECT: &str =
    "SELECT p.id, p.connection_id, c.name AS connection, p.gitlab_id, p.path, p.source,
        p.config_ref, p.webhook_url, p.deploy_key_id, p.hook_id, p.public_key, p.fingerprint,
        p.added_at, p.removed_at
    FROM projects p JOIN connections c ON c.id = p.connection_id";

/// Whether two base URLs name the same address once parsed
/// (`https://gitlab.example.com` and `https://gitlab.example.com/` do).
fn same_address(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Rows a sweep reads of the inventory at a time.
const INVENTORY_PAGE: i64 = 1000;

/// One page of a connection's inventory, walked along the (connection_id,
/// gitlab_id) unique index: no sort, however large the inventory.
const ACTIVE_PAGE: &str = "SELECT p.id, p.connection_id, c.name AS connection, p.gitlab_id, p.path,
        p.webhook_url, p.deploy_key_id, p.hook_id, p.fingerprint
 FROM projects p JOIN connections c ON c.id = p.connection_id
 WHERE p.removed_at IS NULL AND p.connection_id = ?1 AND p.gitlab_id > ?2
 ORDER BY p.gitlab_id LIMIT ?3";

/// Ids as one statement parameter, a JSON array that SQL reads with
/// `json_each`: one parameter however many ids, and one statement text.
fn id_list(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("integers serialize")
}

/// Rows one multi-row statement writes (health upserts, quiet-check digests
/// and counts): at most five parameters each, well under SQLite's limit of
/// 32,766 a statement.
const ROWS_PER_STATEMENT: usize = 500;

/// How an observation (the row `record` tries to insert, `excluded`) folds
/// into the component's current health. A definite answer moves the state:
/// `since` and a count of 1 when it changed, one more consecutive check when
/// not, and it clears any pending condition. An unknown or blocked check
/// leaves the last known state, its detail and count as they were and is
/// recorded beside them (`pending`), so that an outage never overwrites what
/// we last knew. Every expression reads the row as it was before the update.
const FOLD_OBSERVATION: &str = "
    ON CONFLICT (component, subject_id) DO UPDATE SET
        state = COALESCE(excluded.state, health.state),
        detail = CASE WHEN excluded.state IS NULL THEN health.detail ELSE excluded.detail END,
        since = CASE WHEN excluded.state IS NULL OR excluded.state = health.state
                     THEN health.since ELSE excluded.since END,
        consecutive = CASE WHEN excluded.state IS NULL THEN health.consecutive
                           WHEN excluded.state = health.state THEN health.consecutive + 1
                           ELSE 1 END,
        last_checked = excluded.last_checked,
        pending = excluded.pending,
        pending_detail = excluded.pending_detail,
        pending_since = CASE WHEN excluded.pending IS NULL THEN NULL
                             WHEN excluded.pending = health.pending THEN health.pending_since
                             ELSE excluded.pending_since END";

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
    use super::*;

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

    /// A new store in a directory of its own (kept while the test holds it).
    pub(super) async fn empty_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("glwarden.db")).await.unwrap();
        (dir, store)
    }

    /// The plan SQLite chose for `query`, one step a line.
    pub(super) async fn plan(store: &Store, query: &str) -> String {
        let steps: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(&store.pool)
                .await
                .unwrap();
        steps.into_iter().map(|s| s.3 + "\n").collect()
    }

    /// A store with one connection and one project, for folding observations.
    async fn one_project() -> (tempfile::TempDir, Store, i64) {
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

    #[tokio::test]
    async fn definite_states_count_and_transition() {
        let (_dir, store, id) = one_project().await;
        let key = Component::DeployKey;
        let healthy = || Observation::definite(State::Healthy, "key 1");
        let (h1, tr) = observe(&store, key, id, healthy(), "2026-01-01T00:00:00Z").await;
        assert_eq!(tr.len(), 1);
        assert_eq!(
            (tr[0].from.as_deref(), tr[0].to.as_str()),
            (None, "healthy")
        );
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
                from: Some("healthy".into()),
                to: "missing".into(),
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

    #[tokio::test]
    async fn unknown_keeps_the_last_known_state() {
        let (_dir, store, id) = one_project().await;
        let hook = Component::Webhook;
        let healthy = || Observation::definite(State::Healthy, "hook 3");
        let unknown = || Observation::Unknown {
            reason: "HTTP 502".into(),
        };
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

    #[tokio::test]
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
        let moves: Vec<_> = written
            .iter()
            .map(|(_, _, tr)| (tr.from.clone(), tr.to.clone()))
            .collect();
        assert_eq!(
            moves,
            vec![
                (None, "ok".into()),
                (Some("ok".into()), "access_lost".into())
            ]
        );
        let row = store.health(repo, id).await.unwrap().unwrap();
        assert_eq!(
            (row.state.map(State::as_str), row.consecutive),
            (Some("access_lost"), 1)
        );
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
            sqlx::query_as("SELECT consecutive, last_checked FROM health WHERE subject_id = ?1")
                .bind(id)
                .fetch_all(&store.pool)
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
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        assert_eq!(digests().await, 1);
        sqlx::query("DELETE FROM health WHERE subject_id = ?1")
            .bind(id)
            .execute(&store.pool)
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

    #[tokio::test]
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

    #[tokio::test]
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
