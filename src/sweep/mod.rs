//! One sweep, in named steps: [`Sweeper::resume`] the repair journal, probe
//! the [`connections`], sync the inventory, check the [`project`]s with
//! bounded concurrency, [`writer`] the observations to the store, then the
//! repair pass (`crate::repair::pass`). `glwarden check` is one sweep; the
//! daemon runs one per schedule tick.
//!
//! The order matters: a connection that is not connected blocks its projects
//! (no per-project request is sent), and a repository that is gone or out of
//! reach blocks its key and hook.

pub mod connections;
mod progress;
mod project;
pub(crate) mod rotation;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::metrics::Metrics;
use crate::gitlab::listing::BulkListing;
use crate::gitlab::{ApiError, ClientOptions, GitLab};
use crate::health::{Component, State};
use crate::inventory::{self, ConnectionHandle};
use crate::probe::ConnectionVerdict;
use crate::repair::Repairer;
use crate::store::{CheckTarget, ProjectRow, Store, StoreError};

pub use connections::probe_connection;
pub use progress::{Progress, Reading, human};
pub use project::expected_webhook_url;
use project::{ProjectChecks, ProjectOutcome};
pub use rotation::Rotated;

/// The inventory as a sweep reads it.
type ProjectStream<'a> = BoxStream<'a, Result<CheckTarget, StoreError>>;

/// Each project's outcome as the pipelines finish it; `None` for a project
/// not started because the sweep was cancelled.
type Outcomes<'a> = BoxStream<'a, Result<Option<ProjectOutcome>, StoreError>>;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("connection `{name}`: {source}")]
    Client { name: String, source: ApiError },
    #[error(transparent)]
    Repair(#[from] crate::repair::RepairError),
    #[error("{0}")]
    Usage(String),
}

/// How a repair carried out in a sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairResult {
    Done,
    Failed,
}

impl RepairResult {
    /// The `result` label of `glwarden_repairs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairResult::Done => "ok",
            RepairResult::Failed => "failed",
        }
    }
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepSummary {
    pub projects_checked: usize,
    pub transitions: usize,
    /// Inventory problems, each naming the config entry at fault.
    pub problems: Vec<String>,
    /// GitLab requests sent, all connections.
    pub requests: u64,
    /// Observations by component and shown state (for the checks counter).
    pub observed: BTreeMap<(Component, State), u64>,
    /// Projects not started because the sweep was cancelled.
    pub not_started: usize,
    /// Repairs carried out, by component.
    pub repairs: Vec<(Component, RepairResult)>,
    /// Plans logged under `report` policy this sweep.
    pub plans: Vec<String>,
    /// Whether automatic repairs are paused by the storm guard after this sweep.
    pub repairs_paused: bool,
    /// Broken components whose automatic repair is stopped after
    /// [`crate::repair::MAX_FAILED_REPAIRS`] failures in a row.
    pub repairs_stopped: usize,
    /// Unfinished repairs left in the journal after this sweep.
    pub journal_entries: usize,
    /// Token rotations tried this sweep, by connection.
    pub rotations: Vec<(String, Rotated)>,
}

/// How a sweep is paced and stopped.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Spread the project checks evenly over this long (a daemon sweep).
    pub spread: Option<std::time::Duration>,
    /// When cancelled, no further project check starts; started ones finish
    /// and are recorded.
    pub cancel: Option<CancellationToken>,
    /// Repair what policy allows after checking (the daemon, `glwarden repair`).
    pub repair: bool,
    /// Counted as projects are checked, for whoever shows the progress.
    pub progress: Option<Arc<Progress>>,
}

/// Which projects a sweep covers.
#[derive(Debug, Clone, Default)]
pub enum Selection {
    #[default]
    All,
    /// A numeric GitLab id, a path, or the config's name for it.
    One(String),
}

impl Selection {
    /// The inventory's projects it covers, by connection and path.
    pub async fn projects(&self, store: &Store) -> Result<Vec<ProjectRow>, StoreError> {
        match self {
            Selection::All => store.active_projects().await,
            Selection::One(wanted) => store.projects_named(wanted, true).await,
        }
    }
}

