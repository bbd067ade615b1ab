//! The scale benchmark (`cargo bench --bench scale`): the real daemon, as a
//! child process, against the built-in simulator on loopback.
//!
//! Scenarios, for each fleet size in `GLWARDEN_BENCH_SIZES` (default
//! 1000,10000,100000):
//! - steady state: 10 sweeps of healthy projects; sweep wall time, checks per
//!   second, GitLab requests per project per sweep, peak RSS, CPU seconds per
//!   1,000 project checks, database growth over the sweeps, start to READY=1
//!   (systemd notify, through our own NOTIFY_SOCKET) and to /readyz, and the
//!   size and fetch time of /metrics with 1% of the projects broken;
//! - the status page at the same 1% broken: the overview and a broken
//!   project's page, best of three fetches each;
//! - a raw baseline in the same run: a minimal client loop issuing the same
//!   requests with the same concurrency to the same simulator, doing nothing
//!   with the answers, in a process of its own like the daemon; one pass
//!   before the daemon starts and one in each gap between its sweeps (the
//!   schedule leaves room for one), all passes together against all sweeps
//!   together; glwarden's request rate as a share of it.
//!
//! The steady state again on PostgreSQL (a throwaway cluster of
//! crates/pg-fixture, TLS on loopback) for each size in
//! `GLWARDEN_BENCH_POSTGRES_SIZES` (default 1000,10000; empty for none):
//! the same figures, the database's size from `pg_database_size`.
//!
//! The status page at each size in `GLWARDEN_BENCH_PAGE_SIZES` (default
//! 100000), on SQLite and on PostgreSQL: a store written directly with that
//! many projects' health, 1% broken, served by the daemon's own router in
//! this process; the overview, its last page, a path search and a broken
//! project's page, best of five fetches each.
//!
//! Then, unless `GLWARDEN_BENCH_QUICK` is set: 20 ms of latency per request
//! against the latency-bound ideal (requests x latency / concurrency), and a
//! simulator enforcing a rate limit (budget utilisation, 429 count).
//!
//! Prints a table, writes `target/bench/scale.csv`, draws
//! `target/bench/scale.svg`, and exits non-zero when a steady sweep costs
//! more than 2.05 requests per project (the CI regression guard: a count,
//! not a time).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// The same allocator as the daemon's binary (src/main.rs), so that the raw
// loop, which is this binary re-executed, is not handicapped by glibc's malloc
// against it; the simulator, also in this process, serves both alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use gitlab_sim::{HookSpec, Sim};
use glwarden::keys::generate_ed25519;
use glwarden::store::{NewProject, Source, Store};
// The tests' fixtures where the benchmark needs the same: the token file,
// the config, the daemon as a child process and its /metrics.
use glwarden_testkit::{ConfigBuilder, DaemonProcess, free_listen, secret_file};

const TOKEN: &str = "glpat-bench-token";
const CONCURRENCY: usize = 8;
const STEADY_SWEEPS: u64 = 10;
const BOUND: f64 = 2.05;

