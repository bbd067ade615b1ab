//! Deploy key repairs: a new key added, confirmed by its material, then the
//! old one deleted; each step through the journal, and undone when GitLab
//! cannot confirm the new key.

use chrono::Utc;

use super::journal::{JournalRecord, KeyRotation};
use super::{Action, RepairError, Repairer};
use crate::custody::{CustodyError, SecretKind};
use crate::gitlab::GitLab;
use crate::keys::{KeyDigest, digest_of, generate_ed25519, is_same_key};
use crate::store::{JournalRow, JournalStep, ProjectRow};

impl Repairer {
    fn key_title(&self, project: &ProjectRow) -> String {
        self.cfg
            .raw
            .repair
            .key_title
            .replace("{path}", &project.path)
            .replace("{id}", &project.gitlab_id.to_string())
    }

    /// New key in, confirmed, stored, old key out; journalled at each step.
    pub(super) async fn regenerate_key(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        cause: &str,
    ) -> Result<(String, String), RepairError> {
        if !self.custody.can_store() {
            return Err(CustodyError::NoMasterKey.into());
        }
        let key = generate_ed25519(&self.key_title(project))?;
        let sealed = self.custody.seal(
            project.id,
            SecretKind::DeployKey,
            key.private_openssh.as_bytes(),
        )?;
        let rotation = KeyRotation {
            old_key_id: project.deploy_key_id.map(|id| id as u64),
            old_fingerprint: project.fingerprint.clone(),
            new_fingerprint: key.fingerprint.clone(),
            public_key: key.public_openssh.clone(),
            new_key_id: None,
            keys_before: None,
        };
        let entry = rotation
            .begin(
                &self.store,
                project,
                Action::RegenerateDeployKey,
                &sealed,
                cause,
            )
            .await?;
        self.resume_key(client, project, &entry).await
    }

    /// Finishes a key rotation from whatever step the journal says. Whatever
    /// GitLab answers, it leaves at most one key of ours on the project: a
    /// new key that cannot be confirmed as ours is deleted again (only if
    /// this rotation added it) and the entry is closed, not resumed forever.
    pub(super) async fn resume_key(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
    ) -> Result<(String, String), RepairError> {
        let mut rotation = KeyRotation::from_journal(entry)?;
        let gitlab_id = project.gitlab_id as u64;
        let new_digest = KeyDigest::of_public_key(&rotation.public_key)?;
        let sealed = entry
            .secret
            .clone()
            .ok_or_else(|| RepairError::Refused("journal entry has no key".into()))?;

        // Add (idempotent at GitLab for the same key) unless it is already there.
        if rotation.new_key_id.is_none() {
            let existing = client.deploy_keys(gitlab_id).await?;
            let id = match existing.iter().find(|k| is_same_key(k, &new_digest)) {
                Some(k) => k.id,
                None => {
                    let can_push = !self.cfg.raw.expect.read_only_key;
                    let expires = self
                        .cfg
                        .raw
                        .repair
                        .key_expires_days
                        .map(|d| Utc::now() + chrono::Duration::days(i64::from(d)));
                    client
                        .add_deploy_key(
                            gitlab_id,
                            &self.key_title(project),
                            &rotation.public_key,
                            can_push,
                            expires,
                        )
                        .await?
                        .id
                }
            };
            rotation.keys_before = Some(existing.iter().map(|k| k.id).collect());
            rotation.new_key_id = Some(id);
            self.store
                .journal_step(entry.id, JournalStep::Created, &rotation.to_json())
                .await?;
        }
        let new_key_id = rotation.new_key_id.expect("set above");

        // Confirm GitLab has it, by its key material, before relying on it.
        let confirmed = client.deploy_key(gitlab_id, new_key_id).await;
        let unconfirmed = match &confirmed {
            Ok(k) if is_same_key(k, &new_digest) => None,
            Ok(k) => Some(format!(
                "GitLab serves key {new_key_id} as {}, not the new key {new_digest}",
                digest_of(k)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "(unreadable)".into())
            )),
            Err(e) if e.is_not_found() => Some(format!(
                "GitLab answers 404 for the new key {new_key_id} just added"
            )),
            // Transient: the entry stays for the next pass to confirm.
            Err(_) => None,
        };
        if let Err(e) = confirmed {
            if unconfirmed.is_none() {
                return Err(e.into());
            }
        }
        if let Some(why) = unconfirmed {
            return Err(self
                .undo_unconfirmed_key(client, project, entry, &rotation, why)
                .await);
        }
        if entry.step != JournalStep::Stored {
            self.store
                .journal_step(entry.id, JournalStep::Confirmed, &rotation.to_json())
                .await?;
            self.store
                .set_deploy_key(
                    project.id,
                    Some(new_key_id),
                    &rotation.public_key,
                    &rotation.new_fingerprint,
                    Some(&sealed),
                )
                .await?;
            crate::custody::Keeper::new(self.cfg.clone(), self.store.clone())
                .export_key_file(project, &sealed)?;
            self.store
                .journal_step(entry.id, JournalStep::Stored, &rotation.to_json())
                .await?;
        }

