//! `glwarden project add|remove|list`: the inventory from the command line,
//! with adoption of an existing key and hook.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::{Format, Named, ProjectCommand, find_active};
use crate::config::Config;
use crate::report;
use crate::store::{NewProject, Source};
use crate::sweep::Sweeper;

pub(super) async fn project_command(
    cmd: ProjectCommand,
    cfg: Arc<Config>,
    named: Named<'_>,
) -> anyhow::Result<u8> {
    let store = named.store;
    match cmd {
        ProjectCommand::List { format } => {
            let rows = store.active_projects().await?;
            match format {
                Format::Table => {
                    println!("{:<16} {:>10}  {:<10} PATH", "CONNECTION", "ID", "SOURCE");
                    for p in rows {
                        println!(
                            "{:<16} {:>10}  {:<10} {}",
                            report::escape(&p.connection),
                            p.gitlab_id,
                            p.source,
                            report::escape(&p.path)
                        );
                    }
                }
                Format::Json => {
                    let json: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "connection": p.connection, "gitlab_id": p.gitlab_id, "path": p.path,
                                "source": p.source, "webhook_url": p.webhook_url,
                                "deploy_key_fingerprint": p.fingerprint,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&json)?);
                }
            }
            Ok(0)
        }
        ProjectCommand::Add {
            project,
            connection,
            webhook_url,
            deploy_key_file,
            adopt_deploy_key,
            adopt_hook_url,
            hook_token_file,
        } => {
            if let Some(url) = &webhook_url {
                crate::config::validate_url_template(url)
                    .map_err(|reason| anyhow::anyhow!("--webhook-url: {reason}"))?;
            }
            let name = match connection.or(named.connection.map(str::to_owned)) {
                Some(name) => name,
                None if cfg.connections.len() == 1 => {
                    cfg.connections.keys().next().cloned().unwrap_or_default()
                }
                None => bail!("several connections are configured: name one with --connection"),
            };
            let conn = cfg.connections.get(&name).with_context(|| {
                format!("no connection named `{name}` in {}", cfg.file.display())
            })?;
            let public_key = match &deploy_key_file {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let fingerprint = match &public_key {
                Some(k) => Some(crate::keys::fingerprint_of(k).with_context(|| {
                    format!(
                        "{}",
                        deploy_key_file
                            .as_deref()
                            .unwrap_or_else(|| std::path::Path::new("-"))
                            .display()
                    )
                })?),
                None => None,
            };
            let base_url = conn.base_url.to_string();
            let checker = Sweeper::new(cfg.clone(), store.clone(), None).await?;
            let client = checker.client(&name).context("connection has no client")?;
            let found = client.project(&project).await.with_context(|| {
                format!("cannot find project `{project}` through connection `{name}`")
            })?;
            let connection_id = store.connection_id(&name, &base_url).await?;
            let id = store
                .upsert_project(&NewProject {
                    connection_id,
                    gitlab_id: found.id,
                    path: &found.path_with_namespace,
                    source: Source::Cli,
                    config_ref: None,
                    webhook_url: webhook_url.as_deref(),
                    public_key: public_key.as_deref(),
                    fingerprint: fingerprint.as_deref(),
                    from_config: false,
                })
                .await?;
            println!(
                "added {} (id {}) on connection {name}",
                report::escape(&found.path_with_namespace),
                found.id
            );
            if adopt_deploy_key.is_some() || adopt_hook_url.is_some() {
                let read = |file: &PathBuf| {
                    crate::config::read_secret_file(file).map_err(|e| anyhow::anyhow!(e))
                };
                let private = adopt_deploy_key.as_ref().map(read).transpose()?;
                let token = hook_token_file.as_ref().map(read).transpose()?;
                use secrecy::ExposeSecret;
                let row = store
                    .project(id)
                    .await?
                    .context("the project just added is gone")?;
                let adopted = crate::custody::Keeper::new(cfg.clone(), store.clone())
                    .adopt(
                        checker.client_of(&row)?,
                        &row,
                        private.as_ref().map(|p| p.expose_secret()),
                        adopt_hook_url.as_deref(),
                        token.as_ref().map(|t| t.expose_secret()),
                    )
                    .await?;
                println!("adopted {adopted}");
            }
            Ok(0)
        }
        ProjectCommand::Remove { project, purge } => {
            let found = find_active(named, &project).await?;
            if purge {
                let sweeper = Sweeper::new(cfg.clone(), store.clone(), None).await?;
                let (before, after) = sweeper
                    .purge(&found, crate::repair::ManualCause::CommandLine)
                    .await?;
                println!(
                    "purged {} (id {}): {before}: {after}; its history is kept",
                    report::escape(&found.path),
                    found.gitlab_id
                );
            } else {
                store.remove_project(found.id).await?;
                println!(
                    "removed {} (id {}); its history is kept",
                    report::escape(&found.path),
                    found.gitlab_id
                );
            }
            // The CI's copy of its private key goes with it (a purge did it).
            if let Some(dir) = cfg.raw.custody.key_dir.as_ref().filter(|_| !purge) {
                let file = crate::custody::key_file_path(dir, &found.connection, found.gitlab_id);
                match std::fs::remove_file(&file) {
                    Ok(()) => println!("deleted the key file {}", file.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => eprintln!("warning: cannot delete {}: {e}", file.display()),
                }
            }
            if !purge {
                println!(
                    "its deploy key and webhook stay at GitLab (key {}, hook {}); `--purge` deletes them",
                    found
                        .deploy_key_id
                        .map_or_else(|| "-".to_owned(), |k| k.to_string()),
                    found
                        .hook_id
                        .map_or_else(|| "-".to_owned(), |h| h.to_string())
                );
            }
            if found.source == Source::Config.as_str() {
                eprintln!(
                    "warning: {} lists this project; it comes back at the next check unless removed there",
                    cfg.file.display()
                );
            }
            Ok(0)
        }
    }
}
