//! The fault matrix: `glwarden run` as a real child process against the
//! simulator, with repairs on `auto` (confirmed after one check) so that a
//! breakage wrongly believed WOULD be repaired, while GitLab, the network,
//! the database, the process and the clock misbehave. After each fault:
//! the daemon runs (or restarts cleanly), no component's stored definite
//! state flipped, no repair ran, no key or hook was created at GitLab, no
//! private key, hook secret or history row was lost, `PRAGMA
//! integrity_check` passes, and metrics and `/readyz` say what happened.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use gitlab_sim::{Fault, FaultKind, HookSpec};
use glwarden::keys::generate_ed25519;
use sqlx::Connection;

const MASTER_KEY: &str = "5f9c3a1e7b2d4c6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";
const CRON: &str = "*/1 * * * * *";

// ---------------------------------------------------------------------------
// rig

/// A running daemon over `n` connected projects, repairs on `auto`.
struct Rig {
    fx: Fixture,
    projects: Vec<Connected>,
    config: PathBuf,
    listen: String,
    daemon: DaemonProcess,
    /// The database file (the fixture's, unless the config moved it).
    db: PathBuf,
}

fn repair_sections(fx: &Fixture) -> String {
    let key_file = fx.dir.path().join("master.key");
    std::fs::write(&key_file, MASTER_KEY).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[repair]\ndeploy_key = \"auto\"\nwebhook = \"auto\"\nmoved = \"follow\"\nconfirm_checks = 1\n\n\
         [custody]\nmaster_key_file = {:?}\n\n",
        key_file.display().to_string()
    )
}

/// Writes the daemon config; `edit` may rewrite its text (store path, GitLab URL).
fn write_daemon_config(
    fx: &Fixture,
    projects: &[Connected],
    check_lines: &str,
    listen: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let (sections, _) = Fixture::daemon_sections(CRON, 0.5);
    let sections = sections.replace(
        &sections[sections.find("listen").unwrap()..],
        &format!("listen = {listen:?}\n\n"),
    );
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx.write_config_full(
        &refs,
        check_lines,
        &format!("{sections}{}", repair_sections(fx)),
    );
    let text = edit(std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, text).unwrap();
    config
}

/// `n` projects; project 0 starts without our key and hook, so that the first
/// sweep repairs it and custody holds a private key and a hook secret. Returns
/// once every component is healthy.
async fn rig(n: usize, check_lines: &str) -> Rig {
    rig_with(n, check_lines, |t| t).await
}

async fn rig_with(n: usize, check_lines: &str, edit: impl Fn(String) -> String) -> Rig {
    rig_at(n, check_lines, None, edit).await
}

async fn rig_at(
    n: usize,
    check_lines: &str,
    db: Option<PathBuf>,
    edit: impl Fn(String) -> String,
) -> Rig {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..n).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    let key0 = fx
        .sim
        .deploy_keys(projects[0].id)
        .into_iter()
        .find(|k| k.ssh_fingerprint() == projects[0].key.fingerprint)
        .unwrap()
        .id;
    fx.sim.remove_deploy_key(projects[0].id, key0);
    fx.sim.remove_hook(projects[0].id, projects[0].hook_id);
    let listen = format!("127.0.0.1:{}", free_port());
    let config = write_daemon_config(&fx, &projects, check_lines, &listen, edit);
    let daemon = fx.start_daemon(&config, &listen).await;
    let db = db.unwrap_or_else(|| fx.db_path());
    let rig = Rig {
        fx,
        projects,
        config,
        listen,
        daemon,
        db,
    };
    rig.wait_all_healthy("the first repairs").await;
    rig
}

impl Rig {
    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.listen)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }

    async fn sweeps(&self) -> f64 {
        self.sum("glwarden_sweeps_total", &[]).await
    }

    /// Waits until `n` more sweeps have finished.
    async fn wait_sweeps(&self, n: f64, timeout: Duration) {
        let start = self.sweeps().await;
        wait_until(&format!("{n} more sweeps"), timeout, || async {
            self.sweeps().await >= start + n
        })
        .await;
    }

    /// Every component healthy in the published metrics.
    async fn all_healthy(&self) -> bool {
        let text = self.metrics().await;
        let n = self.projects.len() as f64;
        metric_sum(&text, "glwarden_connection_state", &["state=\"connected\""]) == 1.0
            && metric_sum(
                &text,
                "glwarden_components",
                &["component=\"repository\"", "state=\"ok\""],
            ) == n
            && metric_sum(
                &text,
                "glwarden_components",
                &["component=\"deploy_key\"", "state=\"healthy\""],
            ) == n
            && metric_sum(
                &text,
                "glwarden_components",
                &["component=\"webhook\"", "state=\"healthy\""],
            ) == n
    }

    async fn wait_all_healthy(&self, after: &str) {
        wait_until(
            &format!("every component healthy again after {after}"),
            Duration::from_secs(100),
            || async { self.all_healthy().await },
        )
        .await;
    }

    fn alive(&mut self) -> bool {
        self.daemon.child.try_wait().unwrap().is_none()
    }

    /// Stops (SIGTERM) and expects exit 0.
    async fn stop(mut self) {
        let status = self.daemon.stop().await;
        assert!(status.success(), "exit {status:?}: {}", self.daemon.log());
    }
}

// ---------------------------------------------------------------------------
// what must survive

type SealedRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// What the database holds that must survive any fault.
#[derive(Debug, Clone, PartialEq)]
struct DbFacts {
    integrity: String,
    transitions: i64,
    /// (project id, sealed private key, sealed hook token)
    secrets: Vec<SealedRow>,
    /// (id, action)
    events: Vec<(i64, String)>,
    /// (id, component, subject, to_state)
    history: Vec<(i64, String, i64, String)>,
    /// (component, subject) -> last definite state
    states: BTreeMap<(String, i64), Option<String>>,
}

async fn db_facts(db: &Path) -> DbFacts {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(Duration::from_secs(20));
    let mut conn = sqlx::SqliteConnection::connect_with(&opts)
        .await
        .expect("the database opens");
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let transitions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transitions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let secrets = sqlx::query_as("SELECT id, private_key, hook_token FROM projects ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let events = sqlx::query_as("SELECT id, action FROM events ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let history =
        sqlx::query_as("SELECT id, component, subject_id, to_state FROM transitions ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let rows: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("SELECT component, subject_id, state FROM health")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let _ = conn.close().await;
    DbFacts {
        integrity,
        transitions,
        secrets,
        events,
        history,
        states: rows.into_iter().map(|(c, s, st)| ((c, s), st)).collect(),
    }
}

/// GitLab's side: how many keys and hooks each project has.
fn gitlab_counts(fx: &Fixture, projects: &[Connected]) -> Vec<(usize, usize)> {
    projects
        .iter()
        .map(|p| (fx.sim.deploy_keys(p.id).len(), fx.sim.hooks(p.id).len()))
        .collect()
}

fn writes(fx: &Fixture) -> Vec<String> {
    fx.sim
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// Taken when everything is healthy, before a fault; the request log is cleared.
struct Baseline {
    db: DbFacts,
    counts: Vec<(usize, usize)>,
}

async fn baseline(rig: &Rig) -> Baseline {
    let b = Baseline {
        db: db_facts(&rig.db).await,
        counts: gitlab_counts(&rig.fx, &rig.projects),
    };
    assert_eq!(b.db.integrity, "ok");
    assert!(
        b.db.secrets
            .iter()
            .any(|(_, k, h)| k.is_some() && h.is_some()),
        "custody holds a private key and a hook secret before the fault"
    );
    rig.fx.sim.clear_requests();
    b
}

/// The invariants after a fault. `except` names components whose stored
/// state may genuinely change (a revoked token's connection).
async fn assert_unharmed(rig: &mut Rig, before: &Baseline, fault: &str, except: &[&str]) {
    assert!(
        rig.alive(),
        "{fault}: the daemon died: {}",
        rig.daemon.log()
    );
    assert_eq!(rig.daemon.get("/healthz").await.0, 200, "{fault}: /healthz");
    let (code, body) = rig.daemon.get("/readyz").await;
    assert_eq!(code, 200, "{fault}: /readyz says {body}");
    assert_eq!(
        writes(&rig.fx),
        Vec::<String>::new(),
        "{fault}: glwarden wrote to GitLab"
    );
    assert_eq!(
        gitlab_counts(&rig.fx, &rig.projects),
        before.counts,
        "{fault}: keys/hooks at GitLab changed"
    );
    let now = db_facts(&rig.db).await;
    assert_eq!(now.integrity, "ok", "{fault}: integrity_check");
    assert_eq!(
        now.secrets, before.db.secrets,
        "{fault}: a private key or hook secret changed or was lost"
    );
    assert!(
        now.transitions >= before.db.transitions,
        "{fault}: history rows lost ({} -> {})",
        before.db.transitions,
        now.transitions
    );
    let new_events: Vec<&(i64, String)> = now
        .events
        .iter()
        .filter(|e| !before.db.events.contains(e))
        .collect();
    assert!(
        new_events.iter().all(|(_, action)| action == "plan"),
        "{fault}: a repair ran: {new_events:?}"
    );
    // No component flipped to a broken state, even for a while.
    let flipped: Vec<_> = now
        .history
        .iter()
        .filter(|t| !before.db.history.contains(t))
        .filter(|(_, component, _, to)| {
            !except.contains(&component.as_str()) && BROKEN.contains(&to.as_str())
        })
        .collect();
    assert!(
        flipped.is_empty(),
        "{fault}: components flipped to a broken state: {flipped:?}"
    );
    for (key, state) in &before.db.states {
        if except.contains(&key.0.as_str()) {
            continue;
        }
        assert_eq!(
            now.states.get(key),
            Some(state),
            "{fault}: the stored state of {key:?} changed"
        );
    }
}

// ---------------------------------------------------------------------------
// GitLab answering badly: one fault at a time, table-driven

struct Row {
    name: &'static str,
    fault: Fault,
    /// The status class counter that must rise (`None`: not asserted).
    class: Option<&'static str>,
    /// Whether an `unknown` check must be counted.
    unknown: bool,
}

fn row(
    name: &'static str,
    path: &str,
    kind: FaultKind,
    times: u32,
    class: Option<&'static str>,
    unknown: bool,
) -> Row {
    Row {
        name,
        fault: Fault::on(path, kind).method("GET").times(times),
        class,
        unknown,
    }
}

/// Applies each row to a running daemon in turn and checks the invariants.
async fn run_rows(rig: &mut Rig, rows: Vec<Row>) {
    for row in rows {
        let before = baseline(rig).await;
        let text = rig.metrics().await;
        let class_before = row.class.map(|c| {
            metric_sum(
                &text,
                "glwarden_gitlab_requests_total",
                &[&format!("status_class=\"{c}\"")],
            )
        });
        let unknown_before = metric_sum(&text, "glwarden_checks_total", &["result=\"unknown\""]);
        rig.fx.sim.inject(row.fault.clone());
        if row.unknown {
            wait_until(
                &format!("{}: an unknown check counted", row.name),
                Duration::from_secs(100),
                || async {
                    rig.sum("glwarden_checks_total", &["result=\"unknown\""])
                        .await
                        > unknown_before
                },
            )
            .await;
        }
        if let (Some(c), Some(b)) = (row.class, class_before) {
            wait_until(
                &format!("{}: a {c} request counted", row.name),
                Duration::from_secs(100),
                || async {
                    rig.sum(
                        "glwarden_gitlab_requests_total",
                        &[&format!("status_class=\"{c}\"")],
                    )
                    .await
                        > b
                },
            )
            .await;
        }
        // The fault is used up; the next sweeps are clean.
        wait_until(
            &format!("{}: the fault used up", row.name),
            Duration::from_secs(100),
            || async {
                rig.fx.sim.state()["faults"]
                    .as_array()
                    .is_none_or(|f| f.is_empty())
            },
        )
        .await;
        rig.wait_sweeps(1.0, Duration::from_secs(100)).await;
        rig.wait_all_healthy(row.name).await;
        assert_unharmed(rig, &before, row.name, &[]).await;
        eprintln!("fault row ok: {}", row.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_with_html_pages() {
    let mut rig = rig(3, "").await;
    let html = |code| FaultKind::Status { code, html: true };
    let rows = vec![
        row(
            "500 HTML on /user",
            "/api/v4/user",
            html(500),
            // The probe is retried twice: three failures make it unknown.
            3,
            Some("5xx"),
            true,
        ),
        row(
            "502 HTML on the token's details",
            "/personal_access_tokens/self",
            html(502),
            1,
            Some("5xx"),
            true,
        ),
        row(
            "503 HTML on projects",
            "/api/v4/projects/",
            html(503),
            3,
            Some("5xx"),
            true,
        ),
        row(
            "502 HTML on deploy keys",
            "/deploy_keys",
            html(502),
            3,
            Some("5xx"),
            true,
        ),
        row(
            "500 HTML on hooks",
            "/hooks",
            html(500),
            3,
            Some("5xx"),
            true,
        ),
        row(
            "502 JSON on hooks",
            "/hooks",
            FaultKind::Status {
                code: 502,
                html: false,
            },
            3,
            Some("5xx"),
            true,
        ),
    ];
    run_rows(&mut rig, rows).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_resets_and_slow_bodies() {
    let mut rig = rig(3, "").await;
    let rows = vec![
        row(
            "hang on /user",
            "/api/v4/user",
            FaultKind::Hang,
            // The probe is retried twice: three failures make it unknown.
            3,
            Some("error"),
            true,
        ),
        row(
            "a 3 s delay on deploy keys (timeout 2 s)",
            "/deploy_keys",
            FaultKind::Delay(Duration::from_secs(3)),
            3,
            Some("error"),
            true,
        ),
        row(
            "connection reset on hooks",
            "/hooks",
            FaultKind::Reset,
            3,
            Some("error"),
            true,
        ),
        row(
            "a body dripping past the timeout",
            "/api/v4/projects/",
            FaultKind::SlowBody {
                chunk_delay: Duration::from_millis(300),
            },
            3,
            None,
            true,
        ),
        // A slow but complete body is an answer like any other.
        row(
            "a slow body that completes",
            "/hooks",
            FaultKind::SlowBody {
                chunk_delay: Duration::from_millis(1),
            },
            3,
            Some("2xx"),
            false,
        ),
    ];
    run_rows(&mut rig, rows).await;
    let log = rig.daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_answers() {
    let mut rig = rig(3, "max_response_bytes = 65536\n").await;
    let rows = vec![
        row(
            "garbage JSON on /user",
            "/api/v4/user",
            FaultKind::GarbageJson,
            // The probe is retried twice: three failures make it unknown.
            3,
            Some("2xx"),
            true,
        ),
        row(
            "truncated JSON on /user",
            "/api/v4/user",
            FaultKind::TruncatedJson,
            // The probe is retried twice: three failures make it unknown.
            3,
            None,
            true,
        ),
        row(
            "wrong shape on the token's details",
            "/personal_access_tokens/self",
            FaultKind::WrongShape,
            1,
            None,
            true,
        ),
        row(
            "garbage JSON on projects",
            "/api/v4/projects/",
            FaultKind::GarbageJson,
            3,
            None,
            true,
        ),
        row(
            "truncated JSON on deploy keys",
            "/deploy_keys",
            FaultKind::TruncatedJson,
            3,
            None,
            true,
        ),
        row(
            "wrong shape on deploy keys",
            "/deploy_keys",
            FaultKind::WrongShape,
            3,
            None,
            true,
        ),
        row(
            "wrong shape on hooks",
            "/hooks",
            FaultKind::WrongShape,
            3,
            None,
            true,
        ),
        row(
            "wrong shape on projects",
            "/api/v4/projects/",
            FaultKind::WrongShape,
            3,
            None,
            true,
        ),
        row(
            "a 300 kB body over a 64 kB limit",
            "/hooks",
            FaultKind::Oversized { bytes: 300_000 },
            3,
            None,
            true,
        ),
    ];
    run_rows(&mut rig, rows).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_storms_with_and_without_headers() {
    let mut rig = rig(3, "").await;
    let limited_before = rig.sum("glwarden_gitlab_rate_limited_total", &[]).await;
    let rows = vec![
        row(
            "429 with Retry-After on deploy keys",
            "/deploy_keys",
            FaultKind::RateLimited {
                retry_after: Some(1),
            },
            3,
            Some("429"),
            false,
        ),
        row(
            // Without a header glwarden pauses the connection for 60 s.
            "a 429 without headers",
            "/api/v4/",
            FaultKind::RateLimited { retry_after: None },
            1,
            Some("429"),
            false,
        ),
    ];
    run_rows(&mut rig, rows).await;
    assert!(rig.sum("glwarden_gitlab_rate_limited_total", &[]).await >= limited_before + 2.0);

    // GitLab's own throttle, with RateLimit-* headers and Retry-After.
    let before = baseline(&rig).await;
    let limited = rig.sum("glwarden_gitlab_rate_limited_total", &[]).await;
    rig.fx.sim.set_rate_limit(Some(5));
    // glwarden stops when RateLimit-Remaining reaches 0, or is answered 429.
    wait_until("the throttle reached", Duration::from_secs(60), || async {
        let text = rig.metrics().await;
        metric_sum(&text, "glwarden_gitlab_rate_limited_total", &[]) > limited
            || text.lines().any(|l| {
                l.starts_with("glwarden_gitlab_rate_limit_remaining{") && l.ends_with(" 0")
            })
    })
    .await;
    rig.fx.sim.set_rate_limit(None);
    rig.wait_sweeps(2.0, Duration::from_secs(90)).await;
    rig.wait_all_healthy("the throttle").await;
    assert_unharmed(&mut rig, &before, "GitLab's throttle", &[]).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn combined_faults() {
    let mut rig = rig(4, "max_response_bytes = 65536\n").await;
    let before = baseline(&rig).await;
    rig.fx.sim.set_latency(Duration::from_millis(50));
    let unknown = rig
        .sum("glwarden_checks_total", &["result=\"unknown\""])
        .await;
    for (path, kind, times) in [
        ("/hooks", FaultKind::error_page(502), 3),
        ("/deploy_keys", FaultKind::Reset, 2),
        (
            "/api/v4/projects/",
            FaultKind::RateLimited {
                retry_after: Some(1),
            },
            2,
        ),
        ("/personal_access_tokens/self", FaultKind::GarbageJson, 1),
        ("/hooks", FaultKind::TruncatedJson, 2),
        ("/deploy_keys", FaultKind::Oversized { bytes: 200_000 }, 2),
        (
            "/api/v4/projects/",
            FaultKind::Delay(Duration::from_secs(3)),
            2,
        ),
        ("/api/v4/user", FaultKind::error_page(503), 1),
    ] {
        rig.fx
            .sim
            .inject(Fault::on(path, kind).method("GET").times(times));
    }
    wait_until("unknown checks", Duration::from_secs(100), || async {
        rig.sum("glwarden_checks_total", &["result=\"unknown\""])
            .await
            > unknown
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(100);
    while !rig.fx.sim.state()["faults"]
        .as_array()
        .is_none_or(|f| f.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "faults left after 100 s: {}\nsweeps: {}\nrequests: {}\n{}",
            rig.fx.sim.state()["faults"],
            rig.sweeps().await,
            rig.fx
                .sim
                .requests()
                .iter()
                .map(|r| format!(
                    "{} {} {} {}",
                    r.at.format("%T%.3f"),
                    r.method,
                    r.path,
                    r.status
                ))
                .collect::<Vec<_>>()
                .join("\n"),
            rig.daemon
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.fx.sim.set_latency(Duration::ZERO);
    rig.wait_sweeps(1.0, Duration::from_secs(60)).await;
    rig.wait_all_healthy("combined faults").await;
    assert_unharmed(&mut rig, &before, "combined faults", &[]).await;
    assert!(
        rig.sum("glwarden_sweeps_total", &["result=\"failed\""])
            .await
            >= 1.0
    );
    rig.stop().await;
}

// ---------------------------------------------------------------------------
// GitLab answering wrongly but plausibly

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_answering_404_for_everything_for_one_sweep() {
    let mut rig = rig(3, "").await;
    let before = baseline(&rig).await;
    rig.fx.sim.inject(Fault::everywhere(FaultKind::Status {
        code: 404,
        html: false,
    }));
    // Waits for the state it asserts, not for the checks counter: the
    // counter moves before the sweep has published the connection's state
    // (that read once failed on a loaded machine: left 0, right 1).
    wait_until(
        "the connection shown unknown under the outage",
        Duration::from_secs(30),
        || async {
            metric_sum(
                &rig.metrics().await,
                "glwarden_connection_state",
                &["state=\"unknown\""],
            ) == 1.0
        },
    )
    .await;
    // What the outage looks like from outside while it lasts.
    let text = rig.metrics().await;
    assert_eq!(
        metric_sum(&text, "glwarden_connection_up", &[]),
        1.0,
        "an unknown check does not flip connection_up"
    );
    assert!(
        metric_sum(
            &text,
            "glwarden_gitlab_requests_total",
            &["status_class=\"4xx\""]
        ) >= 1.0
    );
    rig.fx.sim.clear_faults();
    rig.wait_all_healthy("the 404 outage").await;
    assert_unharmed(&mut rig, &before, "404 for everything", &[]).await;
    rig.stop().await;
}

/// The harder variant: `/user` still answers, every project endpoint says 404
/// for one sweep (a GitLab whose database replica lost the projects).
#[tokio::test(flavor = "multi_thread")]
async fn project_endpoints_answering_404_for_one_sweep() {
    let mut rig = rig(3, "").await;
    let before = baseline(&rig).await;
    // One sweep's worth: every project's lookup answers 404 once (a 404
    // repository blocks its key and hook, so that is one request each).
    rig.fx.sim.inject(
        Fault::on(
            "/api/v4/projects/",
            FaultKind::Status {
                code: 404,
                html: false,
            },
        )
        .times(rig.projects.len() as u32),
    );
    wait_until(
        "every project answered 404 once",
        Duration::from_secs(30),
        || async {
            rig.fx
                .sim
                .requests()
                .iter()
                .filter(|r| r.status == 404)
                .count()
                >= rig.projects.len()
        },
    )
    .await;
    let sweeps = rig.sweeps().await;
    wait_until(
        "a sweep after the outage",
        Duration::from_secs(30),
        || async { rig.sweeps().await >= sweeps + 1.0 },
    )
    .await;
    rig.fx.sim.clear_faults();
    rig.wait_all_healthy("the project 404s").await;
    assert_unharmed(&mut rig, &before, "404 for every project", &[]).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_revoked_mid_sweep() {
    let mut rig = rig(6, "concurrency = 2\n").await;
    let before = baseline(&rig).await;
    rig.fx.sim.set_latency(Duration::from_millis(150));
    rig.fx.sim.clear_requests();
    wait_until("a sweep under way", Duration::from_secs(15), || async {
        rig.fx
            .sim
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/v4/projects/"))
            .count()
            >= 2
    })
    .await;
    rig.fx.sim.revoke_token(TOKEN);
    wait_until(
        "not_connected published",
        Duration::from_secs(30),
        || async {
            rig.sum("glwarden_connection_state", &["state=\"not_connected\""])
                .await
                == 1.0
        },
    )
    .await;
    rig.wait_sweeps(1.0, Duration::from_secs(30)).await;
    let text = rig.metrics().await;
    assert_eq!(metric_sum(&text, "glwarden_connection_up", &[]), 0.0);
    // Blocked, not broken: nothing alerts on the projects, nothing is repaired.
    let blocked = metric_sum(&text, "glwarden_components", &["state=\"blocked\""]);
    assert_eq!(blocked, 18.0, "{text}");
    assert_unharmed(
        &mut rig,
        &before,
        "token revoked mid-sweep",
        &["connection"],
    )
    .await;

    // A new token and SIGHUP: back to healthy, still without a repair.
    rig.fx.sim.set_latency(Duration::ZERO);
    let fresh = "glpat-fixture-SECRET-token-0002";
    rig.fx
        .sim
        .add_access_token(rig.fx.user, fresh, &["api"], None);
    std::fs::write(rig.fx.dir.path().join("token"), fresh).unwrap();
    rig.daemon.signal("HUP");
    rig.wait_all_healthy("a new token").await;
    assert_unharmed(&mut rig, &before, "after a new token", &["connection"]).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn project_renamed_mid_sweep() {
    let rig = rig(6, "concurrency = 2\n").await;
    let before = baseline(&rig).await;
    rig.fx.sim.set_latency(Duration::from_millis(150));
    rig.fx.sim.clear_requests();
    let last = rig.projects[5].id;
    wait_until("a sweep under way", Duration::from_secs(15), || async {
        rig.fx
            .sim
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/v4/projects/"))
            .count()
            >= 2
    })
    .await;
    rig.fx.sim.rename_project(last, "acme/renamed-mid-sweep");
    rig.fx.sim.set_latency(Duration::ZERO);
    // The rename is real: followed (policy `follow`), and nothing else moves.
    wait_until("the rename followed", Duration::from_secs(30), || async {
        rig.metrics()
            .await
            .contains("project=\"acme/renamed-mid-sweep\"")
            || db_facts(&rig.fx.db_path())
                .await
                .events
                .iter()
                .any(|(_, a)| a == "follow_rename")
    })
    .await;
    rig.wait_all_healthy("the rename").await;
    let now = db_facts(&rig.fx.db_path()).await;
    let new_events: Vec<_> = now
        .events
        .iter()
        .filter(|e| !before.db.events.contains(e))
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(new_events, vec!["follow_rename".to_owned()]);
    assert_eq!(writes(&rig.fx), Vec::<String>::new());
    assert_eq!(gitlab_counts(&rig.fx, &rig.projects), before.counts);
    assert_eq!(now.integrity, "ok");
    assert_eq!(now.secrets, before.db.secrets);
    for ((component, subject), state) in &before.db.states {
        if component == "deploy_key" || component == "webhook" {
            assert_eq!(now.states.get(&(component.clone(), *subject)), Some(state));
        }
    }
    rig.stop().await;
}

// ---------------------------------------------------------------------------
// pagination: a proxy in front of the simulator rewrites list answers

#[derive(Debug, Clone, Copy, PartialEq)]
enum Paging {
    Pass,
    /// The `next` link and `x-next-page` dropped: the list seems to end after page 1.
    EndEarly,
    /// The `next` link points back to the first page.
    Loop,
}

struct Proxy {
    upstream: String,
    me: String,
    mode: Mutex<Paging>,
    http: reqwest::Client,
}

fn is_listing(path: &str) -> bool {
    path.starts_with("/api/v4/projects/")
        && (path.ends_with("/hooks") || path.ends_with("/deploy_keys"))
}

async fn proxy_handler(
    axum::extract::State(p): axum::extract::State<Arc<Proxy>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    let upstream = p
        .http
        .request(parts.method.clone(), format!("{}{}", p.upstream, parts.uri))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(upstream) = upstream else {
        return axum::http::Response::builder()
            .status(502)
            .body(axum::body::Body::from("proxy: upstream failed"))
            .unwrap();
    };
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    let bytes = upstream.bytes().await.unwrap_or_default();
    headers.remove("content-length");
    headers.remove("transfer-encoding");
    let mode = *p.mode.lock().unwrap();
    if is_listing(&path) && parts.method == "GET" {
        match mode {
            Paging::Pass => {}
            Paging::EndEarly => {
                headers.remove("link");
                headers.remove("x-next-page");
            }
            Paging::Loop => {
                let first: Vec<String> = query
                    .split('&')
                    .filter(|kv| !kv.starts_with("page="))
                    .map(str::to_owned)
                    .collect();
                let url = format!("{}{path}?{}&page=1", p.me, first.join("&"));
                headers.insert("link", format!("<{url}>; rel=\"next\"").parse().unwrap());
                headers.insert("x-next-page", "1".parse().unwrap());
            }
        }
    }
    let mut resp = axum::http::Response::builder().status(status);
    for (k, v) in &headers {
        resp = resp.header(k, v);
    }
    resp.body(axum::body::Body::from(bytes)).unwrap()
}

async fn start_proxy(upstream: String, mode: Paging) -> Arc<Proxy> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = format!("http://{}", listener.local_addr().unwrap());
    let proxy = Arc::new(Proxy {
        upstream,
        me,
        mode: Mutex::new(mode),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new()
        .fallback(proxy_handler)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    proxy
}

/// A project whose key and hook of ours sit on the second page (after 100 others).
fn connect_behind_100(fx: &Fixture, path: &str) -> Connected {
    let id = fx.sim.add_project(path);
    fx.sim.set_member(id, fx.user, 40);
    for i in 0..100 {
        let other = generate_ed25519(&format!("other {i}")).unwrap();
        fx.sim.add_deploy_key(
            id,
            &format!("other-{i}"),
            &other.public_openssh,
            false,
            None,
        );
        fx.sim.add_hook(
            id,
            HookSpec {
                url: format!("https://other.example.com/{i}"),
                ..Default::default()
            },
        );
    }
    let key = generate_ed25519("glwarden test").unwrap();
    fx.sim
        .add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
    let hook_id = fx.sim.add_hook(
        id,
        HookSpec {
            url: Fixture::hook_url(id),
            push_events: true,
            tag_push_events: true,
            merge_requests_events: true,
            enable_ssl_verification: true,
            token: Some("hook-secret".into()),
        },
    );
    Connected { id, key, hook_id }
}

/// A daemon behind the proxy, started with the proxy already in `mode`: the
/// first sweep (which has no owned ids yet) must walk the lists.
async fn paging_rig(mode: Paging) -> (Fixture, Vec<Connected>, Arc<Proxy>, DaemonProcess) {
    let fx = Fixture::new().await;
    let projects = vec![connect_behind_100(&fx, "acme/crowded")];
    let proxy = start_proxy(fx.sim.base_url(), mode).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let sim_url = fx.sim.base_url();
    let me = proxy.me.clone();
    let config = write_daemon_config(&fx, &projects, "", &listen, |t| t.replace(&sim_url, &me));
    let counts = gitlab_counts(&fx, &projects);
    assert_eq!(counts, vec![(101, 101)]);
    let daemon = fx.start_daemon(&config, &listen).await;
    (fx, projects, proxy, daemon)
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_that_loops() {
    let (fx, projects, proxy, mut daemon) = paging_rig(Paging::Loop).await;
    daemon_wait_sweeps(&daemon, 2.0).await;
    let text = daemon.metrics().await;
    assert_eq!(
        metric_sum(
            &text,
            "glwarden_components",
            &["component=\"webhook\"", "state=\"unknown\""]
        ),
        1.0,
        "a looping list decides nothing: {text}"
    );
    assert_eq!(writes(&fx), Vec::<String>::new());
    assert_eq!(gitlab_counts(&fx, &projects), vec![(101, 101)]);
    *proxy.mode.lock().unwrap() = Paging::Pass;
    wait_until(
        "healthy through honest pages",
        Duration::from_secs(30),
        || async {
            let t = daemon.metrics().await;
            metric_sum(&t, "glwarden_components", &["state=\"healthy\""]) == 2.0
        },
    )
    .await;
    assert_eq!(writes(&fx), Vec::<String>::new());
    assert_eq!(gitlab_counts(&fx, &projects), vec![(101, 101)]);
    let facts = db_facts(&fx.db_path()).await;
    assert_eq!(facts.integrity, "ok");
    assert!(facts.events.is_empty(), "{:?}", facts.events);
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_that_ends_early() {
    let (fx, projects, _proxy, mut daemon) = paging_rig(Paging::EndEarly).await;
    daemon_wait_sweeps(&daemon, 2.0).await;
    let facts = db_facts(&fx.db_path()).await;
    let log = daemon.log();
    assert!(daemon.stop().await.success());
    assert_eq!(
        writes(&fx),
        Vec::<String>::new(),
        "a list cut short (x-total-pages 2, no next link) made glwarden write to GitLab"
    );
    assert_eq!(
        gitlab_counts(&fx, &projects),
        vec![(101, 101)],
        "duplicate key or hook created"
    );
    assert!(
        facts.events.is_empty(),
        "repairs ran: {:?}\n{log}",
        facts.events
    );
    for ((component, _), state) in &facts.states {
        if component == "deploy_key" || component == "webhook" {
            assert_ne!(
                state.as_deref(),
                Some("missing"),
                "{component} stored as missing from a list cut short"
            );
        }
    }
}

async fn daemon_wait_sweeps(daemon: &DaemonProcess, n: f64) {
    let sweeps = || async { metric_sum(&daemon.metrics().await, "glwarden_sweeps_total", &[]) };
    let start = sweeps().await;
    wait_until("sweeps", Duration::from_secs(30), || async {
        sweeps().await >= start + n
    })
    .await;
}

// ---------------------------------------------------------------------------
// the database

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_file_locked_by_another_process() {
    let mut rig = rig(3, "").await;
    let before = baseline(&rig).await;
    let failed = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(rig.fx.db_path());
    let mut locker = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    sqlx::query("UPDATE repair_state SET reason = reason WHERE id = 1")
        .execute(&mut locker)
        .await
        .unwrap();
    // Writes wait out the 5 s busy timeout, then the sweep fails.
    wait_until(
        "a sweep failed on the lock",
        Duration::from_secs(40),
        || async {
            rig.sum("glwarden_sweeps_total", &["result=\"failed\""])
                .await
                > failed
        },
    )
    .await;
    assert!(rig.alive(), "{}", rig.daemon.log());
    assert_eq!(rig.daemon.get("/healthz").await.0, 200);
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;
    rig.wait_all_healthy("the lock").await;
    assert_unharmed(&mut rig, &before, "database locked", &[]).await;
    rig.stop().await;
}

/// Makes files immutable (writes through open descriptors fail with EPERM)
/// and undoes it on drop.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Option<Immutable> {
        for p in &paths {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Immutable(paths.clone());
                return None;
            }
        }
        Some(Immutable(paths))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_becomes_read_only() {
    let mut rig = rig(3, "").await;
    let before = baseline(&rig).await;
    let failed = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let db = rig.fx.db_path();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let Some(guard) = Immutable::set(vec![db.clone(), wal]) else {
        panic!("chattr +i is not available here: this row needs root and ext4/xfs");
    };
    wait_until(
        "a sweep failed on the read-only store",
        Duration::from_secs(40),
        || async {
            rig.sum("glwarden_sweeps_total", &["result=\"failed\""])
                .await
                > failed
        },
    )
    .await;
    assert!(rig.alive(), "{}", rig.daemon.log());
    assert_eq!(rig.daemon.get("/healthz").await.0, 200);
    drop(guard);
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;
    rig.wait_all_healthy("the read-only store").await;
    assert_unharmed(&mut rig, &before, "read-only database", &[]).await;
    rig.stop().await;
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
            .then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.flush();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn database_disk_full() {
    let fx_dir_probe = tempfile::tempdir().unwrap();
    let mnt = fx_dir_probe.path().join("small");
    let Some(tmpfs) = Tmpfs::mount(mnt.clone(), "8m") else {
        panic!("cannot mount a tmpfs here (needs CAP_SYS_ADMIN): the full-disk row cannot run");
    };
    let db = mnt.join("glwarden.db");
    let db_str = db.display().to_string();
    let mut rig = rig_at(3, "", Some(db.clone()), |t| {
        let start = t.find("path = ").unwrap();
        let end = start + t[start..].find('\n').unwrap();
        format!("{}path = {db_str:?}{}", &t[..start], &t[end..])
    })
    .await;
    let before = baseline(&rig).await;
    let failed = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let filler = fill(&mnt);
    let sweeps = rig.sweeps().await;
    rig.wait_sweeps(3.0, Duration::from_secs(60)).await;
    let failed_now = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let log = rig.daemon.log();
    assert!(rig.alive(), "{log}");
    assert_eq!(rig.daemon.get("/healthz").await.0, 200);
    std::fs::remove_file(&filler).unwrap();
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;
    rig.wait_all_healthy("the full disk").await;
    assert_unharmed(&mut rig, &before, "full disk", &[]).await;
    assert!(
        failed_now > failed,
        "the full disk never made a sweep fail ({sweeps} sweeps before): the fault did not bite\n{log}"
    );
    rig.stop().await;
    drop(tmpfs);
}

// ---------------------------------------------------------------------------
// the process

fn sigkill(d: &mut DaemonProcess) {
    d.child.kill().unwrap();
    let status = d.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_sweep_then_restart() {
    let mut rig = rig(6, "concurrency = 2\n").await;
    let before = baseline(&rig).await;
    for round in 0..3 {
        rig.fx.sim.set_latency(Duration::from_millis(150));
        rig.fx.sim.clear_requests();
        wait_until("a sweep under way", Duration::from_secs(15), || async {
            rig.fx
                .sim
                .requests()
                .iter()
                .filter(|r| r.path.starts_with("/api/v4/projects/"))
                .count()
                >= 2 + round
        })
        .await;
        sigkill(&mut rig.daemon);
        rig.fx.sim.set_latency(Duration::ZERO);
        let facts = db_facts(&rig.fx.db_path()).await;
        assert_eq!(facts.integrity, "ok", "after SIGKILL {round}");
        assert_eq!(facts.secrets, before.db.secrets);
        rig.daemon = rig.fx.start_daemon(&rig.config, &rig.listen).await;
        rig.wait_all_healthy("a SIGKILL").await;
    }
    assert_unharmed(&mut rig, &before, "SIGKILL mid-sweep", &[]).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_repair_then_restart() {
    let mut rig = rig(3, "").await;
    let p = rig.projects[1].id;
    let ours = rig.fx.sim.deploy_keys(p)[0].id;
    // A genuine breakage: the key deleted by hand. The confirming read of the
    // new key is slowed so that the process dies after GitLab created it and
    // before glwarden saw it confirmed.
    rig.fx.sim.clear_requests();
    rig.fx.sim.inject(
        Fault::on(
            format!("/projects/{p}/deploy_keys/"),
            FaultKind::Delay(Duration::from_millis(1500)),
        )
        .method("GET"),
    );
    rig.fx.sim.remove_deploy_key(p, ours);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reqs = rig.fx.sim.requests();
        let created = reqs.iter().position(|r| {
            r.method == "POST" && r.path == format!("/api/v4/projects/{p}/deploy_keys")
        });
        if let Some(i) = created {
            if reqs[i + 1..].iter().any(|r| {
                r.method == "GET" && r.path.contains(&format!("/projects/{p}/deploy_keys/"))
            }) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no repair under way: {reqs:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(&mut rig.daemon);
    rig.fx.sim.clear_faults();
    let facts = db_facts(&rig.fx.db_path()).await;
    assert_eq!(facts.integrity, "ok");
    assert_eq!(rig.fx.sim.deploy_keys(p).len(), 1, "GitLab created the key");
    rig.daemon = rig.fx.start_daemon(&rig.config, &rig.listen).await;
    rig.wait_all_healthy("SIGKILL mid-repair").await;
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;

    // Exactly one key of ours, and custody holds its private key.
    let keys = rig.fx.sim.deploy_keys(p);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let store = glwarden::store::Store::open(&rig.fx.db_path())
        .await
        .unwrap();
    assert!(
        store.journal().await.unwrap().is_empty(),
        "journal finished"
    );
    let row = stored_project(&store, p).await;
    assert_eq!(
        row.fingerprint.as_deref(),
        Some(keys[0].ssh_fingerprint().as_str())
    );
    let custody = glwarden::custody::Custody::new(
        Some(&secrecy::SecretString::from(MASTER_KEY.to_owned())),
        false,
    )
    .unwrap();
    let sealed = store
        .project_secret(row.id, glwarden::custody::SecretKind::DeployKey)
        .await
        .unwrap()
        .expect("private key in custody");
    let private = custody
        .open(row.id, glwarden::custody::SecretKind::DeployKey, &sealed)
        .unwrap();
    let key = ssh_key::PrivateKey::from_openssh(&private[..]).unwrap();
    assert_eq!(
        glwarden::keys::fingerprint_of(&key.public_key().to_openssh().unwrap()).unwrap(),
        keys[0].ssh_fingerprint()
    );
    let regenerations = store
        .events(None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "regenerate_deploy_key")
        .count();
    store.close().await;
    assert!(regenerations >= 1);
    assert_eq!(db_facts(&rig.fx.db_path()).await.integrity, "ok");
    let hooks: Vec<usize> = rig
        .projects
        .iter()
        .map(|p| rig.fx.sim.hooks(p.id).len())
        .collect();
    assert_eq!(hooks, vec![1, 1, 1], "no hook duplicated");
    rig.stop().await;
}

// ---------------------------------------------------------------------------
// the clock

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The wall clock of the daemon jumps back two hours, then forward a day
/// (libfaketime; the monotonic clock is left alone, as NTP would).
#[tokio::test(flavor = "multi_thread")]
async fn wall_clock_jumps() {
    if !Path::new(FAKETIME).exists() {
        panic!("libfaketime is not installed ({FAKETIME}): apt-get install faketime");
    }
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..3).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = write_daemon_config(&fx, &projects, "", &listen, |t| t);
    let clock = fx.dir.path().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let stderr_path = fx.dir.path().join("daemon-clock.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_glwarden"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "glwarden=debug")
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut rig = Rig {
        fx,
        projects,
        config,
        listen,
        daemon: DaemonProcess {
            child,
            listen: String::new(),
            stderr_path,
        },
        db: PathBuf::new(),
    };
    rig.db = rig.fx.db_path();
    rig.daemon.listen = rig.listen.clone();
    wait_until(
        "ready under libfaketime",
        Duration::from_secs(30),
        || async {
            matches!(
                reqwest::get(format!("http://{}/readyz", rig.listen)).await,
                Ok(r) if r.status() == 200
            )
        },
    )
    .await;
    rig.wait_all_healthy("start").await;
    let before = Baseline {
        db: db_facts(&rig.fx.db_path()).await,
        counts: gitlab_counts(&rig.fx, &rig.projects),
    };
    rig.fx.sim.clear_requests();
    for (jump, label) in [
        ("+0", "nowhere (libfaketime loaded, no jump)"),
        ("-2h", "back two hours"),
        ("+1d", "forward a day"),
    ] {
        std::fs::write(&clock, format!("{jump}\n")).unwrap();
        let start = rig.sweeps().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.sweeps().await < start + 3.0 {
            if Instant::now() > deadline {
                let log = rig.daemon.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "after the wall clock jumped {label}, sweeps stopped: {} in 20 s \
                     (the process is alive: {}, /healthz answers {})\n{}",
                    rig.sweeps().await - start,
                    rig.alive(),
                    rig.daemon.get("/healthz").await.0,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_until(
            &format!("/healthz after a jump {label}"),
            Duration::from_secs(15),
            || async { rig.daemon.get("/healthz").await.0 == 200 },
        )
        .await;
        rig.wait_all_healthy(label).await;
        eprintln!("clock jump ok: {label}");
    }
    assert_unharmed(&mut rig, &before, "clock jumps", &[]).await;
    rig.stop().await;
}
