//! `glwarden run` against the simulator, with a fast schedule: endpoints,
//! metrics, spreading, no overlap, pacing, 429 pauses, reload and graceful
//! shutdown run the daemon in this process ([`AppDaemon`]); what needs a
//! process (the signals themselves, the log, a stuck sweep, half-sent
//! requests) runs `glwarden run` as a child.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gitlab_sim::{Fault, FaultKind, HookSpec, RequestRecord};
use glwarden_testkit::*;

/// A fixture with `n` connected projects and a daemon config.
async fn setup(
    n: usize,
    cron: &str,
    spread: f64,
    check_lines: &str,
) -> (Fixture, Vec<Connected>, std::path::PathBuf, String) {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..n).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx
        .config(&refs)
        .daemon(cron, spread)
        .toml(&format!("[check]\n{check_lines}"));
    let listen = config.listen();
    (fx, projects, config.write(), listen)
}

fn user_probes(requests: &[RequestRecord]) -> Vec<DateTime<Utc>> {
    requests
        .iter()
        .filter(|r| r.path == "/api/v4/user")
        .map(|r| r.at)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_metrics_recovery_and_reload() {
    let (fx, projects, config, listen) = setup(2, "*/1 * * * * *", 0.5, "").await;
    fx.sim.remove_hook(projects[1].id, projects[1].hook_id);
    let mut daemon = fx.spawn_daemon(&config).await;

    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert_eq!(daemon.get("/readyz").await.0, 200);
    assert_eq!(daemon.get("/").await.0, 200, "the status page");
    assert_eq!(daemon.get("/admin").await.0, 404);
    assert_eq!(daemon.get("/metrics/../admin").await.0, 404);
    let broken = "glwarden_component_unhealthy{component=\"webhook\",connection=\"main\",project=\"acme/p1\",state=\"missing\"}";
    assert_eq!(
        daemon.metric(broken).await,
        Some(1.0),
        "{}",
        daemon.metrics().await
    );
    assert_eq!(
        daemon
            .metric("glwarden_connection_up{connection=\"main\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        daemon
            .metric("glwarden_components{component=\"webhook\",state=\"missing\"}")
            .await,
        Some(1.0)
    );
    assert!(
        daemon
            .metric("glwarden_last_successful_sweep_timestamp_seconds")
            .await
            .unwrap()
            > 0.0
    );
    let text = daemon.metrics().await;
    for name in [
        "glwarden_build_info{",
        "glwarden_gitlab_requests_total{connection=\"main\",endpoint=\"project\",status_class=\"2xx\"}",
        "glwarden_gitlab_request_duration_seconds_bucket{",
        "glwarden_checks_total{component=\"webhook\",result=\"missing\"}",
        "glwarden_sweep_duration_seconds_count",
        "glwarden_projects{connection=\"main\"} 2",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }

    // Repaired by hand: the series disappears at the next sweep.
    fx.sim.add_hook(
        projects[1].id,
        HookSpec {
            url: Fixture::hook_url(projects[1].id),
            push_events: true,
            tag_push_events: true,
            merge_requests_events: true,
            enable_ssl_verification: true,
            token: None,
        },
    );
    wait_until(
        "the webhook series to go",
        Duration::from_secs(15),
        || async { daemon.metric(broken).await.is_none() },
    )
    .await;

    // A project dropped from the config and SIGHUP: its series go too.
    fx.sim.remove_hook(projects[0].id, projects[0].hook_id);
    let gone = "glwarden_component_unhealthy{component=\"webhook\",connection=\"main\",project=\"acme/p0\",state=\"missing\"}";
    wait_until("p0's webhook series", Duration::from_secs(15), || async {
        daemon.metric(gone).await.is_some()
    })
    .await;
    fx.config(&[&projects[1]])
        .daemon("*/1 * * * * *", 0.5)
        .listen_on(&listen)
        .write();
    daemon.reload().await;
    wait_until(
        "p0 to leave the metrics",
        Duration::from_secs(15),
        || async {
            daemon.metric(gone).await.is_none()
                && daemon
                    .metric("glwarden_projects{connection=\"main\"}")
                    .await
                    == Some(1.0)
        },
    )
    .await;

    daemon.stop().await.expect("the daemon stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn sweeps_are_spread_over_the_interval_and_never_overlap() {
    let (fx, projects, config, _) = setup(6, "*/1 * * * * *", 0.8, "concurrency = 8\n").await;
    // Each project takes ~1.2 s (three requests of 400 ms): a sweep outlasts the 1 s schedule.
    fx.sim.set_latency(Duration::from_millis(400));
    let mut daemon = fx.spawn_daemon(&config).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let skipped = daemon
        .metric("glwarden_sweeps_skipped_total")
        .await
        .unwrap_or(0.0);
    daemon.stop().await.expect("the daemon stops cleanly");
    assert!(
        skipped >= 1.0,
        "ticks during a running sweep are skipped and counted: {skipped}"
    );

    let requests = fx.sim.requests();
    let starts = user_probes(&requests);
    assert!(starts.len() >= 2, "at least two sweeps: {starts:?}");
    // Between two sweep starts, every project is looked up exactly once: sweeps do not overlap.
    for pair in starts.windows(2) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in requests.iter().filter(|r| r.at > pair[0] && r.at < pair[1]) {
            if r.path.matches('/').count() == 4 && r.path.starts_with("/api/v4/projects/") {
                *seen.entry(r.path.clone()).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), projects.len(), "{seen:?}");
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    }
    // Within the first sweep, project lookups are spread over ~0.8 s, not sent at once.
    let first: Vec<DateTime<Utc>> = requests
        .iter()
        .filter(|r| r.at > starts[0] && r.at < starts[1])
        .filter(|r| r.path.matches('/').count() == 4 && r.path.starts_with("/api/v4/projects/"))
        .map(|r| r.at)
        .collect();
    let span = (*first.iter().max().unwrap() - *first.iter().min().unwrap()).num_milliseconds();
    assert!(span >= 500, "six project starts spread over {span} ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_stays_within_its_request_budget() {
    let fx_rpm = 120; // one request every 500 ms
    let (fx, _projects, _, listen) = setup(0, "*/1 * * * * *", 0.5, "").await;
    let projects: Vec<Connected> = (0..4).map(|i| fx.connect(&format!("acme/q{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx
        .config(&refs)
        .daemon("*/1 * * * * *", 0.5)
        .listen_on(&listen)
        .edit(|c| c.connections.get_mut("main").unwrap().requests_per_minute = fx_rpm)
        .write();
    let mut daemon = fx.spawn_daemon(&config).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    daemon.stop().await.expect("the daemon stops cleanly");

    let times: Vec<DateTime<Utc>> = fx.sim.requests().iter().map(|r| r.at).collect();
    assert!(times.len() >= 10, "{} requests", times.len());
    let min_gap = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .min()
        .unwrap();
    // 60 s / 120 = 500 ms; allow for scheduling noise on arrival.
    assert!(
        min_gap >= 450,
        "requests {min_gap} ms apart under a 120/minute budget"
    );
    // So no 60-second window can hold more than the budget.
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| (**u - *t).num_seconds() < 60)
            .count();
        assert!(in_window <= fx_rpm as usize);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_silences_the_connection_for_retry_after() {
    let (fx, projects, config, _) = setup(3, "*/1 * * * * *", 0.2, "").await;
    let mut daemon = fx.spawn_daemon(&config).await;
    fx.sim.inject(
        Fault::on(
            format!("/projects/{}/hooks", projects[1].id),
            FaultKind::RateLimited {
                retry_after: Some(3),
            },
        )
        .times(1),
    );
    wait_until("the 429", Duration::from_secs(10), || async {
        fx.sim.requests().iter().any(|r| r.status == 429)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        daemon
            .metric("glwarden_gitlab_rate_limited_total{connection=\"main\"}")
            .await,
        Some(1.0)
    );
    daemon.stop().await.expect("the daemon stops cleanly");

    let requests = fx.sim.requests();
    let limited = requests.iter().find(|r| r.status == 429).unwrap().at;
    let next = requests
        .iter()
        .filter(|r| r.at > limited)
        .map(|r| r.at)
        .min()
        .expect("requests resume");
    let quiet = (next - limited).num_milliseconds();
    assert!(
        quiet >= 2950,
        "next request {quiet} ms after a 429 with Retry-After: 3"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_connection_costs_one_request_per_sweep() {
    let (fx, _projects, config, listen) = setup(5, "*/1 * * * * *", 0.2, "").await;
    let mut daemon = fx.start_daemon(&config, &listen).await;
    fx.sim.revoke_token(TOKEN);
    // Let a sweep that may have been under way finish, then count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fx.sim.clear_requests();
    let before = daemon
        .metric("glwarden_sweep_duration_seconds_count")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = daemon
        .metric("glwarden_sweep_duration_seconds_count")
        .await
        .unwrap();
    let requests = fx.sim.requests();
    assert!(daemon.stop().await.success());

    assert!(
        requests.iter().all(|r| r.path == "/api/v4/user"),
        "{requests:?}"
    );
    let sweeps = after - before;
    assert!(sweeps >= 2.0, "{sweeps} sweeps");
    assert!(
        (requests.len() as f64 - sweeps).abs() <= 1.0,
        "{} requests for {sweeps} sweeps",
        requests.len()
    );
    let text = std::fs::read_to_string(&daemon.stderr_path).unwrap();
    assert!(!text.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_during_a_sweep_records_every_started_check() {
    let (fx, projects, config, _) = setup(8, "*/1 * * * * *", 0.0, "concurrency = 2\n").await;
    let mut daemon = fx.spawn_daemon(&config).await;
    // Slow GitLab: a sweep of 8 projects, 2 at a time, takes about 4 s.
    fx.sim.set_latency(Duration::from_millis(300));
    fx.sim.clear_requests();
    wait_until("a sweep under way", Duration::from_secs(10), || async {
        fx.sim
            .requests()
            .iter()
            .filter(|r| r.path.matches('/').count() == 4 && r.path.starts_with("/api/v4/projects/"))
            .count()
            >= 2
    })
    .await;
    daemon.stop().await.expect("the daemon stops cleanly");

    let requests = fx.sim.requests();
    let sweep_start = *user_probes(&requests).last().unwrap();
    let store = glwarden::store::Store::open(&fx.db_path()).await.unwrap();
    let rows = store.all_projects().await.unwrap();
    let health = store.all_health().await.unwrap();
    let mut started = 0;
    for p in &projects {
        let looked_up = requests
            .iter()
            .any(|r| r.at >= sweep_start && r.path == format!("/api/v4/projects/{}", p.id));
        if !looked_up {
            continue;
        }
        started += 1;
        let internal = rows.iter().find(|r| r.gitlab_id == p.id as i64).unwrap().id;
        for component in glwarden::health::Component::PROJECT_COMPONENTS {
            let row = health
                .iter()
                .find(|h| h.subject_id == internal && h.component == component)
                .unwrap();
            assert!(
                row.last_checked.unwrap() >= sweep_start,
                "project {} {component} was started but not recorded",
                p.id
            );
        }
    }
    assert!(
        started >= 2 && started < projects.len(),
        "{started} checks had started when the shutdown came"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_half_sent_requests_stop_neither_sweeps_nor_healthz() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (fx, _projects, config, listen) = setup(2, "*/1 * * * * *", 0.5, "").await;
    let daemon = fx.start_daemon(&config, &listen).await;
    let sweeps = "glwarden_sweeps_total{result=\"ok\"}";
    let before = daemon.metric(sweeps).await.unwrap_or(0.0);

    // Any local user: 300 connections, each with half a request, held open.
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(&listen).await {
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            held.push(c);
        }
    }
    // Meanwhile the daemon goes on: /healthz answers and sweeps complete.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let healthz = format!("http://{listen}/healthz");
    wait_until("/healthz to answer 200", Duration::from_secs(60), || {
        let request = client.get(&healthz).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let metrics = format!("http://{listen}/metrics");
    wait_until(
        "two more successful sweeps",
        Duration::from_secs(60),
        || {
            let request = client.get(&metrics).send();
            async move {
                let Ok(answer) = request.await else {
                    return false;
                };
                let text = answer.text().await.unwrap_or_default();
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix(sweeps)
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                    .is_some_and(|n| n >= before + 2.0)
            }
        },
    )
    .await;
    // Every half-sent request is closed by the daemon, none kept forever.
    for (i, c) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection {i} still open");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_ask_for_the_bearer_token_when_one_is_configured() {
    use std::os::unix::fs::PermissionsExt;
    let (fx, _projects, config, listen) = setup(1, "*/1 * * * * *", 0.5, "").await;
    let token_file = fx.dir.path().join("metrics-token");
    std::fs::write(&token_file, "metrics-SECRET-0001\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "[http]\n",
            &format!(
                "[http]\nmetrics_token_file = {:?}\n",
                token_file.display().to_string()
            ),
        ),
    )
    .unwrap();
    let daemon = fx.spawn_daemon(&config).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{listen}/metrics");
    let status =
        |r: reqwest::RequestBuilder| async move { r.send().await.unwrap().status().as_u16() };
    assert_eq!(status(client.get(&url)).await, 401);
    assert_eq!(status(client.get(&url).bearer_auth("wrong")).await, 401);
    assert_eq!(
        status(client.get(&url).bearer_auth("metrics-SECRET-000")).await,
        401
    );
    let answer = client
        .get(&url)
        .bearer_auth("metrics-SECRET-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("glwarden_connection_up")
    );
    // Health stays open: systemd and load balancers ask it without a token.
    assert_eq!(daemon.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_told_to_wait_for_ever_holds_up_no_other() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..3).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    // A second GitLab (its name sorts first) that first answers `Retry-After: 2^64-1`, then says on
    // every answer that its window is spent until the year 2300.
    let other = gitlab_sim::Sim::start().await.unwrap();
    let user = other.add_user("ci-bot");
    other.add_access_token(user, TOKEN, &["api"], None);
    let theirs = other.add_project("far/away");
    other.set_member(theirs, user, 40);
    other.inject(
        Fault::on(
            "/api/v4/user",
            FaultKind::RateLimited {
                retry_after: Some(u64::MAX),
            },
        )
        .times(1),
    );
    other.inject(Fault::on(
        "/api/v4/",
        FaultKind::SpentWindow {
            reset: 10_413_792_000,
        },
    ));
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx
        .config(&refs)
        .daemon("*/1 * * * * *", 0.2)
        .toml(&format!(
            "[connections.distant]\nurl = {:?}\ntoken_file = {:?}\n",
            other.base_url(),
            fx.token_file().display().to_string(),
        ))
        .project_id("distant", theirs);
    let listen = config.listen();
    let config = config.write();
    let mut daemon = fx.start_daemon(&config, &listen).await;

    // Both answers were seen, and neither stalled the daemon.
    wait_until(
        "the distant connection's `unknown`",
        Duration::from_secs(60),
        || async {
            daemon
                .metric("glwarden_connection_state{connection=\"distant\",state=\"unknown\"}")
                .await
                == Some(1.0)
        },
    )
    .await;
    let sweeps = || async { metric_sum(&daemon.metrics().await, "glwarden_sweeps_total", &[]) };
    let start = sweeps().await;
    fx.sim.clear_requests();
    other.clear_requests();
    // Three whole sweeps later, each of main's projects was checked in each.
    wait_until("three more sweeps", Duration::from_secs(120), || async {
        sweeps().await >= start + 3.0
    })
    .await;
    let (status, body) = daemon.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let asked = other.requests();
    let main_requests = fx.sim.requests();
    let finished = sweeps().await - start;
    assert!(daemon.stop().await.success());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    for p in &projects {
        let checks = main_requests
            .iter()
            .filter(|r| r.path == format!("/api/v4/projects/{}", p.id))
            .count();
        assert!(
            checks as f64 >= finished - 1.0,
            "project {}: {checks} checks in {finished} sweeps",
            p.id
        );
    }
    // The paused GitLab is asked again once a sweep, not once a project.
    assert!(
        asked.len() as f64 <= 2.0 * (finished + 1.0),
        "{} requests in {finished} sweeps: {asked:?}",
        asked.len()
    );

    let store = glwarden::store::Store::open(&fx.db_path()).await.unwrap();
    let id = store
        .connection_id(
            "distant",
            glwarden::config::parse_base_url(&other.base_url())
                .unwrap()
                .as_str(),
        )
        .await
        .unwrap();
    let row = store
        .health(glwarden::health::Component::Connection, id)
        .await
        .unwrap()
        .unwrap();
    let said = row.pending_detail.unwrap_or(row.detail);
    assert!(said.contains("rate limited until 2300-01-01"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_past_its_deadline_is_cancelled_and_a_stuck_one_fails_healthz() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..3).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    // One check at a time, a request may take 20 s: one hanging answer holds
    // the sweep well past its deadline (1.5 s) and the grace after it.
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx.config(&refs).daemon("*/1 * * * * *", 0.2).edit(|c| {
        c.schedule.shutdown_grace_seconds = 1;
        c.schedule.sweep_deadline_intervals = 1.5;
        c.check.concurrency = 1;
        c.check.request_timeout_seconds = 20;
    });
    let listen = config.listen();
    let config = config.write();
    let mut daemon = fx.start_daemon(&config, &listen).await;

    fx.sim.inject(
        Fault::on(
            format!("/projects/{}/hooks", projects[0].id),
            FaultKind::Hang,
        )
        .times(1),
    );
    wait_until("/healthz to fail", Duration::from_secs(60), || async {
        let (status, body) = daemon.get("/healthz").await;
        status == 503 && body.contains("the watchdog is no longer fed")
    })
    .await;
    // The hanging request times out, the sweep ends, counted as cut short.
    wait_until(
        "the sweep to end past its deadline",
        Duration::from_secs(90),
        || async {
            daemon
                .metric("glwarden_sweeps_total{result=\"deadline\"}")
                .await
                .is_some_and(|n| n >= 1.0)
                && daemon.get("/healthz").await.0 == 200
        },
    )
    .await;
    assert!(daemon.stop().await.success());
    let log = daemon.log();
    assert!(log.contains("sweep past its deadline"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_reach_the_daemon_sighup_reloads_and_sigterm_exits_0() {
    let (fx, _projects, config, listen) = setup(1, "*/1 * * * * *", 0.5, "").await;
    let mut daemon = fx.start_daemon(&config, &listen).await;
    daemon.signal("HUP");
    wait_until(
        "the reload request in the log",
        Duration::from_secs(10),
        || async { daemon.log().contains("reload requested") },
    )
    .await;
    wait_until("the reload", Duration::from_secs(10), || async {
        daemon.log().contains("configuration reloaded")
    })
    .await;
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
}
