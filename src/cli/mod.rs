//! The command line (clap): parses arguments, loads configuration and store,
//! runs one command and turns its outcome into an exit status.

mod args;
mod connection;
#[cfg(feature = "demo")]
pub mod demo;
mod history;
mod progress;
mod project;
mod repair;

use args::*;
pub use args::{Cli, DemoArgs, Format};
use connection::move_connection;
use history::{events, history};
use project::project_command;
use repair::repair_command;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use crate::config::Config;
use crate::health::Component;
use crate::report;
use crate::store::Store;
use crate::sweep::{Selection, Sweeper};

/// Exit status for a command that could not run at all (bad config, unreadable store).
pub const EXIT_FATAL: u8 = 3;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let usage_shown = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) || e.to_string().contains("Usage:");
            let _ = e.print();
            // Every misuse ends with the usage of the command at fault.
            if !usage_shown {
                eprintln!("\n{}", usage_for(&std::env::args().collect::<Vec<_>>()));
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    // The daemon logs per its configuration; one-shot commands stay quiet unless asked.
    if !matches!(cli.command, Command::Run) {
        let level = match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        };
        crate::telemetry::init(level, crate::config::LogFormat::Text);
    }
    // Bounded threads, so that the unit's TasksMax (deploy/systemd) holds on
    // any host: the daemon's work is GitLab's latency, not CPU.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(32)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// The usage line of the deepest subcommand named on the command line.
fn usage_for(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build(); // gives subcommands their full name ("glwarden check")
    for arg in args.iter().skip(1) {
        match cmd.find_subcommand(arg) {
            Some(sub) => cmd = sub.clone(),
            None => continue,
        }
    }
    cmd.render_usage().to_string()
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| match std::env::var_os("CONFIGURATION_DIRECTORY") {
        Some(dir) => PathBuf::from(dir).join("glwarden.toml"),
        None => PathBuf::from("/etc/glwarden/glwarden.toml"),
    })
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let command = match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => return crate::cli::demo::run(args).await,
        Command::Run => {
            return crate::daemon::run(config_path(cli.config))
                .await
                .map(|()| 0);
        }
        other => other,
    };
    let cfg = Arc::new(Config::load(&config_path(cli.config))?);
    if let Command::Config(ConfigCommand::Check) = command {
        for warning in cfg.warnings() {
            eprintln!("warning: {warning}");
        }
        print!("{}", cfg.render_redacted());
        println!("# configuration OK: {}", cfg.file.display());
        return Ok(0);
    }
    // Before the configured store is opened: a copy's target must be empty
    // (opening it seals, which writes a marker).
    if let Command::Store(command) = command {
        return store_command(&cfg, command).await;
    }
    let store = Store::connect(&cfg.store).await?;
    if let Command::Connection(ConnectionCommand::Move { name, to }) = command {
        let outcome = move_connection(&cfg, &store, &name, &to).await;
        store.close().await;
        return outcome;
    }
    // Every other command works with stored ids: never against another instance.
    store.verify_connections(cfg.connection_urls()).await?;
    // Every command, not only those that check: `key private` opens a
    // secret too, and must not find one an earlier setting left in plaintext.
    store.seal_plaintext(&cfg.custody).await?;
    // A command that sweeps or repairs writes as the leader would: on
    // PostgreSQL it takes the lease for its duration, or is refused while
    // a daemon leads (one writer at a time).
    let lease = match writes_as_leader(&command) {
        true => {
            let period = std::time::Duration::from_secs(cfg.raw.ha.lease_seconds);
            Some(store.lead_for_command(period).await?)
        }
        false => None,
    };
    let named = Named {
        store: lease.as_ref().map_or(&store, |l| &l.store),
        connection: cli.connection.as_deref(),
    };
    let outcome = execute(command, cfg, named).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    store.close().await;
    outcome
}

/// `glwarden store migrate|copy`.
async fn store_command(cfg: &Config, command: StoreCommand) -> anyhow::Result<u8> {
    match command {
        StoreCommand::Migrate => {
            let store = Store::connect(&cfg.store).await?;
            let schema = store.schema_version().await?;
            store.close().await;
            println!("{}: schema at version {schema}", cfg.store);
            Ok(0)
        }
        StoreCommand::Copy { from, to } => {
            let path = PathBuf::from(from.strip_prefix("sqlite:").unwrap_or(&from));
            let target = match &to {
                Some(url) => cfg.store_at(url)?,
                None => cfg.store.clone(),
            };
            let crate::config::StoreTarget::Postgres { .. } = &target else {
                bail!(
                    "store copy: the target must be PostgreSQL; {} is SQLite (set [store] url, or give --to postgres://USER@HOST/DB)",
                    target
                );
            };
            let copied = crate::store::copy_sqlite_to(&path, &target).await?;
            for (table, rows) in &copied.tables {
                println!("{table:<20} {rows:>9} rows");
            }
            println!(
                "copied {} to {}: {} rows in {} tables, counts match",
                path.display(),
                target,
                copied.tables.iter().map(|(_, n)| n).sum::<u64>(),
                copied.tables.len()
            );
            Ok(0)
        }
    }
}

/// Whether `command` writes what only the leader may (the journal, OAuth
/// pairs, the key and hook a project owns).
fn writes_as_leader(command: &Command) -> bool {
    match command {
        Command::Check(_) | Command::Regenerate { .. } => true,
        Command::Repair(args) => args.command.is_none() && !args.dry_run,
        Command::Project(ProjectCommand::Add { .. }) => true,
        Command::Project(ProjectCommand::Remove { purge, .. }) => *purge,
        _ => false,
    }
}

