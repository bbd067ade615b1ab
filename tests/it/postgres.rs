//! The whole of glwarden on PostgreSQL (`[store] url`): a sweep that finds
//! a deleted key and a missing hook and repairs both through the journal,
//! its history and events, and the command line reading the same database.
//! The store's own suite runs on both engines in `src/store` (`NAME::sqlite`,
//! `NAME::postgres`); this is the end-to-end path over a real server with
//! TLS verified against the test CA and the password from a file.

use std::time::Duration;

use gitlab_sim::{Fault, FaultKind};
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// The same configuration for a second replica: another listen address.
/// Returns its path and both listen addresses (first, second).
fn second_replica(
    fx: &Fixture,
    first_config: &std::path::Path,
) -> (std::path::PathBuf, String, String) {
    let text = std::fs::read_to_string(first_config).unwrap();
    let first_listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let second_listen = free_listen();
    let second_config = fx.dir.path().join("second.toml");
    std::fs::write(&second_config, text.replace(&first_listen, &second_listen)).unwrap();
    (second_config, first_listen, second_listen)
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
async fn two_replicas_one_leads_and_the_standby_takes_over_when_it_stops() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (first_config, _cluster) = on_postgres(&fx, &[&p], |c| {
        c.daemon("*/1 * * * * *", 0.5)
            .edit(|c| c.ha.lease_seconds = 3)
    })
    .await;
    let (second_config, _, _) = second_replica(&fx, &first_config);

    let mut first = fx.spawn_daemon(&first_config).await;
    wait_until(
        "the first replica leads",
        Duration::from_secs(10),
        || async { first.metric("glwarden_leader").await == Some(1.0) },
    )
    .await;
    // A one-shot command that would write beside the leader is refused.
    let out = run(glwarden(&[
        "--config",
        first_config.to_str().unwrap(),
        "check",
    ]))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("a glwarden daemon leads this database"),
        "{err}"
    );

    let mut second = fx.spawn_daemon(&second_config).await;
    // The standby serves the leader's results and does not sweep.
    wait_until(
        "the standby publishes the stored health",
        Duration::from_secs(10),
        || async {
            second
                .metric("glwarden_components{component=\"deploy_key\",state=\"healthy\"}")
                .await
                == Some(1.0)
        },
    )
    .await;
    assert_eq!(second.metric("glwarden_leader").await, Some(0.0));
    assert_eq!(
        second.metric("glwarden_sweep_duration_seconds_count").await,
        Some(0.0)
    );
    assert!(
        first.metric("glwarden_leader").await == Some(1.0),
        "still one leader"
    );
    // `status` from either replica's configuration names the leader.
    let out = run(glwarden(&[
        "--config",
        second_config.to_str().unwrap(),
        "status",
    ]))
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    // Both replicas run in this process: host and process id are ours.
    let leader_line = format!("leader: {}:{}:", hostname(), std::process::id());
    assert!(
        text.starts_with(&leader_line) && text.contains("(fencing token 1, lease until "),
        "{text}"
    );

    // The leader stops (it gives the lease back): the standby leads and sweeps.
    first.stop().await.expect("the first daemon stops cleanly");
    wait_until(
        "the standby leads and sweeps",
        Duration::from_secs(10),
        || async {
            second.metric("glwarden_leader").await == Some(1.0)
                && second
                    .metric("glwarden_sweep_duration_seconds_count")
                    .await
                    .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    second
        .stop()
        .await
        .expect("the second daemon stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leaders_lease_lapses_and_a_standby_process_takes_over() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (first_config, _cluster) = on_postgres(&fx, &[&p], |c| {
        c.daemon("*/1 * * * * *", 0.5)
            .edit(|c| c.ha.lease_seconds = 5)
    })
    .await;
    let (second_config, first_listen, second_listen) = second_replica(&fx, &first_config);

    let first = fx.start_daemon(&first_config, &first_listen).await;
    wait_until(
        "the first process leads",
        Duration::from_secs(10),
        || async { first.metric("glwarden_leader").await == Some(1.0) },
    )
    .await;
    let second = fx.start_daemon(&second_config, &second_listen).await;
    assert_eq!(
        second.metric("glwarden_leader").await,
        Some(0.0),
        "{}",
        second.log()
    );

    // SIGKILL: no release; the lease lapses after at most 5 s and the
    // standby, trying every 5/3 s, takes it: within two lease periods.
    let killed = std::time::Instant::now();
    first.signal("KILL");
    // The timeout is a bound for a loaded machine; the figure is printed.
    wait_until("the standby leads", Duration::from_secs(60), || async {
        second.metric("glwarden_leader").await == Some(1.0)
    })
    .await;
    let took = killed.elapsed();
    assert!(
        second
            .log()
            .contains("leading: this replica sweeps and repairs"),
        "{}",
        second.log()
    );
    // And the store agrees: its holder is the second process, token 2.
    let cfg = glwarden::config::Config::load(&second_config).unwrap();
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    let leader = store.leader().await.unwrap().unwrap();
    assert_eq!(leader.token, 2, "{leader:?}");
    assert!(
        leader
            .holder
            .as_deref()
            .is_some_and(|h| h.contains(&format!(":{}:", second.child.id()))),
        "{leader:?}"
    );
    eprintln!(
        "standby took over {:.1} s after the leader was killed",
        took.as_secs_f64()
    );
}

