//! The soak: `glwarden run` as a child process, sweeping every second with
//! repairs on `auto`, for `GLWARDEN_SOAK_SECONDS` (CI runs a short variant;
//! the long run is `GLWARDEN_SOAK_SECONDS=1800`), while the simulator
//! answers with random transient faults and the test breaks random projects
//! for real (deletes a key, makes it writable, deletes, edits or disables a
//! hook, renames a project).
//!
//! At the end: every breakage was detected (a transition to the expected
//! state) and repaired (an `ok` event of the expected action); no repair and
//! no broken state without a breakage; GitLab holds exactly one key and one
//! hook of ours per project, matching the store; RSS and open file
//! descriptors flat after warm-up; the database bounded (one health row per
//! component, history rows only for changes). It prints a summary and writes
//! it to `$CARGO_TARGET_TMPDIR/soak-summary.txt`.
//!
//! Not in the default test run (`--features soak`): a minute is the least
//! that says anything.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use gitlab_sim::{Fault, FaultKind};
use glwarden_testkit::*;
use sqlx::Connection;

const PROJECTS: usize = 30;
/// Breakages in flight at once: well under the storm guard (5 projects, 20%).
const MAX_OUTSTANDING: usize = 3;

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Breakage {
    KeyDeleted,
    KeyWritable,
    HookDeleted,
    HookUrlChanged,
    HookEventsOff,
    HookDisabled,
    Renamed,
}

impl Breakage {
    const ALL: [Breakage; 7] = [
        Breakage::KeyDeleted,
        Breakage::KeyWritable,
        Breakage::HookDeleted,
        Breakage::HookUrlChanged,
        Breakage::HookEventsOff,
        Breakage::HookDisabled,
        Breakage::Renamed,
    ];

    /// (component, the state it must be detected as, the repair that must follow)
    fn expect(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Breakage::KeyDeleted => ("deploy_key", "missing", "regenerate_deploy_key"),
            Breakage::KeyWritable => ("deploy_key", "writable", "make_key_read_only"),
            Breakage::HookDeleted => ("webhook", "missing", "create_webhook"),
            Breakage::HookUrlChanged | Breakage::HookEventsOff => {
                ("webhook", "misconfigured", "fix_webhook")
            }
            Breakage::HookDisabled => ("webhook", "disabled", "reenable_webhook"),
            Breakage::Renamed => ("repository", "moved", "follow_rename"),
        }
    }
}

/// A breakage in flight.
struct Outstanding {
    kind: Breakage,
    gitlab_id: u64,
    at: Instant,
    detected: Option<Instant>,
}

#[derive(Default)]
struct Tally {
    faults: BTreeMap<String, u64>,
    breakages: BTreeMap<Breakage, u64>,
    detected: u64,
    repaired: u64,
    /// Seconds from breakage to its repair event.
    repair_seconds: Vec<f64>,
    failed_attempts: u64,
    /// Breakages healed with no successful repair event: a repair's write
    /// that GitLab applied after its answer timed out (a delayed or
    /// slow-drip answer), seen by the next check as healthy.
    healed_by_late_writes: u64,
    false_repairs: Vec<String>,
    false_alarms: Vec<String>,
}

fn fault_name(kind: &FaultKind) -> String {
    match kind {
        FaultKind::Status { code, html } => {
            format!("{code}{}", if *html { " html" } else { " json" })
        }
        FaultKind::Delay(_) => "delay".into(),
        FaultKind::Hang => "hang past the timeout".into(),
        FaultKind::Reset => "connection reset".into(),
        FaultKind::GarbageJson => "garbage json".into(),
        FaultKind::TruncatedJson => "truncated json".into(),
        FaultKind::WrongShape => "wrong-shape json".into(),
        FaultKind::SlowBody { .. } => "slow-drip body".into(),
        FaultKind::Oversized { .. } => "oversized body".into(),
        FaultKind::RateLimited {
            retry_after: Some(_),
        } => "429 with Retry-After".into(),
        FaultKind::RateLimited { retry_after: None } => "429 without headers".into(),
        FaultKind::ForeignKey => "another key's material".into(),
        FaultKind::SpentWindow { .. } => "rate-limit window spent".into(),
    }
}

