//! Shared fixture for the integration tests: a simulator with one user and
//! token, projects connected with a key and hook of ours, and a config file
//! pointing glwarden at it.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use gitlab_sim::{HookSpec, Sim, SimVersion};
use glwarden::check::{Checker, Selection};
use glwarden::config::Config;
use glwarden::health::{Component, State};
use glwarden::keys::{GeneratedKey, generate_ed25519};
use glwarden::store::Store;

pub const TOKEN: &str = "glpat-fixture-SECRET-token-0001";
pub const HOOK_TEMPLATE: &str = "https://ci.example.com/hooks/{id}";

pub struct Fixture {
    pub sim: Sim,
    /// The GitLab release the simulator acts as (`GLWARDEN_SIM_VERSION`).
    pub version: SimVersion,
    pub dir: tempfile::TempDir,
    pub user: u64,
    /// The connection's request budget in configs written from now on.
    pub requests_per_minute: std::sync::atomic::AtomicU32,
}

/// A project connected at the simulator.
pub struct Connected {
    pub id: u64,
    pub key: GeneratedKey,
    pub hook_id: u64,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let sim = Sim::start().await.expect("simulator starts");
        // .ci/run runs the check and repair suites once per GitLab release
        // the simulator can act as (docs/gitlab-contract.md).
        let version: SimVersion = std::env::var("GLWARDEN_SIM_VERSION")
            .map(|v| v.parse().expect("GLWARDEN_SIM_VERSION"))
            .unwrap_or_default();
        sim.set_version(version);
        let user = sim.add_user("ci-bot");
        sim.add_access_token(user, TOKEN, &["api"], None);
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&token_file)
            .unwrap();
        f.write_all(TOKEN.as_bytes()).unwrap();
        Fixture {
            sim,
            version,
            dir,
            user,
            requests_per_minute: 60_000.into(),
        }
    }

    pub fn hook_url(id: u64) -> String {
        HOOK_TEMPLATE.replace("{id}", &id.to_string())
    }

    /// A project where the fixture's user is Maintainer, with our key and hook.
    pub fn connect(&self, path: &str) -> Connected {
        let id = self.sim.add_project(path);
        self.sim.set_member(id, self.user, 40);
        let key = generate_ed25519("glwarden test").unwrap();
        self.sim
            .add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
        let hook_id = self.sim.add_hook(
            id,
            HookSpec {
                url: Self::hook_url(id),
                push_events: true,
                tag_push_events: true,
                merge_requests_events: true,
                enable_ssl_verification: true,
                token: Some("hook-secret".into()),
            },
        );
        Connected { id, key, hook_id }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("glwarden.db")
    }

    /// Writes a config listing `projects` by id (with their public keys) and `extra` TOML.
    pub fn write_config(&self, projects: &[&Connected], extra: &str) -> PathBuf {
        self.write_config_full(projects, "", extra)
    }

    /// Like `write_config`, with more lines for the `[check]` section.
    pub fn write_config_full(
        &self,
        projects: &[&Connected],
        check_lines: &str,
        extra: &str,
    ) -> PathBuf {
        let mut text = format!(
            "[store]\npath = {:?}\n\n[check]\nrequest_timeout_seconds = 2\nmax_rate_limit_wait_seconds = 10\n{check_lines}\n\
             [expect]\nwebhook_url = {HOOK_TEMPLATE:?}\n\n[connections.main]\nurl = {:?}\ntoken_file = {:?}\nrequests_per_minute = {}\n\n",
            self.db_path().display().to_string(),
            self.sim.base_url(),
            self.dir.path().join("token").display().to_string(),
            self.requests_per_minute
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        for p in projects {
            text.push_str(&format!(
                "[[projects]]\nconnection = \"main\"\nid = {}\ndeploy_key = {:?}\n\n",
                p.id, p.key.public_openssh
            ));
        }
        text.push_str(extra);
        let file = self.dir.path().join("glwarden.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    pub async fn checker(&self, config: &std::path::Path) -> (Checker, Store) {
        let cfg = Arc::new(Config::load(config).expect("config loads"));
        let store = Store::open(&cfg.raw.store.path).await.unwrap();
        (Checker::new(cfg, store.clone(), None).await.unwrap(), store)
    }

    /// Runs a check of everything.
    pub async fn check(&self, checker: &Checker) {
        checker.run(&Selection::All).await.expect("check runs");
    }
}

/// The GitLab ids of the projects in the inventory.
/// Waits for `cond` to hold, polling every 50 ms; fails naming `what` after
/// `timeout`. Tests wait for the condition they assert, never for a time.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The inventory's row of the active project with this GitLab id.
pub async fn stored_project(store: &Store, gitlab_id: u64) -> glwarden::store::ProjectRow {
    store
        .active_projects()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.gitlab_id == gitlab_id as i64)
        .unwrap_or_else(|| panic!("project {gitlab_id} is in the inventory"))
}

