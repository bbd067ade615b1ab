//! Clean disconnects: `glwarden project remove --purge` deletes the deploy
//! key and webhook glwarden owns (by id, and by key material or URL) and
//! nothing else, through the journal (SIGKILL mid-purge resumes), then
//! removes the project keeping its history; without `--purge` the command
//! says what stays at GitLab; `[[discover]] purge_on_leave` purges a project
//! that left its group, by a sweep that repairs.

use std::time::Duration;

use gitlab_sim::{Fault, FaultKind, HookSpec};
use glwarden::store::Store;
use glwarden_testkit::*;

/// A key and a hook on project `id` that are not glwarden's.
fn add_foreign_key_and_hook(fx: &Fixture, id: u64) -> (u64, u64) {
    let other = glwarden::keys::generate_ed25519("someone else").unwrap();
    let key = fx
        .sim
        .add_deploy_key(id, "someone else", &other.public_openssh, false, None);
    let hook = fx.sim.add_hook(
        id,
        HookSpec {
            url: "https://chat.example.com/notify".into(),
            push_events: true,
            tag_push_events: false,
            merge_requests_events: false,
            enable_ssl_verification: true,
            token: None,
        },
    );
    (key, hook)
}

/// What GitLab holds on project `id`: deploy key ids and hook ids.
fn at_gitlab(fx: &Fixture, id: u64) -> (Vec<u64>, Vec<u64>) {
    let keys = fx.sim.deploy_keys(id).iter().map(|k| k.id).collect();
    let hooks = fx.sim.hooks(id).iter().map(|h| h.id).collect();
    (keys, hooks)
}

/// A project out of the inventory, its row kept.
async fn removed_project(store: &Store, gitlab_id: u64) -> glwarden::store::ProjectRow {
    let row = store
        .all_projects()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.gitlab_id == gitlab_id as i64)
        .expect("its row is kept");
    assert!(row.removed_at.is_some(), "{row:?}");
    row
}

