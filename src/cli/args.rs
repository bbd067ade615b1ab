//! The command line as clap parses it: every command, its arguments and
//! their help text (`glwarden --help`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    pub config: Option<PathBuf>,

    /// The connection a PROJECT argument belongs to, when its id or path
    /// names projects on more than one connection.
    #[arg(long, global = true, value_name = "NAME")]
    pub connection: Option<String>,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Work with the store itself: its schema, and moving an installation to PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run a check against the built-in GitLab simulator, seeded with projects
    /// in every state. Needs no network and no setup.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this project (numeric id, path, or the config's name for it).
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
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
    /// Remove a project from the inventory (its history is kept); with
    /// --purge, delete glwarden's deploy key and webhook from GitLab first.
    Remove {
        /// Numeric GitLab project id or path.
        project: String,
        /// Delete the deploy key and webhook glwarden owns on the project
        /// (by id, and by key material or URL) from GitLab, through the
        /// repair journal; a 404 counts as deleted.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Print what would be done for every project, from the stored health; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub command: Option<RepairCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Resume automatic repairs paused by the storm guard.
    Resume,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
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
pub enum ConnectionCommand {
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
pub enum StoreCommand {
    /// Bring the configured store's schema up to this version's and print it. Every command
    /// does this when it opens the store; run it before starting replicas of a new version.
    Migrate,
    /// Copy a SQLite store whole (inventory, health, history, events, keys, the journal,
    /// OAuth pairs) into an empty PostgreSQL store, in one transaction, and compare counts.
    Copy {
        /// The SQLite store to copy: `sqlite:PATH` or a path. It is brought up to this
        /// version's schema first and otherwise only read.
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL database to copy into, with its password from `[store] password_*`;
        /// by default the configured `[store] url`.
        #[arg(long, value_name = "postgres://USER@HOST/DB")]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
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
    /// Then run the daemon against the simulator with the status page, /metrics and the
    /// page's buttons on (the fleet keeps breaking and healing), until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Where `--serve` listens.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9184",
        requires = "serve"
    )]
    pub listen: String,
}