/// SIGSTOP the leader while GitLab is adding the new key it asked for:
/// the standby takes over when the lease lapses, resumes the rotation from
/// the journal (the same key material, so the same key) and finishes it.
/// Resumed with SIGCONT, the old leader's next journal step is refused by
/// the database under its stale token: it stands by, records no failure,
/// and GitLab keeps one key of ours.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_stopped_mid_rotation_is_fenced_out_when_it_resumes() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (first_config, _cluster) = on_postgres(&fx, &[&p], |c| {
        c.daemon("*/1 * * * * *", 0.5).edit(|c| {
            c.ha.lease_seconds = 4;
            // The old leader reads GitLab's answer after SIGCONT.
            c.check.request_timeout_seconds = 60;
        })
    })
    .await;
    let (second_config, first_listen, second_listen) = second_replica(&fx, &first_config);
    let first = fx.start_daemon(&first_config, &first_listen).await;
    wait_until(
        "the first process leads",
        Duration::from_secs(30),
        || async { first.metric("glwarden_leader").await == Some(1.0) },
    )
    .await;

    // GitLab takes a second over the new key; the leader is stopped as
    // soon as it has asked, and GitLab's answer waits for it.
    let add_key = format!("/projects/{}/deploy_keys", p.id);
    fx.sim.inject(
        Fault::on(add_key.clone(), FaultKind::Delay(Duration::from_secs(1)))
            .method("POST")
            .times(1),
    );
    fx.sim.remove_deploy_key(p.id, key_id(&fx, &p));
    wait_until(
        "the leader asks GitLab for a new key",
        Duration::from_secs(30),
        || async {
            fx.sim
                .requests()
                .iter()
                .any(|r| r.method == "POST" && r.path.ends_with(&add_key))
        },
    )
    .await;
    first.signal("STOP");
    // GitLab added the key; only then a standby starts (so it finds the
    // key the stopped leader asked for rather than adding it itself).
    wait_until("GitLab answers 201", Duration::from_secs(30), || async {
        fx.sim
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with(&add_key) && r.status == 201)
    })
    .await;
    let second = fx.start_daemon(&second_config, &second_listen).await;

    // The standby leads and finishes the rotation the stopped leader began.
    wait_until(
        "the standby leads and the key is repaired",
        Duration::from_secs(60),
        || async {
            second.metric("glwarden_leader").await == Some(1.0)
                && second
                    .metric("glwarden_components{component=\"deploy_key\",state=\"healthy\"}")
                    .await
                    == Some(1.0)
        },
    )
    .await;
    let cfg = glwarden::config::Config::load(&second_config).unwrap();
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    wait_until("the journal is empty", Duration::from_secs(30), || async {
        store.journal().await.unwrap().is_empty()
    })
    .await;
    assert_one_matching_key(&fx, &store, p.id).await;
    let key_before = fx.sim.deploy_keys(p.id);

    // The old leader resumes: whatever it had in flight is refused, and it
    // stands by.
    first.signal("CONT");
    wait_until(
        "the old leader stands by",
        Duration::from_secs(30),
        || async { first.metric("glwarden_leader").await == Some(0.0) },
    )
    .await;
    // Its repair in flight reads GitLab's answer; its next journal step,
    // under token 1, is refused by the database.
    wait_until(
        "the old leader's repair is interrupted",
        Duration::from_secs(60),
        || async {
            first
                .log()
                .contains("repair interrupted: this replica no longer leads")
        },
    )
    .await;
    let log = first.log();
    assert!(log.contains("leadership lost"), "{log}");
    assert!(
        log.contains("UPDATE on repair_journal refused: this replica does not hold the leader's lease (fencing token 1)"),
        "{log}"
    );
    // Several sweeps of the new leader later, nothing has changed at GitLab.
    let sweeps = second
        .metric("glwarden_sweep_duration_seconds_count")
        .await
        .unwrap_or(0.0);
    wait_until(
        "two more sweeps of the new leader",
        Duration::from_secs(30),
        || async {
            second
                .metric("glwarden_sweep_duration_seconds_count")
                .await
                .is_some_and(|n| n >= sweeps + 2.0)
        },
    )
    .await;
    assert_eq!(fx.sim.deploy_keys(p.id), key_before, "no second key");
    assert_one_matching_key(&fx, &store, p.id).await;
    assert_eq!(
        first.metric("glwarden_leader").await.unwrap()
            + second.metric("glwarden_leader").await.unwrap(),
        1.0
    );
    // One rotation, done once; no failure recorded by the deposed leader.
    let events = store.events(None, None, 50).await.unwrap();
    let rotations: Vec<_> = events
        .iter()
        .filter(|e| e.action == "regenerate_deploy_key")
        .map(|e| e.outcome.as_str())
        .collect();
    // Finished by the new leader from the journal the old one began.
    assert_eq!(rotations, ["ok (resumed from the journal)"], "{events:?}");
    assert!(store.journal().await.unwrap().is_empty());
    store.close().await;
}

