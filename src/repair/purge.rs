//! A clean disconnect (`glwarden project remove --purge`, `[[discover]]
//! purge_on_leave`): glwarden's deploy key and webhook deleted from GitLab,
//! then the project removed from the inventory, its history kept. Only what
//! glwarden owns is deleted: a key by its recorded id (or, with none, by its
//! material) and its material, a hook by its recorded id and a URL
//! glwarden was configured for; anything else on the project is left as
//! it is. A 404 is success (already gone,
//! docs/gitlab-contract.md §14). Through the journal: the ids are written
//! before the first delete and each delete after it, so a crash resumes
//! where it stopped.

use super::journal::{JournalRecord, Purge};
use super::webhook::is_our_hook_url;
use super::{Action, RepairError, Repairer};
use crate::gitlab::GitLab;
use crate::keys::{KeyDigest, is_same_key};
use crate::store::{JournalRow, JournalStep, ProjectRow};

impl Repairer {
    /// Deletes glwarden's key and hook of `project` from GitLab, then
    /// removes it from the inventory.
    pub(super) async fn purge(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        cause: &str,
    ) -> Result<(String, String), RepairError> {
        let gitlab_id = project.gitlab_id as u64;
        // The ids the store holds; found by material and URL when it has none.
        let key_ids = match (project.deploy_key_id, self.our_key(project)?) {
            (Some(id), _) => vec![id as u64],
            (None, Some(ours)) => client
                .deploy_keys(gitlab_id)
                .await?
                .iter()
                .filter(|k| is_same_key(k, &ours))
                .map(|k| k.id)
                .collect(),
            (None, None) => Vec::new(),
        };
        // A hook only by the id glwarden recorded (it made or adopted it): a
        // URL alone may be shared by hooks a person or another tool added.
        let hook_ids: Vec<u64> = project.hook_id.map(|id| id as u64).into_iter().collect();
        let record = Purge {
            key_ids,
            hook_ids,
            keys_done: false,
            hooks_done: false,
        };
        let entry = self
            .store
            .journal_begin(
                project.id,
                Action::Purge.component(),
                Action::Purge.name(),
                &record.to_json(),
                None,
                cause,
            )
            .await?;
        self.resume_purge(client, project, &entry).await
    }

    /// Finishes a purge from whatever step the journal says. A refusal
    /// that asking again cannot change (GitLab's 403, say) closes the
    /// entry and leaves the project as it is (the command says so; a sweep
    /// purging a project that left discovery removes it anyway); a
    /// transient failure keeps the entry, to be resumed.
    pub(super) async fn resume_purge(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
    ) -> Result<(String, String), RepairError> {
        let result = self.purge_steps(client, project, entry).await;
        if let Err(e) = &result {
            if !e.is_transient() {
                self.store.journal_finish(entry.id).await?;
            }
        }
        result
    }

    async fn purge_steps(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
    ) -> Result<(String, String), RepairError> {
        let mut record = Purge::from_journal(entry)?;
        let gitlab_id = project.gitlab_id as u64;
        let mut left = Vec::new();
        if !record.keys_done {
            let ours = self.our_key(project)?;
            for &id in &record.key_ids {
                match client.deploy_key(gitlab_id, id).await {
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                    Ok(key) if ours.as_ref().is_some_and(|ours| is_same_key(&key, ours)) => {
                        client.delete_deploy_key(gitlab_id, id).await?;
                    }
                    Ok(_) => left.push(format!("deploy key {id} (not glwarden's key)")),
                }
            }
            record.keys_done = true;
            self.store
                .journal_step(entry.id, JournalStep::Deleted, &record.to_json())
                .await?;
        }
        if !record.hooks_done {
            let templates = self.store.hook_url_templates().await?;
            for &id in &record.hook_ids {
                match client.hook(gitlab_id, id).await {
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                    Ok(hook)
                        if is_our_hook_url(
                            &templates,
                            project.webhook_url.as_ref(),
                            project.gitlab_id,
                            &hook.url,
                        ) =>
                    {
                        client.delete_hook(gitlab_id, id).await?;
                    }
                    Ok(_) => left.push(format!("hook {id} (its URL is not glwarden's)")),
                }
            }
            record.hooks_done = true;
            self.store
                .journal_step(entry.id, JournalStep::Deleted, &record.to_json())
                .await?;
        }
        self.store.remove_project(project.id).await?;
        self.store.journal_finish(entry.id).await?;
        // The CI's copy of its private key goes with it.
        let mut key_file = String::new();
        if let Some(dir) = &self.cfg.raw.custody.key_dir {
            let file = crate::custody::key_file_path(dir, &project.connection, project.gitlab_id);
            match std::fs::remove_file(&file) {
                Ok(()) => key_file = format!("; key file {} deleted", file.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => key_file = format!("; key file {} not deleted: {e}", file.display()),
            }
        }
        let ids = |what: &str, ids: &[u64]| match ids {
            [] => format!("no {what}"),
            ids => format!(
                "{what} {}",
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let before = format!(
            "{}; {}",
            ids("deploy key", &record.key_ids),
            ids("hook", &record.hook_ids)
        );
        let after = match left.is_empty() {
            true => format!("deleted at GitLab; removed from the inventory{key_file}"),
            false => format!(
                "removed from the inventory; left at GitLab: {}{key_file}",
                left.join(", ")
            ),
        };
        Ok((before, after))
    }

    /// The material of the deploy key glwarden holds for `project`.
    fn our_key(&self, project: &ProjectRow) -> Result<Option<KeyDigest>, RepairError> {
        Ok(project
            .public_key
            .as_deref()
            .map(KeyDigest::of_public_key)
            .transpose()?)
    }
}
