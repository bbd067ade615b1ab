//! Repairs against the simulator: each broken state fixed the way a person
//! would, `report` touching nothing, adoption without writes, the storm
//! guard, custody, and crash safety (a real child process killed mid-repair).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use gitlab_sim::{Fault, FaultKind, HookSpec};
use glwarden::health::{Component, State};
use glwarden::repair::ManualCause;
use glwarden::store::Store;
use glwarden::sweep::{RepairResult, Selection};
use glwarden_testkit::*;

/// Keys and hooks on `policy`, confirmed after `confirm` checks, renames
/// followed on `auto`, custody under the testkit's `MASTER_KEY`.
fn repairing(fx: &Fixture, projects: &[&Connected], policy: Policy, confirm: u32) -> ConfigBuilder {
    fx.config(projects)
        .repairs(policy, confirm)
        .master_key_file(&fx.master_key_file())
}

#[tokio::test]
async fn broken_deploy_keys_are_regenerated_without_a_moment_without_a_key() {
    let fx = Fixture::new().await;
    let deleted = fx.connect("acme/deleted");
    let mut mismatch = fx.connect("acme/mismatch");
    let expired = fx.connect("acme/expired");
    let writable = fx.connect("acme/writable");
    let all = [&deleted, &mismatch, &expired, &writable];
    let config = repairing(&fx, &all, Policy::Auto, 2).write();
    let (checker, _) = fx.checker(&config).await;
    repair_run(&checker).await;

    fx.sim.remove_deploy_key(deleted.id, key_id(&fx, &deleted));
    let old_expired = key_id(&fx, &expired);
    fx.sim.remove_deploy_key(expired.id, old_expired);
    fx.sim.add_deploy_key(
        expired.id,
        "glwarden",
        &expired.key.public_openssh,
        false,
        Some(chrono::Utc::now() - chrono::Duration::hours(1)),
    );
    fx.sim
        .set_deploy_key_can_push(writable.id, key_id(&fx, &writable), true);
    let writable_key = key_id(&fx, &writable);
    let mismatched_at_gitlab = key_id(&fx, &mismatch);
    mismatch.key = glwarden::keys::generate_ed25519("rotated elsewhere").unwrap();
    let config = repairing(
        &fx,
        &[&deleted, &mismatch, &expired, &writable],
        Policy::Auto,
        2,
    )
    .write();
    let (checker, store) = fx.checker(&config).await;

    // First sighting: not yet confirmed, nothing changes at GitLab.
    fx.sim.clear_requests();
    let first = repair_run(&checker).await;
    assert!(first.repairs.is_empty(), "{:?}", first.repairs);
    assert!(writes(&fx).is_empty(), "{:?}", writes(&fx));

    // Confirmed: repaired.
    let second = repair_run(&checker).await;
    assert_eq!(second.repairs.len(), 4, "{:?}", second.repairs);
    assert!(second.repairs.iter().all(|(_, o)| *o == RepairResult::Done));
    for p in [&deleted, &mismatch, &expired] {
        assert_one_matching_key(&fx, &store, p.id).await;
        assert_eq!(
            component(&store, p.id, Component::DeployKey).await.0,
            State::Healthy
        );
    }
    assert!(
        fx.sim
            .deploy_keys(mismatch.id)
            .iter()
            .all(|k| k.id != mismatched_at_gitlab),
        "old key deleted"
    );
    // Writable: made read-only in place, the same key.
    let keys = fx.sim.deploy_keys(writable.id);
    assert_eq!(
        (keys.len(), keys[0].id, keys[0].can_push),
        (1, writable_key, false)
    );
    assert_eq!(
        component(&store, writable.id, Component::DeployKey).await.0,
        State::Healthy
    );

    // The new key was added before the old one was deleted.
    let requests = fx.sim.requests();
    let post = requests
        .iter()
        .position(|r| {
            r.method == "POST" && r.path == format!("/api/v4/projects/{}/deploy_keys", mismatch.id)
        })
        .unwrap();
    let delete = requests
        .iter()
        .position(|r| {
            r.method == "DELETE"
                && r.path
                    .contains(&format!("/projects/{}/deploy_keys/", mismatch.id))
        })
        .unwrap();
    assert!(post < delete);

    let events = store.events(None, None, 100).await.unwrap();
    assert!(events.iter().any(|e| e.action == "regenerate_deploy_key"
        && e.outcome == "ok"
        && e.after.contains("SHA256:")));
}