/// `store copy` moves a populated SQLite installation to PostgreSQL: every
/// command reads the same from both, and the copy goes on working (new
/// rows continue after the copied ids).
#[tokio::test(flavor = "multi_thread")]
async fn store_copy_moves_an_installation_with_identical_status_history_events_and_keys() {
    let fx = Fixture::new().await;
    let projects = [
        fx.connect("acme/rotated"),
        fx.connect("acme/unhooked"),
        fx.connect("acme/fine"),
    ];
    let all: Vec<&Connected> = projects.iter().collect();
    let sqlite_config = fx.dir.path().join("sqlite.toml");
    let written = fx
        .config(&all)
        .repairs(Policy::Auto, 1)
        .master_key_file(&fx.master_key_file())
        .write();
    std::fs::rename(&written, &sqlite_config).unwrap();
    {
        let (checker, store) = fx.checker(&sqlite_config).await;
        repair_run(&checker).await;
        fx.sim
            .remove_deploy_key(projects[0].id, key_id(&fx, &projects[0]));
        fx.sim.remove_hook(projects[1].id, projects[1].hook_id);
        repair_run(&checker).await;
        assert_eq!(store.events(None, None, 50).await.unwrap().len(), 2);
        store.close().await;
    }
    let (pg_config, _cluster) = on_postgres(&fx, &all, |c| c).await;
    let cli = |config: &std::path::Path, args: &[&str]| {
        let mut all_args = vec!["--config", config.to_str().unwrap()];
        all_args.extend_from_slice(args);
        let command = glwarden(&all_args);
        async move {
            let out = run(command).await;
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
            (out.status.code(), stdout, stderr)
        }
    };

    let from = format!("sqlite:{}", fx.db_path().display());
    let (code, out, err) = cli(&pg_config, &["store", "copy", "--from", &from]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("counts match"), "{out}");
    assert!(
        out.contains("events") && out.contains("owned_keys"),
        "{out}"
    );

    // Read back through both stores, every command gives the same answer.
    let json = |text: &str| -> serde_json::Value {
        let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
        // Only PostgreSQL has a lease to show.
        value.as_object_mut().map(|o| o.remove("leader"));
        to_microseconds(&mut value);
        value
    };
    for args in [
        &["status", "--format", "json"][..],
        &["history", "--format", "json"][..],
        &["events", "--format", "json"][..],
    ] {
        let (a_code, a, a_err) = cli(&sqlite_config, args).await;
        let (b_code, b, b_err) = cli(&pg_config, args).await;
        assert_eq!(
            (a_code, b_code),
            (Some(0), Some(0)),
            "{args:?}: {a_err}{b_err}"
        );
        assert_eq!(json(&a), json(&b), "{args:?}");
    }
    for p in &projects {
        let id = p.id.to_string();
        let (_, a, _) = cli(&sqlite_config, &["key", "public", &id]).await;
        let (code, b, err) = cli(&pg_config, &["key", "public", &id]).await;
        assert_eq!(code, Some(0), "{err}");
        assert!(b.starts_with("ssh-"), "{b}");
        assert_eq!(a, b, "project {id}");
    }

    // A second copy into the now populated store is refused, naming why.
    let (code, _, err) = cli(&pg_config, &["store", "copy", "--from", &from]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("already holds") && err.contains("empty store"),
        "{err}"
    );

    // The copy works on: a rotation on PostgreSQL adds its event after the
    // copied ones.
    let (code, out, err) = cli(&pg_config, &["regenerate", "acme/fine", "--deploy-key"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, events, _) = cli(&pg_config, &["events", "--format", "json"]).await;
    let events = json(&events);
    assert_eq!(events.as_array().map(Vec::len), Some(3), "{events}");

    let (code, out, err) = cli(&pg_config, &["store", "migrate"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("schema at version 4"), "{out}");
}

/// PostgreSQL keeps times to the microsecond, SQLite's text to the
/// nanosecond: times in `value` truncated to PostgreSQL's precision.
fn to_microseconds(value: &mut serde_json::Value) {
    use chrono::{DateTime, DurationRound, SecondsFormat, Utc};
    match value {
        serde_json::Value::String(text) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(text) {
                let t = t
                    .with_timezone(&Utc)
                    .duration_trunc(chrono::Duration::microseconds(1))
                    .unwrap();
                *text = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(to_microseconds),
        serde_json::Value::Object(map) => map.values_mut().for_each(to_microseconds),
        _ => {}
    }
}

/// Two real processes on one database; the leader is SIGKILLed at each
/// step of a key rotation and of a webhook recreation. Each time the
/// standby leads, finishes the repair from the journal exactly once, and
/// the killed process comes back as the standby for the next round.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_killed_at_each_step_of_a_repair_is_finished_once_by_the_standby() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let (first_config, _cluster) = on_postgres(&fx, &[&p], |c| {
        c.daemon("*/1 * * * * *", 0.5).edit(|c| {
            c.ha.lease_seconds = 3;
            c.check.request_timeout_seconds = 60;
            // The deploy key is repaired twice in a row.
            c.repair.cooldown_minutes = 0;
        })
    })
    .await;
    let (second_config, first_listen, second_listen) = second_replica(&fx, &first_config);
    let replicas = [
        (first_config.clone(), first_listen.clone()),
        (second_config.clone(), second_listen.clone()),
    ];
    let mut leader = fx.start_daemon(&first_config, &first_listen).await;
    wait_until(
        "the first process leads",
        Duration::from_secs(30),
        || async { leader.metric("glwarden_leader").await == Some(1.0) },
    )
    .await;
    let mut standby = fx.start_daemon(&second_config, &second_listen).await;
    let mut standby_index = 1;
    let cfg = glwarden::config::Config::load(&first_config).unwrap();
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    let row = stored_project(&store, p.id).await;

    let keys = format!("/api/v4/projects/{}/deploy_keys", p.id);
    let hooks = format!("/api/v4/projects/{}/hooks", p.id);
    let slow_body = FaultKind::SlowBody {
        chunk_delay: Duration::from_secs(5),
    };
    // (what breaks, the request the leader is killed in, the repair's event)
    let rounds = [
        // GitLab has the new key; the leader never learns its id.
        (
            Component::DeployKey,
            ("POST", keys.clone()),
            "regenerate_deploy_key",
        ),
        // The new key is added and journalled; the leader dies confirming it.
        (
            Component::DeployKey,
            ("GET", format!("{keys}/")),
            "regenerate_deploy_key",
        ),
        // GitLab has the new hook; the leader never learns its id.
        (
            Component::Webhook,
            ("POST", hooks.clone()),
            "create_webhook",
        ),
        // Our key expires tomorrow: the new key is stored and the leader
        // dies deleting the old one.
        (
            Component::DeployKey,
            ("DELETE", format!("{keys}/")),
            "regenerate_deploy_key",
        ),
    ];
    for (round, (component, (method, path), action)) in rounds.iter().enumerate() {
        fx.sim.clear_requests();
        match *method {
            "DELETE" => fx.sim.inject(
                Fault::on(path.clone(), FaultKind::Hang)
                    .method("DELETE")
                    .times(1),
            ),
            "POST" => fx.sim.inject(
                Fault::on(path.clone(), slow_body.clone())
                    .method("POST")
                    .times(1),
            ),
            // The confirmation: the POST is slowed so that the fault on the
            // next single-key GET is in place before it.
            "GET" => fx.sim.inject(
                Fault::on(keys.clone(), FaultKind::Delay(Duration::from_secs(3)))
                    .method("POST")
                    .times(1),
            ),
            _ => unreachable!(),
        }
        match component {
            Component::DeployKey => {
                let ours = stored_project(&store, p.id).await.fingerprint;
                let id = fx
                    .sim
                    .deploy_keys(p.id)
                    .into_iter()
                    .find(|k| Some(k.ssh_fingerprint()) == ours)
                    .map(|k| k.id)
                    .expect("our key is on the project");
                match *method {
                    "DELETE" => fx.sim.set_deploy_key_expires_at(
                        id,
                        Some(chrono::Utc::now() + chrono::Duration::days(1)),
                    ),
                    _ => fx.sim.remove_deploy_key(p.id, id),
                }
            }
            _ => {
                let hook = stored_project(&store, p.id).await.hook_id.unwrap() as u64;
                fx.sim.remove_hook(p.id, hook);
            }
        }
        if *method == "GET" {
            requested(&fx, "POST", &keys, "the leader adds the new key").await;
            fx.sim.inject(
                Fault::on(format!("{keys}/"), FaultKind::Hang)
                    .method("GET")
                    .times(1),
            );
        }
        requested(
            &fx,
            method,
            path,
            &format!("round {round}: the leader's {method} {path}"),
        )
        .await;
        leader.signal("KILL");
        fx.sim.clear_faults();

        wait_until(
            &format!("round {round}: the standby leads and the journal is finished"),
            Duration::from_secs(60),
            || async {
                standby.metric("glwarden_leader").await == Some(1.0)
                    && store.journal().await.unwrap().is_empty()
                    && standby
                        .metric(&format!(
                            "glwarden_components{{component=\"{}\",state=\"healthy\"}}",
                            component.as_str()
                        ))
                        .await
                        == Some(1.0)
            },
        )
        .await;
        assert_one_matching_key(&fx, &store, p.id).await;
        if *component == Component::Webhook {
            assert_one_matching_hook(&fx, &store, p.id).await;
        }
        let ours = fx.sim.hooks(p.id);
        let ours: Vec<_> = ours
            .iter()
            .filter(|h| h.url == Fixture::hook_url(p.id))
            .collect();
        assert_eq!(ours.len(), 1, "round {round}: one hook of ours: {ours:?}");
        // Each repair once, finished by the new leader; no failure recorded.
        let events = store.events(Some(row.id), None, 50).await.unwrap();
        let done: Vec<_> = events.iter().filter(|e| e.action == *action).collect();
        let expected = rounds[..=round].iter().filter(|r| r.2 == *action).count();
        assert_eq!(done.len(), expected, "round {round}: {events:?}");
        assert!(
            events.iter().all(|e| e.outcome.starts_with("ok")),
            "round {round}: {events:?}"
        );

        // The killed process comes back, as the standby.
        let (config, listen) = &replicas[1 - standby_index];
        let restarted = fx.start_daemon(config, listen).await;
        wait_until(
            "the restarted process stands by",
            Duration::from_secs(30),
            || async { restarted.metric("glwarden_leader").await == Some(0.0) },
        )
        .await;
        leader = std::mem::replace(&mut standby, restarted);
        standby_index = 1 - standby_index;
    }
    assert_eq!(
        leader.metric("glwarden_leader").await.unwrap()
            + standby.metric("glwarden_leader").await.unwrap(),
        1.0
    );
    // No transition lost: every break and every repair is in the history.
    let history = store.transitions(Some(row.id), 100).await.unwrap();
    for (component, breaks) in [
        (
            Component::DeployKey,
            &[State::Missing, State::Missing, State::Expiring][..],
        ),
        (Component::Webhook, &[State::Missing][..]),
    ] {
        let path: Vec<_> = history
            .iter()
            .rev()
            .filter(|t| t.component == component)
            .map(|t| t.to_state)
            .collect();
        let mut expected = vec![State::Healthy];
        for broken in breaks {
            expected.extend([*broken, State::Healthy]);
        }
        assert_eq!(path, expected, "{component}");
    }
    store.close().await;
}

