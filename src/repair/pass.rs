//! The repair pass at the end of a sweep: the storm guard, then each
//! confirmed broken component decided by policy ([`super::decide_component`])
//! and carried out by the [`Repairer`]; repaired projects are checked again
//! so that the stored state shows the result.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;

use super::{Action, Decision, Policies, Repairer};
use crate::health::{Component, State};
use crate::probe::ConnectionVerdict;
use crate::store::{HealthRow, NewEvent};
use crate::sweep::{RepairResult, SweepError, SweepSummary, Sweeper};

impl Sweeper {
    /// stored state shows the result.
    pub(crate) async fn repair_pass(
        &self,
        repairer: &Repairer,
        verdicts: &BTreeMap<String, ConnectionVerdict>,
        newly_broken: usize,
        summary: &mut SweepSummary,
    ) -> Result<(), SweepError> {
        let r = &self.cfg.raw.repair;
        let (broken_now, total) = self.store.broken_share().await?;
        let (broken_now, total) = (broken_now as usize, total as usize);
        // Only components that could need a repair are read, grouped by project.
        let mut candidates: BTreeMap<i64, HashMap<Component, HealthRow>> = BTreeMap::new();
        for h in self.store.repair_candidates().await? {
            candidates
                .entry(h.subject_id)
                .or_default()
                .insert(h.component, h);
        }
        if super::is_storm(newly_broken, total, r.storm_share, r.storm_min_projects) {
            let reason = format!(
                "{newly_broken} of {total} projects broke in one sweep at {}",
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            );
            if self.store.repairs_paused().await?.is_none() {
                tracing::warn!(
                    reason = reason.as_str(),
                    "storm guard: automatic repairs paused; resume with `glwarden repair resume`"
                );
                self.store.set_repairs_paused(Some(&reason)).await?;
            }
        } else if let Some((reason, _)) = self.store.repairs_paused().await? {
            if (broken_now as f64) <= r.storm_share * total as f64 {
                tracing::info!(
                    previous = reason.as_str(),
                    "storm guard: a clean sweep; automatic repairs resume"
                );
                self.store.set_repairs_paused(None).await?;
            }
        }

        let now = Utc::now();
        for (project_id, health) in candidates {
            let Some(project) = self.store.project(project_id).await? else {
                continue;
            };
            let Some(verdict) = verdicts.get(&project.connection) else {
                continue;
            };
            if !verdict.usable {
                continue;
            }
            let client = self.clients[&project.connection].clone();
            let policies = Policies::for_project(&self.cfg, &project);
            let mut repaired = false;
            // Read once per project; set to `ok` once this pass followed the
            // project's move: its key and hook may then be repaired at the new path.
            let mut repository = match health.get(&Component::Repository) {
                Some(h) => h.definite_state(),
                None => self
                    .store
                    .health(Component::Repository, project.id)
                    .await?
                    .and_then(|h| h.definite_state()),
            };
            for component in Component::PROJECT_COMPONENTS {
                let Some(h) = health.get(&component) else {
                    continue;
                };
                let Some((decision, rules)) = super::decide_component(
                    &self.store,
                    &self.cfg,
                    &project,
                    &policies,
                    component,
                    h,
                    repository,
                    verdict.version,
                    now,
                )
                .await?
                else {
                    continue;
                };
                match decision {
                    Decision::Repair(action) => {
                        let new_path = match action {
                            Action::FollowRename => client
                                .project(&project.gitlab_id.to_string())
                                .await
                                .ok()
                                .map(|p| p.path_with_namespace),
                            _ => None,
                        };
                        // Re-read: an earlier repair of this project may have changed it.
                        let current = self
                            .store
                            .project(project.id)
                            .await?
                            .unwrap_or_else(|| project.clone());
                        let cause = format!(
                            "{component} {}: {}",
                            h.state.map(|s| s.as_str()).unwrap_or("?"),
                            h.detail
                        );
                        let done = repairer
                            .execute(&client, &current, &action, &cause, new_path.as_deref())
                            .await;
                        if done.is_err() && !repairer.leads() {
                            return Ok(()); // no further repair from a deposed leader
                        }
                        let ok = done.is_ok();
                        summary.repairs.push((
                            component,
                            if ok {
                                RepairResult::Done
                            } else {
                                RepairResult::Failed
                            },
                        ));
                        repaired = true;
                        if ok && action == Action::FollowRename {
                            repository = Some(State::Ok);
                        }
                        // Stopped after MAX_FAILED_REPAIRS failures in a row, or at
                        // once when GitLab refuses for good (a blocked hook URL).
                        let refusal = done.as_ref().err().filter(|e| e.is_permanent());
                        if !ok
                            && (refusal.is_some()
                                || rules.failed_in_a_row + 1 == super::MAX_FAILED_REPAIRS)
                        {
                            let why = super::stopped_reason(component, refusal);
                            tracing::warn!(project = %project.path, %component, "{why}");
                            self.store
                                .record_event(&NewEvent {
                                    project_id: Some(project.id),
                                    component: component.as_str(),
                                    action: super::STOPPED_EVENT,
                                    cause: &cause,
                                    before: "",
                                    after: "",
                                    outcome: &why,
                                })
                                .await?;
                            summary.repairs_stopped += 1;
                        }
                    }
                    Decision::Report(_, plan) => {
                        // Recorded once, when the state is first confirmed, not every sweep.
                        if h.consecutive == i64::from(r.confirm_checks) {
                            tracing::info!(project = %project.path, plan = plan.as_str(), "repair plan (policy: report)");
                            self.store
                                .record_event(&NewEvent {
                                    project_id: Some(project.id),
                                    component: component.as_str(),
                                    action: "plan",
                                    cause: &h.detail,
                                    before: "",
                                    after: &plan,
                                    outcome: "planned",
                                })
                                .await?;
                        }
                        summary.plans.push(plan);
                    }
                    Decision::Skip(why) => {
                        if rules.failed_in_a_row >= super::MAX_FAILED_REPAIRS
                            && rules.repository == Some(State::Ok)
                        {
                            summary.repairs_stopped += 1;
                        }
                        tracing::debug!(project = %project.path, %component, why, "no repair")
                    }
                }
            }
            if repaired {
                summary.transitions += self.recheck(&client, verdict, &project).await?;
            }
        }
        Ok(())
    }
}
