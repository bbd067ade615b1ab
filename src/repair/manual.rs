//! The buttons a person presses, from the command line (`glwarden
//! regenerate`) or the status page: a deploy key or webhook secret rotated
//! now, a move followed, or a project checked now, whatever the policy,
//! through the same repairer and journal as the automatic repairs; then the
//! project is checked again. Who pressed is the event's cause
//! ([`ManualCause`]).

use super::{Action, Repairer};
use crate::health::Component;
use crate::store::ProjectRow;
use crate::sweep::{SweepError, Sweeper, probe_connection};

/// Who asked for a manual repair: the event's cause. A manual attempt ends
/// a run of failed automatic ones (`store::failed_repairs_in_a_row`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualCause {
    CommandLine,
    StatusPage,
}

impl ManualCause {
    pub fn as_str(self) -> &'static str {
        match self {
            ManualCause::CommandLine => crate::store::MANUAL_CAUSE,
            ManualCause::StatusPage => crate::store::WEB_CAUSE,
        }
    }
}

impl Sweeper {
    /// Rotates the project's deploy key or webhook secret, then checks the
    /// project again; returns what the repair did.
    pub async fn regenerate(
        &self,
        project: &ProjectRow,
        component: Component,
        cause: ManualCause,
    ) -> Result<String, SweepError> {
        let client = self.client_of(project)?.clone();
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        repairer.resume(&self.clients).await?;
        let cause = cause.as_str();
        let outcome = match component {
            Component::DeployKey => {
                repairer
                    .execute(&client, project, &Action::RegenerateDeployKey, cause, None)
                    .await?
            }
            Component::Webhook => repairer.rotate_webhook(&client, project, cause).await?,
            other => return Err(SweepError::Usage(format!("{other} cannot be regenerated"))),
        };
        self.check_now(project).await?;
        Ok(outcome)
    }

    /// Deletes glwarden's deploy key and webhook of `project` from GitLab
    /// and removes it from the inventory (`project remove --purge`);
    /// returns what was deleted and what was left.
    pub async fn purge(
        &self,
        project: &ProjectRow,
        cause: ManualCause,
    ) -> Result<(String, String), SweepError> {
        let client = self.client_of(project)?.clone();
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        repairer.resume(&self.clients).await?;
        // A purge the resume just finished leaves nothing to do.
        if self
            .store
            .project(project.id)
            .await?
            .is_none_or(|p| p.removed_at.is_some())
        {
            return Ok((
                "finished from the journal".into(),
                "removed from the inventory".into(),
            ));
        }
        // One the resume could not finish (GitLab still down) is not begun
        // a second time.
        if self
            .store
            .journal()
            .await?
            .iter()
            .any(|e| e.project_id == project.id)
        {
            return Err(SweepError::Usage(format!(
                "an unfinished repair or purge of {} is in the journal and could not be finished now (see `glwarden events`); try again later",
                project.path
            )));
        }
        repairer
            .execute(&client, project, &Action::Purge, cause.as_str(), None)
            .await?;
        let event = self
            .store
            .events(Some(project.id), None, 1)
            .await?
            .into_iter()
            .next()
            .filter(|e| e.action == Action::Purge.name());
        Ok(event.map_or_else(Default::default, |e| (e.before, e.after)))
    }

    /// Follows the project's new path at GitLab (a moved repository): the
    /// stored path, and the expected webhook URL where derived from it.
    pub async fn follow_move(
        &self,
        project: &ProjectRow,
        cause: ManualCause,
    ) -> Result<String, SweepError> {
        let client = self.client_of(project)?.clone();
        let new_path = client
            .project(&project.gitlab_id.to_string())
            .await
            .map_err(|e| SweepError::Usage(format!("GitLab's path for the project: {e}")))?
            .path_with_namespace;
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        let outcome = repairer
            .execute(
                &client,
                project,
                &Action::FollowRename,
                cause.as_str(),
                Some(&new_path),
            )
            .await?;
        self.check_now(project).await?;
        Ok(outcome)
    }

    /// Checks one project now (its connection first) and records what it
    /// finds; returns the number of state changes.
    pub async fn check_now(&self, project: &ProjectRow) -> Result<usize, SweepError> {
        let client = self.client_of(project)?.clone();
        let conn = &self.cfg.connections[&project.connection];
        let warning_days = crate::sweep::rotation::warning_days(&self.cfg, conn);
        let verdict = probe_connection(&client, conn.kind, warning_days).await;
        Ok(self.recheck(&client, &verdict, project).await?)
    }
}
