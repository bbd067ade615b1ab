//! The `projects` table: the inventory, from the config, the command line
//! and discovery; removed projects keep their rows (and history).

use super::{BeginWrite, Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::FromRow;

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

/// Adds or updates one project inside the write transaction `conn`;
/// evaluates to its id. A macro, so that one text serves both engines'
/// transactions.
macro_rules! upsert_project_in {
    ($conn:expr, $p:expr) => {
        async {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO projects (connection_id, gitlab_id, path, source, config_ref, webhook_url,
                                       public_key, fingerprint, added_at, config_fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (connection_id, gitlab_id) DO UPDATE SET
                     source = excluded.source,
                     config_ref = COALESCE(excluded.config_ref, projects.config_ref),
                     webhook_url = COALESCE(excluded.webhook_url, projects.webhook_url),
                     public_key = CASE
                         WHEN excluded.config_fingerprint IS NULL THEN COALESCE(excluded.public_key, projects.public_key)
                         WHEN excluded.config_fingerprint IS DISTINCT FROM projects.config_fingerprint THEN excluded.public_key
                         ELSE projects.public_key END,
                     fingerprint = CASE
                         WHEN excluded.config_fingerprint IS NULL THEN COALESCE(excluded.fingerprint, projects.fingerprint)
                         WHEN excluded.config_fingerprint IS DISTINCT FROM projects.config_fingerprint THEN excluded.fingerprint
                         ELSE projects.fingerprint END,
                     private_key = CASE
                         WHEN excluded.config_fingerprint IS NOT NULL
                          AND excluded.config_fingerprint IS DISTINCT FROM projects.config_fingerprint THEN NULL
                         ELSE projects.private_key END,
                     config_fingerprint = COALESCE(excluded.config_fingerprint, projects.config_fingerprint),
                     removed_at = NULL
                 RETURNING id",
            )
            .bind($p.connection_id)
            .bind($p.gitlab_id as i64)
            .bind($p.path)
            .bind($p.source.as_str())
            .bind($p.config_ref)
            .bind($p.webhook_url)
            .bind($p.public_key)
            .bind($p.fingerprint)
            .bind(Utc::now())
            .bind(if $p.from_config { $p.fingerprint } else { None })
            .fetch_one(&mut *$conn)
            .await?;
            Ok::<i64, StoreError>(id)
        }
    };
}

pub(super) const PROJECT_SELECT: &str =
    "SELECT p.id, p.connection_id, c.name AS connection, p.gitlab_id, p.path, p.source,
        p.config_ref, p.webhook_url, p.deploy_key_id, p.hook_id, p.public_key, p.fingerprint,
        p.added_at, p.removed_at
    FROM projects p JOIN connections c ON c.id = p.connection_id";

/// `Store::project_of`'s statement: by GitLab id or by path.
pub(super) fn project_of_sql(by_id: bool) -> String {
    let by = if by_id { "p.gitlab_id" } else { "p.path" };
    format!("{PROJECT_SELECT} WHERE c.name = $1 AND {by} = $2 AND p.removed_at IS NULL")
}

/// Rows a sweep reads of the inventory at a time.
pub(super) const INVENTORY_PAGE: i64 = 1000;

/// One page of a connection's inventory, walked along the (connection_id,
/// gitlab_id) unique index: no sort, however large the inventory.
pub(super) const ACTIVE_PAGE: &str =
    "SELECT p.id, p.connection_id, c.name AS connection, p.gitlab_id, p.path,
        p.webhook_url, p.deploy_key_id, p.hook_id, p.fingerprint
 FROM projects p JOIN connections c ON c.id = p.connection_id
 WHERE p.removed_at IS NULL AND p.connection_id = $1 AND p.gitlab_id > $2
 ORDER BY p.gitlab_id LIMIT $3";

impl Store {
    /// Adds a project or brings a removed one back; returns its id.
    /// Key material and an owned id already stored are kept unless new ones are given.
    pub async fn upsert_project(&self, p: &NewProject<'_>) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let id = upsert_project_in!(tx, p).await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Many projects in one transaction (discovery, large inventories).
    pub async fn upsert_projects(
        &self,
        projects: &[NewProject<'_>],
    ) -> Result<Vec<i64>, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let mut ids = Vec::with_capacity(projects.len());
            for p in projects {
                ids.push(upsert_project_in!(tx, p).await?);
            }
            tx.commit().await?;
            Ok(ids)
        })
    }

    /// The project a configuration entry was resolved to before, if any.
    pub async fn project_by_config_ref(
        &self,
        connection_id: i64,
        config_ref: &str,
    ) -> Result<Option<ProjectRow>, StoreError> {
        let row = on_pool!(self, |pool| sqlx::query_as::<_, ProjectRow>(&format!(
            "{PROJECT_SELECT} WHERE p.connection_id = $1 AND p.config_ref = $2"
        ))
        .bind(connection_id)
        .bind(config_ref)
        .fetch_optional(pool)
        .await)?;
        Ok(row)
    }

    /// Projects in the inventory (not removed), ordered by connection and path.
    pub async fn active_projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, ProjectRow>(&format!(
            "{PROJECT_SELECT} WHERE p.removed_at IS NULL ORDER BY c.name, p.path"
        ))
        .fetch_all(pool)
        .await)?;
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
        let rows = on_pool!(self, |pool| sqlx::query_as::<_, CheckTarget>(ACTIVE_PAGE)
            .bind(connection_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
        Ok(rows)
    }

    /// How many projects each connection has in the inventory.
    pub async fn active_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, usize>, StoreError> {
        let rows: Vec<(String, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT c.name, COUNT(*) FROM projects p JOIN connections c ON c.id = p.connection_id
             WHERE p.removed_at IS NULL GROUP BY c.name",
        )
        .fetch_all(pool)
        .await
        })?;
        Ok(rows.into_iter().map(|(c, n)| (c, n as usize)).collect())
    }

    /// Takes a project out of the inventory, keeping its health and history.
    pub async fn remove_project(&self, id: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE projects SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL"
        )
        .bind(id)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// The active projects from one of `sources` whose id is not in `keep`:
    /// those that left the configuration or discovery. Only ids are read:
    /// each sweep calls this, and projects added by hand (`cli`), usually
    /// the bulk of a large inventory, are never candidates.
    pub async fn missing(
        &self,
        sources: &[Source],
        keep: &std::collections::HashSet<i64>,
    ) -> Result<Vec<i64>, StoreError> {
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = on_pool!(self, |pool| {
            let mut query = sqlx::QueryBuilder::new(
                "SELECT id FROM projects WHERE removed_at IS NULL AND source IN (",
            );
            let mut listed = query.separated(", ");
            for source in sources {
                listed.push_bind(source.as_str());
            }
            query.push(")");
            query.build_query_scalar().fetch_all(pool).await
        })?;
        Ok(ids.into_iter().filter(|id| !keep.contains(id)).collect())
    }

    /// Active projects of a connection from `source`.
    pub async fn count_active(
        &self,
        connection_id: i64,
        source: Source,
    ) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM projects
              WHERE connection_id = $1 AND source = $2 AND removed_at IS NULL"
        )
        .bind(connection_id)
        .bind(source.as_str())
        .fetch_one(pool)
        .await)?)
    }

    /// Records the project's path as GitLab now reports it.
    pub async fn set_path(&self, id: i64, path: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE projects SET path = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(path)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Remembers the ids of the key and hook found to be ours.
    pub async fn set_owned_ids(
        &self,
        id: i64,
        deploy_key_id: Option<u64>,
        hook_id: Option<u64>,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
            "UPDATE projects SET deploy_key_id = COALESCE($2, deploy_key_id), hook_id = COALESCE($3, hook_id)
             WHERE id = $1",
        )
        .bind(id)
        .bind(deploy_key_id.map(|v| v as i64))
        .bind(hook_id.map(|v| v as i64))
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The projects a command line names with `wanted`: a numeric GitLab id,
    /// a path or the configuration's name for it. Removed ones too unless
    /// `active_only`; ordered by connection and path.
    pub async fn projects_named(
        &self,
        wanted: &str,
        active_only: bool,
    ) -> Result<Vec<ProjectRow>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, ProjectRow>(
            &format!(
                "{PROJECT_SELECT}
             WHERE (CAST(p.gitlab_id AS TEXT) = $1 OR p.path = $1 OR p.config_ref = $1)
               AND (p.removed_at IS NULL OR NOT $2)
             ORDER BY c.name, p.path"
            )
        )
        .bind(wanted)
        .bind(active_only)
        .fetch_all(pool)
        .await)?)
    }

    /// The active project of connection `connection` that `wanted` names:
    /// its GitLab id when `wanted` is a number, else its path (a GitLab
    /// path always holds a `/`). One index lookup either way, the status
    /// page's project page at 100,000 projects: `projects_named` also
    /// matches the config's own names, which no index covers.
    pub async fn project_of(
        &self,
        connection: &str,
        wanted: &str,
    ) -> Result<Option<ProjectRow>, StoreError> {
        let row = match wanted.parse::<i64>() {
            // As `projects_named` reads it: "007" is no id.
            Ok(id) if id.to_string() == wanted => on_pool!(self, |pool| {
                sqlx::query_as::<_, ProjectRow>(&project_of_sql(true))
                    .bind(connection)
                    .bind(id)
                    .fetch_optional(pool)
                    .await
            })?,
            _ => on_pool!(self, |pool| {
                sqlx::query_as::<_, ProjectRow>(&project_of_sql(false))
                    .bind(connection)
                    .bind(wanted)
                    .fetch_optional(pool)
                    .await
            })?,
        };
        Ok(row)
    }

    /// Every project ever known (including removed ones), for naming history rows.
    pub async fn all_projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, ProjectRow>(
            PROJECT_SELECT
        )
        .fetch_all(pool)
        .await)?)
    }
}
