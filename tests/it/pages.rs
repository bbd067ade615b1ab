//! The status page and its JSON API, served by the daemon in this process:
//! the overview lists what is broken, filters and pages, a project's page
//! says what to do and shows its key, expected hook URL, history and
//! events; bad filters and unknown projects are refused, naming them.

use std::time::Duration;

use glwarden_testkit::*;

/// Three projects under `report` (nothing is repaired): one's key deleted,
/// one's hook deleted, one fine; the daemon sweeps every second.
async fn fleet() -> (Fixture, Vec<Connected>, AppDaemon) {
    let fx = Fixture::new().await;
    let projects = vec![
        fx.connect("acme/keyless"),
        fx.connect("acme/hookless"),
        fx.connect("acme/fine"),
    ];
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx
        .config(&refs)
        .daemon("*/1 * * * * *", 0.2)
        .repairs(Policy::Report, 1)
        .write();
    fx.sim
        .remove_deploy_key(projects[0].id, key_id(&fx, &projects[0]));
    fx.sim.remove_hook(projects[1].id, projects[1].hook_id);
    let daemon = fx.spawn_daemon(&config).await;
    wait_until(
        "both breaks on the overview",
        Duration::from_secs(30),
        || async {
            let (_, body) = daemon.get("/api/v1/overview").await;
            serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|o| o["attention"]["total"] == 2)
        },
    )
    .await;
    (fx, projects, daemon)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_lists_what_is_broken_and_filters_it() {
    let (_fx, projects, mut daemon) = fleet().await;
    let (code, page) = daemon.get("/").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.starts_with("<!doctype html>"), "{page}");
    for text in [
        "Needing attention (2)",
        ">acme/keyless</a>",
        ">acme/hookless</a>",
        "<span class=\"state bad\">missing</span>",
        "<span class=\"state ok\">connected</span>",
        &format!("href=\"/projects/main/{}\"", projects[0].id),
    ] {
        assert!(page.contains(text), "{text} in {page}");
    }
    assert!(
        !page.contains(">acme/fine</a>"),
        "healthy projects are not listed"
    );
    // The counts are /metrics' own.
    let metrics = daemon.metrics().await;
    assert!(metrics.contains("glwarden_components{component=\"deploy_key\",state=\"missing\"} 1"));

    // Filters: by component, by path, by a healthy state asked for.
    let (_, page) = daemon.get("/?component=webhook").await;
    assert!(
        page.contains("Needing attention (1)") && page.contains(">acme/hookless</a>"),
        "{page}"
    );
    assert!(!page.contains(">acme/keyless</a>"), "{page}");
    let (_, page) = daemon.get("/?q=KEYLESS").await;
    assert!(
        page.contains("Needing attention (1)") && page.contains(">acme/keyless</a>"),
        "{page}"
    );
    let (_, json) = daemon
        .get("/api/v1/projects?component=repository&state=ok")
        .await;
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["total"], 3, "{json}");
    assert_eq!(list["rows"][0]["path"], "acme/fine", "{json}");

    // A word that names nothing is a 400 that names it.
    let (code, body) = daemon.get("/?state=broken").await;
    assert_eq!(
        (code, body.trim()),
        (400, "state `broken` is not one of glwarden's")
    );
    let (code, body) = daemon.get("/api/v1/projects?component=key").await;
    assert_eq!(
        (code, body.trim()),
        (400, "component `key` is not one of glwarden's")
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_page_says_what_to_do_and_shows_key_hook_history_and_events() {
    let (fx, projects, mut daemon) = fleet().await;
    let keyless = &projects[0];
    let (code, page) = daemon.get(&format!("/projects/main/{}", keyless.id)).await;
    assert_eq!(code, 200, "{page}");
    for text in [
        "<h1>acme/keyless</h1>",
        "<span class=\"state bad\">missing</span>",
        "add the key, or let glwarden repair it",
        &format!("<code>{}</code>", keyless.key.fingerprint),
        keyless.key.public_openssh.trim(),
        &format!("<code>{}</code>", Fixture::hook_url(keyless.id)),
        &format!("{}/acme/keyless", fx.sim.base_url()),
    ] {
        assert!(page.contains(text), "{text} in {page}");
    }
    // The history shows the first state found (the key was gone before
    // the first sweep), with its time both ways.
    assert!(
        page.contains(
            "<td>deploy_key</td><td>—</td>\n      <td><span class=\"state bad\">missing</span>"
        ),
        "{page}"
    );
    assert!(
        page.contains(" ago</time> <small class=\"muted\">"),
        "{page}"
    );

    // The JSON is the same view.
    let (_, json) = daemon
        .get(&format!("/api/v1/projects/main/{}", keyless.id))
        .await;
    let p: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(p["path"], "acme/keyless");
    let key = &p["components"][1];
    assert_eq!(
        (&key["component"], &key["state"]),
        (&"deploy_key".into(), &"missing".into()),
        "{json}"
    );
    assert_eq!(
        p["deploy_key_fingerprint"],
        keyless.key.fingerprint.as_str()
    );
    assert!(
        p["transitions"].as_array().is_some_and(|t| t.len() == 3),
        "{json}"
    );

    // Under `report` the repair is planned, not done: the plan is an event.
    assert!(page.contains("<td>deploy_key</td><td>plan</td>"), "{page}");

    // Unknown projects are a 404 naming what was asked.
    let (code, body) = daemon.get("/projects/main/999999").await;
    assert_eq!(
        (code, body.trim()),
        (
            404,
            "no project 999999 of connection `main` in the inventory"
        )
    );
    let (code, _) = daemon.get(&format!("/projects/other/{}", keyless.id)).await;
    assert_eq!(code, 404);
    daemon.stop().await.unwrap();
}
