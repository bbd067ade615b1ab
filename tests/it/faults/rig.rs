//! The rig every family of the fault matrix runs on (a daemon over connected
//! projects, repairs on `auto`), and what must survive any fault: the
//! baseline taken before it and the invariants checked after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use glwarden_testkit::*;
use sqlx::Connection;

pub const CRON: &str = "*/1 * * * * *";

// ---------------------------------------------------------------------------
// rig

/// A running daemon over `n` connected projects, repairs on `auto`.
pub struct Rig {
    pub fx: Fixture,
    pub projects: Vec<Connected>,
    pub config: PathBuf,
    pub listen: String,
    pub daemon: DaemonProcess,
    /// The database file (the fixture's, unless the config moved it).
    pub db: PathBuf,
}

/// Writes the daemon config: sweeps every second, keys and hooks on `auto`
/// (confirmed after one check, renames followed), custody; `check_lines` in
/// `[check]`; `edit` may change more (the store's path, GitLab's URL).
pub fn write_daemon_config(
    fx: &Fixture,
    projects: &[Connected],
    check_lines: &str,
    listen: &str,
    edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> PathBuf {
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx
        .config(&refs)
        .toml(&format!("[check]\n{check_lines}"))
        .daemon(CRON, 0.5)
        .listen_on(listen)
        .repairs(Policy::Auto, 1)
        .master_key_file(&fx.master_key_file());
    edit(config).write()
}

/// `n` projects; project 0 starts without our key and hook, so that the first
/// sweep repairs it and custody holds a private key and a hook secret. Returns
/// once every component is healthy.
pub async fn rig(n: usize, check_lines: &str) -> Rig {
    rig_at(n, check_lines, None, |c| c).await
}

pub async fn rig_at(
    n: usize,
    check_lines: &str,
    db: Option<PathBuf>,
    edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Rig {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..n).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    fx.sim
        .remove_deploy_key(projects[0].id, key_id(&fx, &projects[0]));
    fx.sim.remove_hook(projects[0].id, projects[0].hook_id);
    let listen = free_listen();
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
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.listen)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }

    pub async fn sweeps(&self) -> f64 {
        self.sum("glwarden_sweeps_total", &[]).await
    }

    /// Waits until `n` more sweeps have finished.
    pub async fn wait_sweeps(&self, n: f64, timeout: Duration) {
        let start = self.sweeps().await;
        wait_until(&format!("{n} more sweeps"), timeout, || async {
            self.sweeps().await >= start + n
        })
        .await;
    }

    /// Every component healthy in the published metrics.
    pub async fn all_healthy(&self) -> bool {
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

    pub async fn wait_all_healthy(&self, after: &str) {
        wait_until(
            &format!("every component healthy again after {after}"),
            Duration::from_secs(100),
            || async { self.all_healthy().await },
        )
        .await;
    }

    pub fn alive(&mut self) -> bool {
        self.daemon.child.try_wait().unwrap().is_none()
    }

    /// Stops (SIGTERM) and expects exit 0.
    pub async fn stop(mut self) {
        let status = self.daemon.stop().await;
        assert!(status.success(), "exit {status:?}: {}", self.daemon.log());
    }
}

// ---------------------------------------------------------------------------
// what must survive

pub type SealedRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// What the database holds that must survive any fault.
#[derive(Debug, Clone, PartialEq)]
pub struct DbFacts {
    pub integrity: String,
    pub transitions: i64,
    /// (project id, sealed private key, sealed hook token)
    pub secrets: Vec<SealedRow>,
    /// (id, action)
    pub events: Vec<(i64, String)>,
    /// (id, component, subject, to_state)
    pub history: Vec<(i64, String, i64, String)>,
    /// (component, subject) -> last definite state
    pub states: BTreeMap<(String, i64), Option<String>>,
}

pub async fn db_facts(db: &Path) -> DbFacts {
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
pub fn gitlab_counts(fx: &Fixture, projects: &[Connected]) -> Vec<(usize, usize)> {
    projects
        .iter()
        .map(|p| (fx.sim.deploy_keys(p.id).len(), fx.sim.hooks(p.id).len()))
        .collect()
}

/// The requests that changed something at GitLab, with GitLab's answer.
pub fn writes_answered(fx: &Fixture) -> Vec<String> {
    fx.sim
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// Taken when everything is healthy, before a fault; the request log is cleared.
pub struct Baseline {
    pub db: DbFacts,
    pub counts: Vec<(usize, usize)>,
}

pub async fn baseline(rig: &Rig) -> Baseline {
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
pub async fn assert_unharmed(rig: &mut Rig, before: &Baseline, fault: &str, except: &[&str]) {
    assert!(
        rig.alive(),
        "{fault}: the daemon died: {}",
        rig.daemon.log()
    );
    assert_eq!(rig.daemon.get("/healthz").await.0, 200, "{fault}: /healthz");
    let (code, body) = rig.daemon.get("/readyz").await;
    assert_eq!(code, 200, "{fault}: /readyz says {body}");
    assert_eq!(
        writes_answered(&rig.fx),
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
