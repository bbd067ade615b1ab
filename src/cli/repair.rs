//! `glwarden repair`: one sweep with repairs, the plan (`--dry-run`), and
//! the storm guard's pause and resume.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Format, RepairArgs, RepairCommand, print_report};
use crate::config::Config;
use crate::health::Component;
use crate::report;
use crate::store::Store;
use crate::sweep::{Selection, Sweeper};

pub(super) async fn repair_command(
    args: RepairArgs,
    cfg: Arc<Config>,
    store: &Store,
) -> anyhow::Result<u8> {
    if let Some(RepairCommand::Resume) = args.command {
        match store.repairs_paused().await? {
            Some((reason, since)) => {
                store.set_repairs_paused(None).await?;
                println!("automatic repairs resumed (paused since {since}: {reason})");
            }
            None => println!("automatic repairs were not paused"),
        }
        return Ok(0);
    }
    if args.dry_run {
        return repair_plan(&cfg, store).await;
    }
    let checker = Sweeper::new(cfg, store.clone(), None).await?;
    let progress = std::sync::Arc::new(crate::sweep::Progress::default());
    let shown = super::progress::show(progress.clone(), "checking and repairing");
    let summary = checker
        .sweep_with(
            &Selection::All,
            &crate::sweep::SweepOptions {
                repair: true,
                progress: Some(progress),
                ..Default::default()
            },
        )
        .await;
    shown.done().await;
    let summary = summary?;
    for plan in &summary.plans {
        println!("plan: {plan}");
    }
    let failed = summary
        .repairs
        .iter()
        .filter(|(_, o)| *o == crate::sweep::RepairResult::Failed)
        .count();
    println!(
        "{} repairs ({failed} failed){}; see `glwarden events`",
        summary.repairs.len(),
        if summary.repairs_paused {
            "; automatic repairs are PAUSED by the storm guard (`glwarden repair resume`)"
        } else {
            ""
        }
    );
    print_report(store, &Selection::All, Format::Table, false).await
}

/// The decision for every project's components, from the stored health.
pub(super) async fn repair_plan(cfg: &Config, store: &Store) -> anyhow::Result<u8> {
    use crate::repair::{Decision, Policies, decide_component};
    let health: HashMap<(Component, i64), crate::store::HealthRow> = store
        .all_health()
        .await?
        .into_iter()
        .map(|h| ((h.component, h.subject_id), h))
        .collect();
    if let Some((reason, since)) = store.repairs_paused().await? {
        println!("automatic repairs are PAUSED since {since}: {reason}");
    }
    let now = chrono::Utc::now();
    let mut any = false;
    for project in store.active_projects().await? {
        let policies = Policies::for_project(cfg, &project);
        for component in Component::PROJECT_COMPONENTS {
            let Some(h) = health.get(&(component, project.id)) else {
                continue;
            };
            let repository = health
                .get(&(Component::Repository, project.id))
                .and_then(|r| r.definite_state());
            // The version is not known without asking GitLab: a plan says
            // "would re-enable" where the setting allows a test delivery.
            let Some((decision, _)) = decide_component(
                store, cfg, &project, &policies, component, h, repository, None, now,
            )
            .await?
            else {
                continue;
            };
            let line = match decision {
                Decision::Repair(action) => format!("would {} (policy auto)", action.name()),
                Decision::Report(_, plan) => format!("{plan} (policy report: not carried out)"),
                Decision::Skip(why) => format!("no repair: {why}"),
            };
            any = true;
            println!(
                "{:<40} {:<11} {}",
                report::escape(&project.path),
                component.as_str(),
                report::escape(&line)
            );
        }
    }
    if !any {
        println!("nothing to repair");
    }
    Ok(0)
}