pub async fn active_ids(store: &Store) -> Vec<i64> {
    store
        .active_projects()
        .await
        .unwrap()
        .iter()
        .map(|p| p.gitlab_id)
        .collect()
}

/// The shown states of a project's components, by GitLab id.
pub async fn states(store: &Store, gitlab_id: u64) -> [State; 3] {
    let report = glwarden::report::build(store, &Selection::One(gitlab_id.to_string()))
        .await
        .unwrap();
    let p = report
        .projects
        .first()
        .expect("project is in the inventory");
    [p.repository.state, p.deploy_key.state, p.webhook.state]
}

/// The shown state and detail of one component.
pub async fn component(store: &Store, gitlab_id: u64, component: Component) -> (State, String) {
    let report = glwarden::report::build(store, &Selection::One(gitlab_id.to_string()))
        .await
        .unwrap();
    let p = report
        .projects
        .first()
        .expect("project is in the inventory");
    let line = match component {
        Component::Repository => &p.repository,
        Component::DeployKey => &p.deploy_key,
        Component::Webhook => &p.webhook,
        Component::Connection => panic!("use connection_state"),
    };
    (line.state, line.detail.clone())
}

pub async fn connection_state(store: &Store) -> State {
    let report = glwarden::report::build(store, &Selection::All)
        .await
        .unwrap();
    report.connections[0].health.state
}

/// Sum of every sample of `name` whose labels contain all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// States that mean a component is broken (as stored in `health.state`).
pub const BROKEN: &[&str] = &[
    "not_connected",
    "moved",
    "archived",
    "pending_deletion",
    "access_lost",
    "not_found",
    "missing",
    "mismatch",
    "expired",
    "writable",
    "misconfigured",
    "disabled",
    "failing",
];

pub const HEALTHY: [State; 3] = [State::Ok, State::Healthy, State::Healthy];

/// A `glwarden run` child process.
pub struct DaemonProcess {
    pub child: std::process::Child,
    pub listen: String,
    pub stderr_path: PathBuf,
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fixture {
    /// `[schedule]` and `[http]` sections for a fast daemon; returns them with the listen address.
    pub fn daemon_sections(cron: &str, spread: f64) -> (String, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        (
            format!(
                "[schedule]\ncron = {cron:?}\nspread = {spread}\nshutdown_grace_seconds = 10\n\n[http]\nlisten = {listen:?}\n\n"
            ),
            listen,
        )
    }

    /// Starts `glwarden run` on `config` and waits until `/readyz` answers 200.
    pub async fn start_daemon(&self, config: &std::path::Path, listen: &str) -> DaemonProcess {
        self.start_daemon_logging(config, listen, "glwarden=debug")
            .await
    }

    /// [`Fixture::start_daemon`] with `RUST_LOG` set to `filter`.
    pub async fn start_daemon_logging(
        &self,
        config: &std::path::Path,
        listen: &str,
        filter: &str,
    ) -> DaemonProcess {
        let stderr_path = self.dir.path().join(format!("daemon-{}.log", free_port()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_glwarden"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", filter)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("daemon starts");
        let daemon = DaemonProcess {
            child,
            listen: listen.to_owned(),
            stderr_path,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("http://{listen}/readyz")).await {
                if r.status() == 200 {
                    return daemon;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon not ready in 30s: {}",
                daemon.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl DaemonProcess {
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.listen))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// The value of one sample line of `/metrics` (exact name and labels as rendered).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (at most 60 s) for the exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not stop: {}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
