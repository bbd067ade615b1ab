//! The daemon under test: `glwarden run` in the test's own process
//! ([`AppDaemon`]), or the `glwarden` binary as a child process
//! ([`DaemonProcess`]) where the test needs a process (SIGKILL, signals,
//! its log, a faked clock); and one-shot commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::fixture::Fixture;

/// The `glwarden` binary cargo built beside the running test or benchmark.
/// `env!("CARGO_BIN_EXE_glwarden")` is set only when compiling glwarden's
/// own tests and benches, not this library; they live in `target/<profile>/`
/// and their executables in its `deps/`, and cargo builds the binary first.
pub fn glwarden_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("glwarden");
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test` or `cargo bench`",
        bin.display()
    );
    bin
}

/// `glwarden <args>`, with no `RUST_LOG` or `GLWARDEN_CONFIG` from the
/// environment the tests run in.
pub fn glwarden(args: &[&str]) -> Command {
    let mut cmd = Command::new(glwarden_bin());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("GLWARDEN_CONFIG");
    cmd
}

/// Runs the binary off the async runtime's worker threads (the simulator
/// lives on them and must keep answering).
pub async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
        .await
        .unwrap()
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:<a free port>`.
pub fn free_listen() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A `glwarden run` child process, killed when dropped.
pub struct DaemonProcess {
    pub child: std::process::Child,
    pub listen: String,
    /// Its stderr, when captured to a file ([`Fixture::start_daemon`]).
    pub stderr_path: PathBuf,
}

impl DaemonProcess {
    /// Spawns `glwarden --config <config> run` after `setup` has had its say
    /// on the command (environment, stdio); returns at once.
    pub fn spawn(
        config: &Path,
        listen: &str,
        stderr_path: PathBuf,
        setup: impl FnOnce(&mut Command),
    ) -> DaemonProcess {
        let mut cmd = Command::new(glwarden_bin());
        cmd.args(["--config", config.to_str().unwrap(), "run"]);
        setup(&mut cmd);
        DaemonProcess {
            child: cmd.spawn().expect("daemon starts"),
            listen: listen.to_owned(),
            stderr_path,
        }
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn ready(&self) -> bool {
        ready(&self.listen).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        get(&self.listen, path).await
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// The value of one sample line of `/metrics` (exact name and labels as rendered).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (at most 60 s) for the exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
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

impl Fixture {
    /// Starts `glwarden run` on `config` and waits until `/readyz` answers 200.
    pub async fn start_daemon(&self, config: &Path, listen: &str) -> DaemonProcess {
        self.start_daemon_logging(config, listen, "glwarden=debug")
            .await
    }

    /// [`Fixture::start_daemon`] with `RUST_LOG` set to `filter`.
    pub async fn start_daemon_logging(
        &self,
        config: &Path,
        listen: &str,
        filter: &str,
    ) -> DaemonProcess {
        self.start_daemon_with(config, listen, |cmd| {
            cmd.env("RUST_LOG", filter);
        })
        .await
    }

    /// [`Fixture::start_daemon`] after `setup` has had its say on the
    /// command; its stderr goes to a log file in the fixture's directory.
    pub async fn start_daemon_with(
        &self,
        config: &Path,
        listen: &str,
        setup: impl FnOnce(&mut Command),
    ) -> DaemonProcess {
        let stderr_path = self
            .dir
            .path()
            .join(format!("daemon-{}.log", crate::free_port()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let daemon = DaemonProcess::spawn(config, listen, stderr_path, |cmd| {
            cmd.env("RUST_LOG", "glwarden=debug")
                .stdout(std::process::Stdio::null())
                .stderr(stderr);
            setup(cmd);
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon.ready().await {
            assert!(
                Instant::now() < deadline,
                "daemon not ready in 30s: {}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        daemon
    }
}

/// `glwarden run` inside the test's own process: [`Daemon::build`] on the
/// configuration file, then [`Daemon::run_until`] on a task, with a
/// shutdown and a reload the test triggers (the command line wires
/// SIGTERM/SIGINT and SIGHUP to the same two).
///
/// [`Daemon::build`]: glwarden::daemon::Daemon::build
/// [`Daemon::run_until`]: glwarden::daemon::Daemon::run_until
pub struct AppDaemon {
    pub listen: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    reload: tokio::sync::mpsc::Sender<()>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl AppDaemon {
    /// Builds and runs the daemon on `config`; returns once `/readyz`
    /// answers 200.
    pub async fn start(config: &Path) -> AppDaemon {
        let cfg = glwarden::config::Config::load(config).expect("the test's config loads");
        let (daemon, addr) = glwarden::daemon::Daemon::build(std::sync::Arc::new(cfg))
            .await
            .expect("the daemon builds");
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(daemon.run_until(
            async {
                let _ = stop.await;
            },
            reloads,
        ));
        let app = AppDaemon {
            listen: addr.to_string(),
            shutdown: Some(shutdown),
            reload,
            task: Some(task),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(&app.listen).await {
            assert!(Instant::now() < deadline, "daemon not ready in 30s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        get(&self.listen, path).await
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// The value of one sample line of `/metrics` (exact name and labels as rendered).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().await, series)
    }

    /// What SIGHUP does: the configuration file is read again before the next sweep.
    pub async fn reload(&self) {
        self.reload.send(()).await.expect("the daemon is running");
    }

    /// What SIGTERM does; returns what `run_until` returned (at most 60 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the daemon stops within 60 s")
            .expect("the daemon's task does not panic")
    }
}

impl Drop for AppDaemon {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Fixture {
    /// [`AppDaemon::start`]: the daemon in this process.
    pub async fn spawn_daemon(&self, config: &Path) -> AppDaemon {
        AppDaemon::start(config).await
    }
}

/// Whether `/readyz` at `listen` answers 200 now.
async fn ready(listen: &str) -> bool {
    matches!(
        reqwest::get(format!("http://{listen}/readyz")).await,
        Ok(r) if r.status() == 200
    )
}

async fn get(listen: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{listen}{path}"))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// One sample line's value in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