#[derive(Debug, Default, Clone)]
struct Row {
    scenario: String,
    projects: usize,
    sweep_seconds: f64,
    checks_per_second: f64,
    requests_per_project: f64,
    raw_requests_per_second: f64,
    glwarden_requests_per_second: f64,
    peak_rss_mb: f64,
    cpu_seconds_per_1000_checks: f64,
    db_growth_kb: f64,
    db_size_kb: f64,
    start_to_notify_ready_ms: f64,
    start_to_readyz_ms: f64,
    metrics_kb: f64,
    metrics_ms: f64,
    overview_ms: f64,
    /// The overview's last page of what needs attention.
    overview_last_page_ms: f64,
    /// The overview with a path search.
    search_ms: f64,
    project_page_ms: f64,
    ideal_seconds: f64,
    budget_utilisation: f64,
    too_many_requests: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// Where a world's store is.
enum Db {
    Sqlite(PathBuf),
    Postgres {
        cluster: std::sync::Arc<pg_fixture::Cluster>,
        database: String,
    },
}

struct World {
    sim: Sim,
    dir: tempfile::TempDir,
    ids: Vec<u64>,
    hook_ids: Vec<u64>,
}

fn main() {
    if let Ok(plan) = std::env::var(RAW_CHILD) {
        return raw_loop_child(&plan);
    }
    let sizes: Vec<usize> = std::env::var("GLWARDEN_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let quick = std::env::var_os("GLWARDEN_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for n in &sizes {
        eprintln!("== steady state, {n} projects");
        rows.push(rt.block_on(steady_state(*n, Engine::Sqlite)));
    }
    let pg_sizes: Vec<usize> = std::env::var("GLWARDEN_BENCH_POSTGRES_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for n in &pg_sizes {
        eprintln!("== steady state on PostgreSQL, {n} projects");
        rows.push(rt.block_on(steady_state(*n, Engine::Postgres)));
    }
    let page_sizes: Vec<usize> = std::env::var("GLWARDEN_BENCH_PAGE_SIZES")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for n in &page_sizes {
        for engine in [Engine::Sqlite, Engine::Postgres] {
            eprintln!("== status page, {n} projects, {engine:?}");
            rows.extend(rt.block_on(status_page(*n, engine)));
        }
    }
    if !quick {
        eprintln!("== 20 ms latency, 1000 projects");
        rows.push(rt.block_on(latency(1000, Duration::from_millis(20))));
        eprintln!("== rate-limited GitLab, 1200/minute");
        rows.push(rt.block_on(rate_limited(300, 1200)));
    }
    print_table(&rows);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    write_csv(&out.join("scale.csv"), &rows);
    let steady: Vec<&Row> = rows.iter().filter(|r| r.scenario == "steady").collect();
    if steady.len() > 1 {
        std::fs::write(out.join("scale.svg"), svg_chart(&steady)).unwrap();
    }
    eprintln!("wrote {}", out.join("scale.csv").display());
    let over: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario.starts_with("steady") && r.requests_per_project > BOUND)
        .collect();
    if !over.is_empty() {
        eprintln!("FAIL: steady sweeps cost more than {BOUND} requests per project: {over:?}");
        std::process::exit(1);
    }
    eprintln!("OK: every steady sweep cost at most {BOUND} requests per project");
}

/// A simulator with `n` connected projects (one shared deploy key, a hook
/// each) and a store holding them, as `project add` would.
async fn build_world(n: usize, engine: Engine) -> (World, Db) {
    let sim = Sim::start().await.unwrap();
    sim.keep_request_log(false);
    let user = sim.add_user("bench-bot");
    sim.add_access_token(user, TOKEN, &["api"], None);
    let key = generate_ed25519("bench").unwrap();
    let mut ids = Vec::with_capacity(n);
    let mut hook_ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = sim.add_project(&format!("fleet/team-{}/service-{i}", i % 50));
        sim.set_member(id, user, 40);
        sim.add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
        hook_ids.push(sim.add_hook(
            id,
            HookSpec {
                url: format!("https://ci.example.com/hooks/{id}"),
                push_events: true,
                tag_push_events: true,
                merge_requests_events: true,
                enable_ssl_verification: true,
                token: None,
            },
        ));
        ids.push(id);
    }
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "token", TOKEN);
    let (db, store) = open_store(engine, dir.path()).await;
    let conn = store.connection_id("main", &sim.base_url()).await.unwrap();
    add_fleet(&store, conn, &ids, &key).await;
    store.close().await;
    (
        World {
            sim,
            dir,
            ids,
            hook_ids,
        },
        db,
    )
}

/// Projects `gitlab_ids` of connection `conn` in the store, as `project
/// add` would: paths `fleet/team-N/service-I`, one shared deploy key.
async fn add_fleet(
    store: &Store,
    conn: i64,
    gitlab_ids: &[u64],
    key: &glwarden::keys::GeneratedKey,
) {
    let paths: Vec<String> = (0..gitlab_ids.len())
        .map(|i| format!("fleet/team-{}/service-{i}", i % 50))
        .collect();
    let rows: Vec<NewProject> = gitlab_ids
        .iter()
        .zip(&paths)
        .map(|(id, path)| NewProject {
            connection_id: conn,
            gitlab_id: *id,
            path,
            source: Source::Cli,
            config_ref: None,
            webhook_url: None,
            public_key: Some(&key.public_openssh),
            fingerprint: Some(&key.fingerprint),
            from_config: false,
        })
        .collect();
    for chunk in rows.chunks(5000) {
        store.upsert_projects(chunk).await.unwrap();
    }
}

/// A new, empty store of `engine` in (or, for PostgreSQL, with its password file in) `dir`.
async fn open_store(engine: Engine, dir: &Path) -> (Db, Store) {
    match engine {
        Engine::Sqlite => {
            let path = dir.join("glwarden.db");
            let store = Store::open(&path).await.unwrap();
            (Db::Sqlite(path), store)
        }
        Engine::Postgres => {
            let (cluster, database) = tokio::task::spawn_blocking(pg_fixture::database)
                .await
                .unwrap();
            secret_file(dir, "pg-password", cluster.password());
            let options: sqlx::postgres::PgConnectOptions = cluster.url(&database).parse().unwrap();
            let store = Store::open_postgres(options.password(cluster.password()), &database)
                .await
                .unwrap();
            (Db::Postgres { cluster, database }, store)
        }
    }
}

