//! The SQLite store (sqlx): connections, the project inventory, current
//! component health and the history of state transitions.
//!
//! The file is created 0600 before SQLite opens it (SQLite gives its WAL and
//! shared-memory files the same mode), runs in WAL mode with a busy timeout,
//! and its schema comes from the embedded migrations in `migrations/`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

mod repairs;
mod summary;

pub use repairs::{EventRow, JournalRow, NewEvent};
pub use summary::{HealthSummary, Problem};

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
    pub component: String,
    pub subject_id: i64,
    /// Last definite state; `None` before the first one.
    pub state: Option<String>,
    pub detail: String,
    pub since: Option<DateTime<Utc>>,
    pub consecutive: i64,
    pub last_checked: Option<DateTime<Utc>>,
    /// `unknown` or `blocked` while the last check could not decide.
    pub pending: Option<String>,
    pub pending_detail: Option<String>,
    pub pending_since: Option<DateTime<Utc>>,
}

impl HealthRow {
    /// The state to show: the pending condition if any, else the last definite state.
    pub fn shown_state(&self) -> State {
        self.pending
            .as_deref()
            .or(self.state.as_deref())
            .and_then(|s| State::from_str(s).ok())
            .unwrap_or(State::Unknown)
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

/// A transition about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<String>,
    pub to: String,
    pub detail: String,
}

/// Folds one observation into a component's health. Pure: the store writes
/// what this returns. A definite answer moves the state (a transition when it
/// changes); an unknown or blocked check leaves the last known state as it was.
pub fn fold(
    prev: Option<&HealthRow>,
    component: Component,
    subject_id: i64,
    observation: &Observation,
    now: DateTime<Utc>,
) -> (HealthRow, Option<Transition>) {
    let mut next = prev.cloned().unwrap_or(HealthRow {
        component: component.as_str().to_owned(),
        subject_id,
        state: None,
        detail: String::new(),
        since: None,
        consecutive: 0,
        last_checked: None,
        pending: None,
        pending_detail: None,
        pending_since: None,
    });
    next.last_checked = Some(now);
    match observation {
        Observation::Definite { state, detail } => {
            let state = state.as_str();
            let changed = next.state.as_deref() != Some(state);
            let transition = changed.then(|| Transition {
                from: next.state.clone(),
                to: state.to_owned(),
                detail: detail.clone(),
            });
            if changed {
                next.state = Some(state.to_owned());
                next.since = Some(now);
                next.consecutive = 1;
            } else {
                next.consecutive += 1;
            }
            next.detail = detail.clone();
            next.pending = None;
            next.pending_detail = None;
            next.pending_since = None;
            (next, transition)
        }
        Observation::Unknown { reason: detail } | Observation::Blocked { cause: detail } => {
            let kind = observation.state().as_str();
            if next.pending.as_deref() != Some(kind) {
                next.pending_since = Some(now);
            }
            next.pending = Some(kind.to_owned());
            next.pending_detail = Some(detail.clone());
            (next, None)
        }
    }
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

    /// The stored OAuth pair of a connection and the seed it descends from.
    pub async fn oauth_pair(
        &self,
        connection: &str,
    ) -> Result<Option<(OAuthPair, String)>, StoreError> {
        let row: Option<(String, String, Option<DateTime<Utc>>, String)> = sqlx::query_as(
            "SELECT access_token, refresh_token, expires_at, seed FROM oauth_tokens WHERE connection = ?1",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(access, refresh, expires_at, seed)| {
            (
                OAuthPair {
                    access: SecretString::from(access),
                    refresh: SecretString::from(refresh),
                    expires_at,
                },
                seed,
            )
        }))
    }

