//! One check run: probe each connection, sync the inventory, check every
//! project's repository, deploy key and webhook with bounded concurrency, and
//! record the observations in the store.
//!
//! The order matters: a connection that is not connected blocks its projects
//! (no per-project request is sent), and a repository that is gone or out of
//! reach blocks its key and hook.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TokenKind};
use crate::gitlab::oauth::{OAuthClient, OAuthPair, OAuthSession, Persist};
use crate::gitlab::types::{DeployKey, GitLabVersion, Hook, Project};
use crate::gitlab::{ApiError, ClientOptions, ErrorKind, GitLab};
use crate::health::{Component, Observation, State};
use crate::inventory::{self, ConnectionHandle};
use crate::listing::BulkListing;
use crate::metrics::Metrics;
use crate::probe::{
    self, ConnectionVerdict, HookAnswer, HookExpectation, KeyAnswer, KeyExpectation, TokenDetails,
};
use crate::repair::{self, Action, Decision, Policies, Repairer};
use crate::store::NewEvent;
use crate::store::{CheckTarget, ProjectRow, Store, StoreError};

/// The inventory as a sweep reads it.
type ProjectStream<'a> = BoxStream<'a, Result<CheckTarget, StoreError>>;

/// Marks the first 404 of a project, confirmed (or not) by the next check.
const NOT_FOUND_ONCE: &str =
    "GitLab answers 404 for the project; not_found if the next check agrees";

/// Observations are written in transactions of this many projects.
const WRITE_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("connection `{name}`: {source}")]
    Client { name: String, source: ApiError },
    #[error(transparent)]
    Repair(#[from] crate::repair::RepairError),
    #[error("{0}")]
    Usage(String),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub projects_checked: usize,
    pub transitions: usize,
    /// Inventory problems, each naming the config entry at fault.
    pub problems: Vec<String>,
    /// GitLab requests sent, all connections.
    pub requests: u64,
    /// Observations by component and shown state (for the checks counter).
    pub observed: BTreeMap<(Component, State), u64>,
    /// Projects not started because the run was cancelled.
    pub not_started: usize,
    /// Repairs carried out: (component, "ok" or "failed").
    pub repairs: Vec<(Component, &'static str)>,
    /// Plans logged under `report` policy this run.
    pub plans: Vec<String>,
    /// Whether automatic repairs are paused by the storm guard after this run.
    pub repairs_paused: bool,
    /// Broken components whose automatic repair is stopped after
    /// [`repair::MAX_FAILED_REPAIRS`] failures in a row.
    pub repairs_stopped: usize,
    /// Unfinished repairs left in the journal after this run.
    pub journal_entries: usize,
}

/// How a run is paced and stopped.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Spread the project checks evenly over this long (a daemon sweep).
    pub spread: Option<std::time::Duration>,
    /// When cancelled, no further project check starts; started ones finish
    /// and are recorded.
    pub cancel: Option<CancellationToken>,
    /// Repair what policy allows after checking (the daemon, `glwarden repair`).
    pub repair: bool,
}

/// Which projects a run covers.
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

/// Checks projects against GitLab and records what it finds.
pub struct Checker {
    cfg: Arc<Config>,
    store: Store,
    clients: BTreeMap<String, Arc<GitLab>>,
}

