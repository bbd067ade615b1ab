//! The "Regenerate" button: a deploy key or webhook secret rotated now,
//! whatever the policy, through the same repairer and journal as the
//! automatic repairs; then the project is checked again.

use super::{Action, Repairer};
use crate::health::Component;
use crate::store::ProjectRow;
use crate::sweep::{SweepError, Sweeper, probe_connection};

impl Sweeper {
    /// Rotates the project's deploy key or webhook secret, then checks the
    /// project again; returns what the repair did.
    pub async fn regenerate(
        &self,
        project: &ProjectRow,
        component: Component,
    ) -> Result<String, SweepError> {
        let client = self.client_of(project)?.clone();
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        repairer.resume(&self.clients).await?;
        let cause = crate::store::MANUAL_CAUSE;
        let outcome = match component {
            Component::DeployKey => {
                repairer
                    .execute(&client, project, &Action::RegenerateDeployKey, cause, None)
                    .await?
            }
            Component::Webhook => repairer.rotate_webhook(&client, project, cause).await?,
            other => return Err(SweepError::Usage(format!("{other} cannot be regenerated"))),
        };
        let verdict = probe_connection(
            &client,
            self.cfg.connections[&project.connection].kind,
            self.cfg.raw.check.token_expiry_warning_days,
        )
        .await;
        self.recheck(&client, &verdict, project).await?;
        Ok(outcome)
    }
}
