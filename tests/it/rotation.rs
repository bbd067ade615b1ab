//! Access-token self-rotation (`rotate_before_days`) against the simulator's
//! `POST /personal_access_tokens/self/rotate` (docs/gitlab-contract.md
//! §13): a token due is rotated once and the new one used from then on,
//! across restarts; a new configured token wins; a rotation GitLab refused
//! or never answered leaves the old token in use and says so; an answer
//! lost after GitLab rotated is told ("rotation answer lost") and never
//! retried, including when the daemon is killed right after GitLab answered.

use std::path::PathBuf;
use std::time::Duration;

use gitlab_sim::{Fault, FaultKind, SimVersion};
use glwarden::health::State;
use glwarden::report::Report;
use glwarden::store::Store;
use glwarden::sweep::{Selection, Sweeper};
use glwarden_testkit::*;

/// The token the connection starts with, due for rotation.
const DUE: &str = "glpat-rotation-SECRET-due-0001";

/// A fixture whose connection `main` uses `DUE`, which expires in
/// `days_left` days, and rotates it 7 days ahead; one connected project.
async fn rotating(days_left: u64) -> (Fixture, PathBuf) {
    let (fx, config) = rotating_config(days_left).await;
    let config = config.write();
    (fx, config)
}

/// As [`rotating`], the configuration not yet written.
async fn rotating_config(days_left: u64) -> (Fixture, ConfigBuilder) {
    let fx = Fixture::new().await;
    fx.sim.set_version(SimVersion::Latest);
    let today = chrono::Utc::now().date_naive();
    fx.sim.add_access_token(
        fx.user,
        DUE,
        &["api"],
        today.checked_add_days(chrono::Days::new(days_left)),
    );
    secret_file(fx.dir.path(), "token", DUE);
    let p = fx.connect("acme/rotating");
    let config = fx
        .config(&[&p])
        .edit(|c| c.connections.get_mut("main").unwrap().rotate_before_days = Some(7));
    (fx, config)
}

async fn report(store: &Store) -> Report {
    glwarden::report::build(store, &Selection::All)
        .await
        .unwrap()
}

/// A person made `secret` a token of the user (no expiry) and configured
/// it; a new process sweeps once and is connected with it. Its id, and the
/// store.
async fn configure_new_token(fx: &Fixture, config: &std::path::Path, secret: &str) -> (u64, Store) {
    let id = fx.sim.add_access_token(fx.user, secret, &["api"], None);
    secret_file(fx.dir.path(), "token", secret);
    let (sweeper, store) = fx.checker(config).await;
    repair_run(&sweeper).await;
    let line = &report(&store).await.connections[0];
    assert_eq!(
        line.health.state,
        State::Connected,
        "{}",
        line.health.detail
    );
    assert!(
        fx.sim
            .token_by_secret(secret)
            .unwrap()
            .last_used_at
            .is_some()
    );
    (id, store)
}

/// The user's tokens that GitLab still accepts, but the fixture's own
/// (which no connection here uses).
fn live_tokens(fx: &Fixture) -> Vec<gitlab_sim::SimAccessToken> {
    let mut live = fx.sim.active_tokens_of(fx.user);
    live.retain(|t| t.token != TOKEN);
    live
}

async fn rotation_events(store: &Store) -> Vec<glwarden::store::EventRow> {
    store
        .events(None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "rotate_token")
        .collect()
}

