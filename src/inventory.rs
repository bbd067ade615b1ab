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
    /// Projects that left a discovery rule with `purge_on_leave`: still in
    /// the inventory, to be purged (their key and hook deleted at GitLab)
    /// by a sweep that repairs.
    pub to_purge: Vec<crate::store::ProjectRow>,
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
    let purging: HashSet<&str> = cfg
        .raw
        .discover
        .iter()
        .filter(|rule| rule.purge_on_leave)
        .map(|rule| rule.connection.as_str())
        .collect();
    for id in store.missing(&sources, &keep).await? {
        let Some(project) = store.project(id).await? else {
            continue;
        };
        // Discovery does not record which rule found a project: the rules
        // of one connection agree on `purge_on_leave` (config/validate.rs).
        if project.source == Source::Discovery.as_str()
            && purging.contains(project.connection.as_str())
        {
            outcome.to_purge.push(project);
        } else {
            store.remove_project(id).await?;
            outcome.removed += 1;
        }
    }
    hold_purge_storms(cfg, store, connections, &mut outcome).await?;
    Ok(outcome)
}

/// A listing that GitLab got wrong (an empty page, a group briefly out of
/// reach that still answers) must not delete the keys and hooks of a whole
/// fleet: when more of a connection's discovered projects leave at once
/// than `repair.storm_share` (and at least `repair.storm_min_projects`),
/// none of them is purged or removed, and the sweep says so.
async fn hold_purge_storms(
    cfg: &Config,
    store: &Store,
    connections: &BTreeMap<String, ConnectionHandle>,
    outcome: &mut SyncOutcome,
) -> Result<(), StoreError> {
    let r = &cfg.raw.repair;
    for (name, conn) in connections {
        let leaving = outcome
            .to_purge
            .iter()
            .filter(|p| &p.connection == name)
            .count();
        if leaving == 0 {
            continue;
        }
        let total = store.count_active(conn.id, Source::Discovery).await? as usize;
        if crate::repair::is_storm(leaving, total, r.storm_share, r.storm_min_projects) {
            outcome.to_purge.retain(|p| &p.connection != name);
            outcome.problems.push(format!(
                "discovery of connection {name}: {leaving} of {total} discovered projects left at once (more than repair.storm_share): none is purged or removed; remove them with `glwarden project remove --purge` if they really left"
            ));
        }
    }
    Ok(())
}
