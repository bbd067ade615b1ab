//! The `health` table: each component's current state, since when, how
//! many checks in a row, and any pending (unknown or blocked) condition.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::transitions::{Transition, TransitionRow};
use super::{ROWS_PER_STATEMENT, Store, StoreError, id_list, quiet};
use crate::health::{Component, Finding, Observation, State};

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
    /// What the last definite check found beside the state.
    pub finding: Option<Finding>,
    /// What the pending check found beside its condition.
    pub pending_finding: Option<Finding>,
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

/// How an observation (the row `record` tries to insert, `excluded`) folds
/// into the component's current health. A definite answer moves the state:
/// `since` and a count of 1 when it changed, one more consecutive check when
/// not, and it clears any pending condition. An unknown or blocked check
/// leaves the last known state, its detail and count as they were and is
/// recorded beside them (`pending`), so that an outage never overwrites what
/// we last knew; a finding goes with its state (`finding`) or with its
/// pending condition (`pending_finding`). Every expression reads the row as
/// it was before the update.
pub(super) const FOLD_OBSERVATION: &str = "
    ON CONFLICT (component, subject_id) DO UPDATE SET
        state = COALESCE(excluded.state, health.state),
        detail = CASE WHEN excluded.state IS NULL THEN health.detail ELSE excluded.detail END,
        finding = CASE WHEN excluded.state IS NULL THEN health.finding ELSE excluded.finding END,
        since = CASE WHEN excluded.state IS NULL OR excluded.state = health.state
                     THEN health.since ELSE excluded.since END,
        consecutive = CASE WHEN excluded.state IS NULL THEN health.consecutive
                           WHEN excluded.state = health.state THEN health.consecutive + 1
                           ELSE 1 END,
        last_checked = excluded.last_checked,
        pending = excluded.pending,
        pending_detail = excluded.pending_detail,
        pending_finding = excluded.pending_finding,
        pending_since = CASE WHEN excluded.pending IS NULL THEN NULL
                             WHEN excluded.pending = health.pending THEN health.pending_since
                             ELSE excluded.pending_since END";

impl Store {
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
            upsert.push("), observed(component, subject_id, state, text, pending, finding) AS (");
            upsert.push_values(chunk, |mut b, (component, subject_id, observation)| {
                let (state, pending, text) = match observation {
                    Observation::Definite { state, detail, .. } => (Some(*state), None, detail),
                    Observation::Unknown { reason: text, .. }
                    | Observation::Blocked { cause: text } => {
                        (None, Some(observation.state()), text)
                    }
                };
                b.push_bind(*component)
                    .push_bind(*subject_id)
                    .push_bind(state)
                    .push_bind(text.as_str())
                    .push_bind(pending)
                    .push_bind(observation.finding());
            });
            // A definite answer as a first row, or an undecided one as a
            // pending condition with no state yet; `WHERE true` lets SQLite
            // parse the ON CONFLICT that follows a SELECT.
            upsert.push(
                ")
                INSERT INTO health (component, subject_id, state, detail, since, consecutive,
                                    last_checked, pending, pending_detail, pending_since,
                                    finding, pending_finding)
                SELECT component, subject_id, state,
                       CASE WHEN state IS NULL THEN '' ELSE text END,
                       CASE WHEN state IS NULL THEN NULL ELSE now.at END,
                       state IS NOT NULL,
                       now.at,
                       pending,
                       CASE WHEN pending IS NULL THEN NULL ELSE text END,
                       CASE WHEN pending IS NULL THEN NULL ELSE now.at END,
                       CASE WHEN state IS NULL THEN NULL ELSE finding END,
                       CASE WHEN pending IS NULL THEN NULL ELSE finding END
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
        Ok(written
            .into_iter()
            .map(|row| {
                let transition = Transition {
                    from: row.from_state,
                    to: row.to_state,
                    detail: row.detail,
                };
                (row.component, row.subject_id, transition)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn findings_written_as_words_before_migration_0010_become_data() {
        // A database as glwarden left it before migration 0010: the findings
        // only in the words of a detail.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("glwarden.db");
        let all = sqlx::migrate!("./migrations");
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(all.migrations[..9].to_vec()),
            ..all
        };
        assert_eq!(before.migrations.last().unwrap().version, 9);
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        before.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO health (component, subject_id, state, detail, since, consecutive,
                                 last_checked, pending, pending_detail, pending_since) VALUES
             ('webhook', 1, 'healthy', 'hook 3; duplicate hooks to the same URL: 4', '2026-01-01T00:00:00Z', 1, '2026-01-01T00:00:00Z', NULL, NULL, NULL),
             ('webhook', 2, 'healthy', 'hook 5', '2026-01-01T00:00:00Z', 1, '2026-01-01T00:00:00Z', NULL, NULL, NULL),
             ('repository', 1, 'ok', 'a/b', '2026-01-01T00:00:00Z', 1, '2026-01-01T00:00:00Z', 'unknown',
              'GitLab answers 404 for the project; not_found if the next check agrees: HTTP 404', NULL),
             ('repository', 2, 'ok', 'c/d', '2026-01-01T00:00:00Z', 1, '2026-01-01T00:00:00Z', 'unknown', 'HTTP 502', NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open(&path).await.unwrap();
        let finding = |component, id| {
            let store = store.clone();
            async move {
                let h = store.health(component, id).await.unwrap().unwrap();
                (h.finding, h.pending_finding)
            }
        };
        assert_eq!(
            finding(Component::Webhook, 1).await,
            (Some(Finding::DuplicateHooks), None)
        );
        assert_eq!(finding(Component::Webhook, 2).await, (None, None));
        assert_eq!(
            finding(Component::Repository, 1).await,
            (None, Some(Finding::NotFoundOnce))
        );
        assert_eq!(finding(Component::Repository, 2).await, (None, None));
    }
}
