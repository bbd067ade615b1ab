//! What the metrics and the repair pass need, computed in SQL so that a
//! fleet of 100,000 projects never has its 300,000 health rows in memory.

use super::{HealthRow, Store, StoreError};
use crate::health::State;

/// A project component in a definite, not-healthy state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Problem {
    pub connection: String,
    pub path: String,
    pub component: String,
    pub state: String,
}

/// Health of the whole inventory, for `/metrics`.
#[derive(Debug, Default)]
pub struct HealthSummary {
    /// Connection name, shown state, last definite state.
    pub connections: Vec<(String, State, Option<State>)>,
    /// Component, shown state (pending or definite; `unknown` if never checked), count.
    pub counts: Vec<(String, String, i64)>,
    /// Projects per connection in the inventory.
    pub projects: Vec<(String, i64)>,
    /// Components in a definite state other than healthy (broken or expiring).
    pub problems: Vec<Problem>,
    /// Every project component and whether it is healthy (only when asked: small fleets).
    pub all: Option<Vec<(String, String, String, bool)>>,
    /// Each connection's token as GitLab last described it.
    pub tokens: Vec<(String, crate::probe::TokenFacts)>,
    /// Connections whose last token rotation failed, with why.
    pub rotation_failures: Vec<(String, String)>,
}

impl Store {
    /// Aggregates for the metrics; `with_all` adds one row per project and component.
    pub async fn health_summary(&self, with_all: bool) -> Result<HealthSummary, StoreError> {
        let connections = on_pool!(self, |pool| {
            sqlx::query_as::<_, (String, State, Option<State>)>(
            "SELECT c.name, COALESCE(h.pending, h.state, 'unknown'), h.state
             FROM connections c LEFT JOIN health h ON h.component = 'connection' AND h.subject_id = c.id
             ORDER BY c.name",
        )
        .fetch_all(pool)
        .await
        })?;
        let mut counts = Vec::new();
        for component in crate::health::Component::PROJECT_COMPONENTS {
            let component = component.as_str();
            let rows = on_pool!(self, |pool| sqlx::query_as::<_, (String, i64)>(
                "SELECT COALESCE(h.pending, h.state, 'unknown') AS s, COUNT(*)
                 FROM projects p LEFT JOIN health h ON h.subject_id = p.id AND h.component = $1
                 WHERE p.removed_at IS NULL GROUP BY s",
            )
            .bind(component)
            .fetch_all(pool)
            .await)?;
            counts.extend(rows.into_iter().map(|(s, n)| (component.to_owned(), s, n)));
        }
        let projects = on_pool!(self, |pool| sqlx::query_as::<_, (String, i64)>(
            "SELECT c.name, COUNT(p.id) FROM connections c
             LEFT JOIN projects p ON p.connection_id = c.id AND p.removed_at IS NULL
             GROUP BY c.name ORDER BY c.name",
        )
        .fetch_all(pool)
        .await)?;
        let problems = on_pool!(self, |pool| sqlx::query_as::<_, Problem>(
            "SELECT c.name AS connection,
                    CASE WHEN p.path = '' THEN '#' || p.gitlab_id ELSE p.path END AS path,
                    h.component, h.state
             FROM health h JOIN projects p ON p.id = h.subject_id AND p.removed_at IS NULL
             JOIN connections c ON c.id = p.connection_id
             WHERE h.component != 'connection' AND h.pending IS NULL
               AND h.state IS NOT NULL AND h.state NOT IN ('ok', 'healthy')",
        )
        .fetch_all(pool)
        .await)?;
        let all = if with_all {
            Some(on_pool!(self, |pool| {
                sqlx::query_as::<_, (String, String, String, bool)>(
                    "SELECT c.name, CASE WHEN p.path = '' THEN '#' || p.gitlab_id ELSE p.path END, h.component,
                            h.pending IS NULL AND h.state IN ('ok', 'healthy')
                     FROM health h JOIN projects p ON p.id = h.subject_id AND p.removed_at IS NULL
                     JOIN connections c ON c.id = p.connection_id
                     WHERE h.component != 'connection'",
                )
                .fetch_all(pool)
                .await
            })?)
        } else {
            None
        };
        Ok(HealthSummary {
            connections,
            counts,
            projects,
            problems,
            all,
            tokens: self.tokens().await?,
            rotation_failures: self.rotation_failures().await?,
        })
    }

    /// Components a repair could be about: a definite state other than
    /// healthy, or one with a finding (a healthy hook with duplicates). Ordered by project.
    /// The condition in parentheses is index `health_repairable`'s
    /// (migration 0010), word for word, or SQLite scans every health row.
    pub async fn repair_candidates(&self) -> Result<Vec<HealthRow>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, HealthRow>(
            REPAIR_CANDIDATES
        )
        .fetch_all(pool)
        .await)?)
    }

    /// Active projects with a component in a definite broken state, and all
    /// active projects. The last condition is index `health_broken`'s
    /// (migration 0006), word for word, or SQLite scans every health row.
    pub async fn broken_share(&self) -> Result<(i64, i64), StoreError> {
        let broken: i64 = on_pool!(self, |pool| sqlx::query_scalar(BROKEN_PROJECTS)
            .fetch_one(pool)
            .await)?;
        let total: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM projects WHERE removed_at IS NULL"
        )
        .fetch_one(pool)
        .await)?;
        Ok((broken, total))
    }
}

/// Components a repair could be about (see [`Store::repair_candidates`]).
const REPAIR_CANDIDATES: &str = "
    SELECT h.* FROM health_now h JOIN projects p ON p.id = h.subject_id AND p.removed_at IS NULL
    WHERE h.component != 'connection' AND h.pending IS NULL AND h.state IS NOT NULL
      AND (h.state NOT IN ('ok', 'healthy') OR h.finding IS NOT NULL)
      -- An unfinished repair is resumed (start of every sweep), never
      -- begun a second time: two rotations would leave a key behind.
      AND NOT EXISTS (SELECT 1 FROM repair_journal j
                      WHERE j.project_id = h.subject_id AND j.component = h.component)
    ORDER BY h.subject_id";

/// Active projects with a component in a definite broken state.
const BROKEN_PROJECTS: &str = "
    SELECT COUNT(DISTINCT h.subject_id) FROM health h
    JOIN projects p ON p.id = h.subject_id AND p.removed_at IS NULL
    WHERE h.component != 'connection' AND h.pending IS NULL
      AND h.state IS NOT NULL AND h.state NOT IN ('ok', 'healthy', 'expiring')";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::plan;

    #[tokio::test]
    async fn after_sweep_reads_use_their_partial_indexes() {
        let (_dir, store) = crate::store::tests::empty_store().await;
        let candidates = plan(&store, REPAIR_CANDIDATES).await;
        assert!(
            candidates.contains("USING INDEX health_repairable"),
            "{candidates}"
        );
        let broken = plan(&store, BROKEN_PROJECTS).await;
        assert!(broken.contains("USING INDEX health_broken"), "{broken}");
    }
}
