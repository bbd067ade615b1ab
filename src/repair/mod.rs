//! Repairs: what glwarden does about a broken component, and doing it
//! crash-safely.
//!
//! [`decide`] is pure: from a component's stored health, its policy and the
//! rules (confirmation, cooldown, budget, storm guard) to a [`Decision`].
//! [`Repairer`] carries a repair out against GitLab. Every multi-step repair
//! writes its intent to the journal before the first step and each step
//! after it completes; [`Repairer::resume`] finishes whatever a crash left,
//! always forwards (the new key or secret is in the journal), so that
//! afterwards GitLab holds exactly one key and one hook of ours per project,
//! matching what the store holds.

mod decide;
mod deploy_key;
mod journal;
mod manual;
pub use manual::ManualCause;
pub mod pass;
mod purge;
mod webhook;

pub use decide::*;
pub use webhook::{TESTABLE_TRIGGERS, is_our_hook_url};

use std::sync::Arc;

use crate::config::Config;
use crate::custody::{Custody, CustodyError};
use crate::gitlab::{ApiError, GitLab};
use crate::keys::KeyError;
use crate::store::{NewEvent, ProjectRow, Store, StoreError};
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    GitLab(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Keeper(#[from] crate::custody::KeeperError),
    #[error("{0}")]
    Refused(String),
}
impl RepairError {
    /// A refusal that repeating cannot change: GitLab refuses the hook URL
    /// itself (422 `Invalid url given`, or `... is blocked`, when local
    /// requests from hooks are not allowed; docs/gitlab-contract.md
    /// §10.7). Reported once; not retried every cooldown.
    pub fn is_permanent(&self) -> bool {
        match self {
            RepairError::GitLab(e) => matches!(
                &e.kind,
                crate::gitlab::ErrorKind::Rejected { status: 422, message }
                    if message.contains("Invalid url given") || message.contains("is blocked")
            ),
            _ => false,
        }
    }

    /// A failure that asking again may mend: GitLab unreachable, a 5xx, a
    /// timeout, or the store.
    pub fn is_transient(&self) -> bool {
        match self {
            RepairError::GitLab(e) => e.is_transient(),
            RepairError::Store(_) => true,
            _ => false,
        }
    }

    /// Refused because this replica no longer leads: before the write (its
    /// lease may have run out) or by the database (a journal step under a
    /// deposed leader's token). Not a failure of the repair: the new leader
    /// resumes it from the journal.
    pub fn is_not_leading(&self) -> bool {
        match self {
            RepairError::GitLab(e) => matches!(e.kind, crate::gitlab::ErrorKind::NotLeading),
            RepairError::Store(e) => e.is_fenced(),
            _ => false,
        }
    }
}

/// Carries repairs out and records them.
pub struct Repairer {
    cfg: Arc<Config>,
    store: Store,
    custody: Arc<Custody>,
}

impl Repairer {
    pub fn new(cfg: Arc<Config>, store: Store) -> Self {
        let custody = cfg.custody.clone();
        Self {
            cfg,
            store,
            custody,
        }
    }

    /// Whether this replica still leads (on SQLite, and for one-shot
    /// commands without a daemon, always): what it learns after its lease
    /// ran out (a 422 for a key the new leader added) is not its to record.
    pub fn leads(&self) -> bool {
        self.store.leads()
    }

    /// Carries out `action` on `project`, records the event, returns the outcome text.
    pub async fn execute(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        action: &Action,
        cause: &str,
        new_path: Option<&str>,
    ) -> Result<String, RepairError> {
        let component = action.component();
        let result = match action {
            Action::RegenerateDeployKey => self.regenerate_key(client, project, cause).await,
            Action::MakeKeyReadOnly => self.make_read_only(client, project).await,
            Action::CreateWebhook => self.create_webhook(client, project, cause).await,
            Action::FixWebhook => self.fix_webhook(client, project, cause, false).await,
            Action::ReenableWebhook => self.reenable_webhook(client, project).await,
            Action::DeleteDuplicateHooks => {
                self.delete_duplicates(client, project, project.hook_id.map(|h| h as u64))
                    .await
            }
            Action::FollowRename => self.follow_rename(project, new_path).await,
            Action::Purge => self.purge(client, project, cause).await,
        };
        let result = match result {
            Err(e) if e.is_not_leading() || !self.leads() => {
                tracing::warn!(project = %project.path, action = action.name(), error = %e, "repair interrupted: this replica no longer leads (the leader resumes it from the journal)");
                return Err(e);
            }
            other => other,
        };
        let (before, after, outcome) = match &result {
            Ok((before, after)) => (before.clone(), after.clone(), "ok".to_owned()),
            Err(e) => (String::new(), String::new(), format!("failed: {e}")),
        };
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: component.as_str(),
                action: action.name(),
                cause,
                before: &before,
                after: &after,
                outcome: &outcome,
            })
            .await?;
        match &result {
            Ok(_) => {
                tracing::info!(project = %project.path, action = action.name(), before, after, "repaired")
            }
            Err(e) => {
                tracing::warn!(project = %project.path, action = action.name(), error = %e, "repair failed")
            }
        }
        result.map(|_| outcome)
    }

    // ---- moved repository -------------------------------------------------

    async fn follow_rename(
        &self,
        project: &ProjectRow,
        new_path: Option<&str>,
    ) -> Result<(String, String), RepairError> {
        let new_path = new_path
            .ok_or_else(|| RepairError::Refused("GitLab's new path is not known".into()))?;
        // The expected webhook URL follows when it is derived from {path}.
        self.store.set_path(project.id, new_path).await?;
        Ok((project.path.clone(), new_path.to_owned()))
    }

    // ---- recovery ---------------------------------------------------------

    /// Finishes every unfinished repair in the journal (on start). Returns
    /// how many were finished and how many failed (left for the next start).
    pub async fn resume(
        &self,
        clients: &std::collections::BTreeMap<String, Arc<GitLab>>,
    ) -> Result<(usize, usize), StoreError> {
        let mut done = (0, 0);
        for entry in self.store.journal().await? {
            let Some(project) = self.store.project(entry.project_id).await? else {
                self.store.journal_finish(entry.id).await?;
                continue;
            };
            let Some(client) = clients.get(&project.connection) else {
                continue;
            };
            let result = match Action::from_name(&entry.action) {
                Some(Action::RegenerateDeployKey) => {
                    self.resume_key(client, &project, &entry).await
                }
                Some(Action::CreateWebhook | Action::FixWebhook) => {
                    self.resume_hook(client, &project, &entry).await
                }
                Some(Action::Purge) => self.resume_purge(client, &project, &entry).await,
                _ => Err(RepairError::Refused(format!(
                    "journal entry {} has an action glwarden does not resume: {}",
                    entry.id, entry.action
                ))),
            };
            let outcome = match &result {
                Ok(_) => {
                    done.0 += 1;
                    "ok (resumed from the journal)".to_owned()
                }
                Err(e) => {
                    done.1 += 1;
                    format!("failed on resume: {e}")
                }
            };
            let (before, after) = result.unwrap_or_default();
            self.store
                .record_event(&NewEvent {
                    project_id: Some(project.id),
                    component: entry.component.as_str(),
                    action: &entry.action,
                    cause: &entry.cause,
                    before: &before,
                    after: &after,
                    outcome: &outcome,
                })
                .await?;
            tracing::info!(project = %project.path, action = entry.action.as_str(), step = entry.step.as_str(), outcome, "journal entry resumed");
        }
        Ok(done)
    }
}