fn write_config(w: &World, db: &Db, listen: &str, cron: &str, requests_per_minute: u32) -> PathBuf {
    let path = match db {
        Db::Sqlite(path) => path.clone(),
        Db::Postgres { .. } => w.dir.path().join("unused.db"),
    };
    ConfigBuilder::new(
        &path,
        &w.sim.base_url(),
        &w.dir.path().join("token"),
        &w.dir.path().join("glwarden.toml"),
    )
    .edit(|c| {
        c.log.level = "error".into();
        c.check.concurrency = CONCURRENCY;
        c.check.request_timeout_seconds = 30;
        c.schedule.cron = cron.into();
        c.schedule.spread = 0.0;
        c.http.listen = listen.into();
        c.expect.webhook_url = Some("https://ci.example.com/hooks/{id}".into());
        c.connections.get_mut("main").unwrap().requests_per_minute = requests_per_minute;
        if let Db::Postgres { cluster, database } = db {
            c.store.url = Some(cluster.url(database));
            c.store.password_file = Some(w.dir.path().join("pg-password"));
        }
    })
    .write()
}

/// The daemon, and how long it took to say READY=1 and to answer /readyz.
struct Daemon {
    process: DaemonProcess,
    notify_ready: Option<Duration>,
    readyz: Option<Duration>,
}

/// Starts `glwarden run` with our own NOTIFY_SOCKET; returns once READY=1 came and /readyz answers.
async fn start_daemon(config: &Path, listen: &str, dir: &Path) -> Daemon {
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    let started = Instant::now();
    let process = DaemonProcess::spawn(config, listen, PathBuf::new(), |cmd| {
        cmd.env("NOTIFY_SOCKET", &socket_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
    });
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).unwrap();
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return Instant::now();
            }
        }
    })
    .await
    .unwrap();
    let notify_ready = Some(ready - started);
    // Polled every 20 ms, not the tests' 100 ms: this wait is a figure.
    while !process.ready().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Daemon {
        readyz: Some(started.elapsed()),
        process,
        notify_ready,
    }
}

/// One sample of /metrics, 0 when absent.
async fn metric(d: &Daemon, name: &str) -> f64 {
    d.process.metric(name).await.unwrap_or(0.0)
}

