//! What needs attention, for the status page and its JSON API: project
//! components that are not healthy (broken, expiring, unknown or blocked),
//! or those in one state when a state is asked for (healthy ones too),
//! filtered and a page at a time, so that a fleet of 100,000 projects is
//! never read whole for one page.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};
use crate::health::{Component, State};

/// Components on one page of the list.
pub const PAGE_SIZE: i64 = 50;

/// Which components to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttentionFilter {
    pub connection: Option<String>,
    pub component: Option<Component>,
    pub state: Option<State>,
    /// Part of the project's path, any case.
    pub path: Option<String>,
    /// 1-based.
    pub page: i64,
}

/// A project component that is not healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AttentionRow {
    pub connection: String,
    pub gitlab_id: i64,
    pub path: String,
    pub component: Component,
    pub state: State,
    pub since: Option<DateTime<Utc>>,
    pub detail: String,
}

/// One page of the list and how many match in all.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionPage {
    pub rows: Vec<AttentionRow>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

// The pending condition (unknown, blocked) shows before the last definite
// state, as everywhere else (`HealthRow::shown_state`). Parameters that may
// be NULL are cast, so that PostgreSQL knows their type.
const FROM: &str = "
      FROM health h
      JOIN projects p ON p.id = h.subject_id AND p.removed_at IS NULL
      JOIN connections c ON c.id = p.connection_id
     WHERE h.component <> 'connection'";

// What is not healthy, written exactly as the partial index
// `health_attention` (migrations/0011_status_page_lookups.sql), so that
// both engines read the few rows it holds rather than the whole table: at
// 100,000 projects the overview took 77 ms on SQLite and 149 ms on
// PostgreSQL without it (docs/performance.md, "The status page").
const NOT_HEALTHY: &str = "
       AND (h.pending IS NOT NULL OR h.state NOT IN ('ok', 'healthy'))";

const FILTERS: &str = "
       AND (CAST($1 AS TEXT) IS NULL OR c.name = $1)
       AND (CAST($2 AS TEXT) IS NULL OR h.component = $2)
       AND (CAST($3 AS TEXT) IS NULL OR COALESCE(h.pending, h.state) = $3)
       AND (CAST($4 AS TEXT) IS NULL OR lower(p.path) LIKE $4 ESCAPE '\\')";