        // Only now the old key goes (a 404 is success): never a moment
        // without a working key. The key under the old id and any other copy
        // of the old material, but only where the material was glwarden's:
        // an id that names someone else's key leaves it alone.
        let old_digest = rotation
            .old_fingerprint
            .as_deref()
            .and_then(KeyDigest::parse)
            .filter(|d| *d != new_digest);
        let old_id = rotation.old_key_id.filter(|old| *old != new_key_id);
        if old_id.is_some() || old_digest.is_some() {
            let owned: Vec<KeyDigest> = self
                .store
                .owned_key_fingerprints(project.id)
                .await?
                .iter()
                .filter_map(|f| KeyDigest::parse(f))
                .collect();
            for k in client.deploy_keys(gitlab_id).await? {
                let old =
                    Some(k.id) == old_id || old_digest.as_ref().is_some_and(|d| is_same_key(&k, d));
                if k.id == new_key_id || !old {
                    continue;
                }
                if owned.iter().any(|d| is_same_key(&k, d)) {
                    client.delete_deploy_key(gitlab_id, k.id).await?;
                } else {
                    tracing::warn!(
                        project = %project.path,
                        key_id = k.id,
                        "the old key id names a key glwarden never held; left in place"
                    );
                }
            }
        }
        self.store.journal_finish(entry.id).await?;
        Ok((
            format!(
                "key {} {}",
                rotation
                    .old_key_id
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "-".into()),
                rotation.old_fingerprint.as_deref().unwrap_or("-")
            ),
            format!("key {new_key_id} {}", rotation.new_fingerprint),
        ))
    }

    /// A new key GitLab will not confirm: deleted again by its id when this
    /// rotation added it (it was not on the project before), the journal
    /// entry closed, and why returned as the repair's failure.
    async fn undo_unconfirmed_key(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
        rotation: &KeyRotation,
        why: String,
    ) -> RepairError {
        let gitlab_id = project.gitlab_id as u64;
        let Some(new_key_id) = rotation.new_key_id else {
            return RepairError::Refused(why);
        };
        let added_by_us = rotation
            .keys_before
            .as_ref()
            .is_some_and(|before| !before.contains(&new_key_id));
        let undone = if added_by_us {
            match client.delete_deploy_key(gitlab_id, new_key_id).await {
                Ok(()) => format!("key {new_key_id} deleted again"),
                // The entry stays: the next pass tries the delete again.
                Err(e) => {
                    return RepairError::Refused(format!(
                        "{why}; deleting key {new_key_id} again failed: {e}"
                    ));
                }
            }
        } else {
            format!("key {new_key_id} was on the project before, left alone")
        };
        let mut closed = rotation.clone();
        closed.new_key_id = None;
        let result = async {
            self.store
                .journal_step(entry.id, JournalStep::Abandoned, &closed.to_json())
                .await?;
            self.store.journal_finish(entry.id).await
        }
        .await;
        if let Err(e) = result {
            return e.into();
        }
        RepairError::Refused(format!("new key not confirmed: {why}; {undone}"))
    }

    pub(super) async fn make_read_only(
        &self,
        client: &GitLab,
        project: &ProjectRow,
    ) -> Result<(String, String), RepairError> {
        let key = project
            .deploy_key_id
            .ok_or_else(|| RepairError::Refused("no deploy key id of ours is known".into()))?;
        client
            .set_deploy_key_can_push(project.gitlab_id as u64, key as u64, false)
            .await?;
        Ok((
            format!("key {key} can_push=true"),
            format!("key {key} can_push=false"),
        ))
    }
}