/// Waits until the daemon has finished `count` sweeps in all. Each look
/// renders /metrics, which costs the daemon a millisecond or more at
/// 100,000 projects: hence not more often than every 100 ms.
async fn wait_sweeps(d: &Daemon, count: u64) {
    while (metric(d, "glwarden_sweep_duration_seconds_count").await as u64) < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn proc_stat(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (hwm_kb / 1024.0, ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

async fn db_logical_size(db: &Db) -> f64 {
    let db = match db {
        Db::Sqlite(path) => path,
        Db::Postgres { cluster, database } => {
            let options: sqlx::postgres::PgConnectOptions = cluster.url(database).parse().unwrap();
            let pool = sqlx::PgPool::connect_with(options.password(cluster.password()))
                .await
                .unwrap();
            let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            return size as f64;
        }
    };
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&pool)
        .await
        .unwrap();
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    (pages * size) as f64
}

async fn steady_state(n: usize, engine: Engine) -> Row {
    let (w, db) = build_world(n, engine).await;
    // The raw loop runs in the gaps between the daemon's sweeps, so that
    // both are measured over the same minutes: this machine's speed drifts
    // by a tenth or more from one minute to the next, and a baseline taken
    // only before or after the daemon's sweeps moved the ratio by as much.
    // A first pass, before the daemon exists, sizes the gaps; the world's
    // database is on disk first, so that its writes do not slow the pass.
    let _ = Command::new("sync").status();
    let mut raw = vec![raw_pass(&w).await];
    let period = sweep_period(raw[0].seconds);
    let cron = format!("*/{period} * * * * *");
    let listen = free_listen();
    let config = write_config(&w, &db, &listen, &cron, 100_000_000);
    let d = start_daemon(&config, &listen, w.dir.path()).await;
    // The first sweep (at start) learns the owned key and hook ids by
    // listing; steady state starts after it.
    wait_sweeps(&d, 1).await;
    let size_before = db_logical_size(&db).await;
    let requests_before = w.sim.request_total();
    let (_, cpu_before) = proc_stat(d.process.child.id());
    let sum_before = metric(&d, "glwarden_sweep_duration_seconds_sum").await;
    let count_before = metric(&d, "glwarden_sweep_duration_seconds_count").await;
    let mut raw_requests_between = 0;
    let mut gaps_missed = 0;
    let mut after = None;
    for sweep in 1..=STEADY_SWEEPS {
        wait_sweeps(&d, 1 + sweep).await;
        if sweep == STEADY_SWEEPS {
            after = Some((
                w.sim.request_total(),
                proc_stat(d.process.child.id()).1,
                metric(&d, "glwarden_sweep_duration_seconds_sum").await,
                metric(&d, "glwarden_sweep_duration_seconds_count").await,
            ));
        }
        if !fits_before_next_tick(period, typical_seconds(&raw)) {
            gaps_missed += 1;
        } else {
            let pass = raw_pass(&w).await;
            if sweep < STEADY_SWEEPS {
                raw_requests_between += pass.requests;
            }
            raw.push(pass);
        }
    }
    let (requests_after, cpu_after, sum_after, count_after) =
        after.expect("the last sweep was waited for");
    // Counted rather than assumed: a sweep that a late pass let start early
    // would otherwise add its requests to ten sweeps' worth.
    let sweeps = count_after - count_before;
    let sum = sum_after - sum_before;
    let requests = (requests_after - requests_before - raw_requests_between) as f64;
    let size_after = db_logical_size(&db).await;
    let sweep_seconds = sum / sweeps;
    let checks = n as f64 * sweeps;

    // 1% of the projects broken: the series that /metrics carries for them.
    for (id, hook) in w.ids.iter().zip(&w.hook_ids).step_by(100) {
        w.sim.remove_hook(*id, *hook);
    }
    let done = metric(&d, "glwarden_sweep_duration_seconds_count").await as u64;
    wait_sweeps(&d, done + 2).await;
    let t = Instant::now();
    let body = reqwest::get(format!("http://{}/metrics", d.process.listen))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(body.contains("state=\"missing\""), "the broken hooks show");
    // The status page with the same 1% broken: the overview (its first page
    // of what needs attention) and a broken project's page, each the best
    // of three fetches (the first warms the store's cache).
    let page_ms = |path: String| {
        let listen = d.process.listen.clone();
        async move {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let page = reqwest::get(format!("http://{listen}{path}"))
                    .await
                    .unwrap();
                assert_eq!(page.status(), 200, "{path}");
                let text = page.text().await.unwrap();
                assert!(text.contains("missing"), "{path} shows the broken hooks");
                best = best.min(t.elapsed().as_secs_f64() * 1000.0);
            }
            best
        }
    };
    let overview_ms = page_ms("/".to_owned()).await;
    let project_page_ms = page_ms(format!("/projects/main/{}", w.ids[0])).await;
    let (rss_mb, _) = proc_stat(d.process.child.id());
    let notify = d.notify_ready.unwrap_or_default();
    let readyz = d.readyz.unwrap_or_default();
    drop(d);

    // A pass that a sweep ran into (the simulator answered more requests
    // than the pass made) measured both at once: it does not count.
    let clean: Vec<&RawPass> = raw.iter().filter(|p| p.overlapped == 0).collect();
    // Without passes between the sweeps the baseline would be the first
    // pass's alone, taken minutes before them: then no ratio is reported.
    // Not a failure: the run's verdict is the request count alone, and how
    // passes and sweeps interleave is a matter of timing.
    let enough_passes = clean.len() > 3;
    let rates: Vec<String> = raw
        .iter()
        .map(|p| match p.overlapped {
            0 => format!("{:.0}", p.requests as f64 / p.seconds),
            _ => format!("({:.0}, overlapped a sweep)", p.requests as f64 / p.seconds),
        })
        .collect();
    eprintln!(
        "raw baseline, {} passes between sweeps of {period} s ({gaps_missed} gaps too short for one): [{}] requests/s",
        raw.len(),
        rates.join(", ")
    );
    let raw_rate = if enough_passes {
        clean.iter().map(|p| p.requests as f64).sum::<f64>()
            / clean.iter().map(|p| p.seconds).sum::<f64>()
    } else {
        eprintln!(
            "only {} clean raw passes between sweeps of {period} s (at least 3 needed): no ratio to the raw loop reported",
            clean.len().saturating_sub(1)
        );
        0.0
    };
    Row {
        scenario: match engine {
            Engine::Sqlite => "steady".into(),
            Engine::Postgres => "steady-postgres".into(),
        },
        projects: n,
        sweep_seconds,
        checks_per_second: n as f64 / sweep_seconds,
        requests_per_project: requests / checks,
        raw_requests_per_second: raw_rate,
        glwarden_requests_per_second: requests / sum,
        peak_rss_mb: rss_mb,
        cpu_seconds_per_1000_checks: (cpu_after - cpu_before) / (checks / 1000.0),
        db_growth_kb: (size_after - size_before) / 1024.0,
        db_size_kb: size_after / 1024.0,
        start_to_notify_ready_ms: notify.as_secs_f64() * 1000.0,
        start_to_readyz_ms: readyz.as_secs_f64() * 1000.0,
        metrics_kb: body.len() as f64 / 1024.0,
        metrics_ms,
        overview_ms,
        project_page_ms,
        ..Row::default()
    }
}

/// The status page over a store that already holds `n` projects' health,
/// 1% of their webhooks `missing` (each after a `healthy`, so that its page
/// has a history): the daemon's own router and listener, in this process,
/// serving a store written directly rather than by sweeps. At 100,000
/// projects a sweeping daemon's first sweep is paced by GitLab's limit on
/// `GET /projects` (docs/gitlab-contract.md §8), and the page is what is
/// measured here, not the sweep. Each figure is the best of five fetches
/// over HTTP (the first warms the store's cache).
async fn status_page(n: usize, engine: Engine) -> Vec<Row> {
    use glwarden::daemon::{metrics::Metrics, server};
    use glwarden::health::{Component, Observation, State};

    let dir = tempfile::tempdir().unwrap();
    let (db, store) = open_store(engine, dir.path()).await;
    let seeding = Instant::now();
    let conn = store
        .connection_id("main", "https://gitlab.example.com")
        .await
        .unwrap();
    let key = generate_ed25519("bench").unwrap();
    let gitlab_ids: Vec<u64> = (0..n as u64).map(|i| 1000 + i).collect();
    add_fleet(&store, conn, &gitlab_ids, &key).await;
    let ids: Vec<(i64, i64)> = store
        .active_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.gitlab_id))
        .collect();
    assert_eq!(ids.len(), n);
    let now = chrono::Utc::now();
    store
        .record(
            &[(
                Component::Connection,
                conn,
                Observation::definite(State::Connected, "bench-bot"),
            )],
            now,
        )
        .await
        .unwrap();
    let healthy: Vec<(Component, i64, Observation)> = ids
        .iter()
        .flat_map(|(id, _)| {
            [
                (
                    Component::Repository,
                    *id,
                    Observation::definite(State::Ok, ""),
                ),
                (
                    Component::DeployKey,
                    *id,
                    Observation::definite(State::Healthy, ""),
                ),
                (
                    Component::Webhook,
                    *id,
                    Observation::definite(State::Healthy, ""),
                ),
            ]
        })
        .collect();
    for chunk in healthy.chunks(3000) {
        store.record(chunk, now).await.unwrap();
    }
    let broken: Vec<(Component, i64, Observation)> = ids
        .iter()
        .step_by(100)
        .map(|(id, _)| {
            (
                Component::Webhook,
                *id,
                Observation::definite(State::Missing, "no hook with the expected URL"),
            )
        })
        .collect();
    store.record(&broken, chrono::Utc::now()).await.unwrap();
    eprintln!(
        "seeded {n} projects ({} broken) in {:.1} s",
        broken.len(),
        seeding.elapsed().as_secs_f64()
    );

    let metrics = Metrics::new(glwarden::config::PerProjectSeries::Unhealthy);
    metrics.publish(&store.health_summary(false).await.unwrap());
    let app = server::router(server::AppState {
        metrics,
        store: store.clone(),
        liveness: std::sync::Arc::new(server::Liveness::new(Duration::from_secs(60))),
        metrics_token: None,
        config: Default::default(),
        access: None,
        leading: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(server::serve(listener, app, stop.clone()));
    let client = reqwest::Client::new();
    let best_of_five = |path: String, expect: &'static str| {
        let client = client.clone();
        async move {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let page = client
                    .get(format!("http://{addr}{path}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(page.status(), 200, "{path}");
                let text = page.text().await.unwrap();
                best = best.min(t.elapsed().as_secs_f64() * 1000.0);
                assert!(text.contains(expect), "{path} shows {expect}");
            }
            eprintln!("  {path}: {best:.1} ms");
            best
        }
    };
    let pages = n.div_ceil(100).div_ceil(50);
    let measure = || async {
        let overview_ms = best_of_five("/".into(), "missing").await;
        let last_page_ms = best_of_five(format!("/?page={pages}"), "missing").await;
        let search_ms = best_of_five("/?q=service-100".into(), "Needing attention").await;
        let project_page_ms = best_of_five(format!("/projects/main/{}", ids[0].1), "missing").await;
        Row {
            projects: n,
            overview_ms,
            overview_last_page_ms: last_page_ms,
            search_ms,
            project_page_ms,
            ..Row::default()
        }
    };
    let mut rows = Vec::new();
    match &db {
        Db::Sqlite(_) => rows.push(Row {
            scenario: "status page".into(),
            ..measure().await
        }),
        Db::Postgres { cluster, database } => {
            // Right after a bulk load PostgreSQL has no statistics on the
            // new rows and plans as if the tables were small; autovacuum
            // analyzes a table once a tenth of it changed, within a minute
            // (`autovacuum_naptime`), so a store that grew over days has
            // them. Both are measured: as loaded, and after ANALYZE.
            rows.push(Row {
                scenario: "status page postgres".into(),
                ..measure().await
            });
            let options: sqlx::postgres::PgConnectOptions = cluster.url(database).parse().unwrap();
            let pool = sqlx::PgPool::connect_with(options.password(cluster.password()))
                .await
                .unwrap();
            sqlx::query("ANALYZE").execute(&pool).await.unwrap();
            pool.close().await;
            eprintln!("  after ANALYZE:");
            rows.push(Row {
                scenario: "status page pg ANALYZE".into(),
                ..measure().await
            });
        }
    }
    stop.cancel();
    server.await.unwrap();
    store.close().await;
    rows
}

/// Seconds between the daemon's sweeps (a divisor of 60, so that cron's
/// ticks are evenly spaced): room for a sweep, which took up to 1.3 times
/// as long as a raw pass, then a raw pass, with a fifth to spare.
fn sweep_period(raw_seconds: f64) -> u64 {
    let needed = raw_seconds * 2.3 * 1.2 + 0.3;
    [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60]
        .into_iter()
        .find(|p| *p as f64 >= needed)
        .unwrap_or_else(|| panic!("a raw pass of {raw_seconds:.0} s leaves no room in a minute"))
}

/// How long a raw pass takes now: the median of the clean passes so far.
/// Not the longest: one slow pass would then keep every later one from
/// fitting between sweeps.
fn typical_seconds(passes: &[RawPass]) -> f64 {
    let mut clean: Vec<f64> = passes
        .iter()
        .filter(|p| p.overlapped == 0)
        .map(|p| p.seconds)
        .collect();
    if clean.is_empty() {
        return passes.iter().map(|p| p.seconds).fold(0.0, f64::max);
    }
    clean.sort_by(f64::total_cmp);
    clean[clean.len() / 2]
}

/// Whether a raw pass that takes about `seconds` ends before the next tick
/// of a cron schedule every `period` seconds (ticks fall on wall-clock
/// multiples of the period).
fn fits_before_next_tick(period: u64, seconds: f64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let left = period as f64 - now % period as f64;
    left > seconds * 1.2 + 0.2
}

/// One pass of the raw loop.
struct RawPass {
    seconds: f64,
    /// The requests it made.
    requests: u64,
    /// Requests the simulator answered meanwhile that were not the pass's.
    overlapped: u64,
}

/// Runs the raw loop once, in a process of its own, over every project.
async fn raw_pass(w: &World) -> RawPass {
    let plan = w.dir.path().join("raw-plan.txt");
    if !plan.exists() {
        let mut lines = String::new();
        for (id, hook) in w.ids.iter().zip(&w.hook_ids) {
            let key = w.sim.deploy_keys(*id).first().map(|k| k.id).unwrap_or(0);
            lines.push_str(&format!("{id} {key} {hook}\n"));
        }
        std::fs::write(&plan, lines).unwrap();
    }
    let before = w.sim.request_total();
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(RAW_CHILD, &plan)
        .env("GLWARDEN_BENCH_RAW_BASE", w.sim.base_url())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "the raw loop failed");
    let answered = w.sim.request_total() - before;
    let printed = String::from_utf8_lossy(&out.stdout);
    let (seconds, requests) = printed.trim().split_once(' ').unwrap();
    let requests: u64 = requests.parse().unwrap();
    RawPass {
        seconds: seconds.parse().unwrap(),
        requests,
        overlapped: answered.saturating_sub(requests),
    }
}