/// Waits until the simulator has received `method` on a path starting with `part`.
async fn requested(fx: &Fixture, method: &str, part: &str, what: &str) {
    wait_until(what, Duration::from_secs(30), || async {
        fx.sim
            .requests()
            .iter()
            .any(|r| r.method == method && r.path.starts_with(part))
    })
    .await;
}

/// Token self-rotation on PostgreSQL: the leader's rotation is stored
/// through its fenced connections, a restart on the shared store uses the
/// rotated token, and a replica without the lease cannot write a rotation
/// (`rotated_tokens_fenced`, migrations/postgres/0004_connection_tokens.sql).
#[tokio::test(flavor = "multi_thread")]
async fn a_token_rotation_is_stored_by_the_leader_only_on_postgresql() {
    let fx = Fixture::new().await;
    let due = "glpat-postgres-rotation-SECRET-0001";
    fx.sim.add_access_token(
        fx.user,
        due,
        &["api"],
        chrono::Utc::now()
            .date_naive()
            .checked_add_days(chrono::Days::new(3)),
    );
    secret_file(fx.dir.path(), "token", due);
    let p = fx.connect("acme/rotating");
    let (config, _cluster) = on_postgres(&fx, &[&p], |c| {
        c.edit(|c| c.connections.get_mut("main").unwrap().rotate_before_days = Some(7))
    })
    .await;
    let cfg = std::sync::Arc::new(glwarden::config::Config::load(&config).unwrap());
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    let lease = store
        .lead_for_command(Duration::from_secs(30))
        .await
        .unwrap();
    let sweeper = |cfg| glwarden::sweep::Sweeper::new(cfg, lease.store.clone(), None);
    repair_run(&sweeper(cfg.clone()).await.unwrap()).await;
    assert_eq!(fx.sim.rotations(), 1);
    assert!(fx.sim.token_by_secret(due).unwrap().revoked);

    // A new sweeper (as after a restart) takes the rotated token from the store.
    repair_run(&sweeper(cfg.clone()).await.unwrap()).await;
    let report = glwarden::report::build(&store, &glwarden::sweep::Selection::All)
        .await
        .unwrap();
    let line = &report.connections[0];
    assert_eq!(
        line.health.state,
        State::Connected,
        "{}",
        line.health.detail
    );
    assert_eq!(fx.sim.rotations(), 1);
    lease.release().await;

    // Without the lease (the test's own store, unfenced), no rotation is written.
    let refused = store
        .rotation_begun(
            "main",
            "any-seed",
            1,
            chrono::Utc::now(),
            chrono::Utc::now(),
        )
        .await
        .expect_err("refused by the fence");
    assert!(refused.is_fenced(), "{refused}");
}