#[tokio::test]
async fn a_token_expiring_in_three_days_is_rotated_once_and_the_new_one_is_used() {
    let (fx, config) = rotating(3).await;
    let (sweeper, store) = fx.checker(&config).await;
    let old_id = fx.sim.token_by_secret(DUE).unwrap().id;

    // A check alone rotates nothing: it is a repair, by policy.
    fx.check(&sweeper).await;
    assert_eq!(fx.sim.rotations(), 0);
    let before = report(&store).await;
    assert_eq!(before.connections[0].health.state, State::Expiring);
    let token = before.connections[0].token.as_ref().expect("read");
    assert_eq!((token.facts.id, token.days_left), (Some(old_id), Some(3)));

    let summary = repair_run(&sweeper).await;
    assert_eq!(fx.sim.rotations(), 1);
    let [(name, glwarden::sweep::Rotated::Ok { from, to })] = summary.rotations.as_slice() else {
        panic!("one rotation: {:?}", summary.rotations);
    };
    assert_eq!((name.as_str(), *from), ("main", old_id));
    // GitLab revoked the old token; the new one is the user's one live token.
    assert!(fx.sim.token_by_secret(DUE).unwrap().revoked);
    let refused = reqwest::Client::new()
        .get(format!("{}/api/v4/user", fx.sim.base_url()))
        .header("PRIVATE-TOKEN", DUE)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the old token is refused");
    let live = live_tokens(&fx);
    assert_eq!(live.len(), 1, "{live:?}");
    let new = &live[0];
    assert_eq!(
        (new.id, new.previous_personal_access_token_id),
        (*to, Some(old_id))
    );
    // The lifetime: the old token's 3 days, raised past rotate_before_days.
    let today = chrono::Utc::now().date_naive();
    assert_eq!(new.expires_at, today.checked_add_days(chrono::Days::new(8)));

    // Recorded with the new token's state, and the event names ids only.
    let after = report(&store).await;
    let line = &after.connections[0];
    assert_eq!(
        line.health.state,
        State::Connected,
        "{}",
        line.health.detail
    );
    let token = line.token.as_ref().unwrap();
    assert_eq!((token.facts.id, token.days_left), (Some(new.id), Some(8)));
    let events = rotation_events(&store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "ok");
    assert!(
        events[0].after.contains(&format!("token {}", new.id)),
        "{:?}",
        events[0]
    );
    for e in &events {
        let text = format!("{} {} {} {}", e.cause, e.before, e.after, e.outcome);
        assert!(!text.contains(DUE) && !text.contains(&new.token), "{text}");
    }

    // The next sweeps use the new token, and rotate nothing more.
    let used_before = new.last_used_at;
    repair_run(&sweeper).await;
    repair_run(&sweeper).await;
    assert_eq!(fx.sim.rotations(), 1);
    let new_now = fx.sim.token_by_secret(&new.token).unwrap();
    assert!(new_now.last_used_at > used_before, "the new token is used");
    assert_eq!(
        report(&store).await.projects[0].deploy_key.state,
        State::Healthy
    );
}

#[tokio::test]
async fn a_restart_uses_the_stored_token_and_a_configured_new_token_wins() {
    let (fx, config) = rotating(3).await;
    {
        let (sweeper, _store) = fx.checker(&config).await;
        repair_run(&sweeper).await;
    }
    assert_eq!(fx.sim.rotations(), 1);
    let rotated = live_tokens(&fx).remove(0);

    // A new process: the configured token is revoked, the stored one works.
    let (sweeper, store) = fx.checker(&config).await;
    repair_run(&sweeper).await;
    let line = &report(&store).await.connections[0];
    assert_eq!(
        line.health.state,
        State::Connected,
        "{}",
        line.health.detail
    );
    assert_eq!(line.token.as_ref().unwrap().facts.id, Some(rotated.id));
    assert_eq!(fx.sim.rotations(), 1);

    // A person configures a new token: it wins over the stored one.
    let replacement = "glpat-rotation-SECRET-by-hand-0002";
    let (id, store) = configure_new_token(&fx, &config, replacement).await;
    let line = &report(&store).await.connections[0];
    assert_eq!(line.token.as_ref().unwrap().facts.id, Some(id));
    assert_eq!(fx.sim.rotations(), 1, "no expiry: nothing due");
}

/// A rotation that GitLab refused or never processed: the old token stays
/// in use, the connection says `expiring`, and the failure is reported.
async fn assert_not_rotated(fx: &Fixture, store: &Store, sweeper: &Sweeper, says: &str) {
    assert_eq!(fx.sim.rotations(), 0);
    assert!(!fx.sim.token_by_secret(DUE).unwrap().revoked);
    let failures = store.rotation_failures().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].1.contains(says), "{failures:?}");
    let events = rotation_events(store).await;
    assert!(events[0].outcome.starts_with("failed: "), "{:?}", events[0]);
    // The old token still works for everything else.
    fx.check(sweeper).await;
    let r = report(store).await;
    assert_eq!(r.connections[0].health.state, State::Expiring);
    assert_eq!(r.projects[0].webhook.state, State::Healthy);
    // `status` shows it beside the token.
    let token = r.connections[0].token.as_ref().unwrap();
    assert!(
        token.describe().contains("rotation failed: "),
        "{}",
        token.describe()
    );
}

