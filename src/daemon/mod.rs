//! `glwarden run`: the long-running daemon.
//!
//! One scheduler loop owns the lifecycle. tokio-cron-scheduler only *ticks*
//! it; the loop starts a sweep when none is running and counts the tick as
//! skipped otherwise (never queued: a slow GitLab must not build a backlog
//! that wedges the daemon). The same loop sends systemd's `WATCHDOG=1` and
//! beats for `/healthz`, so a wedged loop is seen and restarted.
//!
//! Shutdown (SIGTERM/SIGINT, or any future passed to [`Daemon::run_until`]):
//! stop ticking, let the running sweep finish the checks it started (no new
//! ones start) within the grace period, record them, close the store, exit
//! 0. A reload (SIGHUP) re-reads the configuration before the next sweep; a
//! bad file is logged and the running configuration kept.

pub mod memory;
pub mod metrics;
mod operator;
mod pages;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::health::{Severity, State};
use crate::store::{Lease, Store};
use crate::sweep::{Selection, SweepOptions, SweepSummary, Sweeper};
use metrics::{Metrics, SweepOutcome};
use server::{AppState, Liveness};

/// How often the loop turns when systemd asks for no watchdog.
const DEFAULT_BEAT: Duration = Duration::from_secs(5);

/// `glwarden run`: loads the configuration, starts logging, and runs the
/// daemon until SIGTERM or SIGINT; SIGHUP asks for a reload.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Arc::new(Config::load(&config_path)?);
    crate::telemetry::init(&cfg.raw.log.level, cfg.raw.log.format);
    let (daemon, _) = Daemon::build(cfg).await?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let (reload, reloads) = mpsc::channel(1);
    tokio::spawn(async move {
        while sighup.recv().await.is_some() {
            // One pending request is enough: the reload reads the file then.
            let _ = reload.try_send(());
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    daemon.run_until(shutdown, reloads).await
}

/// The daemon, built and bound but not yet running: the store open, the
/// listener bound, the last known health published. [`Daemon::run_until`]
/// runs it; the command line passes in its signals, the tests their own.
pub struct Daemon {
    cfg: Arc<Config>,
    store: Store,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    liveness: Arc<Liveness>,
    /// How often the loop turns (feeds the watchdog, beats for `/healthz`).
    beat: Duration,
    /// This replica's name in the lease: host, process and a random part.
    holder: String,
}

impl Daemon {
    /// Opens the store, checks the connections' instances, publishes what
    /// was last known and binds `http.listen`; returns the daemon and the
    /// address it serves on (a port of 0 binds a free one).
    pub async fn build(cfg: Arc<Config>) -> anyhow::Result<(Daemon, std::net::SocketAddr)> {
        for warning in cfg.warnings() {
            tracing::warn!("{warning}");
        }
        let store = Store::connect(&cfg.store).await?;
        // Refused before anything is served or asked: see `connection move`.
        store.verify_connections(cfg.connection_urls()).await?;
        let metrics = Metrics::new(cfg.raw.metrics.per_project);
        // What was last known is served from the first scrape on.
        metrics.publish(&store.health_summary(per_project_all(&cfg)).await?);
        let listen = cfg.raw.http.listen.clone();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {listen} (http.listen in {})",
                    cfg.file.display()
                )
            })?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                listen = %listen,
                "http.listen is not a loopback address: /metrics (project paths and states) is served to every host that can reach it"
            );
        }
        let beat = sd_notify::watchdog_enabled()
            .map(|w| (w / 2).min(DEFAULT_BEAT))
            .unwrap_or(DEFAULT_BEAT);
        let liveness = Arc::new(Liveness::new((beat * 3).max(Duration::from_secs(30))));
        let daemon = Daemon {
            cfg,
            store,
            metrics,
            listener,
            liveness,
            beat,
            holder: holder_name(),
        };
        Ok((daemon, addr))
    }

    /// Serves and sweeps until `shutdown` completes; each message on
    /// `reloads` re-reads the configuration file before the next sweep.
    ///
    /// On shutdown no new check starts; the running sweep's started checks
    /// finish within `schedule.shutdown_grace_seconds` and are recorded,
    /// the listener stops and the store is closed.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        mut reloads: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let Daemon {
            cfg,
            store,
            metrics,
            listener,
            liveness,
            beat,
            holder,
        } = self;
        let stop_server = CancellationToken::new();
        let leading: Arc<std::sync::RwLock<Option<Arc<Sweeper>>>> = Arc::default();
        let page_config = Arc::new(std::sync::RwLock::new(Some(cfg.clone())));
        let server = {
            let app = server::router(AppState {
                metrics: metrics.clone(),
                store: store.clone(),
                liveness: liveness.clone(),
                metrics_token: cfg.metrics_token.clone().map(Arc::new),
                config: page_config.clone(),
                access: operator::Access::new(cfg.operator_token.clone(), cfg.read_token.clone())
                    .map(Arc::new),
                leading: leading.clone(),
            });
            tokio::spawn(server::serve(listener, app, stop_server.clone()))
        };
        tracing::info!(listen = %cfg.raw.http.listen, cron = %cfg.raw.schedule.cron, "glwarden running");

        let (tick_tx, mut ticks) = mpsc::channel::<()>(1);
        let scheduler = JobScheduler::new()
            .await
            .context("cannot start the scheduler")?;
        let job = Job::new_async(cfg.raw.schedule.cron.as_str(), move |_, _| {
            let tx = tick_tx.clone();
            Box::pin(async move {
                // A full channel means the loop has not taken the last tick yet:
                // dropping this one is the "never queue" rule.
                let _ = tx.try_send(());
            })
        })
        .with_context(|| {
            format!(
                "schedule.cron `{}` in {}",
                cfg.raw.schedule.cron,
                cfg.file.display()
            )
        })?;
        scheduler.add(job).await.context("cannot schedule sweeps")?;
        scheduler
            .start()
            .await
            .context("cannot start the scheduler")?;

        notify(&[
            NotifyState::Ready,
            NotifyState::Status("starting the first sweep"),
        ]);

        let mut heartbeat = tokio::time::interval(beat);
        let mut reload_requested = false;
        let mut sweeps = Sweeps {
            cfg: cfg.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            leading: None,
            shared: leading,
            page_config,
            cancel: CancellationToken::new(),
            running: None,
        };
        // Leadership: the lease is tried at once (on SQLite it is always
        // won) and then renewed, or tried again, every third of a lease.
        let lease_period = Duration::from_secs(cfg.raw.ha.lease_seconds);
        let mut lease_tick = tokio::time::interval(lease_period / 3);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease: Option<Lease> = None;
        // Until when this replica may act as leader without a renewal: the
        // lease's remaining time as the database counted it, from before the
        // renewal was asked.
        let mut lease_valid_until = tokio::time::Instant::now();
        let mut sweep: Option<JoinHandle<SweepResult>> = None;
        // The scheduler follows the wall clock; a clock stepped back (NTP, a VM
        // restored) would silence it for as long as the step. The loop keeps a
        // monotonic eye on it and sweeps anyway when ticks stop coming.
        let mut last_start = tokio::time::Instant::now();
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    // A sweep past its deadline is told to stop starting checks;
                    // one still running long after that is stuck, and the loop
                    // stops vouching for the daemon so that systemd restarts it.
                    if let Some(running) = sweeps.running.as_mut().filter(|_| sweep.is_some()) {
                        let ran = running.started.elapsed();
                        let deadline = sweep_deadline(&sweeps.cfg);
                        if ran > deadline && !running.cancel.is_cancelled() {
                            tracing::warn!(
                                ran_seconds = ran.as_secs(),
                                deadline_seconds = deadline.as_secs(),
                                "sweep past its deadline (schedule.sweep_deadline_intervals): no new checks start; the rest wait for the next sweep"
                            );
                            running.cancel.cancel();
                        }
                        let stuck_after = deadline
                            + Duration::from_secs(sweeps.cfg.raw.schedule.shutdown_grace_seconds)
                            + cron_interval(&sweeps.cfg);
                        if ran > stuck_after {
                            if !running.stuck {
                                tracing::error!(
                                    ran_seconds = ran.as_secs(),
                                    "sweep cancelled at its deadline and still not finished: the watchdog is no longer fed"
                                );
                                running.stuck = true;
                            }
                            liveness.stalled(Some(format!(
                                "sweep running for {}s, cancelled at its deadline and still not finished: the watchdog is no longer fed",
                                ran.as_secs()
                            )));
                            continue;
                        }
                    }
                    liveness.beat();
                    notify(&[NotifyState::Watchdog]);
                    if let Some(running) = &sweeps.running {
                        let status = format!("leader: sweeping, {}", running.progress.read());
                        notify(&[NotifyState::Status(&status)]);
                    }
                    let overdue = (cron_interval(&sweeps.cfg) * 2).max(Duration::from_secs(2));
                    if sweep.is_none() && sweeps.leading.is_some() && last_start.elapsed() > overdue {
                        tracing::warn!(
                            silent_seconds = last_start.elapsed().as_secs(),
                            "no scheduled sweep for twice the interval (wall clock stepped?); sweeping now"
                        );
                        last_start = tokio::time::Instant::now();
                        sweep = Some(sweeps.start());
                    }
                }
                Some(()) = ticks.recv() => {
                    if sweeps.leading.is_none() {
                        continue; // a standby: the leader sweeps
                    }
                    if sweep.is_some() {
                        metrics.sweep_skipped();
                        tracing::warn!("sweep skipped: the previous sweep is still running");
                        continue;
                    }
                    if std::mem::take(&mut reload_requested) {
                        sweeps.reload().await;
                    }
                    last_start = tokio::time::Instant::now();
                    sweep = Some(sweeps.start());
                }
                result = async { sweep.as_mut().expect("guarded by the condition").await }, if sweep.is_some() => {
                    sweep = None;
                    let status = sweeps.finish(result).await;
                    liveness.sweep_done();
                    notify(&[NotifyState::Status(&status)]);
                }
                _ = lease_tick.tick() => {
                    let asked = tokio::time::Instant::now();
                    match &lease {
                        // Through the leader's store, so that its write gate follows.
                        Some(held) => match sweeps.leading_store().renew_lead(held, lease_period).await {
                            Ok(Some(renewed)) => {
                                lease_valid_until = renewed.valid_until;
                                lease = Some(renewed);
                            }
                            Ok(None) => {
                                tracing::error!(token = held.token, "leadership lost: the lease lapsed or another replica took it over; standing by");
                                lease = None;
                                sweeps.stand_by(&mut sweep);
                            }
                            Err(e) if asked >= lease_valid_until => {
                                tracing::error!(error = %e, token = held.token, "leadership given up: the lease could not be renewed before it ran out; standing by");
                                lease = None;
                                sweeps.stand_by(&mut sweep);
                            }
                            Err(e) => tracing::warn!(error = %e, "the lease could not be renewed; trying again"),
                        },
                        None => match store.try_lead(&holder, lease_period).await {
                            Ok(Some(won)) => {
                                lease_valid_until = won.valid_until;
                                match sweeps.lead(&won).await {
                                    Ok(()) => {
                                        if !matches!(cfg.store, crate::config::StoreTarget::Sqlite(_)) {
                                            tracing::info!(token = won.token, holder = holder.as_str(), "leading: this replica sweeps and repairs");
                                        }
                                        notify(&[NotifyState::Status(&format!("leader (lease token {}): starting a sweep", won.token))]);
                                        lease = Some(won);
                                        if sweep.is_none() {
                                            last_start = tokio::time::Instant::now();
                                            sweep = Some(sweeps.start());
                                        }
                                    }
                                    Err(e) => {
                                        tracing::error!(error = format!("{e:#}"), "cannot lead; releasing the lease");
                                        let _ = store.release_lead(&won).await;
                                    }
                                }
                            }
                            Ok(None) => {
                                // A standby serves the leader's results.
                                sweeps.publish().await;
                                liveness.standing_by();
                                let leader = store.leader().await.ok().flatten();
                                let who = leader
                                    .and_then(|l| l.holder.map(|h| format!("{h}, token {}", l.token)))
                                    .unwrap_or_else(|| "none".to_owned());
                                notify(&[NotifyState::Status(&format!("standby (leader: {who})"))]);
                            }
                            Err(e) => tracing::warn!(error = %e, "the lease could not be read; trying again"),
                        },
                    }
                }
                Some(()) = reloads.recv() => {
                    tracing::info!("reload requested (SIGHUP): the configuration is read again before the next sweep");
                    reload_requested = true;
                }
                () = &mut shutdown => break,
            }
        }

        tracing::info!("stopping: no new checks start; waiting for started checks");
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        let mut scheduler = scheduler;
        if let Err(e) = scheduler.shutdown().await {
            tracing::warn!(error = %e, "scheduler shutdown");
        }
        sweeps.cancel.cancel();
        if let Some(running) = sweep {
            let grace = Duration::from_secs(sweeps.cfg.raw.schedule.shutdown_grace_seconds);
            match tokio::time::timeout(grace, running).await {
                Ok(result) => {
                    sweeps.finish(result).await;
                }
                Err(_) => tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    "checks still running after the grace period"
                ),
            }
        }
        stop_server.cancel();
        let _ = server.await;
        if let Some(lease) = &lease {
            match store.release_lead(lease).await {
                Ok(()) => tracing::info!(token = lease.token, "lease released"),
                Err(e) => {
                    tracing::warn!(error = %e, "lease not released: a standby takes over when it lapses")
                }
            }
        }
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

