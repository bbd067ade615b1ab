//! The `glwarden` binary as a user runs it: the demo, config errors, exit
//! statuses, project commands, and no secret in anything it prints.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use glwarden::health::{Component, State};
use glwarden_testkit::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_shows_every_state_of_the_design() {
    let out = run(glwarden(&["demo", "--format", "json"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find("{\n").expect("JSON report in the output");
    let end = stdout.rfind("\n}").expect("end of JSON") + 2;
    let report: serde_json::Value = serde_json::from_str(&stdout[start..end]).unwrap();

    let mut seen: Vec<(String, String)> = Vec::new();
    for c in report["connections"].as_array().unwrap() {
        seen.push(("connection".into(), c["state"].as_str().unwrap().into()));
    }
    for p in report["projects"].as_array().unwrap() {
        for component in ["repository", "deploy_key", "webhook"] {
            seen.push((
                component.into(),
                p[component]["state"].as_str().unwrap().into(),
            ));
        }
    }
    for component in [
        Component::Connection,
        Component::Repository,
        Component::DeployKey,
        Component::Webhook,
    ] {
        for state in component.states().iter().chain([&State::Unknown]) {
            assert!(
                seen.contains(&(component.as_str().into(), state.as_str().into())),
                "demo lacks {component} {state}; saw {seen:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_table_is_printed_by_default() {
    let out = run(glwarden(&["demo"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DEPLOY KEY") && stdout.contains("pending_deletion"),
        "{stdout}"
    );
}

/// `demo --serve`: the README's one command to see the status page. It
/// prints the URL and an operator token, serves the page with the demo's
/// broken fleet, takes the token at sign-in, and stops on Ctrl-C (SIGINT)
/// with status 0.
#[tokio::test(flavor = "multi_thread")]
async fn demo_serve_shows_the_page_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let listen = free_listen();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo-serve.log");
    let mut child = glwarden(&["demo", "--serve", "--listen", &listen])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Its output is read to the end (a closed pipe would fail its next
    // line); the lines up to the token come back here.
    let (first_lines, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut sent = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                let done = line.starts_with("Operator token");
                seen.push(line);
                if done {
                    let _ = first_lines.send(std::mem::take(&mut seen));
                    sent = true;
                }
            }
        }
        if !sent {
            let _ = first_lines.send(seen);
        }
    });
    let lines = tokio::task::spawn_blocking(move || lines.recv().unwrap())
        .await
        .unwrap();
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("http://{listen}/ (status page)")),
        "{text}"
    );
    let token = lines
        .last()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 48, "{text}");

    // The page, once it answers (a first request could meet a process
    // still busy with its first sweep on a loaded machine).
    wait_until("the demo's page", Duration::from_secs(60), || async {
        let page = match reqwest::get(format!("http://{listen}/")).await {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(e) => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                eprintln!("GET /: {e}; the demo's log so far:\n{log}");
                return false;
            }
        };
        page.contains(">acme/web</a>") && page.contains("Sign in")
    })
    .await;
    let signed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://{listen}/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);

    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_the_file_and_key_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = run(glwarden(&[
        "--config",
        missing.to_str().unwrap(),
        "config",
        "check",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("nope.toml"), "{}", text(&out));

    let cases = [
        ("[check]\nconcurrency = \"x\"\n", "check.concurrency"),
        ("[check]\nnot_a_key = 1\n", "not_a_key"),
        (
            "[connections.main]\nurl = \"ftp://x\"\ntoken_env = \"GLW_TEST_UNSET_VAR\"\n",
            "connections.main.url",
        ),
        (
            "[connections.main]\nurl = \"https://x\"\ntoken_env = \"GLW_TEST_UNSET_VAR\"\n",
            "connections.main.token_env",
        ),
        ("[store\n", "glwarden.toml"),
    ];
    for (body, expected) in cases {
        let file = dir.path().join("glwarden.toml");
        std::fs::write(&file, body).unwrap();
        let out = run(glwarden(&[
            "--config",
            file.to_str().unwrap(),
            "config",
            "check",
        ]))
        .await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(3), "{body}: {all}");
        assert!(
            all.contains(expected),
            "{body}: expected `{expected}` in: {all}"
        );
        assert!(all.contains("glwarden.toml"), "{all}");
        assert!(
            !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
            "{all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_overrides_the_file() {
    let fx = Fixture::new().await;
    let config = fx.write_config(&[], "");
    let mut cmd = glwarden(&["--config", config.to_str().unwrap(), "config", "check"]);
    cmd.env("GLWARDEN__CHECK__CONCURRENCY", "3");
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("concurrency = 3"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_status_says_healthy_broken_or_unknown() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(&[&p], "");
    let cfg = config.to_str().unwrap();

    let out = run(glwarden(&["--config", cfg, "check"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    fx.sim.inject(gitlab_sim::Fault::on(
        "/hooks",
        gitlab_sim::FaultKind::Status {
            code: 503,
            html: false,
        },
    ));
    let out = run(glwarden(&["--config", cfg, "check"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    fx.sim.clear_faults();

    fx.sim.remove_hook(p.id, p.hook_id);
    let out = run(glwarden(&["--config", cfg, "check", "--format", "json"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["projects"][0]["webhook"]["state"], "missing");

    // `status` reads the store only: the same answer with GitLab gone.
    fx.sim.shutdown();
    let out = run(glwarden(&["--config", cfg, "status"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn project_add_list_remove_and_history() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(&[], "");
    let cfg = config.to_str().unwrap();
    let key_file = fx.dir.path().join("key.pub");
    std::fs::write(&key_file, &p.key.public_openssh).unwrap();

    let out = run(glwarden(&[
        "--config",
        cfg,
        "project",
        "add",
        "acme/app",
        "--deploy-key-file",
        key_file.to_str().unwrap(),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("id {}", p.id)),
        "{}",
        text(&out)
    );

    let out = run(glwarden(&["--config", cfg, "project", "list"])).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acme/app"),
        "{}",
        text(&out)
    );

    let out = run(glwarden(&[
        "--config",
        cfg,
        "check",
        "--project",
        "acme/app",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(glwarden(&[
        "--config",
        cfg,
        "history",
        "--project",
        &p.id.to_string(),
    ]))
    .await;
    let history = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        history.contains("deploy_key") && history.contains("healthy"),
        "{history}"
    );

    let out = run(glwarden(&[
        "--config", cfg, "project", "remove", "acme/app",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = run(glwarden(&[
        "--config", cfg, "project", "list", "--format", "json",
    ]))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    let out = run(glwarden(&[
        "--config",
        cfg,
        "project",
        "add",
        "acme/does-not-exist",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("404"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_in_any_output_even_at_debug_level() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let q = fx.connect("acme/broken");
    fx.sim.remove_hook(q.id, q.hook_id);
    let config = fx.write_config(&[&p, &q], "");
    let cfg = config.to_str().unwrap();
    let mut everything = String::new();
    for args in [
        vec!["--config", cfg, "-vv", "check"],
        vec!["--config", cfg, "-vv", "check", "--format", "json"],
        vec!["--config", cfg, "-vv", "status"],
        vec!["--config", cfg, "-vv", "history"],
        vec!["--config", cfg, "-vv", "config", "check"],
    ] {
        let mut cmd = glwarden(&args);
        cmd.env("RUST_LOG", "debug");
        let out = run(cmd).await;
        everything.push_str(&text(&out));
    }
    // A revoked token and a GitLab error page must not leak it either.
    fx.sim.revoke_token(TOKEN);
    let mut cmd = glwarden(&["--config", cfg, "check"]);
    cmd.env("RUST_LOG", "trace");
    everything.push_str(&text(&run(cmd).await));

    assert!(everything.contains("DEBUG"), "debug logging was on");
    assert!(!everything.contains(TOKEN), "the token leaked");
    assert!(
        !everything.contains("SECRET-token"),
        "part of the token leaked"
    );
    assert!(!everything.contains("PRIVATE KEY"));
    assert_no_secret_file_readable(&fx.db_path());
}

fn assert_no_secret_file_readable(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "database file mode");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_example_config_is_valid() {
    use std::os::unix::fs::PermissionsExt;
    let creds = tempfile::tempdir().unwrap();
    let token = creds.path().join("gitlab-token");
    std::fs::write(&token, "glpat-example").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let master = creds.path().join("master-key");
    std::fs::write(&master, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o600)).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/glwarden.example.toml");
    let mut cmd = glwarden(&["--config", example, "config", "check"]);
    cmd.env("CREDENTIALS_DIRECTORY", creds.path());
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("glpat-example"));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_warns_about_event_flags_older_gitlab_does_not_return() {
    let fx = Fixture::new().await;
    let config = fx
        .config(&[])
        .edit(|c| {
            c.expect.webhook_events =
                vec!["push_events".into(), "resource_deploy_token_events".into()]
        })
        .write();
    let config = config.display().to_string();
    let out = run(glwarden(&["--config", &config, "config", "check"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expect.webhook_events[1]")
            && stderr.contains("`resource_deploy_token_events` only since 18.10"),
        "{stderr}"
    );
    assert!(!stderr.contains("webhook_events[0]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_on_two_connections_is_refused_with_the_candidates() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    // The same project through a second connection: one id, two projects.
    let extra = format!(
        "[connections.mirror]\nurl = {:?}\ntoken_file = {:?}\n\n\
         [[projects]]\nconnection = \"mirror\"\nid = {}\ndeploy_key = {:?}\n\n",
        fx.sim.base_url(),
        fx.dir.path().join("token").display().to_string(),
        p.id,
        p.key.public_openssh
    );
    let config = fx.write_config(&[&p], &extra).display().to_string();
    let out = run(glwarden(&["--config", &config, "check"])).await;
    assert!(out.status.code().is_some(), "{}", text(&out));
    let id = p.id.to_string();

    let out = run(glwarden(&["--config", &config, "project", "remove", &id])).await;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("names 2 projects")
            && said.contains("connection main")
            && said.contains("connection mirror")
            && said.contains("--connection"),
        "{said}"
    );
    // Nothing was removed.
    let out = run(glwarden(&[
        "--config", &config, "project", "list", "--format", "json",
    ]))
    .await;
    assert_eq!(
        text(&out).matches("\"gitlab_id\"").count(),
        2,
        "{}",
        text(&out)
    );

    let out = run(glwarden(&[
        "--config",
        &config,
        "--connection",
        "mirror",
        "project",
        "remove",
        &id,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = run(glwarden(&[
        "--config", &config, "project", "list", "--format", "json",
    ]))
    .await;
    let listed = text(&out);
    assert_eq!(listed.matches("\"gitlab_id\"").count(), 1, "{listed}");
    assert!(listed.contains("\"main\""), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn project_add_checks_the_webhook_url_as_the_config_does() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(&[], "").display().to_string();
    for bad in [
        "http://ci.example.com/hooks",
        "https://ci/{nope}",
        "ftp://ci/x",
    ] {
        let out = run(glwarden(&[
            "--config",
            &config,
            "project",
            "add",
            &p.id.to_string(),
            "--webhook-url",
            bad,
        ]))
        .await;
        assert_eq!(out.status.code(), Some(3), "{bad}: {}", text(&out));
        assert!(text(&out).contains("--webhook-url"), "{}", text(&out));
    }
    let out = run(glwarden(&[
        "--config", &config, "project", "list", "--format", "json",
    ]))
    .await;
    assert_eq!(text(&out).trim(), "[]", "nothing was added");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_pointed_at_another_gitlab_refuses_to_start_and_writes_nothing() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    fx.sim.remove_hook(p.id, p.hook_id); // something a repair would write
    let config = fx.write_config(&[&p], "[repair]\nwebhook = \"auto\"\nconfirm_checks = 1\n");
    let cfg = config.to_str().unwrap();
    let out = run(glwarden(&["--config", cfg, "check"])).await;
    assert!(out.status.code().is_some(), "{}", text(&out));

    // Another instance where the same project id holds someone else's key and hook.
    let other = gitlab_sim::Sim::start().await.unwrap();
    let user = other.add_user("ci-bot");
    other.add_access_token(user, TOKEN, &["api"], None);
    let theirs = other.add_project("someone/else");
    assert_eq!(theirs, p.id, "the same id names another project there");
    other.set_member(theirs, user, 40);
    let their_key = glwarden::keys::generate_ed25519("theirs").unwrap();
    other.add_deploy_key(theirs, "theirs", &their_key.public_openssh, true, None);
    let text_before = std::fs::read_to_string(&config).unwrap();
    let repointed = text_before.replace(&fx.sim.base_url(), &other.base_url());
    assert_ne!(repointed, text_before);
    std::fs::write(&config, &repointed).unwrap();
    let moved_to = glwarden::config::parse_base_url(&other.base_url()).unwrap();

    fx.sim.clear_requests();
    for args in [
        vec!["check"],
        vec!["repair"],
        vec!["regenerate", "acme/app", "--deploy-key"],
        vec!["key", "private", "acme/app"],
        vec!["run"],
    ] {
        let mut full = vec!["--config", cfg];
        full.extend(&args);
        // `run` would serve forever if it started: it must exit at once.
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), run(glwarden(&full)))
            .await
            .unwrap_or_else(|_| panic!("`{}` started against another instance", args.join(" ")));
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains(&format!("glwarden connection move main --to {moved_to}")),
            "{args:?}: {said}"
        );
    }
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    assert!(fx.sim.requests().is_empty(), "{:?}", fx.sim.requests());
    assert_eq!(other.deploy_keys(theirs).len(), 1);
    assert!(other.hooks(theirs).is_empty());

    // A person says it is the same instance: the ids go with it, but only
    // to the url the file now gives.
    for (to, said) in [
        (
            "https://elsewhere.example.com".to_owned(),
            "edit the file first",
        ),
        (other.base_url(), "moved from"),
    ] {
        let out = run(glwarden(&[
            "--config",
            cfg,
            "connection",
            "move",
            "main",
            "--to",
            &to,
        ]))
        .await;
        assert_eq!(out.status.success(), said == "moved from", "{}", text(&out));
        assert!(text(&out).contains(said), "{}", text(&out));
    }
    let out = run(glwarden(&["--config", cfg, "check"])).await;
    assert!(out.status.code().is_some(), "{}", text(&out));
    assert!(!other.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn repair_dry_run_plans_from_stored_health_and_writes_nothing() {
    let fx = Fixture::new().await;
    let fine = fx.connect("acme/fine");
    let no_hook = fx.connect("acme/no-hook");
    let doubled = fx.connect("acme/doubled");
    fx.sim.remove_hook(no_hook.id, no_hook.hook_id);
    fx.sim.add_hook(
        doubled.id,
        gitlab_sim::HookSpec {
            url: Fixture::hook_url(doubled.id),
            push_events: true,
            tag_push_events: true,
            merge_requests_events: true,
            enable_ssl_verification: true,
            token: None,
        },
    );
    let config = fx.write_config(
        &[&fine, &no_hook, &doubled],
        "[repair]\nwebhook = \"auto\"\nconfirm_checks = 1\n",
    );
    let cfg = config.to_str().unwrap();
    let out = run(glwarden(&["--config", cfg, "check"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    fx.sim.clear_requests();
    let out = run(glwarden(&["--config", cfg, "repair", "--dry-run"])).await;
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |path: &str| {
        plan.lines()
            .filter(|l| l.starts_with(path) && l.contains("webhook"))
            .collect::<Vec<_>>()
    };
    assert!(line("acme/fine").is_empty(), "{plan}");
    assert_eq!(line("acme/no-hook").len(), 1, "{plan}");
    assert!(
        line("acme/no-hook")[0].contains("would create_webhook (policy auto)"),
        "{plan}"
    );
    assert_eq!(line("acme/doubled").len(), 1, "{plan}");
    assert!(
        line("acme/doubled")[0].contains("would delete_duplicate_hooks (policy auto)"),
        "{plan}"
    );
    assert!(fx.sim.requests().is_empty(), "{:?}", fx.sim.requests());
    assert_eq!(fx.sim.hooks(doubled.id).len(), 2);
}
