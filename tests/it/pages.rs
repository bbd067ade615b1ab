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
            "no project `999999` of connection `main` in the inventory"
        )
    );
    // By path too, as the alerts link to it.
    let (code, by_path) = daemon.get("/projects/main/acme/keyless").await;
    assert_eq!(code, 200);
    assert!(by_path.contains("<h1>acme/keyless</h1>"), "{by_path}");
    let (code, _) = daemon.get(&format!("/projects/other/{}", keyless.id)).await;
    assert_eq!(code, 404);
    daemon.stop().await.unwrap();
}

const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";

/// A form POST to the daemon, with `cookie` if given; redirects are not followed.
async fn post(
    daemon: &AppDaemon,
    path: &str,
    form: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client
        .post(format!("http://{}{path}", daemon.listen))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn get_with(daemon: &AppDaemon, path: &str, cookie: &str) -> String {
    reqwest::Client::new()
        .get(format!("http://{}{path}", daemon.listen))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the hidden `csrf` field in `page`.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn regenerate_from_the_page_needs_a_session_and_its_csrf_token() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/keyless");
    let token_file = secret_file(fx.dir.path(), "operator-token", OPERATOR_TOKEN);
    let config = fx
        .config(&[&p])
        .daemon("*/1 * * * * *", 0.2)
        .repairs(Policy::Report, 1)
        .master_key_file(&fx.master_key_file())
        .edit(|c| c.http.operator_token_file = Some(token_file))
        .write();
    fx.sim.remove_deploy_key(p.id, key_id(&fx, &p));
    let mut daemon = fx.spawn_daemon(&config).await;
    let page_path = format!("/projects/main/{}", p.id);
    wait_until("the key is missing", Duration::from_secs(30), || async {
        daemon
            .get(&page_path)
            .await
            .1
            .contains("<span class=\"state bad\">missing</span>")
    })
    .await;
    let id = p.id.to_string();
    let regenerate = |csrf: &'static str| {
        vec![
            ("connection", "main"),
            ("project", id.as_str()),
            ("action", "regenerate_deploy_key"),
            ("csrf", csrf),
        ]
    };

    // Signed out: a link to sign in, no buttons; a POST is refused.
    let (_, page) = daemon.get(&page_path).await;
    assert!(
        page.contains("<a href=\"/sign-in\">Sign in</a>") && !page.contains("<button"),
        "{page}"
    );
    let refused = post(&daemon, "/actions", &regenerate(""), None).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.text().await.unwrap().trim(),
        "sign in first (/sign-in)"
    );

    // A wrong token waits, then is refused.
    let asked = std::time::Instant::now();
    let wrong = post(
        &daemon,
        "/sign-in",
        &[("token", "not-the-operator-token")],
        None,
    )
    .await;
    assert_eq!(wrong.status(), 403);
    assert!(asked.elapsed() >= Duration::from_secs(1), "refused at once");
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("That is not the operator token.")
    );

    // The right one: a session cookie, HttpOnly, SameSite=Strict.
    let signed = post(&daemon, "/sign-in", &[("token", OPERATOR_TOKEN)], None).await;
    assert_eq!(signed.status(), 303);
    let set_cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(!set_cookie.contains(OPERATOR_TOKEN), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // A signed-in page (it carries the CSRF token) is never kept by a cache.
    let answer = reqwest::Client::new()
        .get(format!("http://{}{page_path}", daemon.listen))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["cache-control"], "no-store");
    let page = answer.text().await.unwrap();
    assert!(
        page.contains("<button type=\"submit\">Regenerate deploy key</button>"),
        "{page}"
    );
    let csrf = csrf_of(&page);

    // The session without its CSRF token changes nothing.
    let keys_before = fx.sim.deploy_keys(p.id);
    for bad in [
        "",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let refused = post(&daemon, "/actions", &regenerate(bad), Some(&cookie)).await;
        assert_eq!(refused.status(), 403);
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("CSRF token is missing or wrong")
        );
    }
    assert_eq!(fx.sim.deploy_keys(p.id), keys_before);

    // With both: the key is regenerated, as `glwarden regenerate` does.
    let form: Vec<(&str, &str)> = regenerate("")
        .into_iter()
        .map(|(k, v)| {
            if k == "csrf" {
                (k, csrf.as_str())
            } else {
                (k, v)
            }
        })
        .collect();
    let done = post(&daemon, "/actions", &form, Some(&cookie)).await;
    assert_eq!(done.status(), 200);
    let body = done.text().await.unwrap();
    assert!(
        body.contains("<span class=\"state ok\">done</span>"),
        "{body}"
    );
    let cfg = glwarden::config::Config::load(&config).unwrap();
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    assert_one_matching_key(&fx, &store, p.id).await;
    let page = get_with(&daemon, &page_path, &cookie).await;
    assert!(
        page.contains("<td>deploy_key</td><td><span class=\"state ok\">healthy</span>"),
        "{page}"
    );
    let events = store.events(None, None, 10).await.unwrap();
    let rotation = events
        .iter()
        .find(|e| e.action == "regenerate_deploy_key")
        .expect("the rotation's event");
    assert_eq!(
        (rotation.cause.as_str(), rotation.outcome.as_str()),
        ("status page (operator)", "ok")
    );
    assert!(
        page.contains("status page (operator)") || page.contains("<td>regenerate_deploy_key</td>"),
        "{page}"
    );
    store.close().await;

    // Signed out again, the cookie acts no more.
    let out = post(
        &daemon,
        "/sign-out",
        &[("csrf", csrf.as_str())],
        Some(&cookie),
    )
    .await;
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_operator_token_the_page_is_read_only() {
    let (_fx, projects, mut daemon) = fleet().await;
    let (_, page) = daemon
        .get(&format!("/projects/main/{}", projects[0].id))
        .await;
    assert!(
        !page.contains("Sign in") && !page.contains("<button"),
        "{page}"
    );
    let refused = post(
        &daemon,
        "/actions",
        &[
            ("connection", "main"),
            ("project", &projects[0].id.to_string()),
            ("action", "check_now"),
            ("csrf", ""),
        ],
        None,
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("actions are off"));
    let sign_in = post(&daemon, "/sign-in", &[("token", OPERATOR_TOKEN)], None).await;
    assert_eq!(sign_in.status(), 403);
    daemon.stop().await.unwrap();
}

