//! The sweep's write step: observations go to the store from a task of
//! their own, in transactions of [`WRITE_BATCH`] projects, so that the store
//! never holds up the requests in flight.

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use futures::StreamExt;

use super::{Outcomes, SweepError, SweepSummary, Sweeper};
use crate::health::{Component, Observation, Severity, State};
use crate::store::{StoreError, Transition};

/// Observations are written in transactions of this many projects.
const WRITE_BATCH: usize = 500;

impl Sweeper {
    /// Step 5: every outcome recorded; returns how many projects had a
    /// component turn broken (for the storm guard).
    pub(super) async fn write(
        &self,
        mut outcomes: Outcomes<'_>,
        summary: &mut SweepSummary,
        progress: Option<&super::Progress>,
    ) -> Result<usize, SweepError> {
        // A bounded channel keeps memory flat.
        let (to_writer, mut batches) =
            tokio::sync::mpsc::channel::<Vec<(Component, i64, Observation)>>(4);
        let store = self.store.clone();
        let writer = tokio::spawn(async move {
            let mut written = Vec::new();
            while let Some(batch) = batches.recv().await {
                written.extend(store.record(&batch, Utc::now()).await?);
            }
            Ok::<_, StoreError>(written)
        });
        let mut pending = Vec::with_capacity(WRITE_BATCH * 3);
        while let Some(outcome) = outcomes.next().await {
            if let Some(progress) = progress {
                progress.advance();
            }
            let Some(outcome) = outcome? else {
                summary.not_started += 1;
                continue;
            };
            summary.projects_checked += 1;
            self.remember_findings(&outcome).await?;
            for (component, observation) in outcome.observations {
                pending.push((component, outcome.project_id, observation));
            }
            if pending.len() >= WRITE_BATCH * 3 {
                count(&mut summary.observed, &pending);
                if to_writer.send(std::mem::take(&mut pending)).await.is_err() {
                    break; // the writer failed: its error is returned below
                }
            }
        }
        drop(outcomes);
        count(&mut summary.observed, &pending);
        let _ = to_writer.send(pending).await;
        drop(to_writer);
        let written = writer.await.map_err(|e| StoreError::Open {
            path: self.cfg.store.to_string(),
            reason: format!("writer task failed: {e}"),
        })??;
        summary.transitions += written.len();
        Ok(newly_broken(&written))
    }
}

/// Projects with a component that turned broken from a known state.
fn newly_broken(written: &[(Component, i64, Transition)]) -> usize {
    let mut projects = HashSet::new();
    for (component, subject, t) in written {
        let broken = t.to.severity() == Severity::Broken;
        let was_known = t.from.is_some();
        if component.is_project() && broken && was_known {
            projects.insert(*subject);
        }
    }
    projects.len()
}

/// Observations counted by component and shown state (the checks counter).
pub(super) fn count(
    counts: &mut BTreeMap<(Component, State), u64>,
    batch: &[(Component, i64, Observation)],
) {
    for (component, _, observation) in batch {
        *counts.entry((*component, observation.state())).or_default() += 1;
    }
}