/// A rotation GitLab's answer to which did not come (`fault`): the old
/// token stays in use and the failure says it is not known yet whether
/// GitLab rotated; once the claim's window has passed (10 s here: 4
/// request timeouts of 2 s and 2 rate-limit waits of 1 s) and GitLab
/// answers, a sweep rotates.
async fn unanswered(fault: FaultKind) {
    let (fx, config) = rotating_config(3).await;
    let config = config
        .edit(|c| c.check.max_rate_limit_wait_seconds = 1)
        .write();
    let (sweeper, store) = fx.checker(&config).await;
    fx.sim
        .inject(Fault::on("/self/rotate", fault).method("POST"));
    repair_run(&sweeper).await;
    assert_not_rotated(
        &fx,
        &store,
        &sweeper,
        "whether GitLab rotated is not known yet",
    )
    .await;
    // Not asked again while the claim's window lasts.
    let asked = || {
        fx.sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/self/rotate"))
            .count()
    };
    assert_eq!(asked(), 1);
    repair_run(&sweeper).await;
    assert_eq!(asked(), 1);
    fx.sim.clear_faults();
    wait_until(
        "a sweep after the window rotates",
        Duration::from_secs(60),
        || async {
            repair_run(&sweeper).await;
            fx.sim.rotations() == 1
        },
    )
    .await;
    assert!(store.rotation_failures().await.unwrap().is_empty());
    assert_eq!(live_tokens(&fx).len(), 1);
}

#[tokio::test]
async fn a_rotation_answered_with_5xx_leaves_the_old_token_in_use() {
    unanswered(FaultKind::Status {
        code: 502,
        html: true,
    })
    .await;
}

#[tokio::test]
async fn a_rotation_timing_out_leaves_the_old_token_in_use() {
    unanswered(FaultKind::Hang).await;
}

#[tokio::test]
async fn a_gitlab_without_self_rotation_is_told_and_the_token_kept() {
    let (fx, config) = rotating(3).await;
    fx.sim.set_version(SimVersion::V16_0);
    let (sweeper, store) = fx.checker(&config).await;
    repair_run(&sweeper).await;
    assert_not_rotated(
        &fx,
        &store,
        &sweeper,
        "has no token self-rotation (16.10 or later)",
    )
    .await;
    assert!(
        !fx.sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/rotate")),
        "not asked"
    );
    // Told once, not at every sweep of the days before the token expires.
    repair_run(&sweeper).await;
    repair_run(&sweeper).await;
    assert_eq!(rotation_events(&store).await.len(), 1);
    assert_eq!(store.rotation_failures().await.unwrap().len(), 1);
}

/// The connection after an answer was lost: `not_connected`, saying so.
async fn assert_answer_lost(fx: &Fixture, store: &Store) {
    let r = report(store).await;
    let line = &r.connections[0];
    assert_eq!(line.health.state, State::NotConnected);
    assert!(
        line.health.detail.contains("rotation answer lost"),
        "{}",
        line.health.detail
    );
    // Rotated once, never again; and the token GitLab made is still live:
    // the revoked one was never presented to the rotation endpoint again
    // (that would revoke its whole family).
    assert_eq!(fx.sim.rotations(), 1);
    let live = live_tokens(fx);
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].previous_personal_access_token_id.is_some());
}

