//! Store operations of repairs: key material, the repair journal, the audit
//! trail of events, and the storm guard's pause.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{ProjectRow, Store, StoreError};
use crate::custody::SecretKind;
use crate::health::Component;

/// How far an unfinished repair got: each step is written after it
/// completed at GitLab or in the store (the repairs in `src/repair/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum JournalStep {
    /// Written before the first request: what the repair will do.
    Intent,
    /// GitLab has the new key or hook.
    Created,
    /// The new key was read back from GitLab as ours.
    Confirmed,
    /// The store holds the new key or hook.
    Stored,
    /// Closed without effect: GitLab could not confirm the new key.
    Abandoned,
    /// A purge's deletes of one kind (keys, then hooks) are done at GitLab.
    Deleted,
}

impl JournalStep {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalStep::Intent => "intent",
            JournalStep::Created => "created",
            JournalStep::Confirmed => "confirmed",
            JournalStep::Stored => "stored",
            JournalStep::Abandoned => "abandoned",
            JournalStep::Deleted => "deleted",
        }
    }
}

/// One unfinished repair.
#[derive(Debug, Clone, FromRow)]
pub struct JournalRow {
    pub id: i64,
    pub project_id: i64,
    pub component: Component,
    /// The repair's action name (`repair::Action::name`).
    pub action: String,
    pub step: JournalStep,
    /// JSON with ids and fingerprints, never secrets.
    pub data: String,
    /// The sealed secret being installed.
    pub secret: Option<Vec<u8>>,
    pub cause: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One audit event.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub project_id: Option<i64>,
    pub component: String,
    pub action: String,
    pub cause: String,
    pub before: String,
    pub after: String,
    pub outcome: String,
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub project_id: Option<i64>,
    pub component: &'a str,
    pub action: &'a str,
    pub cause: &'a str,
    pub before: &'a str,
    pub after: &'a str,
    pub outcome: &'a str,
}

/// Actions that change GitLab, counted against the budget and cooldown.
const REPAIR_ACTIONS: &str = "('regenerate_deploy_key','make_key_read_only','create_webhook','fix_webhook','reenable_webhook','delete_duplicate_hooks','follow_rename')";

/// The cause recorded for a person's `glwarden regenerate`.
pub const MANUAL_CAUSE: &str = "glwarden regenerate";
/// The cause of a repair asked for on the status page.
pub const WEB_CAUSE: &str = "status page (operator)";

/// The events statement: one project's by `events_project`, or all.
/// `$1 IS NULL OR project_id = $1` would read every event for one
/// project's page.
pub(super) fn events_sql(one_project: bool) -> String {
    let which = if one_project {
        "project_id = $1"
    } else {
        "$1 IS NULL"
    };
    format!(
        "SELECT * FROM events WHERE {which} AND ($2 IS NULL OR at >= $2) ORDER BY id DESC LIMIT $3"
    )
}

