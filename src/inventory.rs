//! The project inventory: brings the store in line with the configuration
//! (explicit projects and discovery rules). A path in the config is resolved
//! to GitLab's numeric id once and remembered; a project dropped from the
//! config leaves the inventory but keeps its health and history.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::config::Config;
use crate::gitlab::GitLab;
use crate::store::{NewProject, Source, Store, StoreError};

/// A connection as the inventory sees it.
pub struct ConnectionHandle {
    pub id: i64,
    pub client: Arc<GitLab>,
    /// Whether GitLab can be asked through it right now.
    pub usable: bool,
}

/// What the sync could not do (each line names the config entry at fault).
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub problems: Vec<String>,
    pub removed: u64,
}

/// Applies the configured inventory to the store.
pub async fn sync(
    cfg: &Config,
    store: &Store,
    connections: &BTreeMap<String, ConnectionHandle>,
) -> Result<SyncOutcome, StoreError> {
    let mut outcome = SyncOutcome::default();
    let mut keep = HashSet::new();
    let mut discovery_complete = true;

    // Discovery first, so that an explicit entry for the same project wins the `source`.
    for (i, rule) in cfg.raw.discover.iter().enumerate() {
        let conn = &connections[&rule.connection];
        if !conn.usable {
            discovery_complete = false;
            continue;
        }
        match conn
            .client
            .group_projects(&rule.group, rule.include_subgroups)
            .await
        {
            Ok(projects) => {
                let rows: Vec<NewProject> = projects
                    .iter()
                    .map(|p| NewProject {
                        connection_id: conn.id,
                        gitlab_id: p.id,
                        path: &p.path_with_namespace,
                        source: Source::Discovery,
                        config_ref: None,
                        webhook_url: None,
                        public_key: None,
                        fingerprint: None,
                        from_config: false,
                    })
                    .collect();
                keep.extend(store.upsert_projects(&rows).await?);
            }
            Err(e) => {
                discovery_complete = false;
                outcome.problems.push(format!(
                    "discover[{i}] (group {}): cannot list projects: {e}",
                    rule.group
                ));
            }
        }
    }

    for (i, p) in cfg.raw.projects.iter().enumerate() {
        let conn = &connections[&p.connection];
        let reference = p.reference();
        // Validated when the config was loaded.
        let fingerprint = p
            .deploy_key
            .as_deref()
            .and_then(|k| crate::keys::fingerprint_of(k).ok());
        let (gitlab_id, path) = match store.project_by_config_ref(conn.id, &reference).await? {
            Some(known) => (known.gitlab_id as u64, known.path),
            None => match (p.id, &p.path) {
                // A numeric id needs no lookup: its path is learnt at the first check.
                (Some(id), _) => (id, String::new()),
                (None, Some(path)) if conn.usable => match conn.client.project(path).await {
                    Ok(found) => (found.id, found.path_with_namespace),
                    Err(e) => {
                        outcome.problems.push(format!(
                            "projects[{i}] ({path}): cannot resolve to a project id: {e}"
                        ));
                        continue;
                    }
                },
                _ => {
                    outcome.problems.push(format!(
                        "projects[{i}] ({reference}): not resolved yet: connection `{}` is not usable",
                        p.connection
                    ));
                    continue;
                }
            },
        };
        let id = store
            .upsert_project(&NewProject {
                connection_id: conn.id,
                gitlab_id,
                path: &path,
                source: Source::Config,
                config_ref: Some(&reference),
                webhook_url: p.webhook_url.as_deref(),
                public_key: p.deploy_key.as_deref(),
                fingerprint: fingerprint.as_deref(),
                from_config: true,
            })
            .await?;
        keep.insert(id);
    }

    let mut sources = vec![Source::Config];
    if discovery_complete {
        sources.push(Source::Discovery);
    }
    outcome.removed = store.remove_missing(&sources, &keep).await?;
    Ok(outcome)
}