/// Sweeps projects against GitLab and records what it finds.
pub struct Sweeper {
    pub(crate) cfg: Arc<Config>,
    pub(crate) store: Store,
    pub(crate) clients: BTreeMap<String, Arc<GitLab>>,
    /// Rotated tokens the store could not take yet, by connection: in use
    /// from memory, and stored at the start of each sweep until it can.
    unstored: std::sync::Mutex<BTreeMap<String, rotation::Answered>>,
}

/// The connections as probed at the start of a sweep.
struct Probed {
    handles: BTreeMap<String, ConnectionHandle>,
    verdicts: Arc<BTreeMap<String, ConnectionVerdict>>,
}

impl Sweeper {
    pub async fn new(
        cfg: Arc<Config>,
        store: Store,
        metrics: Option<&Arc<Metrics>>,
    ) -> Result<Self, SweepError> {
        // Before any request or write: stored ids go only to their instance.
        store.verify_connections(cfg.connection_urls()).await?;
        // What repairs may rewrite: hooks to a URL glwarden was configured for.
        if let Some(template) = &cfg.raw.expect.webhook_url {
            store.remember_hook_url_template(template).await?;
        }
        // Before any secret is read: what an earlier setting left in
        // plaintext is sealed once a master key is configured (a daemon's
        // reload may be the first to see one).
        store.seal_plaintext(&cfg.custody).await?;
        let mut clients = BTreeMap::new();
        for (name, conn) in &cfg.connections {
            let oauth = match &conn.oauth {
                Some(settings) => Some(
                    connections::oauth_session(&store, &cfg.custody, name, conn, settings).await?,
                ),
                None => None,
            };
            let options = ClientOptions {
                request_timeout: cfg.raw.check.request_timeout(),
                connect_timeout: cfg.raw.check.connect_timeout(),
                max_response_bytes: cfg.raw.check.max_response_bytes,
                max_list_items: cfg.raw.check.max_list_items,
                max_rate_limit_wait: std::time::Duration::from_secs(
                    cfg.raw.check.max_rate_limit_wait_seconds,
                ),
                requests_per_minute: Some(conn.requests_per_minute),
                observer: metrics.map(|m| m.observer(name)),
                oauth,
                root_certificates: conn.ca_certificates.clone(),
                write_gate: store.write_gate().cloned(),
            };
            // The token this connection's was rotated into, if any.
            let rotated = rotation::stored_rotation(&store, &cfg.custody, conn).await?;
            let token = rotation::token_in_use(conn, rotated.as_ref());
            let client =
                GitLab::new(&conn.base_url, conn.kind, token, options).map_err(|source| {
                    SweepError::Client {
                        name: name.clone(),
                        source,
                    }
                })?;
            clients.insert(name.clone(), Arc::new(client));
        }
        Ok(Self {
            cfg,
            store,
            clients,
            unstored: Default::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    pub fn client(&self, connection: &str) -> Option<&Arc<GitLab>> {
        self.clients.get(connection)
    }

    /// The client of a project's connection, or an error naming it.
    pub fn client_of(&self, project: &ProjectRow) -> Result<&Arc<GitLab>, SweepError> {
        self.clients.get(&project.connection).ok_or_else(|| {
            SweepError::Usage(format!(
                "connection `{}` is not configured",
                project.connection
            ))
        })
    }

    /// A sweep of the selected projects, unpaced, without repairs (`glwarden check`).
    pub async fn sweep(&self, selection: &Selection) -> Result<SweepSummary, SweepError> {
        self.sweep_with(selection, &SweepOptions::default()).await
    }

    /// [`Sweeper::sweep`] with pacing, cancellation and repairs (the daemon's sweep).
    pub async fn sweep_with(
        &self,
        selection: &Selection,
        options: &SweepOptions,
    ) -> Result<SweepSummary, SweepError> {
        let requests_before = self.requests_sent();
        let mut summary = SweepSummary::default();
        let repairer = self.resume().await?;
        let probed = self.connections(&mut summary, options.repair).await?;
        summary.problems = self
            .inventory(&probed.handles, &repairer, options.repair)
            .await?;
        let cancel = options.cancel.clone().unwrap_or_default();
        let outcomes = self.projects(selection, options, &probed, &cancel).await?;
        let newly_broken = self
            .write(outcomes, &mut summary, options.progress.as_deref())
            .await?;
        if options.repair && !cancel.is_cancelled() {
            self.repair_pass(&repairer, &probed.verdicts, newly_broken, &mut summary)
                .await?;
        }
        summary.repairs_paused = self.store.repairs_paused().await?.is_some();
        summary.journal_entries = self.store.journal().await?.len();
        summary.requests = self.requests_sent() - requests_before;
        Ok(summary)
    }

    fn requests_sent(&self) -> u64 {
        self.clients.values().map(|c| c.requests_sent()).sum()
    }

    /// Step 1: unfinished repairs from a crash are finished before anything else.
    async fn resume(&self) -> Result<Repairer, SweepError> {
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        let (resumed, failed) = repairer.resume(&self.clients).await?;
        if resumed + failed > 0 {
            tracing::info!(resumed, failed, "repair journal replayed");
        }
        Ok(repairer)
    }

    /// Step 2: every connection probed and recorded. They are asked at the
    /// same time: one that GitLab slows down or pauses delays no other.
    /// With `rotate` (a sweep that repairs), tokens due under
    /// `rotate_before_days` are rotated before the states are recorded.
    async fn connections(
        &self,
        summary: &mut SweepSummary,
        rotate: bool,
    ) -> Result<Probed, SweepError> {
        let now = Utc::now();
        let probed = futures::future::join_all(self.clients.iter().map(|(name, client)| {
            let conn = &self.cfg.connections[name];
            async move {
                let id = self
                    .store
                    .connection_id(name, conn.base_url.as_str())
                    .await?;
                // Each sweep asks a connection again, whatever an earlier
                // sweep was told to wait beyond the cap.
                client.forget_refusal();
                // Before asking: a token rotated earlier is stored now if it
                // could not be then, and one another process rotated is taken.
                let unstored = self.store_unstored(name).await;
                let rotated =
                    rotation::stored_rotation(&self.store, &self.cfg.custody, conn).await?;
                if !unstored && conn.kind == crate::config::TokenKind::AccessToken {
                    client.set_token(&rotation::token_in_use(conn, rotated.as_ref()));
                }
                let mut verdict =
                    probe_connection(client, conn.kind, rotation::warning_days(&self.cfg, conn))
                        .await;
                if conn.kind == crate::config::TokenKind::AccessToken {
                    // Only a repairing sweep, once the configured token is
                    // seen to work: a command run with another token (a
                    // stray environment variable) must not forget the
                    // token the daemon rotated into.
                    if rotate && verdict.usable {
                        let seed = rotation::seed_of(&conn.token);
                        rotation::forget_if_replaced(&self.store, name, &seed).await?;
                    }
                    let stale = Utc::now() - rotation::claim_window(&self.cfg);
                    rotation::explain_refusal(&mut verdict, rotated.as_ref(), stale);
                }
                Ok::<_, StoreError>((name, client, id, verdict))
            }
        }))
        .await;
        let mut ids = BTreeMap::new();
        let mut verdicts = BTreeMap::new();
        for probed in probed {
            let (name, client, id, verdict) = probed?;
            ids.insert(name.clone(), (id, client.clone()));
            verdicts.insert(name.clone(), verdict);
        }
        if rotate {
            summary.rotations = self.rotate_tokens(&mut verdicts).await?;
        }
        let mut handles = BTreeMap::new();
        let mut batch = Vec::new();
        for (name, verdict) in &verdicts {
            let (id, client) = ids.remove(name).expect("each verdict has its connection");
            tracing::info!(connection = %name, state = %verdict.observation.state(), detail = verdict.observation.detail(), "connection checked");
            batch.push((Component::Connection, id, verdict.observation.clone()));
            handles.insert(
                name.clone(),
                ConnectionHandle {
                    id,
                    client,
                    usable: verdict.usable,
                },
            );
        }
        writer::count(&mut summary.observed, &batch);
        summary.transitions = self.store.record(&batch, now).await?.len();
        for (name, verdict) in &verdicts {
            if let Some(token) = &verdict.token {
                self.store.record_token(name, token, now).await?;
            }
        }
        Ok(Probed {
            handles,
            verdicts: Arc::new(verdicts),
        })
    }

    /// Step 3: the inventory synced with the config and discovery; returns
    /// the problems, each naming the config entry at fault. Projects that
    /// left a discovery rule with `purge_on_leave` are purged by a sweep
    /// that repairs (the journal resumes a purge cut short) and stay in
    /// the inventory until one does.
    async fn inventory(
        &self,
        handles: &BTreeMap<String, ConnectionHandle>,
        repairer: &Repairer,
        repair: bool,
    ) -> Result<Vec<String>, SweepError> {
        let synced = inventory::sync(&self.cfg, &self.store, handles).await?;
        for problem in &synced.problems {
            tracing::warn!(problem = problem.as_str(), "inventory");
        }
        // A purge the journal holds is resumed at the start of each sweep,
        // never begun a second time.
        let unfinished: std::collections::HashSet<i64> = match repair {
            true => self
                .store
                .journal()
                .await?
                .iter()
                .map(|e| e.project_id)
                .collect(),
            false => Default::default(),
        };
        for project in synced.to_purge.iter().filter(|_| repair) {
            let Some(handle) = handles.get(&project.connection).filter(|h| h.usable) else {
                continue;
            };
            if unfinished.contains(&project.id) {
                continue;
            }
            let cause = "left discovery ([[discover]] purge_on_leave)";
            let purged = repairer
                .execute(
                    &handle.client,
                    project,
                    &crate::repair::Action::Purge,
                    cause,
                    None,
                )
                .await;
            match purged {
                Ok(_) => {}
                // Asked again by the next sweep (the journal holds it).
                Err(e) if e.is_not_leading() || e.is_transient() => {
                    tracing::warn!(project = %project.path, error = %e, "purge not finished; the next sweep resumes it");
                }
                // Refused for good (the event says so): it leaves the
                // inventory as discovery says, its key and hook where they are.
                Err(e) => {
                    tracing::warn!(project = %project.path, error = %e, "purge refused by GitLab; the project leaves the inventory, its key and hook stay at GitLab");
                    self.store.remove_project(project.id).await?;
                }
            }
        }
        Ok(synced.problems)
    }

    /// Step 4: the selected projects checked, as a stream of outcomes.
    ///
    /// A whole sweep streams the inventory from the store rather than
    /// holding it: at 100,000 projects the rows would be tens of MB. Each
    /// connection's projects go through a pipeline of their own (its bulk
    /// listing, its spread, `check.concurrency` checks in flight), so a
    /// connection that GitLab slows down holds up no other's checks.
    async fn projects<'a>(
        &'a self,
        selection: &Selection,
        options: &'a SweepOptions,
        probed: &Probed,
        cancel: &CancellationToken,
    ) -> Result<Outcomes<'a>, SweepError> {
        let mut per_connection: BTreeMap<String, ProjectStream<'a>> = BTreeMap::new();
        let counts: HashMap<String, usize> = match selection {
            Selection::All => {
                let counts = self.store.active_counts().await?;
                for (name, handle) in &probed.handles {
                    if counts.get(name).is_some_and(|n| *n > 0) {
                        per_connection
                            .insert(name.clone(), self.store.stream_active_projects(handle.id));
                    }
                }
                counts
            }
            Selection::One(_) => {
                let mut rows: BTreeMap<String, Vec<CheckTarget>> = BTreeMap::new();
                for p in selection.projects(&self.store).await? {
                    rows.entry(p.connection.clone())
                        .or_default()
                        .push(CheckTarget::from(&p));
                }
                let mut counts = HashMap::new();
                for (name, mut rows) in rows {
                    // The order of the stream and of the bulk listing.
                    rows.sort_by_key(|p| p.gitlab_id);
                    counts.insert(name.clone(), rows.len());
                    per_connection.insert(
                        name,
                        futures::stream::iter(rows.into_iter().map(Ok)).boxed(),
                    );
                }
                counts
            }
        };
        if let Some(progress) = &options.progress {
            let total: usize = per_connection
                .keys()
                .map(|name| counts.get(name).copied().unwrap_or(0))
                .sum();
            progress.start(total as u64);
        }
        let mut listings = self.start_bulk_listings(&probed.handles, &counts);
        let started_at = tokio::time::Instant::now();
        let checks = self.project_checks();
        let concurrency = self.cfg.raw.check.concurrency;
        let pipelines = per_connection.into_iter().map(|(name, projects)| {
            let total = counts.get(&name).copied().unwrap_or(0).max(1) as u32;
            let client = self.clients[&name].clone();
            // Each project takes its entry of the bulk listing as the
            // listing passes it (in order, one at a time), then the checks
            // run concurrently. The step owns the listing while it waits.
            let projects = futures::stream::unfold(
                (projects, listings.remove(&name)),
                |(mut projects, mut listing)| async move {
                    let taken = match projects.next().await? {
                        Ok(project) => {
                            let from_list = match listing.as_mut() {
                                Some(listing) => listing.take(project.gitlab_id as u64).await,
                                None => None,
                            };
                            Ok((project, from_list))
                        }
                        Err(e) => Err(e),
                    };
                    Some((taken, (projects, listing)))
                },
            );
            let (cancel, checks, verdicts) =
                (cancel.clone(), checks.clone(), probed.verdicts.clone());
            projects
                .enumerate()
                .map(move |(i, project)| {
                    // Project i starts no earlier than i/n of the way through the spread.
                    let start = started_at
                        + options
                            .spread
                            .map(|s| s / total * i as u32)
                            .unwrap_or_default();
                    let (cancel, checks, verdicts, client) = (
                        cancel.clone(),
                        checks.clone(),
                        verdicts.clone(),
                        client.clone(),
                    );
                    async move {
                        let (project, from_list) = project?;
                        // Unpaced (or late) checks start at once: a timer per
                        // project would cost a trip through the timer wheel.
                        if start > tokio::time::Instant::now() {
                            tokio::select! {
                                biased;
                                _ = cancel.cancelled() => return Ok(None),
                                _ = tokio::time::sleep_until(start) => {}
                            }
                        }
                        if cancel.is_cancelled() {
                            return Ok(None);
                        }
                        let task = tokio::spawn(async move {
                            let verdict = &verdicts[&project.connection];
                            checks
                                .check_project(&client, verdict, project, from_list)
                                .await
                        });
                        // Aborted if the sweep is dropped before it completes.
                        match tokio_util::task::AbortOnDropHandle::new(task).await {
                            Ok(outcome) => Ok::<_, StoreError>(Some(outcome)),
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            Err(_) => Ok(None),
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .boxed()
        });
        Ok(futures::stream::select_all(pipelines).boxed())
    }

    /// A bulk listing (see `gitlab/listing.rs`) for every usable connection
    /// with enough projects in the inventory to be worth it: one request per
    /// 100 projects instead of one each.
    fn start_bulk_listings(
        &self,
        handles: &BTreeMap<String, ConnectionHandle>,
        counts: &HashMap<String, usize>,
    ) -> HashMap<String, BulkListing> {
        handles
            .iter()
            .filter(|(name, handle)| {
                handle.usable
                    && counts.get(*name).copied().unwrap_or(0)
                        >= self.cfg.raw.check.bulk_list_min_projects
            })
            .map(|(name, handle)| {
                (
                    name.clone(),
                    BulkListing::start(name, handle.client.clone()),
                )
            })
            .collect()
    }

    /// Checks one project again (after a repair) and records the result;
    /// returns the number of transitions.
    pub(crate) async fn recheck(
        &self,
        client: &GitLab,
        verdict: &ConnectionVerdict,
        project: &ProjectRow,
    ) -> Result<usize, StoreError> {
        let fresh = self
            .store
            .project(project.id)
            .await?
            .unwrap_or_else(|| project.clone());
        let outcome = self
            .project_checks()
            .check_project(client, verdict, CheckTarget::from(&fresh), None)
            .await;
        self.remember_findings(&outcome).await?;
        let batch: Vec<_> = outcome
            .observations
            .into_iter()
            .map(|(c, o)| (c, outcome.project_id, o))
            .collect();
        Ok(self.store.record(&batch, Utc::now()).await?.len())
    }

    /// Stores what a check learnt about the project itself (its first-seen
    /// path, the ids of the key and hook found to be ours).
    async fn remember_findings(&self, outcome: &ProjectOutcome) -> Result<(), StoreError> {
        if let Some(path) = &outcome.learnt_path {
            self.store.set_path(outcome.project_id, path).await?;
        }
        if outcome.found_key_id.is_some() || outcome.found_hook_id.is_some() {
            self.store
                .set_owned_ids(
                    outcome.project_id,
                    outcome.found_key_id,
                    outcome.found_hook_id,
                )
                .await?;
        }
        Ok(())
    }

    fn project_checks(&self) -> ProjectChecks {
        ProjectChecks {
            cfg: self.cfg.clone(),
            store: self.store.clone(),
        }
    }
}