/// While a sweep runs, the overview says how far it has come.
#[tokio::test(flavor = "multi_thread")]
async fn the_overview_shows_the_sweep_under_way() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..4).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx.config(&refs).daemon("*/1 * * * * *", 0.0).write();
    // A slow GitLab: each sweep takes a while.
    fx.sim.set_latency(Duration::from_millis(300));
    let mut daemon = fx.spawn_daemon(&config).await;
    wait_until(
        "a sweep under way on the overview",
        Duration::from_secs(60),
        || async {
            let (_, body) = daemon.get("/api/v1/overview").await;
            serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|o| o["sweep_running"]["total"] == 4)
        },
    )
    .await;
    wait_until("the page says so", Duration::from_secs(60), || async {
        let (_, page) = daemon.get("/").await;
        page.contains("<dt>Sweep under way</dt><dd>") && page.contains(" of 4 projects (")
    })
    .await;
    fx.sim.set_latency(Duration::ZERO);
    daemon.stop().await.unwrap();
}

const READ_TOKEN: &str = "read-token-0123456789abcdef-xyz";

/// With a read token the pages and the API are not open: a page sends the
/// browser to sign in, the API answers 401 unless it is given a token, and
/// a reader's session reads but does not act.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_token_guards_the_pages_and_the_api() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let read_file = secret_file(fx.dir.path(), "read-token", READ_TOKEN);
    let operator_file = secret_file(fx.dir.path(), "operator-token", OPERATOR_TOKEN);
    let config = fx
        .config(&[&p])
        .daemon("*/1 * * * * *", 0.2)
        .edit(|c| {
            c.http.read_token_file = Some(read_file);
            c.http.operator_token_file = Some(operator_file);
        })
        .write();
    let mut daemon = fx.spawn_daemon(&config).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, auth: Option<(&str, String)>| {
        let mut request = client.get(format!("http://{}{path}", daemon.listen));
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        request.send()
    };
    let page = format!("/projects/main/{}", p.id);
    for path in ["/", page.as_str()] {
        let answer = get(path, None).await.unwrap();
        assert_eq!(answer.status(), 303, "{path}");
        assert_eq!(answer.headers()["location"], "/sign-in");
    }
    let api = get("/api/v1/overview", None).await.unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["www-authenticate"], "Bearer");
    let wrong = get(
        "/api/v1/overview",
        Some(("authorization", "Bearer nope".into())),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), 401);
    for token in [READ_TOKEN, OPERATOR_TOKEN] {
        let ok = get(
            "/api/v1/overview",
            Some(("authorization", format!("Bearer {token}"))),
        )
        .await
        .unwrap();
        assert_eq!(ok.status(), 200);
    }
    // The endpoints for machines are as they were.
    assert_eq!(daemon.get("/metrics").await.0, 200);
    assert_eq!(daemon.get("/healthz").await.0, 200);

    // A reader's session reads the pages; it has no buttons and cannot act.
    let signed = post(&daemon, "/sign-in", &[("token", READ_TOKEN)], None).await;
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = get_with(&daemon, &page, &cookie).await;
    assert!(
        body.contains("<h1>acme/app</h1>") && !body.contains("<button"),
        "{body}"
    );
    assert!(body.contains("<a href=\"/sign-in\">Sign in</a>"), "{body}");
    let refused = post(
        &daemon,
        "/actions",
        &[
            ("connection", "main"),
            ("project", &p.id.to_string()),
            ("action", "check_now"),
            ("csrf", ""),
        ],
        Some(&cookie),
    )
    .await;
    assert_eq!(refused.status(), 403);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_what_the_pages_expect() {
    let (fx, projects, mut daemon) = fleet().await;
    let page = format!("/projects/main/{}", projects[2].id);
    let expected = |host: &str| format!("<code>https://{host}/hooks/{}</code>", projects[2].id);
    assert!(
        daemon
            .get(&page)
            .await
            .1
            .contains(&expected("ci.example.com"))
    );
    let file = fx.dir.path().join("glwarden.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("https://ci.example.com/hooks/{id}"), "{text}");
    std::fs::write(
        &file,
        text.replace(
            "https://ci.example.com/hooks/{id}",
            "https://ci.internal.example/hooks/{id}",
        ),
    )
    .unwrap();
    daemon.reload().await;
    wait_until(
        "the page shows the reloaded URL",
        Duration::from_secs(30),
        || async {
            daemon
                .get(&page)
                .await
                .1
                .contains(&expected("ci.internal.example"))
        },
    )
    .await;
    daemon.stop().await.unwrap();
}