type SweepResult = anyhow::Result<(SweepSummary, Duration)>;

/// What the loop needs to run sweeps.
struct Sweeps {
    cfg: Arc<Config>,
    /// The store as every replica reads it.
    store: Store,
    metrics: Arc<Metrics>,
    /// While this replica leads: the sweeper over the store its writes are
    /// fenced through (the lease's token).
    leading: Option<Leading>,
    /// The leading sweeper as the status page's buttons see it.
    shared: Arc<std::sync::RwLock<Option<Arc<Sweeper>>>>,
    /// The configuration as the status page sees it.
    page_config: Arc<std::sync::RwLock<Option<Arc<Config>>>>,
    /// Cancelled on shutdown: running sweeps start no further checks.
    cancel: CancellationToken,
    /// The running sweep's start and its own cancellation (its deadline).
    running: Option<Running>,
}

struct Leading {
    fenced: Store,
    sweeper: Arc<Sweeper>,
}

struct Running {
    started: tokio::time::Instant,
    cancel: CancellationToken,
    /// How far it has come (`STATUS=`, the status page).
    progress: Arc<crate::sweep::Progress>,
    /// Said once in the log; `/healthz` says it on every request.
    stuck: bool,
}

impl Sweeps {
    /// Becomes the leader under `lease`: a sweeper whose writes carry its token.
    async fn lead(&mut self, lease: &Lease) -> anyhow::Result<()> {
        let fenced = self.store.fenced(lease).await?;
        let sweeper =
            Arc::new(Sweeper::new(self.cfg.clone(), fenced.clone(), Some(&self.metrics)).await?);
        *self.shared.write().expect("leading lock") = Some(sweeper.clone());
        self.leading = Some(Leading { fenced, sweeper });
        self.metrics.set_leader(true);
        Ok(())
    }

