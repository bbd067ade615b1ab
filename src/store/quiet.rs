//! Quiet checks: a project's answers that match what the store already holds.
//!
//! Rewriting a healthy project's three health rows every sweep, only to
//! count one more check, was a third of the daemon's CPU at 100,000
//! projects. So after a project's answers are written in full, a digest of
//! them is kept on one narrow row of `settled` (migration 0007); a later
//! check with the same digest only counts itself there, and readers see the
//! sum through the view `health_now`.
//!
//! That view is right as long as a project has a `settled` row only while
//! each of its health rows holds, without a pending condition, the answer
//! the digest describes. [`settle`] therefore keeps a digest only for a
//! project whose rows were all just written from definite answers, and
//! every other write to a project's rows goes after [`unsettle`].

use std::collections::BTreeMap;

use super::Engine;
use crate::health::{Component, Finding, Observation, State};

/// A project's answers in one batch, as one comparable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Digest {
    pub project_id: i64,
    /// The answers, by component, as JSON: exact, so equal digests mean equal answers.
    pub text: String,
    /// How many components answered.
    pub components: i64,
}

/// One project's definite answers: state, detail and finding by component.
type ByComponent<'a> = BTreeMap<Component, (State, &'a str, Option<Finding>)>;

/// The digest of each project in `batch` whose components each answered
/// exactly once, definitely; by project id. Connections have none.
pub(super) fn digests(batch: &[(Component, i64, Observation)]) -> Vec<Digest> {
    // `None` once a project answered something a digest cannot stand for.
    let mut answers: BTreeMap<i64, Option<ByComponent<'_>>> = BTreeMap::new();
    for (component, project_id, observation) in batch {
        if !component.is_project() {
            continue;
        }
        let entry = answers
            .entry(*project_id)
            .or_insert_with(|| Some(BTreeMap::new()));
        let Some(by_component) = entry else { continue };
        let fits = match observation {
            Observation::Definite {
                state,
                detail,
                finding,
            } => by_component
                .insert(*component, (*state, detail.as_str(), *finding))
                .is_none(),
            Observation::Unknown { .. } | Observation::Blocked { .. } => false,
        };
        if !fits {
            *entry = None;
        }
    }
    answers
        .into_iter()
        .filter_map(|(project_id, by_component)| {
            let by_component = by_component?;
            let rows: Vec<_> = by_component
                .iter()
                .map(|(component, (state, detail, finding))| (component, state, detail, finding))
                .collect();
            Some(Digest {
                project_id,
                text: serde_json::to_string(&rows).expect("strings serialize"),
                components: rows.len() as i64,
            })
        })
        .collect()
}

/// Counts one more check, made at `at`, for each project whose stored digest
/// equals its new one; evaluates to those projects, whose health rows then
/// need no write. These three steps are macros over the write transaction
/// `tx`, so that one text serves both engines' transactions.
macro_rules! count_quiet {
    ($tx:expr, $digests:expr, $at:expr) => {
        async {
            let mut quiet = std::collections::HashSet::with_capacity($digests.len());
            for chunk in $digests.chunks($crate::store::ROWS_PER_STATEMENT) {
                let mut update = sqlx::QueryBuilder::new("WITH answer(project_id, digest) AS (");
                update.push_values(chunk, |mut row, digest| {
                    row.push_bind(digest.project_id)
                        .push_bind(digest.text.as_str());
                });
                update.push(") UPDATE settled SET tally = tally + 1, last_checked = ");
                update.push_bind($at);
                update.push(
                    " FROM answer
                     WHERE settled.project_id = answer.project_id AND settled.digest = answer.digest
                     RETURNING settled.project_id",
                );
                let counted: Vec<i64> = update.build_query_scalar().fetch_all(&mut *$tx).await?;
                quiet.extend(counted);
            }
            Ok::<_, sqlx::Error>(quiet)
        }
    };
}

/// Before the health rows of `projects` are written: adds each one's quiet
/// checks back into its rows and drops its digest.
macro_rules! unsettle {
    ($tx:expr, $engine:expr, $projects:expr) => {
        async {
            if !$projects.is_empty() {
                let ids = $crate::store::id_list($projects);
                for statement in $crate::store::quiet::unsettling($engine) {
                    sqlx::query(statement).bind(&ids).execute(&mut *$tx).await?;
                }
            }
            Ok::<_, sqlx::Error>(())
        }
    };
}