/// `long`: a run long enough to spend minutes paused by a header-less 429.
fn random_fault(rng: &mut Rng, long: bool) -> Fault {
    let kinds = [
        FaultKind::error_page(500),
        FaultKind::error_page(502),
        FaultKind::Status {
            code: 503,
            html: false,
        },
        FaultKind::Delay(Duration::from_millis(300)),
        FaultKind::Hang,
        FaultKind::Reset,
        FaultKind::GarbageJson,
        FaultKind::TruncatedJson,
        FaultKind::WrongShape,
        FaultKind::SlowBody {
            chunk_delay: Duration::from_millis(200),
        },
        FaultKind::Oversized { bytes: 3 << 20 },
        FaultKind::RateLimited {
            retry_after: Some(1),
        },
    ];
    let paths = [
        None,
        Some("/deploy_keys"),
        Some("/hooks"),
        Some("/projects"),
        Some("/user"),
    ];
    // Mostly reads; a quarter hit writes too (a repair whose answer is lost).
    let method = (rng.below(4) != 0).then(|| "GET".to_owned());
    // A 429 without headers pauses the connection for GitLab's whole
    // 60-second window: rare, and only in long runs, or the soak is mostly
    // waiting (the fault matrix covers it on its own).
    let kind = if long && rng.below(100) == 0 {
        FaultKind::RateLimited { retry_after: None }
    } else {
        rng.pick(&kinds).clone()
    };
    Fault {
        method,
        path_contains: rng.pick(&paths).map(str::to_owned),
        kind,
        times: Some(1 + rng.below(3) as u32),
    }
}

/// Breaks `gitlab_id` at the simulator for real.
fn apply(fx: &Fixture, kind: Breakage, gitlab_id: u64, serial: u64) {
    let sim = &fx.sim;
    match kind {
        Breakage::KeyDeleted => {
            for k in sim.deploy_keys(gitlab_id) {
                sim.remove_deploy_key(gitlab_id, k.id);
            }
        }
        Breakage::KeyWritable => {
            for k in sim.deploy_keys(gitlab_id) {
                sim.set_deploy_key_can_push(gitlab_id, k.id, true);
            }
        }
        Breakage::HookDeleted => {
            for h in sim.hooks(gitlab_id) {
                sim.remove_hook(gitlab_id, h.id);
            }
        }
        Breakage::HookUrlChanged => {
            for h in sim.hooks(gitlab_id) {
                sim.update_hook(gitlab_id, h.id, |h| {
                    h.url = format!("https://old-ci.example.com/{serial}")
                });
            }
        }
        Breakage::HookEventsOff => {
            for h in sim.hooks(gitlab_id) {
                sim.update_hook(gitlab_id, h.id, |h| h.push_events = false);
            }
        }
        Breakage::HookDisabled => {
            // Disabled for good, as after 40 failures in a row (a hook
            // disabled for a while re-enables itself, which a long
            // rate-limit pause would hide).
            for h in sim.hooks(gitlab_id) {
                sim.update_hook(gitlab_id, h.id, |h| {
                    h.recent_failures = 40;
                    h.disabled_until = None;
                });
            }
        }
        Breakage::Renamed => sim.rename_project(gitlab_id, &format!("acme/renamed-{serial}")),
    }
}

/// Most sockets the daemon may hold at once in the soak: the listener and a
/// few scrapes, and the HTTP client's pool to GitLab (at most
/// `check.concurrency`, 8, in use; idle ones kept up to 90 s).
const MAX_SOCKETS: usize = 40;

/// (kB of resident memory, open descriptors other than sockets, sockets) of
/// a process. Sockets come and go with traffic (a pool's idle connections
/// live 90 s, a hanging answer holds one until the timeout), so they are
/// bounded, not compared over time; every other descriptor (the database,
/// key files, pipes) must stay flat.
fn rss_and_fds(pid: u32) -> (u64, usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let (mut files, mut sockets) = (0, 0);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in dir.flatten() {
            match std::fs::read_link(fd.path()) {
                Ok(target) if target.to_string_lossy().starts_with("socket:") => sockets += 1,
                Ok(_) => files += 1,
                Err(_) => {} // closed while we looked
            }
        }
    }
    (rss, files, sockets)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// New transitions and events since the last look, read-only.
struct DbWatch {
    conn: sqlx::SqliteConnection,
    last_transition: i64,
    last_event: i64,
    /// projects.id -> GitLab id
    ids: HashMap<i64, u64>,
}