async fn cli(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = glwarden(&["--config", config.to_str().unwrap()]);
    cmd.args(args);
    let out = run(cmd).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two projects checked once (so glwarden knows its key and hook ids),
/// then a configuration that no longer lists the first: it stays in the
/// inventory until a command removes it.
async fn two_checked_projects(
    fx: &Fixture,
    timeout_seconds: u64,
) -> (Connected, Connected, std::path::PathBuf) {
    let p = fx.connect("acme/leaving");
    let q = fx.connect("acme/staying");
    let both = fx.config(&[&p, &q]).write();
    let (checker, store) = fx.checker(&both).await;
    fx.check(&checker).await;
    let stored = stored_project(&store, p.id).await;
    assert_eq!(
        (stored.deploy_key_id.is_some(), stored.hook_id.is_some()),
        (true, true),
        "the first check learnt the ids"
    );
    store.close().await;
    let config = fx
        .config(&[&q])
        .edit(|c| c.check.request_timeout_seconds = timeout_seconds)
        .file(&fx.dir.path().join("without-p.toml"))
        .write();
    (p, q, config)
}

#[tokio::test]
async fn purge_deletes_only_glwardens_key_and_hook_and_keeps_the_history() {
    let fx = Fixture::new().await;
    let (p, q, config) = two_checked_projects(&fx, 2).await;
    let (foreign_key, foreign_hook) = add_foreign_key_and_hook(&fx, p.id);
    let q_before = at_gitlab(&fx, q.id);

    let (code, out, err) = cli(
        &config,
        &["project", "remove", &p.id.to_string(), "--purge"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("purged acme/leaving"), "{out}");
    assert!(out.contains("deleted at GitLab"), "{out}");

    // GitLab keeps what is not glwarden's, on this project and the other.
    assert_eq!(
        at_gitlab(&fx, p.id),
        (vec![foreign_key], vec![foreign_hook])
    );
    assert_eq!(at_gitlab(&fx, q.id), q_before);
    // Out of the inventory, its history kept, the purge in its events.
    let store = Store::open(&fx.db_path()).await.unwrap();
    assert!(!active_ids(&store).await.contains(&(p.id as i64)));
    let row = removed_project(&store, p.id).await;
    assert!(row.removed_at.is_some());
    assert!(
        !store
            .transitions(Some(row.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let events = store.events(Some(row.id), None, 10).await.unwrap();
    let purge = events
        .iter()
        .find(|e| e.action == "purge")
        .expect("a purge event");
    assert_eq!(purge.outcome, "ok");
    assert!(store.journal().await.unwrap().is_empty());

    // Again: nothing left to purge, and the command says it does not know it.
    let (code, _, err) = cli(
        &config,
        &["project", "remove", &p.id.to_string(), "--purge"],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(err.contains(&p.id.to_string()), "{err}");
}

#[tokio::test]
async fn without_purge_the_command_says_what_stays_at_gitlab() {
    let fx = Fixture::new().await;
    let (p, _, config) = two_checked_projects(&fx, 2).await;
    let before = at_gitlab(&fx, p.id);
    let (code, out, err) = cli(&config, &["project", "remove", &p.id.to_string()]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!(
            "its deploy key and webhook stay at GitLab (key {}, hook {}); `--purge` deletes them",
            before.0[0], before.1[0]
        )),
        "{out}"
    );
    assert_eq!(at_gitlab(&fx, p.id), before);
}

#[tokio::test]
async fn a_purge_killed_mid_way_resumes_from_the_journal() {
    let fx = Fixture::new().await;
    // A patient client: the hook's DELETE hangs until the command is killed.
    let (p, _, config) = two_checked_projects(&fx, 60).await;
    let (foreign_key, foreign_hook) = add_foreign_key_and_hook(&fx, p.id);
    fx.sim
        .inject(Fault::on(format!("/projects/{}/hooks/", p.id), FaultKind::Hang).method("DELETE"));
    let mut child = tokio::process::Command::from(glwarden(&[
        "--config",
        config.to_str().unwrap(),
        "project",
        "remove",
        &p.id.to_string(),
        "--purge",
    ]))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    wait_until(
        "the hook's DELETE is under way",
        Duration::from_secs(30),
        || async {
            fx.sim
                .requests()
                .iter()
                .any(|r| r.method == "DELETE" && r.path.contains("/hooks/"))
        },
    )
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    fx.sim.clear_faults();
    // Killed after the key's delete, before the hook's: the journal knows.
    let store = Store::open(&fx.db_path()).await.unwrap();
    let journal = store.journal().await.unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].action, "purge");
    assert!(active_ids(&store).await.contains(&(p.id as i64)));
    assert_eq!(at_gitlab(&fx, p.id).0, vec![foreign_key]);
    store.close().await;

    // The same command again finishes it from the journal.
    let (code, out, err) = cli(
        &config,
        &["project", "remove", &p.id.to_string(), "--purge"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        at_gitlab(&fx, p.id),
        (vec![foreign_key], vec![foreign_hook])
    );
    let store = Store::open(&fx.db_path()).await.unwrap();
    assert!(store.journal().await.unwrap().is_empty());
    assert!(!active_ids(&store).await.contains(&(p.id as i64)));
    let row = removed_project(&store, p.id).await;
    let events = store.events(Some(row.id), None, 10).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "purge" && e.outcome == "ok (resumed from the journal)"),
        "{events:?}"
    );
}

/// A group `platform` with `n` discovered projects whose keys and hooks
/// glwarden made; `purge_on_leave` as given.
async fn discovered(purge_on_leave: bool, n: usize) -> (Fixture, Vec<u64>, std::path::PathBuf) {
    let fx = Fixture::new().await;
    let group = fx.sim.add_group("platform");
    fx.sim.set_group_member(group, fx.user, 40);
    let ids: Vec<u64> = (0..n)
        .map(|i| fx.sim.add_project(&format!("platform/app-{i}")))
        .collect();
    let config = fx
        .config(&[])
        .master_key_file(&fx.master_key_file())
        .repairs(Policy::Auto, 1)
        .toml(&format!(
            "[[discover]]\nconnection = \"main\"\ngroup = \"platform\"\npurge_on_leave = {purge_on_leave}\n"
        ))
        .write();
    let (checker, _store) = fx.checker(&config).await;
    repair_run(&checker).await;
    for id in &ids {
        let (keys, hooks) = at_gitlab(&fx, *id);
        assert_eq!(
            (keys.len(), hooks.len()),
            (1, 1),
            "repairs made a key and a hook"
        );
    }
    (fx, ids, config)
}

/// Project `id` moves out of the group; the token can still reach it.
fn leave_the_group(fx: &Fixture, id: u64) {
    fx.sim.rename_project(id, &format!("elsewhere/app-{id}"));
    fx.sim.set_member(id, fx.user, 40);
}

#[tokio::test]
async fn a_project_that_leaves_discovery_is_purged_by_a_sweep_that_repairs() {
    let (fx, ids, config) = discovered(true, 1).await;
    let id = ids[0];
    let (foreign_key, foreign_hook) = add_foreign_key_and_hook(&fx, id);
    leave_the_group(&fx, id);
    let (checker, store) = fx.checker(&config).await;
    // A check changes nothing at GitLab: the project waits in the inventory.
    fx.check(&checker).await;
    assert!(active_ids(&store).await.contains(&(id as i64)));
    assert_eq!(at_gitlab(&fx, id).0.len(), 2);

    repair_run(&checker).await;
    assert_eq!(at_gitlab(&fx, id), (vec![foreign_key], vec![foreign_hook]));
    assert!(!active_ids(&store).await.contains(&(id as i64)));
    let row = removed_project(&store, id).await;
    let events = store.events(Some(row.id), None, 20).await.unwrap();
    let purge = events
        .iter()
        .find(|e| e.action == "purge")
        .expect("a purge event");
    assert_eq!(purge.outcome, "ok");
    assert!(purge.cause.contains("purge_on_leave"), "{purge:?}");
}

#[tokio::test]
async fn without_purge_on_leave_a_project_leaving_discovery_keeps_its_key_and_hook() {
    let (fx, ids, config) = discovered(false, 1).await;
    let id = ids[0];
    let before = at_gitlab(&fx, id);
    leave_the_group(&fx, id);
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;
    assert!(!active_ids(&store).await.contains(&(id as i64)));
    assert_eq!(at_gitlab(&fx, id), before);
}

#[tokio::test]
async fn a_whole_group_leaving_at_once_is_held_not_purged() {
    // Six discovered projects (the storm guard's minimum is five, its share 20%).
    let (fx, ids, config) = discovered(true, 6).await;
    let before: Vec<_> = ids.iter().map(|id| at_gitlab(&fx, *id)).collect();
    for id in &ids {
        leave_the_group(&fx, *id);
    }
    let (checker, store) = fx.checker(&config).await;
    let summary = repair_run(&checker).await;
    assert!(
        summary
            .problems
            .iter()
            .any(|p| p.contains("6 of 6 discovered projects left at once")),
        "{:?}",
        summary.problems
    );
    let after: Vec<_> = ids.iter().map(|id| at_gitlab(&fx, *id)).collect();
    assert_eq!(after, before, "nothing deleted at GitLab");
    let active = active_ids(&store).await;
    assert!(
        ids.iter().all(|id| active.contains(&(*id as i64))),
        "{active:?}"
    );
}