/// After the health rows of these projects were written from their answers
/// at `at`: keeps the digest of each project whose every health row was
/// among them.
macro_rules! settle {
    ($tx:expr, $digests:expr, $at:expr) => {
        async {
            for chunk in $digests.chunks($crate::store::ROWS_PER_STATEMENT) {
                let mut insert =
                    sqlx::QueryBuilder::new("WITH answer(project_id, digest, components) AS (");
                insert.push_values(chunk, |mut row, digest| {
                    row.push_bind(digest.project_id)
                        .push_bind(digest.text.as_str())
                        .push_bind(digest.components);
                });
                // A project with a row this batch did not write (a component that
                // was not checked this time) keeps no digest: its count would grow.
                // `unsettle` dropped the digests of these projects before.
                insert.push(
                    ") INSERT INTO settled (project_id, digest, last_checked)
                     SELECT project_id, digest, ",
                );
                insert.push_bind($at);
                insert.push(
                    " FROM answer
                     WHERE components = (SELECT COUNT(*) FROM health h
                                         WHERE h.subject_id = answer.project_id
                                           AND h.component != 'connection')",
                );
                insert.build().execute(&mut *$tx).await?;
            }
            Ok::<_, sqlx::Error>(())
        }
    };
}

pub(super) use {count_quiet, settle, unsettle};

/// The statements of `unsettle`, both binding the projects as a JSON array:
/// their quiet checks added to their health rows, then their digests dropped.
pub(super) fn unsettling(engine: Engine) -> [&'static str; 2] {
    [
        engine.pick(
            "UPDATE health SET consecutive = health.consecutive + quiet.checks,
                              last_checked = quiet.last_checked
             FROM quiet
             WHERE quiet.project_id IN (SELECT value FROM json_each($1)) AND quiet.checks > 0
               AND health.subject_id = quiet.project_id AND health.component != 'connection'",
            "UPDATE health SET consecutive = health.consecutive + quiet.checks,
                              last_checked = quiet.last_checked
             FROM quiet
             WHERE quiet.project_id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))
               AND quiet.checks > 0
               AND health.subject_id = quiet.project_id AND health.component != 'connection'",
        ),
        engine.pick(
            "DELETE FROM settled WHERE project_id IN (SELECT value FROM json_each($1))",
            "DELETE FROM settled
             WHERE project_id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{empty_store, plan};

    #[tokio::test]
    async fn writing_back_quiet_checks_seeks_rather_than_scans() {
        let (_dir, store) = empty_store().await;
        let [fold_back, forget] = unsettling(Engine::Sqlite);
        let fold_back = plan(&store, fold_back).await;
        assert!(
            fold_back.contains("USING INDEX health_subject") && !fold_back.contains("SCAN health"),
            "{fold_back}"
        );
        let forget = plan(&store, forget).await;
        assert!(
            forget.contains("SEARCH settled USING INTEGER PRIMARY KEY"),
            "{forget}"
        );
    }

    fn ok(detail: &str) -> Observation {
        Observation::definite(State::Ok, detail)
    }

    #[test]
    fn only_projects_that_answered_each_component_once_definitely_have_a_digest() {
        use Component::*;
        let unknown = Observation::unknown("HTTP 502");
        let batch = [
            (Connection, 1, Observation::definite(State::Connected, "me")),
            (Webhook, 1, Observation::definite(State::Healthy, "hook 3")),
            (Repository, 1, ok("")),
            (Repository, 2, ok("")),
            (DeployKey, 2, unknown),
            (Repository, 3, ok("")),
            (Repository, 3, ok("")),
        ];
        let digests = digests(&batch);
        assert_eq!(digests.len(), 1, "{digests:?}");
        assert_eq!(digests[0].project_id, 1);
        assert_eq!(digests[0].components, 2);
        // In component order, whatever the batch's order.
        assert_eq!(
            digests[0].text,
            r#"[["repository","ok","",null],["webhook","healthy","hook 3",null]]"#
        );
        // A finding is part of the answer: the same words with one differ.
        let hook = || Observation::definite(State::Healthy, "hook 3");
        let plain = [(Webhook, 1, hook())];
        let found = [(Webhook, 1, hook().with_finding(Finding::DuplicateHooks))];
        assert_ne!(
            super::digests(&plain)[0].text,
            super::digests(&found)[0].text
        );
    }
}