/// `part` as a LIKE pattern matching it anywhere, any case, literally.
fn contains_pattern(part: &str) -> String {
    let mut pattern = String::from("%");
    for ch in part.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// The page `filter.page` of the components that need attention,
    /// ordered by connection, path and component.
    pub async fn attention(&self, filter: &AttentionFilter) -> Result<AttentionPage, StoreError> {
        let pattern = filter
            .path
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(contains_pattern);
        let component = filter.component.map(Component::as_str);
        let state = filter.state.map(State::as_str);
        // Unless a healthy state is asked for, what is listed is not healthy.
        let not_healthy = match filter.state {
            Some(State::Ok | State::Healthy) => "",
            _ => NOT_HEALTHY,
        };
        let from_where = format!("{FROM}{not_healthy}{FILTERS}");
        let total: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar(&format!("SELECT COUNT(*) {from_where}"))
                .bind(filter.connection.as_deref())
                .bind(component)
                .bind(state)
                .bind(pattern.as_deref())
                .fetch_one(pool)
                .await
        })?;
        let pages = ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let page = filter.page.clamp(1, pages);
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AttentionRow>(&format!(
                "SELECT c.name AS connection, p.gitlab_id,
                        CASE WHEN p.path = '' THEN '#' || p.gitlab_id ELSE p.path END AS path,
                        h.component, COALESCE(h.pending, h.state) AS state,
                        CASE WHEN h.pending IS NULL THEN h.since ELSE h.pending_since END AS since,
                        CASE WHEN h.pending IS NULL THEN h.detail ELSE COALESCE(h.pending_detail, '') END AS detail
                 {from_where}
                 ORDER BY c.name, p.path, h.component
                 LIMIT $5 OFFSET $6"
            ))
            .bind(filter.connection.as_deref())
            .bind(component)
            .bind(state)
            .bind(pattern.as_deref())
            .bind(PAGE_SIZE)
            .bind((page - 1) * PAGE_SIZE)
            .fetch_all(pool)
            .await
        })?;
        Ok(AttentionPage {
            rows,
            total,
            page,
            pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Observation;
    use crate::store::Engine;
    use crate::store::tests::{ENGINE, added_by_hand, empty_store, on_both_engines};
    use crate::store::{NewProject, Store};

    /// Projects `acme/p00` … on connection `main` and `other/x` on `other`,
    /// each with a healthy repository and webhook and a deploy key in
    /// `key(i)`.
    async fn fleet(store: &Store, n: i64, key: impl Fn(i64) -> Observation) {
        let main = store
            .connection_id("main", "https://a.example")
            .await
            .unwrap();
        let other = store
            .connection_id("other", "https://b.example")
            .await
            .unwrap();
        let paths: Vec<String> = (0..n).map(|i| format!("acme/p{i:02}")).collect();
        let mut batch = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let id = store
                .upsert_project(&NewProject {
                    gitlab_id: 100 + i as u64,
                    path,
                    ..added_by_hand(main)
                })
                .await
                .unwrap();
            batch.push((
                Component::Repository,
                id,
                Observation::definite(State::Ok, ""),
            ));
            batch.push((
                Component::Webhook,
                id,
                Observation::definite(State::Healthy, ""),
            ));
            batch.push((Component::DeployKey, id, key(i as i64)));
        }
        let id = store
            .upsert_project(&NewProject {
                path: "other/x",
                ..added_by_hand(other)
            })
            .await
            .unwrap();
        batch.push((Component::Webhook, id, Observation::unknown("HTTP 502")));
        store.record(&batch, Utc::now()).await.unwrap();
    }

    on_both_engines! {
        async fn the_list_holds_what_is_not_healthy_filtered_and_paged() {
            let (_kept, store) = empty_store().await;
            // Every third project's key is missing: 40 of 120.
            fleet(&store, 120, |i| match i % 3 {
                0 => Observation::definite(State::Missing, "no deploy key"),
                _ => Observation::definite(State::Healthy, "key 1"),
            })
            .await;
            let all = store.attention(&AttentionFilter { page: 1, ..Default::default() }).await.unwrap();
            assert_eq!((all.total, all.pages, all.rows.len()), (41, 1, 41));
            // Ordered by connection and path; a pending condition shows as itself.
            assert_eq!(all.rows[0].path, "acme/p00");
            let last = all.rows.last().unwrap();
            assert_eq!(
                (last.connection.as_str(), last.component, last.state, last.detail.as_str()),
                ("other", Component::Webhook, State::Unknown, "HTTP 502")
            );

            let missing = AttentionFilter {
                connection: Some("main".into()),
                component: Some(Component::DeployKey),
                state: Some(State::Missing),
                page: 1,
                ..Default::default()
            };
            let page = store.attention(&missing).await.unwrap();
            assert_eq!(page.total, 40);
            // A page beyond the last is the last.
            let beyond = store.attention(&AttentionFilter { page: 9, ..missing.clone() }).await.unwrap();
            assert_eq!((beyond.page, beyond.rows.len()), (1, 40));

            // Asked for, a healthy state is listed too.
            let healthy = AttentionFilter { state: Some(State::Healthy), component: Some(Component::DeployKey), page: 2, ..Default::default() };
            let page = store.attention(&healthy).await.unwrap();
            assert_eq!((page.total, page.pages, page.page, page.rows.len()), (80, 2, 2, 30));
            assert!(page.rows.iter().all(|r| r.state == State::Healthy));

            // The path search is literal and any case.
            let search = |q: &str| AttentionFilter { path: Some(q.into()), page: 1, ..Default::default() };
            assert_eq!(store.attention(&search("ACME/P0")).await.unwrap().total, 4);
            assert_eq!(store.attention(&search("p_0")).await.unwrap().total, 0);
            assert_eq!(store.attention(&search("other")).await.unwrap().total, 1);
        }
    }

    /// The status page's reads at 100,000 projects (benches/scale.rs):
    /// each goes by an index, never through a whole table.
    #[tokio::test]
    async fn the_status_pages_reads_use_indexes() {
        use crate::store::tests::plan;
        // Outside `on_both_engines!`: SQLite, whose plans are read here.
        let (_kept, store) = empty_store().await;
        // Parameters as the unfiltered overview binds them.
        let unbound = |sql: String| {
            ["$1", "$2", "$3", "$4", "$5", "$6"]
                .iter()
                .fold(sql, |sql, p| sql.replace(p, "NULL"))
        };
        let list = plan(
            &store,
            &unbound(format!("SELECT h.subject_id {FROM}{NOT_HEALTHY}{FILTERS}")),
        )
        .await;
        assert!(list.contains("USING INDEX health_attention"), "{list}");
        for by_id in [true, false] {
            let sql = crate::store::projects::project_of_sql(by_id)
                .replace("$1", "'main'")
                .replace("$2", "'7'");
            let found = plan(&store, &sql).await;
            assert!(found.contains("SEARCH p USING INDEX"), "{found}");
        }
        let history = plan(
            &store,
            &crate::store::transitions::PROJECT_TRANSITIONS
                .replace("$1", "7")
                .replace("$2", "50"),
        )
        .await;
        assert!(
            history.contains("USING INDEX transitions_subject"),
            "{history}"
        );
        let events = plan(
            &store,
            &crate::store::repairs::events_sql(true)
                .replace("$1", "7")
                .replace("$2", "NULL")
                .replace("$3", "50"),
        )
        .await;
        assert!(events.contains("USING INDEX events_project"), "{events}");
    }

    #[test]
    fn a_path_search_is_literal_and_any_case() {
        assert_eq!(contains_pattern("Acme/App"), "%acme/app%");
        assert_eq!(contains_pattern("50%_x\\"), "%50\\%\\_x\\\\%");
    }
}
