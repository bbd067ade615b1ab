//! The whole of glwarden on PostgreSQL (`[store] url`): a sweep that finds
//! a deleted key and a missing hook and repairs both through the journal,
//! its history and events, and the command line reading the same database.
//! The store's own suite runs on both engines in `src/store` (`NAME::sqlite`,
//! `NAME::postgres`); this is the end-to-end path over a real server with
//! TLS verified against the test CA and the password from a file.

use glwarden::health::{Component, State};
use glwarden::sweep::RepairResult;
use glwarden_testkit::*;

/// A fixture's config pointed at a new database of the test cluster.
async fn on_postgres(
    fx: &Fixture,
    projects: &[&Connected],
    tweak: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> (std::path::PathBuf, std::sync::Arc<pg_fixture::Cluster>) {
    let (cluster, database) = tokio::task::spawn_blocking(pg_fixture::database)
        .await
        .unwrap();
    let password = secret_file(fx.dir.path(), "pg-password", cluster.password());
    let url = cluster.url(&database);
    let config = tweak(
        fx.config(projects)
            .repairs(Policy::Auto, 1)
            .master_key_file(&fx.master_key_file())
            .edit(|c| {
                c.store.url = Some(url);
                c.store.password_file = Some(password);
            }),
    )
    .write();
    (config, cluster)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_repairs_through_the_journal_on_postgresql() {
    let fx = Fixture::new().await;
    let deleted = fx.connect("acme/deleted");
    let unhooked = fx.connect("acme/unhooked");
    let fine = fx.connect("acme/fine");
    let (config, _cluster) = on_postgres(&fx, &[&deleted, &unhooked, &fine], |c| c).await;
    let (checker, store) = fx.checker(&config).await;
    repair_run(&checker).await;
    assert!(
        !fx.db_path().exists(),
        "no SQLite file: the store is the PostgreSQL database"
    );

    fx.sim.remove_deploy_key(deleted.id, key_id(&fx, &deleted));
    fx.sim.remove_hook(unhooked.id, unhooked.hook_id);
    let summary = repair_run(&checker).await;
    let mut repairs = summary.repairs.clone();
    repairs.sort_by_key(|(component, _)| *component);
    assert_eq!(
        repairs,
        vec![
            (Component::DeployKey, RepairResult::Done),
            (Component::Webhook, RepairResult::Done)
        ]
    );
    assert_one_matching_key(&fx, &store, deleted.id).await;
    assert_one_matching_hook(&fx, &store, unhooked.id).await;
    for p in [&deleted, &unhooked, &fine] {
        assert_eq!(states(&store, p.id).await, HEALTHY, "{}", p.id);
    }
    assert!(store.journal().await.unwrap().is_empty());

    // The history holds the break and the repair, in order.
    let row = stored_project(&store, deleted.id).await;
    let history = store.transitions(Some(row.id), 20).await.unwrap();
    let key: Vec<_> = history
        .iter()
        .rev()
        .filter(|t| t.component == Component::DeployKey)
        .map(|t| (t.from_state, t.to_state))
        .collect();
    assert_eq!(
        key,
        vec![
            (None, State::Healthy),
            (Some(State::Healthy), State::Missing),
            (Some(State::Missing), State::Healthy)
        ]
    );
    let events = store.events(None, None, 50).await.unwrap();
    for action in ["regenerate_deploy_key", "create_webhook"] {
        assert!(
            events
                .iter()
                .any(|e| e.action == action && e.outcome.starts_with("ok")),
            "{action}: {events:?}"
        );
    }
    store.close().await;

    // The command line reads the same database.
    let out = run(glwarden(&[
        "--config",
        config.to_str().unwrap(),
        "status",
        "--format",
        "json",
    ]))
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("acme/unhooked") && text.contains("healthy"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_an_unverified_server_is_an_error_naming_the_database() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (config, cluster) = on_postgres(&fx, &[&p], |c| c).await;
    std::fs::write(fx.dir.path().join("pg-password"), "not-the-password").unwrap();
    let out = run(glwarden(&["--config", config.to_str().unwrap(), "status"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("postgres://glwarden@127.0.0.1:{}", cluster.port())),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains(cluster.password()),
        "{err}"
    );

    // The server's certificate is not from a CA the URL trusts: refused.
    std::fs::write(fx.dir.path().join("pg-password"), cluster.password()).unwrap();
    let other_ca = fx.dir.path().join("other-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).unwrap();
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text
        .find("sslrootcert=")
        .expect("the URL names the test CA")
        + "sslrootcert=".len();
    let end = start + text[start..].find(['&', '"']).unwrap();
    let untrusted = format!("{}{}{}", &text[..start], other_ca.display(), &text[end..]);
    std::fs::write(&config, untrusted).unwrap();
    let out = run(glwarden(&["--config", config.to_str().unwrap(), "status"])).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (config, cluster) = on_postgres(&fx, &[&p], |c| c.daemon("*/1 * * * * *", 0.5)).await;
    let mut first = fx.spawn_daemon(&config).await;
    let cfg = glwarden::config::Config::load(&config).unwrap();
    let refused = glwarden::daemon::Daemon::build(std::sync::Arc::new(cfg))
        .await
        .err()
        .expect("a second daemon is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("another glwarden daemon holds it"),
        "{message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{message}"
    );
    first.stop().await.expect("the first daemon stops cleanly");
    // Its hold ends with it: the next daemon starts.
    let mut next = fx.spawn_daemon(&config).await;
    next.stop().await.expect("the next daemon stops cleanly");
}
