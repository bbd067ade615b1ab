//! GitLab answering wrongly but plausibly: 404 for everything or for every
//! project for one sweep, a token revoked and a project renamed mid-sweep.

use std::time::Duration;

use gitlab_sim::{Fault, FaultKind};

use super::rig::*;
use glwarden_testkit::*;

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
    assert_eq!(writes_answered(&rig.fx), Vec::<String>::new());
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