impl Checker {
    pub async fn new(
        cfg: Arc<Config>,
        store: Store,
        metrics: Option<&Arc<Metrics>>,
    ) -> Result<Self, CheckError> {
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
                Some(settings) => {
                    Some(oauth_session(&store, &cfg.custody, name, conn, settings).await?)
                }
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
            };
            let client = GitLab::new(&conn.base_url, conn.kind, conn.token.clone(), options)
                .map_err(|source| CheckError::Client {
                    name: name.clone(),
                    source,
                })?;
            clients.insert(name.clone(), Arc::new(client));
        }
        Ok(Self {
            cfg,
            store,
            clients,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn client(&self, connection: &str) -> Option<&Arc<GitLab>> {
        self.clients.get(connection)
    }

    /// Probes every connection, syncs the inventory, checks the selected projects.
    pub async fn run(&self, selection: &Selection) -> Result<RunSummary, CheckError> {
        self.run_with(selection, &RunOptions::default()).await
    }

    /// [`Checker::run`] with pacing and cancellation (the daemon's sweep).
    pub async fn run_with(
        &self,
        selection: &Selection,
        options: &RunOptions,
    ) -> Result<RunSummary, CheckError> {
        let requests_before: u64 = self.clients.values().map(|c| c.requests_sent()).sum();
        // Unfinished repairs from a crash are finished before anything else.
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        let (resumed, failed) = repairer.resume(&self.clients).await?;
        if resumed + failed > 0 {
            tracing::info!(resumed, failed, "repair journal replayed");
        }
        let now = Utc::now();
        // Connections are asked at the same time: one that GitLab slows
        // down or pauses delays no other.
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
                let verdict = probe_connection(
                    client,
                    conn.kind,
                    self.cfg.raw.check.token_expiry_warning_days,
                )
                .await;
                Ok::<_, StoreError>((name, client, id, verdict))
            }
        }))
        .await;
        let mut handles = BTreeMap::new();
        let mut verdicts = BTreeMap::new();
        let mut batch = Vec::new();
        for probed in probed {
            let (name, client, id, verdict) = probed?;
            tracing::info!(connection = %name, state = %verdict.observation.state(), detail = verdict.observation.detail(), "connection checked");
            batch.push((Component::Connection, id, verdict.observation.clone()));
            handles.insert(
                name.clone(),
                ConnectionHandle {
                    id,
                    client: client.clone(),
                    usable: verdict.usable,
                },
            );
            verdicts.insert(name.clone(), verdict);
        }
        let mut summary = RunSummary::default();
        let mut newly_broken = std::collections::HashSet::new();
        count(&mut summary.observed, &batch);
        summary.transitions = self.store.record(&batch, now).await?.len();

        let synced = inventory::sync(&self.cfg, &self.store, &handles).await?;
        for problem in &synced.problems {
            tracing::warn!(problem = problem.as_str(), "inventory");
        }
        summary.problems = synced.problems;

        // A whole sweep streams the inventory from the store rather than
        // holding it: at 100,000 projects the rows would be tens of MB. Each
        // connection's projects go through a pipeline of their own (its bulk
        // listing, its spread, `check.concurrency` checks in flight), so a
        // connection that GitLab slows down holds up no other's checks.
        let mut per_connection: BTreeMap<String, ProjectStream<'_>> = BTreeMap::new();
        let counts: std::collections::HashMap<String, usize> = match selection {
            Selection::All => {
                let counts = self.store.active_counts().await?;
                for (name, handle) in &handles {
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
                let mut counts = std::collections::HashMap::new();
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
        let mut listings = self.start_bulk_listings(&handles, &counts);
        let started_at = tokio::time::Instant::now();
        let cancel = options.cancel.clone().unwrap_or_default();
        let checks = self.project_checks();
        let verdicts = Arc::new(verdicts);
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
            let (cancel, checks, verdicts) = (cancel.clone(), checks.clone(), verdicts.clone());
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
        let mut outcomes = futures::stream::select_all(pipelines);

        // Writes go to their own task, so that the store never holds up the
        // requests in flight; a bounded channel keeps memory flat.
        let (to_writer, mut batches) =
            tokio::sync::mpsc::channel::<Vec<(Component, i64, Observation)>>(4);
        let store = self.store.clone();
        let writer = tokio::spawn(async move {
            let mut written = Vec::new();
            while let Some(batch) = batches.recv().await {
                written.extend(store.record(&batch, Utc::now()).await?);
            }
            Ok::<_, StoreError>(written)
        });
        let mut pending = Vec::with_capacity(WRITE_BATCH * 3);
        while let Some(outcome) = outcomes.next().await {
            let Some(outcome) = outcome? else {
                summary.not_started += 1;
                continue;
            };
            summary.projects_checked += 1;
            self.remember_findings(&outcome).await?;
            for (component, observation) in outcome.observations {
                pending.push((component, outcome.project_id, observation));
            }
            if pending.len() >= WRITE_BATCH * 3 {
                count(&mut summary.observed, &pending);
                if to_writer.send(std::mem::take(&mut pending)).await.is_err() {
                    break; // the writer failed: its error is returned below
                }
            }
        }
        drop(outcomes);
        count(&mut summary.observed, &pending);
        let _ = to_writer.send(pending).await;
        drop(to_writer);
        let written = writer.await.map_err(|e| StoreError::Open {
            path: self.cfg.raw.store.path.display().to_string(),
            reason: format!("writer task failed: {e}"),
        })??;
        summary.transitions += written.len();
        note_breakages(&mut newly_broken, &written);
        if options.repair && !cancel.is_cancelled() {
            self.repair_pass(&repairer, &verdicts, newly_broken.len(), &mut summary)
                .await?;
        }
        summary.repairs_paused = self.store.repairs_paused().await?.is_some();
        summary.journal_entries = self.store.journal().await?.len();
        let requests_after: u64 = self.clients.values().map(|c| c.requests_sent()).sum();
        summary.requests = requests_after - requests_before;
        Ok(summary)
    }

    /// A bulk listing (see `listing.rs`) for every usable connection with
    /// enough projects in the inventory to be worth it: one request per 100
    /// projects instead of one each.
    fn start_bulk_listings(
        &self,
        handles: &BTreeMap<String, ConnectionHandle>,
        counts: &std::collections::HashMap<String, usize>,
    ) -> std::collections::HashMap<String, BulkListing> {
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

    /// The "Regenerate" button: rotates the project's deploy key or webhook
    /// secret now, whatever the policy, then checks the project again.
    pub async fn regenerate(
        &self,
        project: &ProjectRow,
        component: Component,
    ) -> Result<String, CheckError> {
        let client = self
            .clients
            .get(&project.connection)
            .ok_or_else(|| {
                CheckError::Usage(format!(
                    "connection `{}` is not configured",
                    project.connection
                ))
            })?
            .clone();
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        repairer.resume(&self.clients).await?;
        let cause = crate::store::MANUAL_CAUSE;
        let outcome = match component {
            Component::DeployKey => {
                repairer
                    .execute(&client, project, &Action::RegenerateDeployKey, cause, None)
                    .await?
            }
            Component::Webhook => repairer.rotate_webhook(&client, project, cause).await?,
            other => return Err(CheckError::Usage(format!("{other} cannot be regenerated"))),
        };
        let verdict = probe_connection(
            &client,
            self.cfg.connections[&project.connection].kind,
            self.cfg.raw.check.token_expiry_warning_days,
        )
        .await;
        let fresh = self
            .store
            .project(project.id)
            .await?
            .unwrap_or_else(|| project.clone());
        let checked = self
            .project_checks()
            .check_project(&client, &verdict, CheckTarget::from(&fresh), None)
            .await;
        self.remember_findings(&checked).await?;
        let batch: Vec<_> = checked
            .observations
            .into_iter()
            .map(|(c, o)| (c, checked.project_id, o))
            .collect();
        self.store.record(&batch, Utc::now()).await?;
        Ok(outcome)
    }

    /// Takes custody of a project's existing key and hook (no GitLab write).
    pub async fn adopt(
        &self,
        project: &ProjectRow,
        private_key: Option<&str>,
        hook_url: Option<&str>,
        hook_token: Option<&str>,
    ) -> Result<String, CheckError> {
        let client = self.clients.get(&project.connection).ok_or_else(|| {
            CheckError::Usage(format!(
                "connection `{}` is not configured",
                project.connection
            ))
        })?;
        let repairer = Repairer::new(self.cfg.clone(), self.store.clone());
        Ok(repairer
            .adopt(client, project, private_key, hook_url, hook_token)
            .await?)
    }

    /// After a run: the storm guard, then each confirmed broken component
    /// decided by policy; repaired projects are checked again so that the
    /// stored state shows the result.
    async fn repair_pass(
        &self,
        repairer: &Repairer,
        verdicts: &BTreeMap<String, ConnectionVerdict>,
        newly_broken: usize,
        summary: &mut RunSummary,
    ) -> Result<(), CheckError> {
        let r = &self.cfg.raw.repair;
        let (broken_now, total) = self.store.broken_share().await?;
        let (broken_now, total) = (broken_now as usize, total as usize);
        // Only components that could need a repair are read, grouped by project.
        let mut candidates: BTreeMap<
            i64,
            std::collections::HashMap<Component, crate::store::HealthRow>,
        > = BTreeMap::new();
        for h in self.store.repair_candidates().await? {
            candidates
                .entry(h.subject_id)
                .or_default()
                .insert(h.component, h);
        }
        if repair::is_storm(newly_broken, total, r.storm_share, r.storm_min_projects) {
            let reason = format!(
                "{newly_broken} of {total} projects broke in one sweep at {}",
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            );
            if self.store.repairs_paused().await?.is_none() {
                tracing::warn!(
                    reason = reason.as_str(),
                    "storm guard: automatic repairs paused; resume with `glwarden repair resume`"
                );
                self.store.set_repairs_paused(Some(&reason)).await?;
            }
        } else if let Some((reason, _)) = self.store.repairs_paused().await? {
            if (broken_now as f64) <= r.storm_share * total as f64 {
                tracing::info!(
                    previous = reason.as_str(),
                    "storm guard: a clean sweep; automatic repairs resume"
                );
                self.store.set_repairs_paused(None).await?;
            }
        }

        let now = Utc::now();
        for (project_id, health) in candidates {
            let Some(project) = self.store.project(project_id).await? else {
                continue;
            };
            let Some(verdict) = verdicts.get(&project.connection) else {
                continue;
            };
            if !verdict.usable {
                continue;
            }
            let client = self.clients[&project.connection].clone();
            let policies = Policies::for_project(&self.cfg, &project);
            let mut repaired = false;
            // Read once per project; set to `ok` once this pass followed the
            // project's move: its key and hook may then be repaired at the new path.
            let mut repository = match health.get(&Component::Repository) {
                Some(h) => h.definite_state(),
                None => self
                    .store
                    .health(Component::Repository, project.id)
                    .await?
                    .and_then(|h| h.definite_state()),
            };
            for component in Component::PROJECT_COMPONENTS {
                let Some(h) = health.get(&component) else {
                    continue;
                };
                let Some((decision, rules)) = repair::decide_component(
                    &self.store,
                    &self.cfg,
                    &project,
                    &policies,
                    component,
                    h,
                    repository,
                    verdict.version,
                    now,
                )
                .await?
                else {
                    continue;
                };
                match decision {
                    Decision::Repair(action) => {
                        let new_path = match action {
                            Action::FollowRename => client
                                .project(&project.gitlab_id.to_string())
                                .await
                                .ok()
                                .map(|p| p.path_with_namespace),
                            _ => None,
                        };
                        // Re-read: an earlier repair of this project may have changed it.
                        let current = self
                            .store
                            .project(project.id)
                            .await?
                            .unwrap_or_else(|| project.clone());
                        let cause = format!(
                            "{component} {}: {}",
                            h.state.map(|s| s.as_str()).unwrap_or("?"),
                            h.detail
                        );
                        let done = repairer
                            .execute(&client, &current, &action, &cause, new_path.as_deref())
                            .await;
                        let ok = done.is_ok();
                        summary
                            .repairs
                            .push((component, if ok { "ok" } else { "failed" }));
                        repaired = true;
                        if ok && action == Action::FollowRename {
                            repository = Some(State::Ok);
                        }
                        // Stopped after MAX_FAILED_REPAIRS failures in a row, or at
                        // once when GitLab refuses for good (a blocked hook URL).
                        let refusal = done.as_ref().err().filter(|e| e.is_permanent());
                        if !ok
                            && (refusal.is_some()
                                || rules.failed_in_a_row + 1 == repair::MAX_FAILED_REPAIRS)
                        {
                            let why = repair::stopped_reason(component, refusal);
                            tracing::warn!(project = %project.path, %component, "{why}");
                            self.store
                                .record_event(&NewEvent {
                                    project_id: Some(project.id),
                                    component: component.as_str(),
                                    action: repair::STOPPED_EVENT,
                                    cause: &cause,
                                    before: "",
                                    after: "",
                                    outcome: &why,
                                })
                                .await?;
                            summary.repairs_stopped += 1;
                        }
                    }
                    Decision::Report(_, plan) => {
                        // Recorded once, when the state is first confirmed, not every sweep.
                        if h.consecutive == i64::from(r.confirm_checks) {
                            tracing::info!(project = %project.path, plan = plan.as_str(), "repair plan (policy: report)");
                            self.store
                                .record_event(&NewEvent {
                                    project_id: Some(project.id),
                                    component: component.as_str(),
                                    action: "plan",
                                    cause: &h.detail,
                                    before: "",
                                    after: &plan,
                                    outcome: "planned",
                                })
                                .await?;
                        }
                        summary.plans.push(plan);
                    }
                    Decision::Skip(why) => {
                        if rules.failed_in_a_row >= repair::MAX_FAILED_REPAIRS
                            && rules.repository == Some(State::Ok)
                        {
                            summary.repairs_stopped += 1;
                        }
                        tracing::debug!(project = %project.path, %component, why, "no repair")
                    }
                }
            }
            if repaired {
                let fresh = self.store.project(project.id).await?.unwrap_or(project);
                let outcome = self
                    .project_checks()
                    .check_project(&client, verdict, CheckTarget::from(&fresh), None)
                    .await;
                self.remember_findings(&outcome).await?;
                let batch: Vec<_> = outcome
                    .observations
                    .into_iter()
                    .map(|(c, o)| (c, outcome.project_id, o))
                    .collect();
                summary.transitions += self.store.record(&batch, Utc::now()).await?.len();
            }
        }
        Ok(())
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

/// What checking a project needs, cheap to clone into the project's own
/// task: the sweep runs each check as a task so that decoding and judging
/// answers spreads over the runtime's threads instead of queueing in the
/// sweep's one task.
#[derive(Clone)]
struct ProjectChecks {
    cfg: Arc<Config>,
    store: Store,
}

impl ProjectChecks {
    /// A single 404 is ambiguous (GitLab deleted the project, or GitLab is
    /// having an outage that answers 404): `not_found` is recorded only when
    /// the next check says so too; the first one is `unknown`.
    async fn confirm_not_found(&self, project_id: i64, observed: Observation) -> Observation {
        if observed.state() != State::NotFound {
            return observed;
        }
        let prev = self
            .store
            .health(Component::Repository, project_id)
            .await
            .ok()
            .flatten();
        let seen_before = prev.is_some_and(|h| {
            h.state == Some(State::NotFound)
                || (h.pending == Some(State::Unknown)
                    && h.pending_detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with(NOT_FOUND_ONCE)))
        });
        if seen_before {
            observed
        } else {
            Observation::Unknown {
                reason: format!("{NOT_FOUND_ONCE}: {}", observed.detail()),
            }
        }
    }

    /// Checks one project's three components.
    async fn check_project(
        &self,
        client: &GitLab,
        connection: &ConnectionVerdict,
        p: CheckTarget,
        from_list: Option<Project>,
    ) -> ProjectOutcome {
        let mut outcome = ProjectOutcome {
            project_id: p.id,
            observations: Vec::with_capacity(3),
            learnt_path: None,
            found_key_id: None,
            found_hook_id: None,
        };
        if !connection.usable {
            let blocked = match &connection.observation {
                Observation::Unknown { reason } => Observation::Unknown {
                    reason: format!("connection {} could not be checked: {reason}", p.connection),
                },
                other => Observation::Blocked {
                    cause: format!(
                        "connection {} is {}: {}",
                        p.connection,
                        other.state(),
                        other.detail()
                    ),
                },
            };
            for component in Component::PROJECT_COMPONENTS {
                outcome.observations.push((component, blocked.clone()));
            }
            return outcome;
        }

        let gitlab_id = p.gitlab_id as u64;
        // From the bulk list when it had the project (it lists only projects
        // where we are Maintainer or more); otherwise one lookup, which tells
        // not_found from access_lost.
        let answer = match from_list {
            Some(listed) => Ok(listed),
            None => client.project(&gitlab_id.to_string()).await,
        };
        // A project configured by id has no stored path until its first answer.
        let path = match (&answer, p.path.is_empty()) {
            (Ok(found), true) => {
                outcome.learnt_path = Some(found.path_with_namespace.clone());
                found.path_with_namespace.clone()
            }
            _ => p.path.clone(),
        };
        let repository = self
            .confirm_not_found(p.id, probe::repository(&answer, &path))
            .await;
        let blocks = match repository.state() {
            State::NotFound | State::AccessLost => {
                Some(format!("repository is {}", repository.state()))
            }
            State::Blocked => Some(repository.detail().to_owned()),
            _ => None,
        };
        if let Some(cause) = blocks {
            outcome
                .observations
                .push((Component::Repository, repository));
            for component in [Component::DeployKey, Component::Webhook] {
                outcome.observations.push((
                    component,
                    Observation::Blocked {
                        cause: cause.clone(),
                    },
                ));
            }
            return outcome;
        }

        let now = Utc::now();
        // A 403 on the deploy key or hook endpoints (they need Maintainer)
        // is what tells a lost role, not the `permissions` fields.
        let checked = async {
            let key = self.check_deploy_key(client, &p, now).await?;
            let hook = self
                .check_webhook(client, &p, &path, connection.version, now)
                .await?;
            Ok::<_, ApiError>((key, hook))
        }
        .await;
        match checked {
            Ok((key, hook)) => {
                outcome
                    .observations
                    .push((Component::Repository, repository));
                outcome.found_key_id = key.1;
                outcome.observations.push((Component::DeployKey, key.0));
                outcome.found_hook_id = hook.1;
                outcome.observations.push((Component::Webhook, hook.0));
            }
            Err(refusal) => {
                let lost = probe::access_refused(&refusal);
                let cause = format!("repository is {}", lost.state());
                outcome.observations.push((Component::Repository, lost));
                for component in [Component::DeployKey, Component::Webhook] {
                    outcome.observations.push((
                        component,
                        Observation::Blocked {
                            cause: cause.clone(),
                        },
                    ));
                }
            }
        }
        outcome
    }

    async fn check_deploy_key(
        &self,
        client: &GitLab,
        p: &CheckTarget,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Observation, Option<u64>), ApiError> {
        let Some(fingerprint) = p.fingerprint.as_deref() else {
            return Ok((
                Observation::definite(
                    State::Missing,
                    "glwarden holds no deploy key for this project",
                ),
                None,
            ));
        };
        let Some(digest) = crate::keys::KeyDigest::parse(fingerprint) else {
            return Ok((
                Observation::Unknown {
                    reason: format!(
                        "the stored fingerprint `{fingerprint}` is not a SHA-256 fingerprint"
                    ),
                },
                None,
            ));
        };
        let expected = KeyExpectation {
            digest,
            read_only: self.cfg.raw.expect.read_only_key,
            warning_days: self.cfg.raw.expect.key_expiry_warning_days,
        };
        let project = p.gitlab_id as u64;
        let by_id: Option<Result<DeployKey, ApiError>> = match p.deploy_key_id {
            Some(id) => Some(client.deploy_key(project, id as u64).await),
            None => None,
        };
        let listing;
        let answer = match &by_id {
            Some(Ok(key)) => KeyAnswer::ById(key),
            Some(Err(e)) if !e.is_not_found() => return undecided(e),
            // No owned id, or it is gone: look through the whole list.
            _ => match client.deploy_keys(project).await {
                Ok(keys) => {
                    listing = keys;
                    KeyAnswer::Listing(&listing)
                }
                Err(e) => return undecided(&e),
            },
        };
        let verdict = probe::deploy_key(answer, &expected, now);
        Ok((verdict.observation, verdict.found_id))
    }

    async fn check_webhook(
        &self,
        client: &GitLab,
        p: &CheckTarget,
        path: &str,
        version: Option<GitLabVersion>,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Observation, Option<u64>), ApiError> {
        let Some(url) = expected_webhook_url(&self.cfg, p, path) else {
            return Ok((
                Observation::Unknown {
                    reason: "no webhook URL expected: set expect.webhook_url".into(),
                },
                None,
            ));
        };
        let expect = &self.cfg.raw.expect;
        let expected = HookExpectation {
            url: &url,
            events: &expect.webhook_events,
            enable_ssl_verification: expect.enable_ssl_verification,
        };
        let project = p.gitlab_id as u64;
        let by_id: Option<Result<Hook, ApiError>> = match p.hook_id {
            Some(id) => Some(client.hook(project, id as u64).await),
            None => None,
        };
        let listing;
        let answer = match &by_id {
            Some(Ok(hook)) => HookAnswer::ById(hook),
            Some(Err(e)) if !e.is_not_found() => return undecided(e),
            _ => match client.hooks(project).await {
                Ok(hooks) => {
                    listing = hooks;
                    HookAnswer::Listing(&listing)
                }
                Err(e) => return undecided(&e),
            },
        };
        let selection = probe::select_hook(answer, &url);
        let found_id = match answer {
            HookAnswer::Listing(_) => selection.hook.map(|h| h.id),
            HookAnswer::ById(_) => None,
        };
        // The delivery log exists from GitLab 17.3; on an older instance no
        // request is sent and the detail says why `failing` is not judged.
        // When the version could not be read, a 404 from the route says the same.
        let mut log_note = None;
        let deliveries = match (self.cfg.raw.check.webhook_deliveries, selection.hook) {
            (true, Some(_)) if version.is_some_and(|v| !v.has_hook_events()) => {
                log_note = Some(format!(
                    "delivery log not read: GitLab {} has no hook events endpoint ({}+)",
                    version.expect("checked"),
                    GitLabVersion::HOOK_EVENTS
                ));
                None
            }
            (true, Some(hook)) => match client.hook_events(project, hook.id).await {
                Err(e) if version.is_none() && e.is_not_found() => {
                    log_note = Some(
                        "delivery log not read: GitLab answers 404 for the hook events endpoint (17.3+)"
                            .to_owned(),
                    );
                    None
                }
                read => Some(read),
            },
            _ => None,
        };
        let observation = match &deliveries {
            Some(Err(e)) => {
                // Without the log, `failing` cannot be ruled out: only a
                // broken verdict that does not depend on it is definite.
                let without = probe::webhook(&selection, &expected, None, now);
                if without.state() == State::Healthy {
                    return undecided(e).map(|(o, _)| (o, found_id));
                }
                without
            }
            Some(Ok(events)) => probe::webhook(&selection, &expected, Some(events), now),
            None => probe::webhook(&selection, &expected, None, now),
        };
        let observation = match (observation, log_note) {
            (Observation::Definite { state, detail }, Some(note)) => Observation::Definite {
                state,
                detail: format!("{detail}; {note}"),
            },
            (observation, _) => observation,
        };
        Ok((observation, found_id))
    }
}

/// Projects with a component that turned broken (for the storm guard).
fn note_breakages(
    projects: &mut std::collections::HashSet<i64>,
    written: &[(Component, i64, crate::store::Transition)],
) {
    for (component, subject, t) in written {
        let broken =
            t.to.parse::<State>()
                .is_ok_and(|s| s.severity() == crate::health::Severity::Broken);
        let was_known = t.from.is_some();
        if component.is_project() && broken && was_known {
            projects.insert(*subject);
        }
    }
}

fn count(counts: &mut BTreeMap<(Component, State), u64>, batch: &[(Component, i64, Observation)]) {
    for (component, _, observation) in batch {
        *counts.entry((*component, observation.state())).or_default() += 1;
    }
}

/// The OAuth session of a connection: the stored (rotated) pair when it
/// descends from the configured refresh token, else the configured pair.
/// Every refreshed pair is written to the store (sealed under the master
/// key, if one is configured) before it is used.
async fn oauth_session(
    store: &Store,
    custody: &Arc<crate::custody::Custody>,
    name: &str,
    conn: &crate::config::Connection,
    settings: &crate::config::OAuthSettings,
) -> Result<Arc<OAuthSession>, StoreError> {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    let seed = format!(
        "{:x}",
        sha2::Sha256::digest(settings.refresh_token.expose_secret().as_bytes())
    );
    // Only a pair that descends from the configured refresh token is
    // opened: one that cannot be (a lost master key) is then mended by
    // configuring a new refresh token.
    let stored = match store.oauth_seed(name).await? {
        Some(stored_seed) if stored_seed == seed => store.oauth_pair(name, custody).await?,
        _ => None,
    };
    let pair = match stored {
        Some((stored, _)) => stored,
        None => OAuthPair {
            access: conn.token.clone(),
            refresh: settings.refresh_token.clone(),
            expires_at: None,
        },
    };
    let (store, connection, custody) = (store.clone(), name.to_owned(), custody.clone());
    let persist: Persist = Arc::new(move |pair: OAuthPair| {
        let (store, connection, seed, custody) = (
            store.clone(),
            connection.clone(),
            seed.clone(),
            custody.clone(),
        );
        Box::pin(async move {
            store
                .save_oauth_pair(&connection, &pair, &seed, &custody)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let client = OAuthClient {
        client_id: settings.client_id.clone(),
        client_secret: settings.client_secret.clone(),
        redirect_uri: settings.redirect_uri.clone(),
    };
    Ok(Arc::new(OAuthSession::new(pair, client, persist)))
}

/// The URL our hook must have: the project's own, or the template filled in.
pub fn expected_webhook_url(cfg: &Config, p: &CheckTarget, path: &str) -> Option<String> {
    crate::config::expected_hook_url(cfg, p.webhook_url.as_deref(), p.gitlab_id as u64, path)
}

/// A failed request that does not decide the component's state; a 403 is
/// returned as the refusal that decides the repository's (`access_lost`).
fn undecided(e: &ApiError) -> Result<(Observation, Option<u64>), ApiError> {
    let observation = match &e.kind {
        ErrorKind::Forbidden { .. } => return Err(e.clone()),
        ErrorKind::Unauthorized { problem } => Observation::Blocked {
            cause: format!("connection: {}", problem.describe()),
        },
        ErrorKind::InsufficientScope { .. } => Observation::Blocked {
            cause: format!("access refused: {e}"),
        },
        _ => Observation::Unknown {
            reason: e.to_string(),
        },
    };
    Ok((observation, None))
}

/// What checking one project produced.
struct ProjectOutcome {
    project_id: i64,
    observations: Vec<(Component, Observation)>,
    learnt_path: Option<String>,
    found_key_id: Option<u64>,
    found_hook_id: Option<u64>,
}

/// Asks GitLab about the credential: `GET /user`, then the token's own details.
pub async fn probe_connection(
    client: &GitLab,
    kind: TokenKind,
    warning_days: u32,
) -> ConnectionVerdict {
    let user = client.current_user().await;
    let token = match (&user, kind) {
        (Err(_), _) => None,
        (Ok(_), TokenKind::AccessToken) => {
            Some(client.access_token_self().await.map(TokenDetails::Access))
        }
        (Ok(_), TokenKind::Oauth) => Some(client.oauth_token_info().await.map(TokenDetails::Oauth)),
    };
    let mut verdict =
        probe::connection(&user, token.as_ref(), Utc::now().date_naive(), warning_days);
    if verdict.usable {
        // Once a sweep: which hook endpoints this GitLab has (docs/gitlab-contract.md §10.4, §10.5).
        verdict.version = match client.version().await {
            Ok(info) => {
                let parsed = GitLabVersion::parse(&info.version);
                if parsed.is_none() {
                    tracing::warn!(
                        version = info.version.as_str(),
                        "GitLab's version is not MAJOR.MINOR..."
                    );
                }
                parsed
            }
            Err(e) => {
                tracing::warn!(error = %e, "GitLab's version could not be read this sweep");
                None
            }
        };
    }
    verdict
}
