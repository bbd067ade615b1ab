//! GitLab answering badly (5xx pages, hangs, resets, slow bodies, malformed
//! JSON, 429 storms, all of them at once), one fault at a time from a table.

use std::time::{Duration, Instant};

use gitlab_sim::{Fault, FaultKind};

use super::rig::*;
use glwarden_testkit::*;

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
