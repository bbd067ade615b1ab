//! The clock: the daemon's wall clock jumps back and forward (libfaketime).

use std::path::Path;
use std::time::{Duration, Instant};

use super::rig::*;
use glwarden_testkit::*;

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
    let listen = free_listen();
    let config = write_daemon_config(&fx, &projects, "", &listen, |c| c);
    let clock = fx.dir.path().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let daemon = fx
        .start_daemon_with(&config, &listen, |cmd| {
            cmd.env("LD_PRELOAD", FAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &clock)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        })
        .await;
    let db = fx.db_path();
    let mut rig = Rig {
        fx,
        projects,
        config,
        listen,
        daemon,
        db,
    };
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
