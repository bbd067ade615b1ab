//! The command line (clap): parses arguments, loads configuration and store,
//! runs one command and turns its outcome into an exit status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::check::{Checker, Selection};
use crate::config::Config;
use crate::health::Component;
use crate::report;
use crate::store::{NewProject, Source, Store};

/// Exit status for a command that could not run at all (bad config, unreadable store).
pub const EXIT_FATAL: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "glwarden",
    version,
    about = "Keeps CI connected to GitLab: checks deploy keys, webhooks, repositories and tokens, and records their health.",
    after_help = "Exit status of `check` and `status`: 0 all healthy (expiring counts as healthy), \
                  1 something is broken, 2 something could not be checked; 3 the command could not run \
                  (configuration or database error). Usage errors also exit 2."
)]
pub struct Cli {
    /// Configuration file [default: $CONFIGURATION_DIRECTORY/glwarden.toml, else /etc/glwarden/glwarden.toml]
    #[arg(
        long,
        short,
        global = true,
        env = "GLWARDEN_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    /// The connection a PROJECT argument belongs to, when its id or path
    /// names projects on more than one connection.
    #[arg(long, global = true, value_name = "NAME")]
    connection: Option<String>,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: scheduled sweeps, metrics and health endpoints, systemd notify.
    Run,
    /// Check now against GitLab, store the results and print them.
    Check(ReportArgs),
    /// Print the stored health without calling GitLab.
    Status(ReportArgs),
    /// List, add or remove projects of the inventory.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Show state transitions, newest first.
    History {
        /// Only this project (numeric id, path, or the config's name for it).
        #[arg(long)]
        project: Option<String>,
        /// At most this many transitions.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check and repair what policy allows, once; or show the plan; or resume after a storm.
    Repair(RepairArgs),
    /// Regenerate a project's deploy key or webhook now (the "Regenerate" button; allowed under `report`).
    #[command(group(clap::ArgGroup::new("what").required(true).args(["deploy_key", "webhook"])))]
    Regenerate {
        /// Numeric GitLab project id or path.
        project: String,
        /// A new deploy key: added, confirmed, stored, then the old one deleted.
        #[arg(long)]
        deploy_key: bool,
        /// The webhook fixed in place with a new secret token (created if missing).
        #[arg(long)]
        webhook: bool,
    },
    /// Repairs and renames, newest first: time, cause, before and after, outcome.
    Events {
        /// Only this project (numeric id or path).
        #[arg(long)]
        project: Option<String>,
        /// Only events since then: a duration ago (`24h`, `7d`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print a project's deploy key for the CI that clones with it.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Work with the connections the store knows.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Run a check against the built-in GitLab simulator, seeded with projects
    /// in every state. Needs no network and no setup.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Only this project (numeric id, path, or the config's name for it).
    #[arg(long)]
    project: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// List the projects of the inventory.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Add a project (numeric id or path) to the inventory; it is resolved at GitLab now.
    Add {
        /// Numeric GitLab project id or path with namespace.
        project: String,
        /// Connection to reach it through [default: the only one configured].
        #[arg(long)]
        connection: Option<String>,
        /// Webhook URL the CI expects, instead of `expect.webhook_url`.
        #[arg(long)]
        webhook_url: Option<String>,
        /// OpenSSH public key file of the deploy key the CI clones with.
        #[arg(long, value_name = "FILE", conflicts_with = "adopt_deploy_key")]
        deploy_key_file: Option<PathBuf>,
        /// Take custody of the existing deploy key with this OpenSSH private key (checked at GitLab; no write).
        #[arg(long, value_name = "PRIVATE_KEY_FILE")]
        adopt_deploy_key: Option<PathBuf>,
        /// Take custody of the existing hook to this URL (checked at GitLab; no write).
        #[arg(long, value_name = "URL")]
        adopt_hook_url: Option<String>,
        /// The adopted hook's secret token, from this file.
        #[arg(long, value_name = "FILE", requires = "adopt_hook_url")]
        hook_token_file: Option<PathBuf>,
    },
    /// Remove a project from the inventory (its history is kept).
    Remove {
        /// Numeric GitLab project id or path.
        project: String,
    },
}

#[derive(Debug, Args)]
struct RepairArgs {
    /// Print what would be done for every project, from the stored health; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(subcommand)]
    command: Option<RepairCommand>,
}

#[derive(Debug, Subcommand)]
enum RepairCommand {
    /// Resume automatic repairs paused by the storm guard.
    Resume,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// The OpenSSH public key.
    Public {
        /// Numeric GitLab project id or path.
        project: String,
    },
    /// The OpenSSH private key (recorded in `glwarden events`).
    Private {
        /// Numeric GitLab project id or path.
        project: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConnectionCommand {
    /// Point a connection's stored project, key and hook ids at a new address
    /// of the same GitLab instance (after a move or rename). Only you can
    /// confirm it is the same instance: ids applied to another GitLab would
    /// touch other people's projects.
    Move {
        /// The connection's name, as in the configuration.
        name: String,
        /// Its new base URL; must be the `url` the configuration now gives it.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo database here instead of a temporary directory.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

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
        Command::Demo(args) => return crate::demo::run(args).await,
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
    let store = Store::open(&cfg.raw.store.path).await?;
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
    let named = Named {
        store: &store,
        connection: cli.connection.as_deref(),
    };
    let outcome = execute(command, cfg, named).await;
    store.close().await;
    outcome
}

async fn execute(command: Command, cfg: Arc<Config>, named: Named<'_>) -> anyhow::Result<u8> {
    let store = named.store;
    match command {
        Command::Check(args) => {
            let selection = selection(args.project);
            let checker = Checker::new(cfg, store.clone(), None).await?;
            let summary = checker.run(&selection).await?;
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
            let checker = Checker::new(cfg, store.clone(), None).await?;
            let component = if deploy_key {
                Component::DeployKey
            } else {
                Component::Webhook
            };
            let outcome = checker.regenerate(&row, component).await?;
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
            let repairer = crate::repair::Repairer::new(cfg, store.clone());
            let key = repairer.private_key(&row).await?;
            print!("{}", key.as_str());
            if !key.ends_with('\n') {
                println!();
            }
            Ok(0)
        }
        Command::Project(cmd) => project_command(cmd, cfg, named).await,
        #[cfg(feature = "demo")]
        Command::Demo(_) => unreachable!("handled before the store is opened"),
        Command::Config(_) | Command::Run | Command::Connection(_) => {
            unreachable!("handled before the store is opened")
        }
    }
}

/// `glwarden connection move NAME --to URL`.
async fn move_connection(cfg: &Config, store: &Store, name: &str, to: &str) -> anyhow::Result<u8> {
    let conn = cfg.connections.get(name).with_context(|| {
        format!(
            "connection `{name}` is not in {}: add it there with url = \"{to}\" first",
            cfg.file.display()
        )
    })?;
    let to = crate::config::parse_base_url(to).map_err(|e| anyhow::anyhow!("--to `{to}`: {e}"))?;
    // The store keeps the form the configuration is parsed into.
    if to.as_str() != conn.base_url.as_str() {
        anyhow::bail!(
            "connection `{name}` has url {} in {}, not {to}: edit the file first, then move to the same url",
            conn.base_url,
            cfg.file.display()
        );
    }
    match store.move_connection(name, conn.base_url.as_str()).await? {
        Some((was, _)) if was == conn.base_url.as_str() => {
            println!("connection `{name}` is already at {was}; nothing changed");
        }
        Some((was, projects)) => println!(
            "connection `{name}` moved from {was} to {}: the stored ids of its {projects} projects now refer to it",
            conn.base_url
        ),
        None => println!(
            "connection `{name}` has nothing in the store yet; it will be registered at {} on first use",
            conn.base_url
        ),
    }
    Ok(0)
}

/// How PROJECT arguments are resolved: by numeric id, path or config name,
/// within `--connection` when given. A name that fits projects on several
/// connections is refused with the candidates, never taken as the first.
#[derive(Clone, Copy)]
struct Named<'a> {
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

async fn repair_command(args: RepairArgs, cfg: Arc<Config>, store: &Store) -> anyhow::Result<u8> {
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
    let checker = Checker::new(cfg, store.clone(), None).await?;
    let summary = checker
        .run_with(
            &Selection::All,
            &crate::check::RunOptions {
                repair: true,
                ..Default::default()
            },
        )
        .await?;
    for plan in &summary.plans {
        println!("plan: {plan}");
    }
    let failed = summary.repairs.iter().filter(|(_, o)| *o != "ok").count();
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
async fn repair_plan(cfg: &Config, store: &Store) -> anyhow::Result<u8> {
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

async fn events(
    named: Named<'_>,
    project: Option<String>,
    since: Option<String>,
    limit: i64,
    format: Format,
) -> anyhow::Result<u8> {
    let store = named.store;
    let project_id = known_project_id(named, project.as_deref()).await?;
    let projects = store.all_projects().await?;
    let since = match since {
        Some(text) => Some(parse_since(&text)?),
        None => None,
    };
    let rows = store.events(project_id, since, limit).await?;
    let names: HashMap<i64, String> = projects.into_iter().map(|p| (p.id, p.path)).collect();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            for e in &rows {
                let subject = e
                    .project_id
                    .and_then(|id| names.get(&id).cloned())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}  {}  {} {}  {}  before: {}  after: {}  cause: {}",
                    e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    report::escape(&subject),
                    e.component,
                    e.action,
                    report::escape(&e.outcome),
                    report::escape(&e.before),
                    report::escape(&e.after),
                    report::escape(&e.cause),
                );
            }
            if rows.is_empty() {
                println!("no events");
            }
        }
    }
    Ok(0)
}

/// `24h`, `7d`, `90m` ago, or an RFC 3339 time.
fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = humantime::parse_duration(text).with_context(|| {
        format!("--since `{text}`: give a duration such as 24h or 7d, or an RFC 3339 time")
    })?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago)?)
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

async fn history(
    named: Named<'_>,
    project: Option<String>,
    limit: i64,
    format: Format,
) -> anyhow::Result<u8> {
    let store = named.store;
    let project_id = known_project_id(named, project.as_deref()).await?;
    let projects = store.all_projects().await?;
    let rows = store.transitions(project_id, limit).await?;
    let mut names: HashMap<(bool, i64), String> = projects
        .into_iter()
        .map(|p| ((false, p.id), p.path))
        .collect();
    for (id, name) in store.connections().await? {
        names.insert((true, id), name);
    }
    match format {
        Format::Table => print!("{}", report::transitions_table(&rows, &names)),
        Format::Json => {
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|t| {
                    let is_connection = t.component == "connection";
                    serde_json::json!({
                        "at": t.at, "component": t.component,
                        "subject": names.get(&(is_connection, t.subject_id)),
                        "from": t.from_state, "to": t.to_state, "detail": t.detail,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(0)
}

async fn project_command(
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
            let checker = Checker::new(cfg.clone(), store.clone(), None).await?;
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
                let adopted = checker
                    .adopt(
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
        ProjectCommand::Remove { project } => {
            let found = find_active(named, &project).await?;
            store.remove_project(found.id).await?;
            println!(
                "removed {} (id {}); its history is kept",
                report::escape(&found.path),
                found.gitlab_id
            );
            // The CI's copy of its private key goes with it.
            if let Some(dir) = &cfg.raw.custody.key_dir {
                let file = crate::custody::key_file_path(dir, &found.connection, found.gitlab_id);
                match std::fs::remove_file(&file) {
                    Ok(()) => println!("deleted the key file {}", file.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => eprintln!("warning: cannot delete {}: {e}", file.display()),
                }
            }
            println!(
                "its deploy key and webhook stay at GitLab (key {}, hook {})",
                found
                    .deploy_key_id
                    .map_or_else(|| "-".to_owned(), |k| k.to_string()),
                found
                    .hook_id
                    .map_or_else(|| "-".to_owned(), |h| h.to_string())
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
