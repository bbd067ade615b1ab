//! The `transitions` table: the history, one row per change of state.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{Store, StoreError};
use crate::health::{Component, State};

/// One state change, as stored in the history.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct TransitionRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub component: Component,
    pub subject_id: i64,
    pub from_state: Option<State>,
    pub to_state: State,
    pub detail: String,
}

/// A change of state, as `record` wrote it to the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<State>,
    pub to: State,
    pub detail: String,
}

/// One project's transitions, newest first. The components by name, not
/// `!= 'connection'`: then the (component, subject_id, at) index finds the
/// project's rows rather than reading the table.
pub(super) const PROJECT_TRANSITIONS: &str = "SELECT * FROM transitions
  WHERE component IN ('repository', 'deploy_key', 'webhook') AND subject_id = $1
  ORDER BY id DESC LIMIT $2";

impl Store {
    /// State transitions, newest first; of one project's components when `project` is given.
    pub async fn transitions(
        &self,
        project: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = match project {
            Some(id) => on_pool!(self, |pool| sqlx::query_as::<_, TransitionRow>(
                PROJECT_TRANSITIONS,
            )
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await)?,
            None => on_pool!(self, |pool| sqlx::query_as::<_, TransitionRow>(
                "SELECT * FROM transitions ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await)?,
        };
        Ok(rows)
    }
}