type TransitionRow = (i64, String, i64, String);
type EventRow = (i64, Option<i64>, String, String, String);

impl DbWatch {
    async fn open(db: &Path) -> DbWatch {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .busy_timeout(Duration::from_secs(20));
        let conn = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .expect("the database opens");
        DbWatch {
            conn,
            last_transition: 0,
            last_event: 0,
            ids: HashMap::new(),
        }
    }

    async fn scalar(&mut self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&mut self.conn)
            .await
            .unwrap()
    }

    async fn poll(&mut self) -> (Vec<TransitionRow>, Vec<EventRow>) {
        let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, gitlab_id FROM projects")
            .fetch_all(&mut self.conn)
            .await
            .unwrap();
        self.ids = rows.into_iter().map(|(a, b)| (a, b as u64)).collect();
        let transitions: Vec<TransitionRow> = sqlx::query_as(
            "SELECT id, component, subject_id, to_state FROM transitions WHERE id > ?1 ORDER BY id",
        )
        .bind(self.last_transition)
        .fetch_all(&mut self.conn)
        .await
        .unwrap();
        let events: Vec<EventRow> = sqlx::query_as(
            "SELECT id, project_id, component, action, outcome FROM events WHERE id > ?1 ORDER BY id",
        )
        .bind(self.last_event)
        .fetch_all(&mut self.conn)
        .await
        .unwrap();
        if let Some(t) = transitions.last() {
            self.last_transition = t.0;
        }
        if let Some(e) = events.last() {
            self.last_event = e.0;
        }
        (transitions, events)
    }
}

/// Matches what the daemon recorded against the breakages in flight.
fn account(
    watch: &DbWatch,
    outstanding: &mut Vec<Outstanding>,
    tally: &mut Tally,
    (transitions, events): (Vec<TransitionRow>, Vec<EventRow>),
) {
    for (_, project, component, action, outcome) in events {
        if action == "plan" || action == "key_read" {
            continue;
        }
        let gitlab_id = project
            .and_then(|p| watch.ids.get(&p).copied())
            .unwrap_or_default();
        let pos = outstanding.iter().position(|o| {
            let (c, _, a) = o.kind.expect();
            o.gitlab_id == gitlab_id && c == component && a == action
        });
        match pos {
            Some(i) if outcome.starts_with("ok") => {
                let o = outstanding.remove(i);
                if o.detected.is_none() {
                    // Repaired from a detection in the same batch of rows.
                    tally.detected += 1;
                }
                tally.repaired += 1;
                tally.repair_seconds.push(o.at.elapsed().as_secs_f64());
            }
            Some(_) => tally.failed_attempts += 1,
            None => tally.false_repairs.push(format!(
                "project {gitlab_id}: {action} ({outcome}) without a breakage"
            )),
        }
    }
    for (_, component, subject, to_state) in transitions {
        if component == "connection" {
            if to_state != "connected" {
                tally
                    .false_alarms
                    .push(format!("connection went {to_state}"));
            }
            continue;
        }
        let gitlab_id = watch.ids.get(&subject).copied().unwrap_or_default();
        // Healthy again without an `ok` event (those came first, above): the
        // failed attempt's write reached GitLab after all.
        if matches!(to_state.as_str(), "healthy" | "ok") {
            let late = outstanding.iter().position(|o| {
                o.gitlab_id == gitlab_id && o.kind.expect().0 == component && o.detected.is_some()
            });
            if let Some(i) = late {
                let o = outstanding.remove(i);
                tally.repaired += 1;
                tally.healed_by_late_writes += 1;
                tally.repair_seconds.push(o.at.elapsed().as_secs_f64());
            }
            continue;
        }
        let hit = outstanding.iter_mut().find(|o| {
            let (c, state, _) = o.kind.expect();
            o.gitlab_id == gitlab_id && c == component && state == to_state
        });
        match hit {
            Some(o) if o.detected.is_none() => {
                o.detected = Some(Instant::now());
                tally.detected += 1;
            }
            Some(_) => {}
            None if BROKEN.contains(&to_state.as_str()) => tally.false_alarms.push(format!(
                "project {gitlab_id} {component} went {to_state} without a breakage"
            )),
            None => {}
        }
    }
}