/// Set (to the plan's path) when this process is the raw loop's.
const RAW_CHILD: &str = "GLWARDEN_BENCH_RAW_PLAN";

/// The raw loop's process: issues the plan's requests, prints the seconds
/// they took and how many there were.
fn raw_loop_child(plan: &str) {
    use futures::StreamExt;
    let base = std::env::var("GLWARDEN_BENCH_RAW_BASE").unwrap();
    let projects: Vec<(u64, u64, u64)> = std::fs::read_to_string(plan)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<u64> = l.split(' ').map(|v| v.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async move {
        let client = reqwest::Client::builder().build().unwrap();
        let started = Instant::now();
        let mut requests = 2 * projects.len() as u64;
        let mut next = Some(format!(
            "{base}/api/v4/projects?membership=true&min_access_level=40&pagination=keyset&order_by=id&sort=asc&per_page=100"
        ));
        while let Some(url) = next.take() {
            let r = client
                .get(&url)
                .header("PRIVATE-TOKEN", TOKEN)
                .send()
                .await
                .unwrap();
            next = r
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split(',').find(|p| p.contains("rel=\"next\"")))
                .and_then(|p| p.split(';').next())
                .map(|p| {
                    p.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                });
            let _ = r.bytes().await.unwrap();
            requests += 1;
        }
        futures::stream::iter(projects)
            .map(|(id, key, hook)| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    for path in [
                        format!("projects/{id}/deploy_keys/{key}"),
                        format!("projects/{id}/hooks/{hook}"),
                    ] {
                        let r = client
                            .get(format!("{base}/api/v4/{path}"))
                            .header("PRIVATE-TOKEN", TOKEN)
                            .send()
                            .await
                            .unwrap();
                        let _ = r.bytes().await.unwrap();
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        (started.elapsed().as_secs_f64(), requests)
    });
    println!("{} {}", outcome.0, outcome.1);
}

async fn latency(n: usize, latency: Duration) -> Row {
    let (w, db) = build_world(n, Engine::Sqlite).await;
    let listen = free_listen();
    let config = write_config(&w, &db, &listen, "* * * * * *", 100_000_000);
    let d = start_daemon(&config, &listen, w.dir.path()).await;
    wait_sweeps(&d, 1).await;
    w.sim.set_latency(latency);
    let done = metric(&d, "glwarden_sweep_duration_seconds_count").await as u64;
    // The sweep under way may have started before the latency; measure the next full one.
    wait_sweeps(&d, done + 1).await;
    let count = metric(&d, "glwarden_sweep_duration_seconds_count").await;
    let sum_before = metric(&d, "glwarden_sweep_duration_seconds_sum").await;
    let requests_before = w.sim.request_total();
    wait_sweeps(&d, count as u64 + 1).await;
    let sweep = metric(&d, "glwarden_sweep_duration_seconds_sum").await - sum_before;
    let requests = (w.sim.request_total() - requests_before) as f64;
    drop(d);
    let ideal = requests * latency.as_secs_f64() / CONCURRENCY as f64;
    Row {
        scenario: format!("latency {}ms", latency.as_millis()),
        projects: n,
        sweep_seconds: sweep,
        checks_per_second: n as f64 / sweep,
        requests_per_project: requests / n as f64,
        ideal_seconds: ideal,
        ..Row::default()
    }
}

async fn rate_limited(n: usize, per_minute: u32) -> Row {
    let (w, db) = build_world(n, Engine::Sqlite).await;
    w.sim.set_rate_limit(Some(per_minute));
    let listen = free_listen();
    let config = write_config(&w, &db, &listen, "* * * * * *", per_minute);
    let d = start_daemon(&config, &listen, w.dir.path()).await;
    // The first sweep (with key and hook listings) is all work under the budget.
    let started = Instant::now();
    let requests_before = w.sim.request_total();
    let sum_before = metric(&d, "glwarden_sweep_duration_seconds_sum").await;
    let count = metric(&d, "glwarden_sweep_duration_seconds_count").await as u64;
    wait_sweeps(&d, count + 2).await;
    let busy = metric(&d, "glwarden_sweep_duration_seconds_sum").await - sum_before;
    let requests = (w.sim.request_total() - requests_before) as f64;
    let wall = started.elapsed().as_secs_f64();
    let too_many = w.sim.too_many_requests_sent();
    drop(d);
    Row {
        scenario: format!("rate limit {per_minute}/min"),
        projects: n,
        sweep_seconds: busy / 2.0,
        requests_per_project: requests / (2.0 * n as f64),
        glwarden_requests_per_second: requests / wall,
        budget_utilisation: (requests / wall) / (f64::from(per_minute) / 60.0),
        too_many_requests: too_many,
        ..Row::default()
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<22} {:>8} {:>9} {:>10} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "scenario",
        "projects",
        "sweep s",
        "checks/s",
        "req/proj",
        "vs raw",
        "RSS MB",
        "cpu s/1k",
        "db +KB",
        "ready ms",
        "readyz ms",
        "metricsKB",
        "metr ms",
        "page ms",
        "last ms",
        "find ms",
        "proj ms",
        "ideal s",
        "budget %",
        "429s"
    );
    for r in rows {
        let ratio = if r.raw_requests_per_second > 0.0 {
            format!(
                "{:.1}%",
                100.0 * r.glwarden_requests_per_second / r.raw_requests_per_second
            )
        } else {
            "-".into()
        };
        println!(
            "{:<22} {:>8} {:>9.2} {:>10.0} {:>9.3} {:>9} {:>8.1} {:>9.3} {:>9.1} {:>9.0} {:>9.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.2} {:>9} {:>7}",
            r.scenario,
            r.projects,
            r.sweep_seconds,
            r.checks_per_second,
            r.requests_per_project,
            ratio,
            r.peak_rss_mb,
            r.cpu_seconds_per_1000_checks,
            r.db_growth_kb,
            r.start_to_notify_ready_ms,
            r.start_to_readyz_ms,
            r.metrics_kb,
            r.metrics_ms,
            r.overview_ms,
            r.overview_last_page_ms,
            r.search_ms,
            r.project_page_ms,
            r.ideal_seconds,
            if r.budget_utilisation > 0.0 {
                format!("{:.1}%", 100.0 * r.budget_utilisation)
            } else {
                "-".into()
            },
            r.too_many_requests,
        );
    }
}