#[tokio::test]
async fn a_lost_answer_is_told_and_never_retried() {
    let (fx, config) = rotating(3).await;
    let (sweeper, store) = fx.checker(&config).await;
    // GitLab rotates; its answer's body never arrives within the timeout.
    fx.sim.inject(
        Fault::on(
            "/self/rotate",
            FaultKind::SlowBody {
                chunk_delay: Duration::from_secs(5),
            },
        )
        .method("POST"),
    );
    let summary = repair_run(&sweeper).await;
    let [(_, glwarden::sweep::Rotated::Failed(why))] = summary.rotations.as_slice() else {
        panic!("{:?}", summary.rotations);
    };
    assert!(why.starts_with("rotation answer lost"), "{why}");
    fx.sim.clear_faults();
    repair_run(&sweeper).await;
    repair_run(&sweeper).await;
    assert_answer_lost(&fx, &store).await;

    // A person configures a new token: connected again, the failure gone.
    let replacement = "glpat-rotation-SECRET-by-hand-0003";
    let (_, store) = configure_new_token(&fx, &config, replacement).await;
    assert!(store.rotation_failures().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_daemon_killed_right_after_gitlab_answered_reports_the_answer_lost() {
    let (fx, config) = rotating_config(3).await;
    let config = config.daemon("*/1 * * * * *", 0.0);
    let listen = config.listen();
    // Restarted with short timeouts: the claim's window is 10 s.
    let restarted = config
        .clone()
        .edit(|c| c.check.max_rate_limit_wait_seconds = 1)
        .file(&fx.dir.path().join("restarted.toml"))
        .write();
    // A patient client: the answer's body (about 400 bytes, 8 bytes every
    // half second) is still arriving when the daemon is killed.
    let config = config
        .edit(|c| c.check.request_timeout_seconds = 120)
        .write();
    fx.sim.inject(
        Fault::on(
            "/self/rotate",
            FaultKind::SlowBody {
                chunk_delay: Duration::from_millis(500),
            },
        )
        .method("POST"),
    );
    // Not `start_daemon`: its first sweep does not end while the answer trickles.
    let log = fx.dir.path().join("killed.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let mut killed = DaemonProcess::spawn(&config, &listen, log, |cmd| {
        cmd.stdout(std::process::Stdio::null()).stderr(stderr);
    });
    wait_until(
        "GitLab rotated the token",
        Duration::from_secs(60),
        || async { fx.sim.rotations() == 1 },
    )
    .await;
    killed.signal("KILL");
    killed.stop().await;
    fx.sim.clear_faults();
    let store = Store::open(&fx.db_path()).await.unwrap();
    let rotation = store
        .rotation(
            "main",
            &glwarden::config::Config::load(&config).unwrap().custody,
            &seed(DUE),
        )
        .await
        .unwrap()
        .expect("the rotation was noted before GitLab was asked");
    assert!(
        rotation.begun_at.is_some() && rotation.token.is_none(),
        "{rotation:?}"
    );
    store.close().await;

    // Restarted. Until the claim's window has passed the killed process
    // could still be rotating, so the connection is `unknown`; then the
    // lost answer is told, and no rotation is asked.
    let mut daemon = fx.start_daemon(&restarted, &listen).await;
    wait_until(
        "the lost answer is told",
        Duration::from_secs(60),
        || async {
            let store = Store::open(&fx.db_path()).await.unwrap();
            let told = report(&store).await.connections[0]
                .health
                .detail
                .contains("rotation answer lost");
            store.close().await;
            told
        },
    )
    .await;
    assert!(daemon.stop().await.success(), "{}", daemon.log());
    let store = Store::open(&fx.db_path()).await.unwrap();
    assert_answer_lost(&fx, &store).await;
}

/// The store's digest of a configured token.
fn seed(token: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(token.as_bytes()))
}

#[tokio::test]
async fn a_rotation_by_another_process_is_followed_not_repeated() {
    // Two processes on one SQLite store (the daemon and `glwarden repair`),
    // both started with the token that is due.
    let (fx, config) = rotating(3).await;
    let (daemon, store) = fx.checker(&config).await;
    let (command, _) = fx.checker(&config).await;
    repair_run(&command).await;
    assert_eq!(fx.sim.rotations(), 1);
    // The other takes the new token from the store before it asks GitLab:
    // connected, nothing due, and the new token is not revoked by a second
    // rotation of the old one.
    let summary = repair_run(&daemon).await;
    assert!(summary.rotations.is_empty(), "{:?}", summary.rotations);
    assert_eq!(fx.sim.rotations(), 1);
    let line = &report(&store).await.connections[0];
    assert_eq!(
        line.health.state,
        State::Connected,
        "{}",
        line.health.detail
    );
    assert_eq!(live_tokens(&fx).len(), 1);
}