async fn execute(command: Command, cfg: Arc<Config>, named: Named<'_>) -> anyhow::Result<u8> {
    let store = named.store;
    match command {
        Command::Check(args) => {
            let selection = selection(args.project);
            let checker = Sweeper::new(cfg, store.clone(), None).await?;
            let progress = Arc::new(crate::sweep::Progress::default());
            let shown = progress::show(progress.clone(), "checking");
            let summary = checker
                .sweep_with(
                    &selection,
                    &crate::sweep::SweepOptions {
                        progress: Some(progress),
                        ..Default::default()
                    },
                )
                .await;
            shown.done().await;
            let summary = summary?;
            for problem in &summary.problems {
                eprintln!("warning: {problem}");
            }
            print_report(store, &selection, args.format, false).await
        }
        Command::Status(args) => {
            print_report(store, &selection(args.project), args.format, true).await
        }
        Command::History {
            project,
            limit,
            format,
        } => history(named, project, limit, format).await,
        Command::Repair(args) => repair_command(args, cfg, store).await,
        Command::Regenerate {
            project,
            deploy_key,
            webhook: _,
        } => {
            let row = find_active(named, &project).await?;
            let checker = Sweeper::new(cfg, store.clone(), None).await?;
            let component = if deploy_key {
                Component::DeployKey
            } else {
                Component::Webhook
            };
            let outcome = checker
                .regenerate(&row, component, crate::repair::ManualCause::CommandLine)
                .await?;
            println!("{component} of {}: {outcome}", report::escape(&row.path));
            print_report(
                store,
                &Selection::One(row.gitlab_id.to_string()),
                Format::Table,
                false,
            )
            .await
        }
        Command::Events {
            project,
            since,
            limit,
            format,
        } => events(named, project, since, limit, format).await,
        Command::Key(KeyCommand::Public { project }) => {
            let row = find_active(named, &project).await?;
            let key = row
                .public_key
                .with_context(|| format!("glwarden holds no deploy key for {}", row.path))?;
            println!("{key}");
            Ok(0)
        }
        Command::Key(KeyCommand::Private { project }) => {
            let row = find_active(named, &project).await?;
            let keeper = crate::custody::Keeper::new(cfg, store.clone());
            let key = keeper.private_key(&row).await?;
            print!("{}", key.as_str());
            if !key.ends_with('\n') {
                println!();
            }
            Ok(0)
        }
        Command::Project(cmd) => project_command(cmd, cfg, named).await,
        #[cfg(feature = "demo")]
        Command::Demo(_) => unreachable!("handled before the store is opened"),
        Command::Config(_) | Command::Run | Command::Connection(_) | Command::Store(_) => {
            unreachable!("handled before the store is opened")
        }
    }
}

/// How PROJECT arguments are resolved: by numeric id, path or config name,
/// within `--connection` when given. A name that fits projects on several
/// connections is refused with the candidates, never taken as the first.
#[derive(Clone, Copy)]
pub(crate) struct Named<'a> {
    store: &'a Store,
    connection: Option<&'a str>,
}

impl Named<'_> {
    async fn one(&self, wanted: &str, active: bool) -> anyhow::Result<crate::store::ProjectRow> {
        let mut found = self.store.projects_named(wanted, active).await?;
        if let Some(connection) = self.connection {
            found.retain(|p| p.connection == connection);
        }
        match found.len() {
            0 if active => anyhow::bail!(
                "no project `{wanted}` in the inventory{} (see `glwarden project list`)",
                self.within()
            ),
            0 => anyhow::bail!("no project `{wanted}` is known{}", self.within()),
            1 => Ok(found.remove(0)),
            n => {
                let candidates: Vec<String> = found
                    .iter()
                    .map(|p| {
                        format!(
                            "{} on connection {} (id {})",
                            report::escape(&p.path),
                            p.connection,
                            p.gitlab_id
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "`{wanted}` names {n} projects: {}; choose one with --connection NAME",
                    candidates.join(", ")
                )
            }
        }
    }

    fn within(&self) -> String {
        self.connection
            .map(|c| format!(" on connection {c}"))
            .unwrap_or_default()
    }
}

/// The store id of a project ever known (removed ones too).
async fn known_project_id(named: Named<'_>, wanted: Option<&str>) -> anyhow::Result<Option<i64>> {
    match wanted {
        Some(wanted) => Ok(Some(named.one(wanted, false).await?.id)),
        None => Ok(None),
    }
}

/// The active project named by a numeric id, path or config name.
async fn find_active(named: Named<'_>, wanted: &str) -> anyhow::Result<crate::store::ProjectRow> {
    named.one(wanted, true).await
}

fn selection(project: Option<String>) -> Selection {
    project.map(Selection::One).unwrap_or_default()
}

/// Prints the stored health and returns the exit status it implies.
pub async fn print_report(
    store: &Store,
    selection: &Selection,
    format: Format,
    with_since: bool,
) -> anyhow::Result<u8> {
    let report = report::build(store, selection).await?;
    if let Selection::One(wanted) = selection {
        if report.projects.is_empty() {
            bail!("no project `{wanted}` in the inventory (see `glwarden project list`)");
        }
    }
    match format {
        Format::Table => print!("{}", report.to_table(with_since)),
        Format::Json => println!("{}", report.to_json()),
    }
    Ok(report.exit_code() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