#[tokio::test]
async fn broken_webhooks_are_fixed_recreated_or_re_enabled() {
    let fx = Fixture::new().await;
    let wrong = fx.connect("acme/wrong");
    let elsewhere = fx.connect("acme/elsewhere");
    let deleted = fx.connect("acme/deleted");
    let disabled_ok = fx.connect("acme/disabled-ok");
    let disabled_down = fx.connect("acme/disabled-down");
    // Five projects broken at once would pause repairs as a storm.
    let config = repairing(
        &fx,
        &[&wrong, &elsewhere, &deleted, &disabled_ok, &disabled_down],
        Policy::Auto,
        1,
    )
    .edit(|c| {
        c.repair.webhook_reenable = WebhookReenable::Test;
        c.repair.storm_min_projects = 100;
    })
    .write();
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;

    fx.sim.update_hook(wrong.id, wrong.hook_id, |h| {
        h.tag_push_events = false;
        h.enable_ssl_verification = false;
        h.token = None;
    });
    // Someone points our hook at another receiver: no longer glwarden's.
    fx.sim.update_hook(elsewhere.id, elsewhere.hook_id, |h| {
        h.url = "https://old-ci.example.com/hook".into();
    });
    fx.sim.remove_hook(deleted.id, deleted.hook_id);
    for p in [&disabled_ok, &disabled_down] {
        for _ in 0..4 {
            fx.sim.record_delivery(p.id, p.hook_id, 502);
        }
    }
    fx.sim
        .set_receiver_status(&Fixture::hook_url(disabled_down.id), 503);
    let summary = repair_run(&checker).await;
    // Before GitLab 16.11 there is no test endpoint: a disabled hook is
    // reported, never "re-enabled" by anything else.
    let can_test = fx.version.has_hook_test();
    assert_eq!(
        summary.repairs.len(),
        if can_test { 5 } else { 3 },
        "{:?}",
        summary.repairs
    );

    // Fixed in place: same hook, settings right, our secret resent.
    assert_one_matching_hook(&fx, &store, wrong.id).await;
    let hook = &fx.sim.hooks(wrong.id)[0];
    assert_eq!(hook.id, wrong.hook_id);
    assert!(hook.tag_push_events && hook.enable_ssl_verification);
    // Recreated with a fresh secret.
    assert_one_matching_hook(&fx, &store, deleted.id).await;
    assert_ne!(fx.sim.hooks(deleted.id)[0].id, deleted.hook_id);
    // A hook pointed elsewhere is left as it is; ours is made beside it.
    assert_one_matching_hook(&fx, &store, elsewhere.id).await;
    let theirs: Vec<_> = fx
        .sim
        .hooks(elsewhere.id)
        .into_iter()
        .filter(|h| h.id == elsewhere.hook_id)
        .collect();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].url, "https://old-ci.example.com/hook");
    assert!(
        !fx.sim.requests().iter().any(
            |r| r.method == "PUT" && r.path.ends_with(&format!("/hooks/{}", elsewhere.hook_id))
        )
    );
    for p in [&wrong, &elsewhere, &deleted] {
        assert_eq!(
            component(&store, p.id, Component::Webhook).await.0,
            State::Healthy,
            "{}",
            p.id
        );
    }
    if !can_test {
        for p in [&disabled_ok, &disabled_down] {
            assert_eq!(fx.sim.hooks(p.id).len(), 1);
            assert_eq!(
                component(&store, p.id, Component::Webhook).await.0,
                State::Disabled
            );
        }
        assert!(fx.sim.requests().iter().all(|r| !r.path.contains("/test/")));
        return;
    }
    // Re-enabled by a successful test delivery, of an event it subscribes to.
    assert_eq!(
        component(&store, disabled_ok.id, Component::Webhook)
            .await
            .0,
        State::Healthy
    );
    assert_eq!(fx.sim.hooks(disabled_ok.id)[0].alert_status(), "executable");
    assert!(fx.sim.requests().iter().any(|r| {
        r.path
            .ends_with(&format!("/hooks/{}/test/push_events", disabled_ok.hook_id))
    }));
    // The receiver is down: the hook stays disabled and no new hook is made.
    let hooks = fx.sim.hooks(disabled_down.id);
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        component(&store, disabled_down.id, Component::Webhook)
            .await
            .0,
        State::Disabled
    );
    let failed = store.events(None, None, 100).await.unwrap();
    assert!(
        failed
            .iter()
            .any(|e| e.action == "reenable_webhook" && e.outcome.contains("stays disabled")),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_renamed_project_is_followed_and_a_new_project_is_provisioned() {
    let fx = Fixture::new().await;
    let moved = fx.connect("acme/old-name");
    // A project with nothing of ours at GitLab: connecting it is provisioning.
    let fresh_id = fx.sim.add_project("acme/fresh");
    fx.sim.set_member(fresh_id, fx.user, 40);
    let config = repairing(&fx, &[&moved], Policy::Auto, 1)
        .project_id("main", fresh_id)
        .write();
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;
    assert_one_matching_key(&fx, &store, fresh_id).await;
    assert_one_matching_hook(&fx, &store, fresh_id).await;
    assert_eq!(states(&store, fresh_id).await, HEALTHY);

    fx.sim.rename_project(moved.id, "acme/new-name");
    repair_run(&checker).await;
    let row = stored_project(&store, moved.id).await;
    assert_eq!(row.path, "acme/new-name");
    assert_eq!(states(&store, moved.id).await, HEALTHY);
    let events = store.events(None, None, 100).await.unwrap();
    assert!(events.iter().any(|e| e.action == "follow_rename"
        && e.before == "acme/old-name"
        && e.after == "acme/new-name"));

    // Pending deletion is never followed.
    fx.sim.schedule_deletion(moved.id);
    repair_run(&checker).await;
    let row = stored_project(&store, moved.id).await;
    assert_eq!(row.path, "acme/new-name");
    assert_eq!(states(&store, moved.id).await[0], State::PendingDeletion);
}

#[tokio::test]
async fn report_policy_changes_nothing_at_gitlab_and_records_the_plan() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = repairing(&fx, &[&p], Policy::Report, 2).write();
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;
    fx.sim.remove_deploy_key(p.id, key_id(&fx, &p));
    fx.sim.remove_hook(p.id, p.hook_id);
    fx.sim.clear_requests();
    for _ in 0..3 {
        repair_run(&checker).await;
    }
    assert!(
        writes(&fx).is_empty(),
        "report wrote to GitLab: {:?}",
        writes(&fx)
    );
    let plans: Vec<_> = store
        .events(None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "plan")
        .collect();
    assert_eq!(
        plans.len(),
        2,
        "one plan per component, recorded once: {plans:?}"
    );
    assert!(plans.iter().any(|e| e.after == format!(
        "would regenerate deploy key of acme/app: missing (no deploy key {} among 0 on the project)",
        p.key.fingerprint
    )));
}