fn soak_config(fx: &Fixture, projects: &[Connected], listen: &str) -> std::path::PathBuf {
    let refs: Vec<&Connected> = projects.iter().collect();
    fx.config(&refs)
        .daemon("*/1 * * * * *", 0.3)
        .listen_on(listen)
        .repairs(Policy::Auto, 2)
        .master_key_file(&fx.master_key_file())
        .edit(|c| {
            c.repair.cooldown_minutes = 0;
            c.repair.budget_per_hour = 100_000;
            c.repair.webhook_reenable = WebhookReenable::Test;
        })
        .write()
}

/// The median and the largest of `v` (0 when empty).
fn median_and_max(v: &[f64]) -> (f64, f64) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.last() {
        Some(max) => (sorted[sorted.len() / 2], *max),
        None => (0.0, 0.0),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn soak() {
    let seconds: u64 = std::env::var("GLWARDEN_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let seed: u64 = std::env::var("GLWARDEN_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("soak: {seconds} s, seed {seed} (GLWARDEN_SOAK_SEED={seed} repeats it)");
    let mut rng = Rng(seed);

    let fx = Fixture::new().await;
    fx.sim.keep_request_log(false);
    let projects: Vec<Connected> = (0..PROJECTS)
        .map(|i| fx.connect(&format!("acme/p{i}")))
        .collect();
    let listen = free_listen();
    let config = soak_config(&fx, &projects, &listen);
    let mut daemon = fx
        .start_daemon_logging(&config, &listen, "glwarden=info")
        .await;
    let pid = daemon.child.id();
    let db = fx.db_path();
    let mut watch = DbWatch::open(&db).await;
    let initial_transitions = watch.scalar("SELECT COUNT(*) FROM transitions").await;
    watch.poll().await;

    let started = Instant::now();
    let warm_up = Duration::from_secs((seconds / 4).clamp(20, 300));
    let run_for = Duration::from_secs(seconds);
    let mut tally = Tally::default();
    let mut outstanding: Vec<Outstanding> = Vec::new();
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    let mut most_sockets = 0;
    let mut next_fault = Instant::now();
    let mut next_breakage = Instant::now() + Duration::from_secs(2);
    let mut next_sample = Instant::now();
    let mut serial = 0u64;

    while started.elapsed() < run_for {
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "the daemon died: {}",
            daemon.log()
        );
        let now = Instant::now();
        if now >= next_fault {
            let fault = random_fault(&mut rng, seconds >= 600);
            *tally.faults.entry(fault_name(&fault.kind)).or_default() += 1;
            fx.sim.inject(fault);
            next_fault = now + Duration::from_millis(2000 + rng.below(6000));
        }
        if now >= next_breakage && outstanding.len() < MAX_OUTSTANDING {
            let busy: Vec<u64> = outstanding.iter().map(|o| o.gitlab_id).collect();
            let free: Vec<u64> = projects
                .iter()
                .map(|p| p.id)
                .filter(|id| !busy.contains(id))
                .collect();
            let gitlab_id = *rng.pick(&free);
            let kind = *rng.pick(&Breakage::ALL);
            serial += 1;
            apply(&fx, kind, gitlab_id, serial);
            *tally.breakages.entry(kind).or_default() += 1;
            outstanding.push(Outstanding {
                kind,
                gitlab_id,
                at: Instant::now(),
                detected: None,
            });
            next_breakage = now + Duration::from_millis(1000 + rng.below(4000));
        }
        if now >= next_sample {
            let (rss, fds, sockets) = rss_and_fds(pid);
            samples.push((started.elapsed(), rss, fds));
            most_sockets = most_sockets.max(sockets);
            next_sample = now + Duration::from_secs(5);
        }
        let rows = watch.poll().await;
        account(&watch, &mut outstanding, &mut tally, rows);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Faults stop; every breakage still in flight must be repaired.
    fx.sim.clear_faults();
    let settle = Instant::now();
    while !outstanding.is_empty() && settle.elapsed() < Duration::from_secs(120) {
        let rows = watch.poll().await;
        account(&watch, &mut outstanding, &mut tally, rows);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (rss_end, fds_end, sockets_end) = rss_and_fds(pid);
    samples.push((started.elapsed(), rss_end, fds_end));
    most_sockets = most_sockets.max(sockets_end);
    // A few clean sweeps, then nothing more may happen.
    let sweeps_before = metric_sum(&daemon.metrics().await, "glwarden_sweeps_total", &[]);
    let quiet = Instant::now();
    while metric_sum(&daemon.metrics().await, "glwarden_sweeps_total", &[]) < sweeps_before + 4.0 {
        assert!(
            quiet.elapsed() < Duration::from_secs(60),
            "no sweeps after the run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = watch.poll().await;
    account(&watch, &mut outstanding, &mut tally, rows);
    let metrics = daemon.metrics().await;
    let sweeps = metric_sum(&metrics, "glwarden_sweeps_total", &[]);

    // GitLab's side: one key and one hook of ours per project, as stored.
    let stored: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT gitlab_id, fingerprint FROM projects ORDER BY gitlab_id")
            .fetch_all(&mut watch.conn)
            .await
            .unwrap();
    let mut gitlab_problems = Vec::new();
    for (gitlab_id, fingerprint) in &stored {
        let id = *gitlab_id as u64;
        let keys = fx.sim.deploy_keys(id);
        // Hooks someone pointed at another URL are theirs now and left in
        // place (a new hook of ours is made beside them): only ours count.
        let hooks: Vec<_> = fx
            .sim
            .hooks(id)
            .into_iter()
            .filter(|h| h.url == Fixture::hook_url(id))
            .collect();
        let key_ok = keys.len() == 1
            && !keys[0].can_push
            && Some(&keys[0].ssh_fingerprint()) == fingerprint.as_ref();
        let hook_ok = hooks.len() == 1
            && hooks[0].url == Fixture::hook_url(id)
            && hooks[0].push_events
            && hooks[0].alert_status() == "executable";
        if !key_ok || !hook_ok {
            gitlab_problems.push(format!(
                "project {id}: {} keys {:?} (stored {fingerprint:?}), {} hooks {:?}",
                keys.len(),
                keys.iter()
                    .map(|k| (&k.fingerprint_sha256, k.can_push))
                    .collect::<Vec<_>>(),
                hooks.len(),
                hooks
                    .iter()
                    .map(|h| (&h.url, h.push_events, h.alert_status()))
                    .collect::<Vec<_>>()
            ));
        }
    }
    let journal = watch.scalar("SELECT COUNT(*) FROM repair_journal").await;
    let health_rows = watch.scalar("SELECT COUNT(*) FROM health").await;
    let transitions = watch.scalar("SELECT COUNT(*) FROM transitions").await;
    let events = watch.scalar("SELECT COUNT(*) FROM events").await;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut watch.conn)
        .await
        .unwrap();
    let db_bytes = file_size(&db);
    let wal_bytes = file_size(&db.with_extension("db-wal"));

    let after_warm_up: Vec<&(Duration, u64, usize)> =
        samples.iter().filter(|s| s.0 >= warm_up).collect();
    let window = (after_warm_up.len() / 4).clamp(1, 6);
    let avg = |xs: &[&(Duration, u64, usize)]| -> (f64, f64) {
        let n = xs.len().max(1) as f64;
        (
            xs.iter().map(|s| s.1 as f64).sum::<f64>() / n,
            xs.iter().map(|s| s.2 as f64).sum::<f64>() / n,
        )
    };
    // The first window after warm-up against the last: the last may not
    // exceed the first's peak by more than a little.
    let first = &after_warm_up[..window.min(after_warm_up.len())];
    let rss_start = first.iter().map(|s| s.1).max().unwrap_or(0) as f64;
    let fds_start = first.iter().map(|s| s.2).max().unwrap_or(0) as f64;
    let (rss_last, fds_last) = avg(&after_warm_up[after_warm_up.len().saturating_sub(window)..]);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let total_breakages: u64 = tally.breakages.values().sum();
    let total_faults: u64 = tally.faults.values().sum();
    let (repair_median, repair_max) = median_and_max(&tally.repair_seconds);

    let mut summary = String::new();
    let mut line = |s: String| {
        println!("{s}");
        summary.push_str(&s);
        summary.push('\n');
    };
    line(format!(
        "soak summary: {:.0} s, {PROJECTS} projects, sweeps every second ({sweeps:.0} sweeps), repairs auto (confirm 2 checks), seed {seed}",
        started.elapsed().as_secs_f64()
    ));
    line(format!(
        "faults injected: {total_faults} ({})",
        tally
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!(
        "breakages: {total_breakages} ({}); detected {}; repaired {}; time to repair median {repair_median:.1} s, max {repair_max:.1} s; failed repair attempts (retried) {}; healed by a write GitLab applied after its answer timed out {}",
        tally
            .breakages
            .iter()
            .map(|(k, v)| format!("{k:?} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        tally.detected,
        tally.repaired,
        tally.failed_attempts,
        tally.healed_by_late_writes
    ));
    line(format!(
        "false repairs: {}; broken states without a breakage: {}; GitLab mismatches at the end: {}; journal entries left: {journal}",
        tally.false_repairs.len(),
        tally.false_alarms.len(),
        gitlab_problems.len()
    ));
    line(format!(
        "RSS after warm-up {:.1} MB, at the end {:.1} MB, peak {:.1} MB; open descriptors other than sockets {fds_start:.0} -> {fds_last:.0}, sockets at most {most_sockets}",
        rss_start / 1024.0,
        rss_last / 1024.0,
        rss_max as f64 / 1024.0
    ));
    line(format!(
        "database: {:.2} MB (+ WAL {:.2} MB), integrity {integrity}; {health_rows} health rows, {transitions} transitions ({initial_transitions} at start), {events} events",
        db_bytes as f64 / 1e6,
        wal_bytes as f64 / 1e6
    ));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak-summary.txt");
    std::fs::write(&out, &summary).unwrap();
    let log = out.with_file_name("soak-daemon.log");
    std::fs::copy(&daemon.stderr_path, &log).unwrap();
    println!(
        "(written to {}; the daemon's log: {})",
        out.display(),
        log.display()
    );

    // The invariants.
    // One every 3 s on average, less the minutes a header-less 429 pauses
    // everything: a floor well under that, so such pauses cannot fail a run.
    assert!(
        total_breakages >= (seconds / 20).max(5),
        "too few breakages to say anything: {total_breakages}"
    );
    assert!(
        outstanding.is_empty(),
        "breakages never repaired: {:?}",
        outstanding
            .iter()
            .map(|o| (o.kind, o.gitlab_id, o.detected.is_some()))
            .collect::<Vec<_>>()
    );
    assert_eq!(tally.repaired, total_breakages);
    assert_eq!(tally.detected, total_breakages);
    assert_eq!(tally.false_repairs, Vec::<String>::new(), "false repairs");
    assert_eq!(tally.false_alarms, Vec::<String>::new(), "false alarms");
    assert_eq!(
        gitlab_problems,
        Vec::<String>::new(),
        "GitLab state at the end"
    );
    assert_eq!(journal, 0, "unfinished repairs left");
    assert_eq!(integrity, "ok");
    for (component, state) in [
        ("repository", "ok"),
        ("deploy_key", "healthy"),
        ("webhook", "healthy"),
    ] {
        let line = format!(
            "glwarden_components{{component=\"{component}\",state=\"{state}\"}} {PROJECTS}"
        );
        assert!(metrics.contains(&line), "metrics lack {line}");
    }
    // Bounded: one health row per component and connection; history only
    // for changes (a breakage is at most a few transitions, a check none).
    assert_eq!(health_rows, 3 * PROJECTS as i64 + 1);
    assert!(
        transitions <= initial_transitions + 4 * total_breakages as i64,
        "{transitions} transitions for {total_breakages} breakages"
    );
    assert!(
        db_bytes + wal_bytes < 16 << 20,
        "database grew to {db_bytes} + {wal_bytes} bytes"
    );
    // Flat: no more than 10% + 2 MB of RSS and 4 descriptors other than sockets
    // gained after warm-up; sockets bounded.
    assert!(
        rss_last <= rss_start * 1.10 + 2048.0,
        "RSS grew from {rss_start} kB to {rss_last} kB: {samples:?}"
    );
    assert!(
        fds_last <= fds_start + 4.0,
        "open descriptors other than sockets grew from {fds_start} to {fds_last}: {samples:?}"
    );
    assert!(
        most_sockets <= MAX_SOCKETS,
        "{most_sockets} sockets open at once (at most {MAX_SOCKETS})"
    );

    let status = daemon.stop().await;
    assert!(status.success(), "exit {status:?}: {}", daemon.log());
}
