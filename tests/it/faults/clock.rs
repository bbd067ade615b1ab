//! The clock: the daemon's wall clock jumps back and forward (libfaketime).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::rig::*;
use crate::common::*;

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
