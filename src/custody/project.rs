//! Custody of one project's secrets outside a repair: reading the private
//! key the CI clones with (audited), exporting it to the key directory, and
//! adopting an existing key and hook (checked at GitLab, no write there).

use std::sync::Arc;

use super::{Custody, CustodyError, SecretKind};
use crate::config::Config;
use crate::gitlab::{ApiError, GitLab};
use crate::keys::{KeyDigest, KeyError, fingerprint_of, is_same_key};
use crate::store::{NewEvent, ProjectRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(transparent)]
    GitLab(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Refused(String),
}

/// Keeps projects' secrets: the store's sealed columns, opened and sealed
/// with the configured master key.
pub struct Keeper {
    cfg: Arc<Config>,
    store: Store,
    custody: Arc<Custody>,
}

impl Keeper {
    pub fn new(cfg: Arc<Config>, store: Store) -> Self {
        let custody = cfg.custody.clone();
        Self {
            cfg,
            store,
            custody,
        }
    }

    /// Writes the project's private key to the configured key directory, if any.
    pub fn export_key_file(&self, project: &ProjectRow, sealed: &[u8]) -> Result<(), KeeperError> {
        if let Some(dir) = &self.cfg.raw.custody.key_dir {
            let private = self
                .custody
                .open(project.id, SecretKind::DeployKey, sealed)?;
            let file = crate::custody::key_file_path(dir, &project.connection, project.gitlab_id);
            let (folder, name) = (
                file.parent().expect("has a connection folder"),
                file.file_name().expect("has a name").to_string_lossy(),
            );
            crate::custody::write_private_file(folder, &name, &private).map_err(|e| {
                KeeperError::Refused(format!("cannot write the key file {}: {e}", file.display()))
            })?;
        }
        Ok(())
    }
    /// The private key the CI clones with, opened from custody (audited).
    pub async fn private_key(
        &self,
        project: &ProjectRow,
    ) -> Result<zeroize::Zeroizing<String>, KeeperError> {
        let sealed = self
            .store
            .project_secret(project.id, SecretKind::DeployKey)
            .await?
            .ok_or_else(|| {
                KeeperError::Refused(format!(
                    "glwarden holds no private key for {}",
                    project.path
                ))
            })?;
        let bytes = self
            .custody
            .open(project.id, SecretKind::DeployKey, &sealed)?;
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: "deploy_key",
                action: "key_read",
                cause: "glwarden key private",
                before: "",
                after: project.fingerprint.as_deref().unwrap_or_default(),
                outcome: "ok",
            })
            .await?;
        Ok(text)
    }

    /// Takes custody of an existing key and hook after checking GitLab has
    /// them; no write at GitLab.
    pub async fn adopt(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        private_key: Option<&str>,
        hook_url: Option<&str>,
        hook_token: Option<&str>,
    ) -> Result<String, KeeperError> {
        let gitlab_id = project.gitlab_id as u64;
        let mut notes = Vec::new();
        if let Some(private) = private_key {
            let key = ssh_key::PrivateKey::from_openssh(private.trim())
                .map_err(|e| KeeperError::Refused(format!("not an OpenSSH private key: {e}")))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| KeeperError::Refused(e.to_string()))?;
            let fp = fingerprint_of(&public)?;
            let digest = KeyDigest::of_public_key(&public)?;
            let found = client
                .deploy_keys(gitlab_id)
                .await?
                .into_iter()
                .find(|k| is_same_key(k, &digest))
                .ok_or_else(|| {
                    KeeperError::Refused(format!(
                        "GitLab has no deploy key with fingerprint {fp} on {}",
                        project.path
                    ))
                })?;
            let sealed =
                self.custody
                    .seal(project.id, SecretKind::DeployKey, private.trim().as_bytes())?;
            self.store
                .set_deploy_key(project.id, Some(found.id), &public, &fp, Some(&sealed))
                .await?;
            self.export_key_file(project, &sealed)?;
            notes.push(format!("deploy key {} ({fp})", found.id));
        }
        if let Some(url) = hook_url {
            let hook = client
                .hooks(gitlab_id)
                .await?
                .into_iter()
                .find(|h| h.url == url)
                .ok_or_else(|| {
                    KeeperError::Refused(format!("GitLab has no hook to {url} on {}", project.path))
                })?;
            let sealed = match hook_token {
                Some(t) => Some(self.custody.seal(
                    project.id,
                    SecretKind::HookToken,
                    t.trim().as_bytes(),
                )?),
                None => None,
            };
            self.store
                .set_hook(project.id, hook.id, sealed.as_deref())
                .await?;
            notes.push(format!("hook {}", hook.id));
        }
        let after = notes.join(", ");
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: "project",
                action: "adopt",
                cause: "glwarden project add --adopt",
                before: "",
                after: &after,
                outcome: "ok",
            })
            .await?;
        Ok(after)
    }
}
