//! The `glwarden` binary: one-shot commands, and `glwarden run` as a child
//! process whose endpoints a test reads.

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
        matches!(
            reqwest::get(format!("http://{}/readyz", self.listen)).await,
            Ok(r) if r.status() == 200
        )
    }

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