#[tokio::test]
async fn the_storm_guard_pauses_when_every_hook_vanishes() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..10).map(|i| fx.connect(&format!("acme/s{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = repairing(&fx, &refs, Policy::Auto, 1)
        .edit(|c| {
            c.repair.storm_share = 0.3;
            c.repair.storm_min_projects = 3;
        })
        .write();
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;

    for p in &projects {
        fx.sim.remove_hook(p.id, p.hook_id);
    }
    let summary = repair_run(&checker).await;
    assert!(
        summary.repairs.len() <= 3,
        "at most the configured share: {:?}",
        summary.repairs
    );
    assert!(summary.repairs_paused);
    assert!(
        store
            .repairs_paused()
            .await
            .unwrap()
            .unwrap()
            .0
            .contains("10 of 10 projects")
    );
    // Still paused: every project is still broken, which is no clean sweep.
    let summary = repair_run(&checker).await;
    assert!(summary.repairs.is_empty() && summary.repairs_paused);

    // A person resumes: everything is repaired.
    store.set_repairs_paused(None).await.unwrap();
    let summary = repair_run(&checker).await;
    assert_eq!(summary.repairs.len(), 10);
    for p in &projects {
        assert_one_matching_hook(&fx, &store, p.id).await;
    }
}

#[tokio::test]
async fn without_a_master_key_secrets_are_refused_and_gitlab_is_untouched() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx
        .config(&[&p])
        .edit(|c| {
            c.repair.deploy_key = Policy::Auto;
            c.repair.confirm_checks = 1;
        })
        .write();
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;
    fx.sim.remove_deploy_key(p.id, key_id(&fx, &p));
    fx.sim.clear_requests();
    let summary = repair_run(&checker).await;
    assert_eq!(
        summary.repairs,
        vec![(Component::DeployKey, RepairResult::Failed)]
    );
    assert!(writes(&fx).is_empty(), "{:?}", writes(&fx));
    let events = store.events(None, None, 10).await.unwrap();
    assert!(
        events[0].outcome.contains("no master key"),
        "{:?}",
        events[0]
    );

    // Plaintext, when explicitly allowed, works (and the database stays 0600).
    let config = fx
        .config(&[&p])
        .edit(|c| {
            c.repair.deploy_key = Policy::Auto;
            c.repair.confirm_checks = 1;
            c.repair.cooldown_minutes = 0;
            c.custody.allow_plaintext = true;
        })
        .write();
    let (checker, store) = fx.checker(&config).await;
    let summary = repair_run(&checker).await;
    assert_eq!(
        summary.repairs,
        vec![(Component::DeployKey, RepairResult::Done)]
    );
    assert_eq!(store.journal().await.unwrap().len(), 0);
    assert_eq!(
        std::fs::metadata(fx.db_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adoption_takes_custody_with_zero_gitlab_writes_and_keys_are_served_audited() {
    let fx = Fixture::new().await;
    // Connected earlier by hand: a key and a hook glwarden did not make.
    let id = fx.sim.add_project("acme/legacy");
    fx.sim.set_member(id, fx.user, 40);
    let key = glwarden::keys::generate_ed25519("by hand").unwrap();
    fx.sim
        .add_deploy_key(id, "manual", &key.public_openssh, false, None);
    let url = Fixture::hook_url(id);
    fx.sim.add_hook(
        id,
        HookSpec {
            url: url.clone(),
            push_events: true,
            tag_push_events: true,
            merge_requests_events: true,
            enable_ssl_verification: true,
            token: Some("hand-made-token".into()),
        },
    );
    let config = repairing(&fx, &[], Policy::Auto, 1).write();
    let cfg = config.to_str().unwrap();
    let private_file: PathBuf = fx.dir.path().join("id_ed25519");
    std::fs::write(&private_file, key.private_openssh.as_bytes()).unwrap();
    std::fs::set_permissions(&private_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token_file = fx.dir.path().join("hook.token");
    std::fs::write(&token_file, "hand-made-token").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    fx.sim.clear_requests();
    let out = run(glwarden(&[
        "--config",
        cfg,
        "project",
        "add",
        "acme/legacy",
        "--adopt-deploy-key",
        private_file.to_str().unwrap(),
        "--adopt-hook-url",
        &url,
        "--hook-token-file",
        token_file.to_str().unwrap(),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(glwarden(&["--config", cfg, "repair"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        writes(&fx).is_empty(),
        "adoption wrote to GitLab: {:?}",
        writes(&fx)
    );

    // The CI gets the key back, and the read is audited.
    let out = run(glwarden(&[
        "--config",
        cfg,
        "key",
        "private",
        "acme/legacy",
    ]))
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("BEGIN OPENSSH PRIVATE KEY"));
    let out = run(glwarden(&["--config", cfg, "key", "public", "acme/legacy"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ssh-ed25519 "));
    let out = run(glwarden(&[
        "--config",
        cfg,
        "events",
        "--project",
        "acme/legacy",
        "--since",
        "1h",
    ]))
    .await;
    let events = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        events.contains("key_read") && events.contains("adopt"),
        "{events}"
    );
    assert!(
        !events.contains("PRIVATE KEY") && !events.contains("hand-made-token"),
        "{events}"
    );
}

/// Starts `glwarden regenerate`, SIGKILLs it once the simulator sees `method path`, clears faults.
async fn kill_mid_repair(
    fx: &Fixture,
    config: &std::path::Path,
    project: &str,
    what: &str,
    method: &str,
    path_part: &str,
) {
    let mut child = glwarden(&[
        "--config",
        config.to_str().unwrap(),
        "regenerate",
        project,
        what,
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if fx
            .sim
            .requests()
            .iter()
            .any(|r| r.method == method && r.path.contains(path_part))
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "regenerate ended before the crash point {method} {path_part}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no {method} {path_part}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    fx.sim.clear_faults();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_killed_after_any_step_is_finished_on_restart() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = repairing(&fx, &[&p], Policy::Report, 2).write();
    let (checker, _) = fx.checker(&config).await;
    checker.sweep(&Selection::All).await.unwrap();
    drop(checker);
    let base = format!("/api/v4/projects/{}/deploy_keys", p.id);
    let crash_points = [
        // POST answered slowly: GitLab has the new key, we never learn its id.
        (
            "POST",
            base.clone(),
            FaultKind::SlowBody {
                chunk_delay: Duration::from_secs(5),
            },
        ),
        // Confirming the new key.
        ("GET", format!("{base}/"), FaultKind::Hang),
        // Deleting the old key, after the new one is stored.
        ("DELETE", format!("{base}/"), FaultKind::Hang),
    ];
    for (method, path, kind) in crash_points {
        fx.sim.inject(Fault::on(path.clone(), kind).method(method));
        fx.sim.clear_requests();
        kill_mid_repair(&fx, &config, "acme/app", "--deploy-key", method, &path).await;
        let store = Store::open(&fx.db_path()).await.unwrap();
        assert_eq!(
            store.journal().await.unwrap().len(),
            1,
            "crash at {method} {path} left an intent"
        );
        store.close().await;
        // Any start resumes the journal first.
        let out = run(glwarden(&["--config", config.to_str().unwrap(), "check"])).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "after crash at {method} {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let store = Store::open(&fx.db_path()).await.unwrap();
        assert_one_matching_key(&fx, &store, p.id).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_recreation_killed_after_any_step_is_finished_on_restart() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = repairing(&fx, &[&p], Policy::Report, 2).write();
    let (checker, _) = fx.checker(&config).await;
    checker.sweep(&Selection::All).await.unwrap();
    drop(checker);
    let hooks = format!("/api/v4/projects/{}/hooks", p.id);
    let crash_points = [
        // Looking for a hook left by an earlier attempt, before creating one.
        ("GET", hooks.clone(), FaultKind::Hang),
        // POST answered slowly: GitLab made the hook, we never learn its id.
        (
            "POST",
            hooks.clone(),
            FaultKind::SlowBody {
                chunk_delay: Duration::from_secs(5),
            },
        ),
    ];
    for (method, path, kind) in crash_points {
        // Deleted by hand: the stored hook id answers 404 from now on.
        fx.sim.remove_hook(p.id, fx.sim.hooks(p.id)[0].id);
        fx.sim.inject(Fault::on(path.clone(), kind).method(method));
        fx.sim.clear_requests();
        // The stored hook id is gone at GitLab: regenerate recreates the hook.
        kill_mid_repair(&fx, &config, "acme/app", "--webhook", method, &path).await;
        let out = run(glwarden(&["--config", config.to_str().unwrap(), "check"])).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "after crash at {method}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let store = Store::open(&fx.db_path()).await.unwrap();
        assert_one_matching_hook(&fx, &store, p.id).await;
        store.close().await;
    }
}

#[tokio::test]
async fn key_files_are_written_for_the_ci_and_replaced_on_rotation() {
    let mut key_dir = PathBuf::new();
    let OneProject {
        fx,
        p,
        config,
        checker,
        store,
    } = OneProject::new(|c| {
        key_dir = c.raw.store.path.with_file_name("keys");
        c.edit(|c| {
            c.repair.cooldown_minutes = 0;
            c.custody.key_dir = Some(key_dir.clone());
        })
    })
    .await;
    repair_run(&checker).await;
    fx.sim.remove_deploy_key(p.id, key_id(&fx, &p));
    repair_run(&checker).await;
    // One folder per connection: two instances' project 42 never share a file.
    let file = key_dir.join("main").join(p.id.to_string());
    let first = std::fs::read_to_string(&file).expect("key file written");
    for folder in [&key_dir, &key_dir.join("main")] {
        assert_eq!(
            std::fs::metadata(folder).unwrap().permissions().mode() & 0o777,
            0o700,
            "{}",
            folder.display()
        );
    }
    assert!(first.contains("BEGIN OPENSSH PRIVATE KEY"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_one_matching_key(&fx, &store, p.id).await;

    let out = checker
        .regenerate(
            &store.active_projects().await.unwrap()[0],
            Component::DeployKey,
            ManualCause::CommandLine,
        )
        .await
        .unwrap();
    assert_eq!(out, "ok");
    let second = std::fs::read_to_string(&file).unwrap();
    assert_ne!(first, second, "replaced on rotation");
    assert_one_matching_key(&fx, &store, p.id).await;
    assert_eq!(
        std::fs::read_dir(key_dir.join("main")).unwrap().count(),
        1,
        "no temporary files left behind"
    );

    // Removing the project from the inventory deletes the CI's copy too.
    let config = config.display().to_string();
    let out = run(glwarden(&[
        "--config",
        &config,
        "project",
        "remove",
        &p.id.to_string(),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists(), "key file deleted with the project");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stay at GitLab"));
}

#[tokio::test]
async fn a_rotation_left_unfinished_is_resumed_never_begun_again() {
    let OneProject {
        fx,
        p,
        checker,
        store,
        ..
    } = OneProject::new(|c| c.edit(|c| c.repair.cooldown_minutes = 0)).await;
    repair_run(&checker).await;
    let old = key_id(&fx, &p);
    fx.sim.remove_deploy_key(p.id, old);
    // The new key will be the simulator's next id; reading it back fails, so
    // the rotation stops after "created", its new key already at GitLab.
    let next = old + 1;
    fx.sim.inject(
        Fault::on(format!("/deploy_keys/{next}"), FaultKind::error_page(502)).method("GET"),
    );
    fx.sim.clear_requests();
    for _ in 0..3 {
        repair_run(&checker).await;
    }
    let added: Vec<String> = writes(&fx)
        .into_iter()
        .filter(|w| w.starts_with("POST") && w.ends_with("/deploy_keys"))
        .collect();
    assert_eq!(added.len(), 1, "one key added, never a second: {added:?}");
    assert_eq!(fx.sim.deploy_keys(p.id).len(), 1);
    assert_eq!(fx.sim.deploy_keys(p.id)[0].id, next);

    // GitLab answers again: the journal entry is finished, nothing new is made.
    fx.sim.clear_faults();
    repair_run(&checker).await;
    repair_run(&checker).await;
    assert_one_matching_key(&fx, &store, p.id).await;
    assert_eq!(fx.sim.deploy_keys(p.id)[0].id, next);
    assert_eq!(states(&store, p.id).await, HEALTHY);
    assert!(store.journal().await.unwrap().is_empty());
}

// ---- GitLab's real answers (issue 13, docs/gitlab-contract.md) -------------

#[tokio::test]
async fn a_healthy_fleet_in_gitlabs_fingerprint_form_stays_healthy_and_gets_no_new_key() {
    let fx = Fixture::new().await;
    let fleet: Vec<Connected> = (0..5)
        .map(|i| fx.connect(&format!("acme/app-{i}")))
        .collect();
    // The simulator serves `fingerprint_sha256` as GitLab does: no prefix.
    let served = &fx.sim.deploy_keys(fleet[0].id)[0];
    assert!(!served.fingerprint_sha256.starts_with("SHA256:"));
    let config = repairing(&fx, &fleet.iter().collect::<Vec<_>>(), Policy::Auto, 1)
        .edit(|c| c.repair.cooldown_minutes = 0)
        .write();
    let (checker, store) = fx.checker(&config).await;
    for sweep in 0..3 {
        let summary = repair_run(&checker).await;
        assert!(
            summary.repairs.is_empty(),
            "sweep {sweep}: {:?}",
            summary.repairs
        );
        for p in &fleet {
            assert_eq!(
                states(&store, p.id).await,
                HEALTHY,
                "sweep {sweep}, project {}",
                p.id
            );
            assert_eq!(fx.sim.deploy_keys(p.id).len(), 1, "sweep {sweep}: one key");
        }
    }
    assert!(
        writes(&fx).iter().all(|w| !w.contains("deploy_keys")),
        "{:?}",
        writes(&fx)
    );
}

#[tokio::test]
async fn a_new_key_gitlab_never_confirms_is_deleted_again_and_repairs_stop_after_three() {
    let OneProject {
        fx,
        p,
        checker,
        store,
        ..
    } = OneProject::new(|c| c.edit(|c| c.repair.cooldown_minutes = 0)).await;
    repair_run(&checker).await;
    assert_eq!(states(&store, p.id).await, HEALTHY);

    // GitLab loses our key, and from now on serves every key read by id
    // with another key's material: no new key can ever be confirmed.
    fx.sim.remove_deploy_key(p.id, key_id(&fx, &p));
    fx.sim.inject(
        Fault::on(
            format!("/projects/{}/deploy_keys/", p.id),
            FaultKind::ForeignKey,
        )
        .method("GET"),
    );
    let mut failed = 0;
    for pass in 0..10 {
        let summary = repair_run(&checker).await;
        failed += summary
            .repairs
            .iter()
            .filter(|(_, o)| *o == RepairResult::Failed)
            .count();
        let ours = fx
            .sim
            .deploy_keys(p.id)
            .iter()
            .filter(|k| k.title.starts_with("glwarden"))
            .count();
        assert!(
            ours <= 1,
            "pass {pass}: {ours} keys of glwarden's at GitLab"
        );
        assert!(
            store.journal().await.unwrap().is_empty(),
            "pass {pass}: the rotation is closed, not left at `created`"
        );
    }
    assert_eq!(failed, 3, "three attempts, then automatic repair stops");
    assert!(
        fx.sim.deploy_keys(p.id).is_empty(),
        "the unconfirmed keys were deleted again"
    );
    let events = store.events(None, None, 100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "regenerate_deploy_key" && e.outcome.contains("not confirmed")),
        "{events:?}"
    );
    let stopped: Vec<_> = events
        .iter()
        .filter(|e| e.action == "repair_stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{events:?}");
    assert!(stopped[0].outcome.contains("failed 3 times"));
    let (state, detail) = component(&store, p.id, Component::DeployKey).await;
    assert_eq!(state, State::Missing);
    assert!(detail.contains("automatic repair stopped"), "{detail}");

    // A person's `regenerate` lifts the stop: automatic repairs try again.
    fx.sim.clear_faults();
    let row = stored_project(&store, p.id).await;
    checker
        .regenerate(&row, Component::DeployKey, ManualCause::CommandLine)
        .await
        .expect("regenerate");
    assert_one_matching_key(&fx, &store, p.id).await;
}

#[tokio::test]
async fn archived_or_deletion_scheduled_projects_get_no_key_or_hook_write() {
    let fx = Fixture::new().await;
    let archived = fx.connect("acme/archived");
    let doomed = fx.connect("acme/doomed");
    let config = repairing(&fx, &[&archived, &doomed], Policy::Auto, 1)
        .edit(|c| c.repair.cooldown_minutes = 0)
        .write();
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;
    for p in [&archived, &doomed] {
        fx.sim.remove_deploy_key(p.id, key_id(&fx, p));
        fx.sim.remove_hook(p.id, p.hook_id);
    }
    fx.sim.set_archived(archived.id, true);
    fx.sim.schedule_deletion(doomed.id);
    fx.sim.clear_requests();
    for _ in 0..3 {
        let summary = repair_run(&checker).await;
        assert!(summary.repairs.is_empty(), "{:?}", summary.repairs);
    }
    assert!(writes(&fx).is_empty(), "{:?}", writes(&fx));
    assert_eq!(
        states(&store, archived.id).await,
        [State::Archived, State::Missing, State::Missing]
    );
    assert_eq!(states(&store, doomed.id).await[0], State::PendingDeletion);
}

#[tokio::test]
async fn a_hook_url_gitlab_refuses_is_reported_once_not_retried() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    fx.sim.remove_hook(p.id, p.hook_id);
    // The CI's receiver is on a private address; GitLab's default refuses it.
    let config = repairing(&fx, &[&p], Policy::Auto, 1)
        .edit(|c| {
            c.repair.cooldown_minutes = 0;
            c.expect.webhook_url = Some("https://10.1.2.3/hooks/{id}".into());
        })
        .file(&fx.dir.path().join("private.toml"))
        .write();
    let (checker, store) = fx.checker(&config).await;
    for _ in 0..4 {
        repair_run(&checker).await;
    }
    let events = store.events(None, None, 100).await.unwrap();
    let attempts: Vec<_> = events
        .iter()
        .filter(|e| e.action == "create_webhook")
        .collect();
    assert_eq!(attempts.len(), 1, "{events:?}");
    assert!(
        attempts[0].outcome.contains("Invalid url given"),
        "{:?}",
        attempts[0]
    );
    let stopped: Vec<_> = events
        .iter()
        .filter(|e| e.action == "repair_stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{events:?}");
    assert!(stopped[0].outcome.contains("refuses it for good"));
    assert!(fx.sim.hooks(p.id).is_empty());
}

#[tokio::test]
async fn on_gitlab_16_0_no_hook_test_or_events_request_and_nothing_stays_unknown() {
    let fx = Fixture::new().await;
    fx.sim.set_version(gitlab_sim::SimVersion::V16_0);
    let healthy = fx.connect("acme/healthy");
    let disabled = fx.connect("acme/disabled");
    fx.sim.update_hook(disabled.id, disabled.hook_id, |h| {
        h.recent_failures = 40;
    });
    let config = repairing(&fx, &[&healthy, &disabled], Policy::Auto, 1)
        .edit(|c| {
            c.check.webhook_deliveries = true;
            c.repair.cooldown_minutes = 0;
            c.repair.webhook_reenable = WebhookReenable::Test;
        })
        .write();
    let (checker, store) = fx.checker(&config).await;
    for _ in 0..2 {
        repair_run(&checker).await;
    }
    let asked: Vec<String> = fx.sim.requests().into_iter().map(|r| r.path).collect();
    assert!(
        asked
            .iter()
            .all(|p| !p.contains("/events") && !p.contains("/test/")),
        "{asked:?}"
    );
    let (state, detail) = component(&store, healthy.id, Component::Webhook).await;
    assert_eq!(state, State::Healthy);
    assert!(
        detail.contains("GitLab 16.0 has no hook events endpoint"),
        "{detail}"
    );
    assert_eq!(
        component(&store, disabled.id, Component::Webhook).await.0,
        State::Disabled
    );
    let events = store.events(None, None, 100).await.unwrap();
    assert!(
        events.iter().all(|e| e.action != "reenable_webhook"),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_old_key_id_naming_someone_elses_key_is_never_deleted() {
    let OneProject {
        fx,
        p,
        checker,
        store,
        ..
    } = OneProject::new(|c| c).await;
    repair_run(&checker).await;

    // The stored key id now names another key on the project (a restored
    // backup, ids from elsewhere): GitLab shows it as our key's id.
    let theirs = glwarden::keys::generate_ed25519("theirs").unwrap();
    let their_id = fx
        .sim
        .add_deploy_key(p.id, "theirs", &theirs.public_openssh, true, None);
    let ours = key_id(&fx, &p);
    fx.sim.remove_deploy_key(p.id, ours);
    let row = stored_project(&store, p.id).await;
    store
        .set_deploy_key(
            row.id,
            Some(their_id),
            row.public_key.as_deref().unwrap(),
            row.fingerprint.as_deref().unwrap(),
            None,
        )
        .await
        .unwrap();

    let summary = repair_run(&checker).await;
    assert_eq!(summary.repairs.len(), 1, "{:?}", summary.repairs);
    // Ours is back; theirs is where it was, untouched.
    let row = stored_project(&store, p.id).await;
    let keys = fx.sim.deploy_keys(p.id);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let new = keys.iter().find(|k| k.id != their_id).unwrap();
    assert_eq!(row.deploy_key_id, Some(new.id as i64));
    assert_eq!(Some(new.ssh_fingerprint()), row.fingerprint);
    assert!(
        keys.iter().any(|k| k.id == their_id && k.can_push),
        "{keys:?}"
    );
    assert!(
        !fx.sim
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.ends_with(&format!("/deploy_keys/{their_id}"))),
        "their key was never deleted"
    );
}