    /// Stops leading: the running sweep starts no new check (its started
    /// ones finish; a write the lease no longer allows is refused by the
    /// database) and no sweep starts until the lease is won again.
    fn stand_by(&mut self, sweep: &mut Option<JoinHandle<SweepResult>>) {
        if let Some(running) = &self.running {
            running.cancel.cancel();
        }
        if sweep.is_some() {
            tracing::warn!("the running sweep is cancelled: its started checks finish");
        }
        if let Some(gate) = self
            .leading
            .take()
            .as_ref()
            .and_then(|l| l.fenced.write_gate())
        {
            gate.shut();
        }
        *self.shared.write().expect("leading lock") = None;
        self.metrics.set_leader(false);
        notify(&[NotifyState::Status("standby (leadership lost)")]);
    }

    /// The store a leader writes (and renews its lease) through; the
    /// shared one on standby.
    fn leading_store(&self) -> &Store {
        self.leading.as_ref().map_or(&self.store, |l| &l.fenced)
    }

    fn start(&mut self) -> JoinHandle<SweepResult> {
        let sweeper = self
            .leading
            .as_ref()
            .expect("sweeps start only while leading")
            .sweeper
            .clone();
        // Shutdown cancels it too.
        let cancel = self.cancel.child_token();
        let progress = Arc::new(crate::sweep::Progress::default());
        self.metrics.sweep_running(Some(progress.clone()));
        self.running = Some(Running {
            started: tokio::time::Instant::now(),
            cancel: cancel.clone(),
            progress: progress.clone(),
            stuck: false,
        });
        let options = SweepOptions {
            spread: Some(sweep_spread(&self.cfg)),
            cancel: Some(cancel),
            repair: true,
            progress: Some(progress),
        };
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let summary = sweeper.sweep_with(&Selection::All, &options).await?;
            Ok((summary, started.elapsed()))
        })
    }

    /// Publishes a finished sweep; returns the one-line status for systemd.
    async fn finish(&mut self, result: Result<SweepResult, tokio::task::JoinError>) -> String {
        let result = result.map_err(anyhow::Error::from).and_then(|r| r);
        // Cancelled, but not by shutdown: its deadline.
        self.metrics.sweep_running(None);
        let past_deadline = self
            .running
            .take()
            .is_some_and(|r| r.cancel.is_cancelled() && !self.cancel.is_cancelled());
        let status = match result {
            Ok((summary, elapsed)) => {
                // A sweep succeeds when every connection could be asked.
                let ok = summary.observed.iter().all(|((component, state), _)| {
                    *component != crate::health::Component::Connection || *state != State::Unknown
                });
                let outcome = if past_deadline {
                    SweepOutcome::Deadline
                } else if ok {
                    SweepOutcome::Ok
                } else {
                    SweepOutcome::Failed
                };
                self.metrics.count_checks(&summary.observed);
                self.metrics.token_rotations(&summary.rotations);
                self.metrics.repair_pass(
                    &summary.repairs,
                    summary.repairs_paused,
                    summary.repairs_stopped,
                    summary.journal_entries,
                );
                self.metrics.sweep_finished(elapsed, outcome);
                let (broken, unknown) =
                    summary
                        .observed
                        .iter()
                        .fold((0, 0), |(b, u), ((_, state), n)| match state.severity() {
                            Severity::Broken => (b + n, u),
                            Severity::Unknown => (b, u + n),
                            _ => (b, u),
                        });
                let status = format!(
                    "last sweep {}: {} projects in {:.1}s, {broken} broken, {unknown} unknown, {} requests{}",
                    chrono::Utc::now().format("%H:%M:%S"),
                    summary.projects_checked,
                    elapsed.as_secs_f64(),
                    summary.requests,
                    match (summary.not_started, past_deadline) {
                        (0, _) => String::new(),
                        (n, true) => format!(", {n} not started (past its deadline)"),
                        (n, false) => format!(", {n} not started (stopping)"),
                    }
                );
                tracing::info!(
                    projects = summary.projects_checked,
                    seconds = elapsed.as_secs_f64(),
                    broken,
                    unknown,
                    requests = summary.requests,
                    transitions = summary.transitions,
                    "sweep finished"
                );
                self.publish().await;
                status
            }
            Err(e) => {
                self.metrics
                    .sweep_finished(Duration::ZERO, SweepOutcome::Failed);
                tracing::error!(error = format!("{e:#}"), "sweep failed");
                format!("last sweep failed: {e:#}")
            }
        };
        memory::release_freed_memory();
        status
    }

    pub(crate) async fn publish(&self) {
        match self.store.health_summary(per_project_all(&self.cfg)).await {
            Ok(summary) => self.metrics.publish(&summary),
            Err(e) => tracing::error!(error = %e, "cannot read health for metrics"),
        }
    }

    /// Re-reads the configuration file; keeps the running one if it is bad.
    async fn reload(&mut self) {
        let loaded = async {
            let cfg = Arc::new(Config::load(&self.cfg.file)?);
            let sweeper = match &self.leading {
                Some(leading) => Some(
                    Sweeper::new(cfg.clone(), leading.fenced.clone(), Some(&self.metrics)).await?,
                ),
                None => None,
            };
            anyhow::Ok((sweeper, cfg))
        }
        .await;
        match loaded {
            Ok((sweeper, cfg)) => {
                if let (Some(leading), Some(sweeper)) = (self.leading.as_mut(), sweeper) {
                    leading.sweeper = Arc::new(sweeper);
                    *self.shared.write().expect("leading lock") = Some(leading.sweeper.clone());
                }
                *self.page_config.write().expect("config lock") = Some(cfg.clone());
                self.cfg = cfg;
                tracing::info!("configuration reloaded");
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "configuration not reloaded; keeping the running one"
            ),
        }
    }
}

/// This replica's name in the lease: host, process id and a random part
/// (a restarted process on the same host is another holder).
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn per_project_all(cfg: &Config) -> bool {
    cfg.raw.metrics.per_project == crate::config::PerProjectSeries::All
}

/// How long a sweep's checks are spread over: a share of the interval.
fn sweep_spread(cfg: &Config) -> Duration {
    cron_interval(cfg).mul_f64(cfg.raw.schedule.spread)
}

/// How long a sweep may run before it is cancelled.
fn sweep_deadline(cfg: &Config) -> Duration {
    cron_interval(cfg)
        .max(Duration::from_secs(1))
        .mul_f64(cfg.raw.schedule.sweep_deadline_intervals)
}

/// The time between the next two scheduled sweeps.
fn cron_interval(cfg: &Config) -> Duration {
    let mut next = cfg.cron.iter_after(chrono::Utc::now());
    match (next.next(), next.next()) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify");
    }
}