    /// Replaces a connection's OAuth pair in one statement (atomic).
    pub async fn save_oauth_pair(
        &self,
        connection: &str,
        pair: &OAuthPair,
        seed: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_tokens (connection, access_token, refresh_token, expires_at, seed, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (connection) DO UPDATE SET access_token = excluded.access_token,
                 refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
                 seed = excluded.seed, updated_at = excluded.updated_at",
        )
        .bind(connection)
        .bind(pair.access.expose_secret())
        .bind(pair.refresh.expose_secret())
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
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO connections (name, base_url, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET base_url = excluded.base_url
             RETURNING id",
        )
        .bind(name)
        .bind(base_url)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
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

    /// The inventory as a stream, for a sweep: rows come as they are used,
    /// by connection and GitLab id (the order of the bulk listing, see
    /// `listing.rs`). The public key (the largest column, not needed to
    /// check) is left out.
    pub fn stream_active_projects(
        &self,
    ) -> futures::stream::BoxStream<'_, Result<ProjectRow, StoreError>> {
        use futures::StreamExt;
        sqlx::query_as::<_, ProjectRow>(
            "SELECT p.id, p.connection_id, c.name AS connection, p.gitlab_id, p.path, p.source,
                    p.config_ref, p.webhook_url, p.deploy_key_id, p.hook_id, NULL AS public_key, p.fingerprint,
                    p.added_at, p.removed_at
             FROM projects p JOIN connections c ON c.id = p.connection_id
             WHERE p.removed_at IS NULL ORDER BY p.connection_id, p.gitlab_id",
        )
        .fetch(&self.pool)
        .map(|r| r.map_err(StoreError::from))
        .boxed()
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
    pub async fn remove_missing(
        &self,
        sources: &[Source],
        keep: &std::collections::HashSet<i64>,
    ) -> Result<u64, StoreError> {
        let rows = self.active_projects().await?;
        let from_sources = |r: &ProjectRow| sources.iter().any(|s| s.as_str() == r.source);
        let mut removed = 0;
        for row in rows
            .iter()
            .filter(|r| from_sources(r) && !keep.contains(&r.id))
        {
            self.remove_project(row.id).await?;
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
            "SELECT * FROM health WHERE component = ?1 AND subject_id = ?2",
        )
        .bind(component.as_str())
        .bind(subject_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Current health of every component.
    pub async fn all_health(&self) -> Result<Vec<HealthRow>, StoreError> {
        Ok(sqlx::query_as::<_, HealthRow>("SELECT * FROM health")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records a batch of observations in one transaction; returns the
    /// transitions it wrote. The current rows are read with one query per
    /// chunk and written back with multi-row upserts, so a batch of thousands
    /// costs a handful of statements rather than two per observation.
    pub async fn record(
        &self,
        batch: &[(Component, i64, Observation)],
        now: DateTime<Utc>,
    ) -> Result<Vec<(Component, i64, Transition)>, StoreError> {
        use sqlx::QueryBuilder;
        const CHUNK: usize = 300;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut transitions = Vec::new();
        for chunk in batch.chunks(CHUNK) {
            let mut query = QueryBuilder::new("SELECT * FROM health WHERE subject_id IN (");
            let mut ids = query.separated(", ");
            for (_, subject, _) in chunk {
                ids.push_bind(*subject);
            }
            query.push(")");
            let prev: std::collections::HashMap<(String, i64), HealthRow> = query
                .build_query_as::<HealthRow>()
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|h| ((h.component.clone(), h.subject_id), h))
                .collect();
            let mut rows = Vec::with_capacity(chunk.len());
            for (component, subject_id, observation) in chunk {
                let before = prev.get(&(component.as_str().to_owned(), *subject_id));
                let (next, transition) = fold(before, *component, *subject_id, observation, now);
                if let Some(t) = transition {
                    transitions.push((*component, *subject_id, t));
                }
                rows.push(next);
            }
            let mut upsert = QueryBuilder::new(
                "INSERT INTO health (component, subject_id, state, detail, since, consecutive, last_checked,
                                     pending, pending_detail, pending_since) ",
            );
            upsert.push_values(&rows, |mut b, next| {
                b.push_bind(&next.component)
                    .push_bind(next.subject_id)
                    .push_bind(&next.state)
                    .push_bind(&next.detail)
                    .push_bind(next.since)
                    .push_bind(next.consecutive)
                    .push_bind(next.last_checked)
                    .push_bind(&next.pending)
                    .push_bind(&next.pending_detail)
                    .push_bind(next.pending_since);
            });
            upsert.push(
                " ON CONFLICT (component, subject_id) DO UPDATE SET
                     state = excluded.state, detail = excluded.detail, since = excluded.since,
                     consecutive = excluded.consecutive, last_checked = excluded.last_checked,
                     pending = excluded.pending, pending_detail = excluded.pending_detail,
                     pending_since = excluded.pending_since",
            );
            upsert.build().execute(&mut *tx).await?;
        }
        for chunk in transitions.chunks(CHUNK) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO transitions (at, component, subject_id, from_state, to_state, detail) ",
            );
            insert.push_values(chunk, |mut b, (component, subject, t)| {
                b.push_bind(now)
                    .push_bind(component.as_str())
                    .push_bind(*subject)
                    .push_bind(&t.from)
                    .push_bind(&t.to)
                    .push_bind(&t.detail);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(transitions)
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

/// Creates `path` with mode 0600 if it does not exist, so that SQLite never
/// creates it with the process umask; an existing file is tightened to 0600.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
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

    #[test]
    fn definite_states_count_and_transition() {
        let healthy = Observation::definite(State::Healthy, "key 1");
        let (h1, tr) = fold(
            None,
            Component::DeployKey,
            5,
            &healthy,
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(tr.unwrap().to, "healthy");
        assert_eq!(h1.consecutive, 1);
        let (h2, tr) = fold(
            Some(&h1),
            Component::DeployKey,
            5,
            &healthy,
            t("2026-01-01T00:05:00Z"),
        );
        assert!(tr.is_none());
        assert_eq!(h2.consecutive, 2);
        assert_eq!(h2.since, h1.since);
        let missing = Observation::definite(State::Missing, "gone");
        let (h3, tr) = fold(
            Some(&h2),
            Component::DeployKey,
            5,
            &missing,
            t("2026-01-01T00:10:00Z"),
        );
        let tr = tr.unwrap();
        assert_eq!(
            (tr.from.as_deref(), tr.to.as_str()),
            (Some("healthy"), "missing")
        );
        assert_eq!(h3.consecutive, 1);
        assert_eq!(h3.since, Some(t("2026-01-01T00:10:00Z")));
    }

    #[test]
    fn unknown_keeps_the_last_known_state() {
        let healthy = Observation::definite(State::Healthy, "hook 3");
        let (h1, _) = fold(
            None,
            Component::Webhook,
            5,
            &healthy,
            t("2026-01-01T00:00:00Z"),
        );
        let unknown = Observation::Unknown {
            reason: "HTTP 502".into(),
        };
        let (h2, tr) = fold(
            Some(&h1),
            Component::Webhook,
            5,
            &unknown,
            t("2026-01-01T00:05:00Z"),
        );
        assert!(tr.is_none(), "a transient failure is not a transition");
        assert_eq!(h2.state.as_deref(), Some("healthy"));
        assert_eq!(h2.consecutive, 1);
        assert_eq!(h2.shown_state(), State::Unknown);
        assert!(h2.shown_detail().contains("last known: healthy"));
        // Recovery clears the pending condition and keeps counting the same state.
        let (h3, tr) = fold(
            Some(&h2),
            Component::Webhook,
            5,
            &healthy,
            t("2026-01-01T00:10:00Z"),
        );
        assert!(tr.is_none());
        assert_eq!(h3.pending, None);
        assert_eq!(h3.consecutive, 2);
        assert_eq!(h3.shown_state(), State::Healthy);
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
        let again = store
            .upsert_project(&NewProject {
                connection_id: conn,
                gitlab_id: 42,
                path: "acme/app",
                source: Source::Cli,
                config_ref: None,
                webhook_url: None,
                public_key: None,
                fingerprint: None,
                from_config: false,
            })
            .await
            .unwrap();
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