impl Store {
    pub async fn project(&self, id: i64) -> Result<Option<ProjectRow>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, ProjectRow>(
            &format!("{} WHERE p.id = $1", super::projects::PROJECT_SELECT)
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?)
    }

    /// Replaces the project's deploy key: its GitLab id, public half,
    /// fingerprint and sealed private half, in one statement.
    pub async fn set_deploy_key(
        &self,
        id: i64,
        key_id: Option<u64>,
        public_key: &str,
        fingerprint: &str,
        private_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
            "UPDATE projects SET deploy_key_id = $2, public_key = $3, fingerprint = $4, private_key = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(key_id.map(|v| v as i64))
        .bind(public_key)
        .bind(fingerprint)
        .bind(private_sealed)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Records the project's hook id and (when given) its sealed secret token.
    pub async fn set_hook(
        &self,
        id: i64,
        hook_id: u64,
        token_sealed: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE projects SET hook_id = $2, hook_token = COALESCE($3, hook_token) WHERE id = $1",
        )
        .bind(id)
        .bind(hook_id as i64)
        .bind(token_sealed)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Every key fingerprint glwarden held for the project (migration 0009).
    pub async fn owned_key_fingerprints(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let rows = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT fingerprint FROM owned_keys WHERE project_id = $1"
        )
        .bind(id)
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// Remembers a webhook URL template glwarden is configured with.
    pub async fn remember_hook_url_template(&self, template: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO hook_url_templates (template) VALUES ($1) ON CONFLICT DO NOTHING"
        )
        .bind(template)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Every webhook URL template glwarden was configured with.
    pub async fn hook_url_templates(&self) -> Result<Vec<String>, StoreError> {
        let rows = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT template FROM hook_url_templates"
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows)
    }

    /// The sealed secret of a project, if stored.
    pub async fn project_secret(
        &self,
        id: i64,
        kind: SecretKind,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let column = match kind {
            SecretKind::DeployKey => "private_key",
            SecretKind::HookToken => "hook_token",
        };
        let value: Option<Option<Vec<u8>>> = on_pool!(self, |pool| sqlx::query_scalar(&format!(
            "SELECT {column} FROM projects WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await)?;
        Ok(value.flatten())
    }

    // ---- journal ------------------------------------------------------------

    /// Writes the intent of a repair before its first step; returns the entry.
    pub async fn journal_begin(
        &self,
        project_id: i64,
        component: Component,
        action: &str,
        data: &serde_json::Value,
        secret: Option<&[u8]>,
        cause: &str,
    ) -> Result<JournalRow, StoreError> {
        let now = Utc::now();
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, JournalRow>(
            "INSERT INTO repair_journal (project_id, component, action, step, data, secret, cause, created_at, updated_at)
             VALUES ($1, $2, $3, 'intent', $4, $5, $6, $7, $7) RETURNING *",
        )
        .bind(project_id)
        .bind(component)
        .bind(action)
        .bind(data.to_string())
        .bind(secret)
        .bind(cause)
        .bind(now)
        .fetch_one(pool)
        .await
        })?)
    }

    /// Records that a step completed, with what it learnt.
    pub async fn journal_step(
        &self,
        id: i64,
        step: JournalStep,
        data: &serde_json::Value,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE repair_journal SET step = $2, data = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(step)
        .bind(data.to_string())
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn journal_finish(&self, id: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM repair_journal WHERE id = $1"
        )
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    pub async fn journal(&self) -> Result<Vec<JournalRow>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, JournalRow>(
            "SELECT * FROM repair_journal ORDER BY id"
        )
        .fetch_all(pool)
        .await)?)
    }

    // ---- events -------------------------------------------------------------

    pub async fn record_event(&self, e: &NewEvent<'_>) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO events (at, project_id, component, action, cause, before, after, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Utc::now())
        .bind(e.project_id)
        .bind(e.component)
        .bind(e.action)
        .bind(e.cause)
        .bind(e.before)
        .bind(e.after)
        .bind(e.outcome)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Events, newest first.
    pub async fn events(
        &self,
        project: Option<i64>,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as::<_, EventRow>(&events_sql(project.is_some()))
                .bind(project)
                .bind(since)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Repairs (of any outcome) started since `t`, for the hourly budget.
    pub async fn repairs_since(&self, t: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM events WHERE at >= $1 AND action IN {REPAIR_ACTIONS}"
        ))
        .bind(t)
        .fetch_one(pool)
        .await)?)
    }

    /// Automatic repairs of a component that failed one after another, newest
    /// first, since `since` (its state's last change): the count stops at a
    /// repair that worked and at a person's `glwarden regenerate`. A
    /// `repair_stopped` event reached before either counts as
    /// [`crate::repair::MAX_FAILED_REPAIRS`] (GitLab refused for good).
    pub async fn failed_repairs_in_a_row(
        &self,
        project_id: i64,
        component: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<i64, StoreError> {
        let recent: Vec<(String, String, String)> =
            on_pool!(self, |pool| sqlx::query_as(&format!(
                "SELECT action, outcome, cause FROM events
             WHERE project_id = $1 AND component = $2
               AND (action IN {REPAIR_ACTIONS} OR action = $4)
               AND ($3 IS NULL OR at >= $3)
             ORDER BY id DESC LIMIT 20"
            ))
            .bind(project_id)
            .bind(component)
            .bind(since)
            .bind(crate::repair::STOPPED_EVENT)
            .fetch_all(pool)
            .await)?;
        let mut failed = 0;
        for (action, outcome, cause) in &recent {
            if action == crate::repair::STOPPED_EVENT {
                return Ok(failed.max(crate::repair::MAX_FAILED_REPAIRS));
            }
            if !outcome.starts_with("failed") || cause == MANUAL_CAUSE || cause == WEB_CAUSE {
                break;
            }
            failed += 1;
        }
        Ok(failed)
    }

    /// When a component of a project was last repaired, for the cooldown.
    pub async fn last_repair(
        &self,
        project_id: i64,
        component: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar(&format!(
            "SELECT MAX(at) FROM events WHERE project_id = $1 AND component = $2 AND action IN {REPAIR_ACTIONS}"
        ))
        .bind(project_id)
        .bind(component)
        .fetch_one(pool)
        .await
        })?)
    }

    // ---- storm guard --------------------------------------------------------

    /// Why automatic repairs are paused, and since when; `None` when they run.
    pub async fn repairs_paused(&self) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row: (i64, String, Option<DateTime<Utc>>) = on_pool!(self, |pool| sqlx::query_as(
            "SELECT paused, reason, since FROM repair_state WHERE id = 1"
        )
        .fetch_one(pool)
        .await)?;
        Ok((row.0 != 0).then(|| (row.1, row.2.unwrap_or_else(Utc::now))))
    }

    pub async fn set_repairs_paused(&self, reason: Option<&str>) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE repair_state SET paused = $1, reason = $2, since = $3 WHERE id = 1"
        )
        .bind(i64::from(reason.is_some()))
        .bind(reason.unwrap_or_default())
        .bind(reason.map(|_| Utc::now()))
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }
}