fn write_csv(path: &Path, rows: &[Row]) {
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(
        f,
        "scenario,projects,sweep_seconds,checks_per_second,requests_per_project,glwarden_requests_per_second,raw_requests_per_second,peak_rss_mb,cpu_seconds_per_1000_checks,db_growth_kb,db_size_kb,start_to_notify_ready_ms,start_to_readyz_ms,metrics_kb,metrics_ms,overview_ms,overview_last_page_ms,search_ms,project_page_ms,ideal_seconds,budget_utilisation,too_many_requests"
    )
    .unwrap();
    for r in rows {
        writeln!(
            f,
            "{},{},{:.3},{:.1},{:.4},{:.1},{:.1},{:.1},{:.4},{:.1},{:.1},{:.1},{:.1},{:.1},{:.2},{:.2},{:.2},{:.2},{:.2},{:.3},{:.4},{}",
            r.scenario,
            r.projects,
            r.sweep_seconds,
            r.checks_per_second,
            r.requests_per_project,
            r.glwarden_requests_per_second,
            r.raw_requests_per_second,
            r.peak_rss_mb,
            r.cpu_seconds_per_1000_checks,
            r.db_growth_kb,
            r.db_size_kb,
            r.start_to_notify_ready_ms,
            r.start_to_readyz_ms,
            r.metrics_kb,
            r.metrics_ms,
            r.overview_ms,
            r.overview_last_page_ms,
            r.search_ms,
            r.project_page_ms,
            r.ideal_seconds,
            r.budget_utilisation,
            r.too_many_requests
        )
        .unwrap();
    }
}

