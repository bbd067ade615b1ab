//! The `health` table: each component's current state, since when, how
//! many checks in a row, and any pending (unknown or blocked) condition.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::quiet::{self, count_quiet, settle, unsettle};
use super::transitions::{Transition, TransitionRow};
use super::{BeginWrite, ROWS_PER_STATEMENT, Store, StoreError};
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

/// The observations (`observed`, at `now`) as the rows they would make: a
/// definite answer as a first row, or an undecided one as a pending
/// condition with no state yet; `WHERE true` lets SQLite parse the ON
/// CONFLICT that follows a SELECT.
const INSERT_OBSERVED: &str = ")
    INSERT INTO health (component, subject_id, state, detail, since, consecutive,
                        last_checked, pending, pending_detail, pending_since,
                        finding, pending_finding)
    SELECT component, subject_id, state,
           CASE WHEN state IS NULL THEN '' ELSE text END,
           CASE WHEN state IS NULL THEN NULL ELSE now.at END,
           CASE WHEN state IS NULL THEN 0 ELSE 1 END,
           now.at,
           pending,
           CASE WHEN pending IS NULL THEN NULL ELSE text END,
           CASE WHEN pending IS NULL THEN NULL ELSE now.at END,
           CASE WHEN state IS NULL THEN NULL ELSE finding END,
           CASE WHEN pending IS NULL THEN NULL ELSE finding END
    FROM observed, now WHERE true";

/// A batch split so that no component appears twice in one statement, in
/// order: the k-th observation of a component goes to the k-th statement.
/// PostgreSQL refuses an upsert that touches a row twice ("ON CONFLICT DO
/// UPDATE command cannot affect row a second time"); SQLite folds them in
/// order, and so, statement after statement, do both.
fn rounds<'a, T>(chunk: &[&'a (Component, i64, T)]) -> Vec<Vec<&'a (Component, i64, T)>> {
    let mut seen: std::collections::HashMap<(Component, i64), usize> =
        std::collections::HashMap::with_capacity(chunk.len());
    let mut rounds: Vec<Vec<&'a (Component, i64, T)>> = Vec::new();
    for row in chunk {
        let k = seen.entry((row.0, row.1)).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(row);
        *k += 1;
    }
    rounds
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
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, HealthRow>(
            "SELECT * FROM health_now WHERE component = $1 AND subject_id = $2",
        )
        .bind(component.as_str())
        .bind(subject_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// Current health of every component.
    pub async fn all_health(&self) -> Result<Vec<HealthRow>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, HealthRow>(
            "SELECT * FROM health_now"
        )
        .fetch_all(pool)
        .await)?)
    }

    /// The health rows of the given subjects, whatever their component (the
    /// caller tells a connection's rows from a project's by component).
    pub async fn health_of(&self, subject_ids: &[i64]) -> Result<Vec<HealthRow>, StoreError> {
        Ok(on_pool!(self, |pool, engine| {
            sqlx::query_as::<_, HealthRow>(engine.pick(
                "SELECT * FROM health_now WHERE subject_id IN (SELECT value FROM json_each($1))",
                "SELECT * FROM health_now
             WHERE subject_id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))",
            ))
            .bind(super::id_list(subject_ids))
            .fetch_all(pool)
            .await
        })?)
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
        // A deposed leader's observations may be older than the new
        // leader's: they are not recorded once its lease may have run out.
        if !self.leads() {
            tracing::warn!(
                observations = batch.len(),
                "observations not recorded: this replica no longer holds the leader's lease"
            );
            return Ok(Vec::new());
        }
        let digests = quiet::digests(batch);
        let written = on_pool!(self, |pool, engine| {
            let mut tx = pool.begin_write().await?;
            let last_before: i64 =
                sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM transitions")
                    .fetch_one(&mut *tx)
                    .await?;
            let quiet = count_quiet!(tx, digests, now).await?;
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
            unsettle!(tx, engine, &loud_projects).await?;
            for chunk in loud.chunks(ROWS_PER_STATEMENT) {
                for round in rounds(chunk) {
                    // The time is bound once; each observation binds only what it
                    // says, and the first row it would make is derived from that.
                    let mut upsert = sqlx::QueryBuilder::new("WITH now(at) AS (SELECT ");
                    upsert.push_bind(now);
                    upsert.push(
                        "), observed(component, subject_id, state, text, pending, finding) AS (",
                    );
                    upsert.push_values(round, |mut b, (component, subject_id, observation)| {
                        let (state, pending, text) = match observation {
                            Observation::Definite { state, detail, .. } => {
                                (Some(*state), None, detail)
                            }
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
                    upsert.push(INSERT_OBSERVED);
                    upsert.push(FOLD_OBSERVATION);
                    upsert.build().execute(&mut *tx).await?;
                }
            }
            let written_in_full: Vec<_> = digests
                .iter()
                .filter(|digest| !quiet.contains(&digest.project_id))
                .collect();
            settle!(tx, written_in_full, now).await?;
            let written = sqlx::query_as::<_, TransitionRow>(
                "SELECT * FROM transitions WHERE id > $1 ORDER BY id",
            )
            .bind(last_before)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            written
        });
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