/// Two small line charts side by side (sweep time and peak RSS against the
/// number of projects, log scale), as plain SVG.
fn svg_chart(rows: &[&Row]) -> String {
    let panel = |x0: f64, title: &str, unit: &str, values: Vec<(f64, f64)>| -> String {
        let (w, h, pad) = (360.0, 240.0, 50.0);
        let xs: Vec<f64> = values.iter().map(|(x, _)| x.log10()).collect();
        let (xmin, xmax) = (
            xs.iter().cloned().fold(f64::MAX, f64::min),
            xs.iter().cloned().fold(f64::MIN, f64::max),
        );
        let ymax = values.iter().map(|(_, y)| *y).fold(0.0, f64::max).max(1e-9) * 1.15;
        let px = |x: f64| x0 + pad + (x.log10() - xmin) / (xmax - xmin).max(1e-9) * (w - 2.0 * pad);
        let py = |y: f64| h - pad + 10.0 - y / ymax * (h - 2.0 * pad);
        let points: Vec<String> = values
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let mut s = format!(
            "<text x=\"{:.0}\" y=\"22\" font-size=\"14\" font-family=\"sans-serif\">{title}</text>\
             <line x1=\"{:.0}\" y1=\"{:.0}\" x2=\"{:.0}\" y2=\"{:.0}\" stroke=\"#444\"/>\
             <line x1=\"{:.0}\" y1=\"{:.0}\" x2=\"{:.0}\" y2=\"{:.0}\" stroke=\"#444\"/>\
             <polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
            x0 + pad,
            x0 + pad,
            h - pad + 10.0,
            x0 + w - pad,
            h - pad + 10.0,
            x0 + pad,
            h - pad + 10.0,
            x0 + pad,
            pad - 10.0,
            points.join(" ")
        );
        for (x, y) in &values {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f77b4\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" font-family=\"sans-serif\" text-anchor=\"middle\">{y:.1} {unit}</text>\
                 <text x=\"{:.1}\" y=\"{:.0}\" font-size=\"10\" font-family=\"sans-serif\" text-anchor=\"middle\">{x}</text>",
                px(*x),
                py(*y),
                px(*x),
                py(*y) - 7.0,
                px(*x),
                h - pad + 24.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" font-family=\"sans-serif\" text-anchor=\"middle\">projects (log scale)</text>",
            x0 + w / 2.0,
            h - 8.0
        ));
        s
    };
    let sweep: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.projects as f64, r.sweep_seconds))
        .collect();
    let rss: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.projects as f64, r.peak_rss_mb))
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"250\" viewBox=\"0 0 720 250\">\
         <rect width=\"720\" height=\"250\" fill=\"white\"/>{}{}</svg>\n",
        panel(0.0, "steady sweep wall time", "s", sweep),
        panel(360.0, "glwarden peak RSS", "MB", rss)
    )
}
