//! The GitLab simulator over real HTTP: auth errors, moved and
//! deletion-scheduled projects, deploy keys, hooks (token reset, back-off,
//! tests, events), pagination, OAuth, token self-rotation, rate limits, faults
//! and `/_sim`.
//! The `contract_*` tests check the simulator against the rows of
//! docs/gitlab-contract.md that name them.

use std::time::{Duration, Instant};

use gitlab_sim::{EndpointLimits, Fault, FaultKind, HookSpec, Sim, SimVersion};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "alice-api";

struct Env {
    sim: Sim,
    http: Client,
    alice: u64,
    project: u64,
}

impl Env {
    async fn new() -> Env {
        let sim = Sim::start().await.expect("sim starts");
        let alice = sim.add_user("alice");
        sim.add_access_token(alice, TOKEN, &["api"], None);
        let project = sim.add_project("acme/app");
        sim.set_member(project, alice, 40);
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Env {
            sim,
            http,
            alice,
            project,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.sim.base_url())
    }

    fn req(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("PRIVATE-TOKEN", token)
    }

    async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path, TOKEN)
            .send()
            .await
            .expect("send")
    }

    async fn send(&self, method: Method, path: &str, body: Value) -> Response {
        self.req(method, path, TOKEN)
            .json(&body)
            .send()
            .await
            .expect("send")
    }

    fn control(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/_sim{path}", self.sim.base_url()))
    }
}

async fn body(resp: Response) -> Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_string())
}

fn ed25519_public_key() -> (String, String) {
    let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("keygen");
    let public = key.public_key();
    (
        public.to_openssh().expect("openssh"),
        // GitLab's form: no `SHA256:` prefix (docs/gitlab-contract.md §1).
        public
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string()
            .trim_start_matches("SHA256:")
            .to_owned(),
    )
}

#[tokio::test]
async fn auth_errors_have_gitlab_bodies() {
    let env = Env::new().await;
    let p = format!("/projects/{}/deploy_keys", env.project);

    let unknown = env.req(Method::GET, &p, "nope").send().await.unwrap();
    assert_eq!(unknown.status(), 401);
    assert_eq!(body(unknown).await, json!({"message": "401 Unauthorized"}));
    let none = env.http.get(env.url("/user")).send().await.unwrap();
    assert_eq!(none.status(), 401);

    env.sim
        .add_access_token(env.alice, "revoked", &["api"], None);
    env.sim.revoke_token("revoked");
    let r = env.req(Method::GET, &p, "revoked").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let b = body(r).await;
    assert_eq!(b["error"], "invalid_token");
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token was revoked")
    );

    env.sim.add_access_token(env.alice, "old", &["api"], None);
    env.sim.expire_token("old");
    let b = body(env.req(Method::GET, &p, "old").send().await.unwrap()).await;
    assert_eq!(b["error"], "invalid_token");
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token is expired")
    );

    let past = chrono::Utc::now().date_naive() - chrono::Days::new(3);
    env.sim
        .add_access_token(env.alice, "lapsed", &["api"], Some(past));
    let r = env
        .req(Method::GET, "/user", "lapsed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    env.sim
        .add_access_token(env.alice, "reader", &["read_api"], None);
    let r = env.req(Method::GET, &p, "reader").send().await.unwrap();
    assert_eq!(r.status(), 200, "read_api may read");
    let r = env
        .req(
            Method::POST,
            &format!("/projects/{}/hooks", env.project),
            "reader",
        )
        .json(&json!({"url": "https://ci.example.com/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let b = body(r).await;
    assert_eq!(b["error"], "insufficient_scope");
    assert_eq!(b["scope"], "api");

    let dev = env.sim.add_user("dev");
    env.sim.add_access_token(dev, "dev-api", &["api"], None);
    env.sim.set_member(env.project, dev, 30);
    let r = env.req(Method::GET, &p, "dev-api").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(body(r).await, json!({"message": "403 Forbidden"}));
    let r = env
        .req(
            Method::GET,
            &format!("/projects/{}", env.project),
            "dev-api",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a developer can read the project");
    let b = body(r).await;
    assert_eq!(b["permissions"]["project_access"]["access_level"], 30);

    let stranger = env.sim.add_user("stranger");
    env.sim
        .add_access_token(stranger, "stranger-api", &["api"], None);
    let r = env
        .req(Method::GET, &p, "stranger-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"message": "404 Project Not Found"}));

    let r = env.get("/no/such/route").await;
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"error": "404 Not Found"}));
}

#[tokio::test]
async fn user_and_token_self() {
    let env = Env::new().await;
    let me = body(env.get("/user").await).await;
    assert_eq!(me["id"], env.alice);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["state"], "active");

    let until = chrono::NaiveDate::from_ymd_opt(2099, 1, 31).unwrap();
    env.sim
        .add_access_token(env.alice, "dated", &["read_api"], Some(until));
    let r = env
        .req(Method::GET, "/personal_access_tokens/self", "dated")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = body(r).await;
    assert_eq!(t["expires_at"], "2099-01-31");
    assert_eq!(t["scopes"], json!(["read_api"]));
    assert_eq!(t["active"], true);
    assert_eq!(t["revoked"], false);
    assert_eq!(t["user_id"], env.alice);
}

#[tokio::test]
async fn renamed_project_redirects_gets_and_refuses_writes() {
    let env = Env::new().await;
    let id = env.project;
    env.sim.rename_project(id, "acme/renamed");

    let r = env.get("/projects/acme%2Fapp").await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    let loc = header(&r, "location").unwrap();
    assert_eq!(loc, env.url(&format!("/projects/{id}")));

    let r = env.get("/projects/acme%2Fapp/hooks?per_page=5").await;
    assert_eq!(r.status(), 301);
    assert_eq!(
        header(&r, "location").unwrap(),
        env.url(&format!("/projects/{id}/hooks?per_page=5"))
    );

    let r = env
        .send(
            Method::POST,
            "/projects/acme%2Fapp/hooks",
            json!({"url": "https://ci.example.com/h"}),
        )
        .await;
    assert_eq!(r.status(), 405);
    assert!(header(&r, "location").is_none());
    assert_eq!(
        body(r).await,
        json!({"message": "Non GET methods are not allowed for moved projects"})
    );

    let r = env
        .req(Method::HEAD, "/projects/acme%2Fapp", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "HEAD counts as a write for moved projects");
    let r = env
        .req(Method::HEAD, &format!("/projects/{id}/hooks"), TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let p = body(env.get("/projects/acme%2Frenamed").await).await;
    assert_eq!(p["id"], id);
    assert_eq!(p["path_with_namespace"], "acme/renamed");
    assert!(
        p["ssh_url_to_repo"]
            .as_str()
            .unwrap()
            .ends_with(":acme/renamed.git")
    );
    assert!(
        p["http_url_to_repo"]
            .as_str()
            .unwrap()
            .ends_with("/acme/renamed.git")
    );
    assert_eq!(p["namespace"]["full_path"], "acme");

    // A new project at the old path takes it over from the redirect.
    let newcomer = env.sim.add_project("acme/app");
    env.sim.set_member(newcomer, env.alice, 40);
    let p = body(env.get("/projects/acme%2Fapp").await).await;
    assert_eq!(p["id"], newcomer);
}

#[tokio::test]
async fn deletion_scheduling_renames_and_archives() {
    let env = Env::new().await;
    let id = env.project;
    env.sim.schedule_deletion(id);
    let p = body(env.get(&format!("/projects/{id}")).await).await;
    assert_eq!(p["path"], format!("app-deletion_scheduled-{id}"));
    assert_eq!(p["name"], format!("app-deletion_scheduled-{id}"));
    assert_eq!(
        p["path_with_namespace"],
        format!("acme/app-deletion_scheduled-{id}")
    );
    assert_eq!(p["archived"], true);
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(p["marked_for_deletion_on"], today);

    env.sim.delete_project(id);
    let r = env.get(&format!("/projects/{id}")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"message": "404 Project Not Found"}));
}

#[tokio::test]
async fn deploy_keys_post_is_idempotent_and_fingerprints_match_ssh_key() {
    let env = Env::new().await;
    let (public, fp) = ed25519_public_key();
    let path = format!("/projects/{}/deploy_keys", env.project);
    let post = json!({"title": "ci", "key": format!("  {public}  "), "can_push": false});

    let r = env.send(Method::POST, &path, post.clone()).await;
    assert_eq!(r.status(), 201);
    let k = body(r).await;
    assert_eq!(k["fingerprint_sha256"], fp);
    assert_eq!(fp.len(), 43, "unpadded base64 of 32 bytes, no prefix");
    let md5 = k["fingerprint"].as_str().unwrap();
    assert_eq!(md5.split(':').count(), 16);
    assert_eq!(k["can_push"], false);
    assert_eq!(k["expires_at"], Value::Null);
    assert!(k["key"].as_str().unwrap().starts_with("ssh-ed25519 "));

    let again = env.send(Method::POST, &path, post.clone()).await;
    assert_eq!(again.status(), 201);
    assert_eq!(body(again).await["id"], k["id"]);
    let list = env.get(&path).await;
    assert_eq!(header(&list, "x-total").as_deref(), Some("1"));
    assert_eq!(body(list).await.as_array().unwrap().len(), 1);
    assert_eq!(env.sim.deploy_keys(env.project)[0].fingerprint_sha256, fp);

    // Alice maintains another project: the key is accessible and is linked.
    let other = env.sim.add_project("acme/other");
    env.sim.set_member(other, env.alice, 40);
    let r = env
        .send(
            Method::POST,
            &format!("/projects/{other}/deploy_keys"),
            post.clone(),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body(r).await["id"], k["id"]);

    // Bob cannot see the key's projects: fingerprint taken.
    let bob = env.sim.add_user("bob");
    env.sim.add_access_token(bob, "bob-api", &["api"], None);
    let bobs = env.sim.add_project("bob/repo");
    env.sim.set_member(bobs, bob, 50);
    let r = env
        .req(
            Method::POST,
            &format!("/projects/{bobs}/deploy_keys"),
            "bob-api",
        )
        .json(&post)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b = body(r).await;
    assert_eq!(
        b["message"]["deploy_key.fingerprint"],
        json!(["has already been taken"])
    );

    let missing = env.send(Method::POST, &path, json!({"key": public})).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(body(missing).await, json!({"error": "title is missing"}));
    let bad = env
        .send(
            Method::POST,
            &path,
            json!({"title": "x", "key": "ssh-ed25519 nonsense"}),
        )
        .await;
    assert_eq!(bad.status(), 400);

    let one = format!("{path}/{}", k["id"]);
    let r = env.send(Method::PUT, &one, json!({})).await;
    assert_eq!(r.status(), 400);
    let r = env.send(Method::PUT, &one, json!({"can_push": true})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["can_push"], true);
    assert!(env.sim.deploy_keys(env.project)[0].can_push);

    let r = env.send(Method::DELETE, &one, json!({})).await;
    assert_eq!(r.status(), 204);
    assert!(r.text().await.unwrap().is_empty());
    let r = env.send(Method::DELETE, &one, json!({})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        body(r).await,
        json!({"message": "404 Deploy key Not Found"})
    );
    let r = env.get(&one).await;
    assert_eq!(r.status(), 404);

    // Still linked to the other project, so it can be enabled back here.
    let r = env
        .send(Method::POST, &format!("{one}/enable"), json!({}))
        .await;
    assert_eq!(r.status(), 201);
    let b = body(r).await;
    assert!(
        b.get("can_push").is_none(),
        "enable answers the plain DeployKey"
    );

    let expiring = chrono::Utc::now() + chrono::Duration::days(2);
    let (pk2, _) = ed25519_public_key();
    let id2 = env
        .sim
        .add_deploy_key(env.project, "exp", &pk2, false, Some(expiring));
    let b = body(env.get(&format!("{path}/{id2}")).await).await;
    assert!(b["expires_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn hook_token_is_write_only_and_reset_on_url_change() {
    let env = Env::new().await;
    let path = format!("/projects/{}/hooks", env.project);
    let r = env
        .send(
            Method::POST,
            &path,
            json!({"url": "https://ci.example.com/a", "token": "s3cret", "merge_requests_events": true}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let h = body(r).await;
    assert!(h.get("token").is_none());
    assert_eq!(h["push_events"], true, "GitLab default");
    assert_eq!(h["merge_requests_events"], true);
    assert_eq!(h["alert_status"], "executable");
    assert_eq!(h["project_id"], env.project);
    let id = h["id"].as_u64().unwrap();
    assert_eq!(
        env.sim.hooks(env.project)[0].token.as_deref(),
        Some("s3cret")
    );

    let one = format!("{path}/{id}");
    let r = env
        .send(Method::PUT, &one, json!({"push_events": false}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        env.sim.hooks(env.project)[0].token.as_deref(),
        Some("s3cret")
    );

    let r = env
        .send(
            Method::PUT,
            &one,
            json!({"url": "https://ci.example.com/b"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(env.sim.hooks(env.project)[0].token, None);

    env.send(
        Method::PUT,
        &one,
        json!({"url": "https://ci.example.com/c", "token": "new"}),
    )
    .await;
    assert_eq!(env.sim.hooks(env.project)[0].token.as_deref(), Some("new"));

    let r = env.send(Method::PUT, &one, json!({})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await, json!({"error": "No parameters provided"}));
    let r = env
        .send(Method::PUT, &one, json!({"url": "not a url"}))
        .await;
    assert_eq!(r.status(), 422);

    assert_eq!(
        env.send(Method::DELETE, &one, json!({})).await.status(),
        204
    );
    let r = env.send(Method::DELETE, &one, json!({})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"message": "404 Not found"}));
}

#[tokio::test]
async fn hook_auto_disable_backs_off_and_a_good_test_re_enables() {
    let env = Env::new().await;
    let url = "https://ci.example.com/hook";
    let id = env.sim.add_hook(
        env.project,
        HookSpec {
            url: url.into(),
            ..HookSpec::default()
        },
    );
    for _ in 0..3 {
        env.sim.record_delivery(env.project, id, 500);
    }
    let h = &env.sim.hooks(env.project)[0];
    assert_eq!((h.alert_status(), h.recent_failures), ("executable", 3));
    assert!(h.disabled_until.is_none());

    let before = chrono::Utc::now();
    env.sim.record_delivery(env.project, id, 502);
    let h = env.sim.hooks(env.project)[0].clone();
    assert_eq!(h.alert_status(), "temporarily_disabled");
    let until = h.disabled_until.unwrap();
    let secs = (until - before).num_seconds();
    assert!(
        (59..=61).contains(&secs),
        "first back-off is 1 min, got {secs}s"
    );

    // Failures while disabled do not extend the back-off (§9).
    env.sim.record_delivery(env.project, id, 0);
    let h2 = env.sim.hooks(env.project)[0].clone();
    assert_eq!((h2.recent_failures, h2.disabled_until), (4, Some(until)));

    let one = format!("/projects/{}/hooks/{id}", env.project);
    let b = body(env.get(&one).await).await;
    assert_eq!(b["alert_status"], "temporarily_disabled");
    assert!(b["disabled_until"].is_string());
    assert_eq!(b["custom_headers"], json!([]));

    // Once the window passes, the next failure doubles the delay.
    env.sim.update_hook(env.project, id, |h| {
        h.disabled_until = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    });
    assert_eq!(env.sim.hooks(env.project)[0].alert_status(), "executable");
    let before = chrono::Utc::now();
    env.sim.record_delivery(env.project, id, 500);
    let h = env.sim.hooks(env.project)[0].clone();
    let secs = (h.disabled_until.unwrap() - before).num_seconds();
    assert!(
        (119..=121).contains(&secs),
        "second back-off is 2 min, got {secs}s"
    );

    // A failing test is a 422 and does not re-enable.
    env.sim.set_receiver_status(url, 500);
    let r = env
        .send(Method::POST, &format!("{one}/test/push_events"), json!({}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        env.sim.hooks(env.project)[0].alert_status(),
        "temporarily_disabled"
    );

    env.sim.set_receiver_status(url, 200);
    let r = env
        .send(Method::POST, &format!("{one}/test/push_events"), json!({}))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body(r).await, json!({"message": "201 Created"}));
    let h = env.sim.hooks(env.project)[0].clone();
    assert_eq!(
        (h.alert_status(), h.recent_failures, h.disabled_until),
        ("executable", 0, None)
    );

    // 40 consecutive failures: permanently "disabled".
    env.sim
        .update_hook(env.project, id, |h| h.recent_failures = 39);
    env.sim.record_delivery(env.project, id, 500);
    assert_eq!(env.sim.hooks(env.project)[0].alert_status(), "disabled");

    let r = env.get(&format!("{one}/events?per_page=21")).await;
    assert_eq!(r.status(), 400);
    let r = env.get(&format!("{one}/events?per_page=3")).await;
    assert_eq!(header(&r, "x-per-page").as_deref(), Some("3"));
    let events = body(r).await;
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["response_status"], "500",
        "newest first, as a string"
    );
    assert_eq!(events[1]["response_status"], "200");
    assert_eq!(events[1]["trigger"], "push_hooks");
    let ok = body(env.get(&format!("{one}/events?status=successful")).await).await;
    assert_eq!(ok.as_array().unwrap().len(), 1);

    // Resending a logged event delivers again: a success re-enables.
    let event = events[0]["id"].as_u64().unwrap();
    let r = env
        .send(
            Method::POST,
            &format!("{one}/events/{event}/resend"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body(r).await, json!({"response_status": 200}));
    assert_eq!(env.sim.hooks(env.project)[0].alert_status(), "executable");
    let r = env
        .send(
            Method::POST,
            &format!("{one}/events/999999/resend"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let conn = body(
        env.get(&format!("{one}/events?status=server_failure&per_page=20"))
            .await,
    )
    .await;
    assert!(
        conn.as_array()
            .unwrap()
            .iter()
            .any(|e| e["response_status"] == "internal error")
    );
}

#[tokio::test]
async fn hook_test_is_rate_limited_after_five_per_minute() {
    let env = Env::new().await;
    let id = env.sim.add_hook(
        env.project,
        HookSpec {
            url: "https://ci.example.com/t".into(),
            ..HookSpec::default()
        },
    );
    let path = format!("/projects/{}/hooks/{id}/test/push_events", env.project);
    for i in 0..5 {
        let r = env.send(Method::POST, &path, json!({})).await;
        assert_eq!(r.status(), 201, "test {i}");
    }
    let r = env.send(Method::POST, &path, json!({})).await;
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").is_some());
    assert!(header(&r, "ratelimit-limit").is_none());
    assert_eq!(
        body(r).await,
        json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}})
    );
    let r = env
        .send(
            Method::POST,
            &format!("/projects/{}/hooks/{id}/test/bogus_events", env.project),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn hooks_offset_pagination_over_one_hundred() {
    let env = Env::new().await;
    for i in 0..120 {
        env.sim.add_hook(
            env.project,
            HookSpec {
                url: format!("https://ci.example.com/{i}"),
                ..HookSpec::default()
            },
        );
    }
    let path = format!("/projects/{}/hooks", env.project);
    let r = env.get(&format!("{path}?per_page=200")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-per-page").as_deref(), Some("100"));
    assert_eq!(header(&r, "x-page").as_deref(), Some("1"));
    assert_eq!(header(&r, "x-next-page").as_deref(), Some("2"));
    assert_eq!(header(&r, "x-prev-page").as_deref(), Some(""));
    assert_eq!(header(&r, "x-total").as_deref(), Some("120"));
    assert_eq!(header(&r, "x-total-pages").as_deref(), Some("2"));
    let link = header(&r, "link").unwrap();
    assert!(
        link.contains("page=2&per_page=100>; rel=\"next\""),
        "{link}"
    );
    assert!(link.contains("rel=\"first\"") && link.contains("rel=\"last\""));
    assert!(!link.contains("rel=\"prev\""));
    let items = body(r).await;
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert!(items[0].get("url_variables").is_none());
    assert!(items[0].get("custom_headers").is_none());
    assert!(items[0].get("token").is_none());

    let r = env.get(&format!("{path}?per_page=100&page=2")).await;
    assert_eq!(header(&r, "x-next-page").as_deref(), Some(""));
    assert_eq!(header(&r, "x-prev-page").as_deref(), Some("1"));
    assert!(header(&r, "link").unwrap().contains("rel=\"prev\""));
    assert_eq!(body(r).await.as_array().unwrap().len(), 20);

    let r = env.get(&path).await;
    assert_eq!(
        header(&r, "x-per-page").as_deref(),
        Some("20"),
        "default per_page"
    );
}

#[tokio::test]
async fn projects_keyset_pagination_walks_by_id() {
    let env = Env::new().await;
    let big = env.sim.add_group("big");
    env.sim.set_group_member(big, env.alice, 40);
    let mut expected = vec![env.project];
    for i in 0..245 {
        expected.push(env.sim.add_project(&format!("big/p{i}")));
    }
    for i in 0..5 {
        expected.push(env.sim.add_project(&format!("big/sub/s{i}")));
    }
    // Visible but below Maintainer: filtered out by min_access_level=40.
    let low = env.sim.add_project("elsewhere/low");
    env.sim.set_member(low, env.alice, 30);

    let mut next = Some(env.url(
        "/projects?membership=true&min_access_level=40&pagination=keyset&order_by=id&sort=asc&per_page=100",
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(url) = next.take() {
        let r = env
            .http
            .get(&url)
            .header("PRIVATE-TOKEN", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(header(&r, "x-total").is_none(), "keyset has no totals");
        next = header(&r, "link").map(|l| {
            assert!(l.ends_with("rel=\"next\""), "{l}");
            assert!(!l.contains("rel=\"prev\""));
            l.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        });
        let page = body(r).await;
        for p in page.as_array().unwrap() {
            assert!(
                p["permissions"]["group_access"]["access_level"].as_u64() >= Some(40)
                    || p["permissions"]["project_access"]["access_level"].as_u64() >= Some(40)
            );
            seen.push(p["id"].as_u64().unwrap());
        }
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // The group's list, subgroups included, pages the same way.
    let r = env
        .get("/groups/big/projects?include_subgroups=true&min_access_level=40&pagination=keyset&order_by=id&sort=asc&per_page=100&id_after=240")
        .await;
    let page = body(r).await;
    assert!(page[0].get("permissions").is_none(), "plain Project entity");
    let ids: Vec<u64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        expected
            .iter()
            .copied()
            .filter(|&i| i > 240)
            .collect::<Vec<_>>()
    );
    let r = env.get("/groups/big/projects?per_page=10").await;
    assert_eq!(
        header(&r, "x-total").as_deref(),
        Some("245"),
        "without subgroups"
    );
    let g = body(env.get("/groups/big%2Fsub").await).await;
    assert_eq!(g["full_path"], "big/sub");

    let r = env.get("/projects?simple=true&per_page=1").await;
    let simple = body(r).await;
    assert!(simple[0]["path_with_namespace"].is_string());
    assert!(simple[0].get("archived").is_none() && simple[0].get("permissions").is_none());

    // Offset pagination of /projects: newest first by default.
    let r = env.get("/projects?membership=true&per_page=2").await;
    assert_eq!(header(&r, "x-total").as_deref(), Some("252"));
    assert_eq!(body(r).await[0]["id"], low);
}

#[tokio::test]
async fn totals_are_omitted_above_ten_thousand() {
    let env = Env::new().await;
    let g = env.sim.add_group("huge");
    env.sim.set_group_member(g, env.alice, 50);
    for i in 0..10_050 {
        env.sim.add_project(&format!("huge/p{i}"));
    }
    let r = env.get("/projects?per_page=100&page=2").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-total").is_none());
    assert!(header(&r, "x-total-pages").is_none());
    assert_eq!(header(&r, "x-next-page").as_deref(), Some("3"));
    assert!(!header(&r, "link").unwrap().contains("rel=\"last\""));
}

#[tokio::test]
async fn oauth_refresh_rotates_both_tokens() {
    let env = Env::new().await;
    env.sim.add_oauth_app("app", "secret");
    env.sim
        .add_oauth_token(env.alice, "app", "acc1", "ref1", &["api"], 7200);
    let bearer = |t: &str| {
        env.http
            .get(env.url("/user"))
            .header("Authorization", format!("Bearer {t}"))
    };
    assert_eq!(bearer("acc1").send().await.unwrap().status(), 200);
    let r = env
        .http
        .get(env.url("/personal_access_tokens/self"))
        .bearer_auth("acc1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let token_url = format!("{}/oauth/token", env.sim.base_url());
    let refresh = |rt: &str| {
        env.http.post(&token_url).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "app"),
            ("client_secret", "secret"),
        ])
    };
    let r = refresh("ref1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let t = body(r).await;
    assert_eq!(t["expires_in"], 7200);
    let (acc2, ref2) = (
        t["access_token"].as_str().unwrap().to_string(),
        t["refresh_token"].as_str().unwrap().to_string(),
    );
    assert!(acc2 != "acc1" && ref2 != "ref1");

    let r = bearer("acc1").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(body(r).await["error"], "invalid_token");
    assert_eq!(bearer(&acc2).send().await.unwrap().status(), 200);

    let r = refresh("ref1").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["error"], "invalid_grant");

    let info = env
        .http
        .get(format!("{}/oauth/token/info", env.sim.base_url()))
        .bearer_auth(&acc2)
        .send()
        .await
        .unwrap();
    let info = body(info).await;
    assert_eq!(info["resource_owner_id"], env.alice);
    assert_eq!(info["application"]["uid"], "app");
    assert!(info["expires_in"].as_i64().unwrap() > 7000);

    let r = env
        .http
        .post(env.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", ref2.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "OAuth lives at the web root");

    env.sim
        .add_oauth_token(env.alice, "app", "short", "ref-s", &["api"], -5);
    let r = bearer("short").send().await.unwrap();
    assert!(
        body(r).await["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token is expired")
    );
    assert_eq!(
        refresh("ref-s").send().await.unwrap().status(),
        200,
        "refresh works after expiry"
    );
}

#[tokio::test]
async fn rate_limit_headers_and_429_are_per_user() {
    let env = Env::new().await;
    env.sim
        .add_access_token(env.alice, "alice-second", &["api"], None);
    let bob = env.sim.add_user("bob");
    env.sim.add_access_token(bob, "bob-api", &["api"], None);
    env.sim.set_rate_limit(Some(3));
    for left in [2, 1, 0] {
        let r = env.get("/user").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&r, "ratelimit-name").as_deref(),
            Some("throttle_authenticated_api")
        );
        assert_eq!(header(&r, "ratelimit-remaining"), Some(left.to_string()));
        assert!(
            header(&r, "ratelimit-reset")
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert!(header(&r, "ratelimit-resettime").is_none());
    }
    let r = env
        .req(Method::GET, "/user", "alice-second")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "all of a user's tokens share the budget");
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(header(&r, "ratelimit-resettime").unwrap().ends_with("GMT"));
    assert_eq!(header(&r, "ratelimit-observed").as_deref(), Some("4"));
    assert_eq!(r.text().await.unwrap(), "Retry later");

    let r = env
        .req(Method::GET, "/user", "bob-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.sim.set_rate_limit(None);
    let r = env.get("/user").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit-limit").is_none());
}

#[tokio::test]
async fn every_fault_kind_breaks_the_answer_as_described() {
    let env = Env::new().await;
    let path = format!("/projects/{}", env.project);
    let once = |kind: FaultKind| {
        Fault::on(format!("/projects/{}", env.project), kind)
            .method("GET")
            .times(1)
    };

    env.sim.inject(once(FaultKind::error_page(502)));
    let r = env.get(&path).await;
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/html"));
    assert!(r.text().await.unwrap().contains("<h1>502 Bad Gateway</h1>"));
    assert_eq!(env.get(&path).await.status(), 200, "times: 1 is spent");

    env.sim.inject(once(FaultKind::Status {
        code: 503,
        html: false,
    }));
    let r = env.get(&path).await;
    assert_eq!(r.status(), 503);
    assert_eq!(body(r).await, json!({"message": "503 Service Unavailable"}));

    env.sim.inject(once(FaultKind::GarbageJson));
    let r = env.get(&path).await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());

    let full = env.get(&path).await.text().await.unwrap();
    env.sim.inject(once(FaultKind::TruncatedJson));
    let r = env.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-length"),
        Some((full.len() / 2).to_string())
    );
    let cut = r.text().await.unwrap();
    assert_eq!(cut.len(), full.len() / 2);
    assert!(serde_json::from_str::<Value>(&cut).is_err());

    env.sim.inject(once(FaultKind::WrongShape));
    let b = body(env.get(&path).await).await;
    assert_eq!(b["id"], "abc");
    assert!(b.get("path_with_namespace").is_none());

    env.sim.inject(once(FaultKind::Reset));
    let err = env
        .http
        .get(env.url(&path))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .expect_err("a reset is a transport error, before any header");
    assert!(!err.is_timeout() && err.status().is_none());

    env.sim.inject(once(FaultKind::Hang));
    let start = Instant::now();
    let err = env
        .http
        .get(env.url(&path))
        .header("PRIVATE-TOKEN", TOKEN)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(start.elapsed() < Duration::from_secs(5));

    env.sim
        .inject(once(FaultKind::Delay(Duration::from_millis(300))));
    let start = Instant::now();
    assert_eq!(env.get(&path).await.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(300));

    env.sim.inject(once(FaultKind::SlowBody {
        chunk_delay: Duration::from_millis(2),
    }));
    let start = Instant::now();
    let b = body(env.get(&path).await).await;
    assert_eq!(b["id"], env.project);
    assert!(start.elapsed() >= Duration::from_millis(2 * (full.len() as u64 / 8) / 2));

    env.sim
        .inject(once(FaultKind::Oversized { bytes: 1_000_000 }));
    let r = env.get(&path).await;
    let text = r.text().await.unwrap();
    assert!(text.len() >= 1_000_000);
    assert!(serde_json::from_str::<Value>(&text).unwrap().is_array());

    env.sim.inject(once(FaultKind::RateLimited {
        retry_after: Some(7),
    }));
    let r = env.get(&path).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("7"));
    env.sim
        .inject(once(FaultKind::RateLimited { retry_after: None }));
    let r = env.get(&path).await;
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").is_none());

    // Method and path filters; `times: None` lasts until cleared.
    env.sim.inject(
        Fault::on(
            "/hooks",
            FaultKind::Status {
                code: 500,
                html: false,
            },
        )
        .method("POST"),
    );
    assert_eq!(env.get(&path).await.status(), 200);
    let hooks = format!("{path}/hooks");
    for _ in 0..2 {
        let r = env
            .send(
                Method::POST,
                &hooks,
                json!({"url": "https://x.example.com"}),
            )
            .await;
        assert_eq!(r.status(), 500);
    }
    assert!(
        env.sim.hooks(env.project).is_empty(),
        "replaced answers change nothing"
    );
    env.sim.clear_faults();
    let r = env
        .send(
            Method::POST,
            &hooks,
            json!({"url": "https://x.example.com"}),
        )
        .await;
    assert_eq!(r.status(), 201);

    let log = env.sim.requests();
    assert_eq!(log[0].status, 502);
    assert_eq!(log[0].user, Some(env.alice));
    assert!(
        log.iter().any(|r| r.status == 0),
        "reset and hang are logged with status 0"
    );
    assert_eq!(log.last().unwrap().method, "POST");
    env.sim.clear_requests();
    env.get("/user?x=1").await;
    let log = env.sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].path.as_str(), log[0].query.as_str(), log[0].status),
        ("/api/v4/user", "x=1", 200)
    );
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let env = Env::new().await;
    env.sim.set_latency(Duration::from_millis(150));
    let start = Instant::now();
    assert_eq!(env.get("/user").await.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn group_membership_is_inherited_by_subgroup_projects() {
    let env = Env::new().await;
    let carol = env.sim.add_user("carol");
    env.sim.add_access_token(carol, "carol-api", &["api"], None);
    let p = env.sim.add_project("org/team/svc");
    let r = env
        .req(Method::GET, &format!("/projects/{p}/hooks"), "carol-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let org = env.sim.add_group("org");
    env.sim.set_group_member(org, carol, 40);
    let r = env
        .req(Method::GET, &format!("/projects/{p}/hooks"), "carol-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A project created later in the subtree inherits too.
    let q = env.sim.add_project("org/team/late");
    let r = env
        .req(Method::GET, &format!("/projects/{q}"), "carol-api")
        .send()
        .await
        .unwrap();
    let b = body(r).await;
    assert_eq!(b["permissions"]["group_access"]["access_level"], 40);
    assert_eq!(b["permissions"]["project_access"], Value::Null);
    assert_eq!(b["name_with_namespace"], "org / team / late");
}

#[tokio::test]
async fn control_api_drives_the_world() {
    let env = Env::new().await;
    let id = |v: Value| v["id"].as_u64().unwrap();
    let c = |m: Method, p: &str, b: Value| env.control(m, p).json(&b).send();

    let dave = id(body(
        c(Method::POST, "/users", json!({"username": "dave"}))
            .await
            .unwrap(),
    )
    .await);
    c(
        Method::POST,
        "/tokens",
        json!({"user": dave, "token": "dave-api", "scopes": ["api"]}),
    )
    .await
    .unwrap();
    let p = id(body(
        c(Method::POST, "/projects", json!({"path": "ops/tool"}))
            .await
            .unwrap(),
    )
    .await);
    c(
        Method::POST,
        &format!("/projects/{p}/members"),
        json!({"user": dave, "access_level": 40}),
    )
    .await
    .unwrap();
    let r = env
        .req(Method::GET, "/projects/ops%2Ftool", "dave-api")
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await["id"], p);

    let r = c(
        Method::POST,
        &format!("/projects/{p}/rename"),
        json!({"path": "ops/tool2"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .req(Method::GET, "/projects/ops%2Ftool", "dave-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);

    let (pk, _) = ed25519_public_key();
    let k = id(body(
        c(
            Method::POST,
            &format!("/projects/{p}/deploy_keys"),
            json!({"title": "k", "key": pk}),
        )
        .await
        .unwrap(),
    )
    .await);
    let h = id(body(
        c(
            Method::POST,
            &format!("/projects/{p}/hooks"),
            json!({"url": "https://r.example.com"}),
        )
        .await
        .unwrap(),
    )
    .await);
    assert!(env.sim.hooks(p)[0].push_events, "HookSpec defaults apply");
    c(
        Method::POST,
        &format!("/projects/{p}/hooks/{h}/deliveries"),
        json!({"status": 500, "count": 4}),
    )
    .await
    .unwrap();
    assert_eq!(env.sim.hooks(p)[0].alert_status(), "temporarily_disabled");
    c(
        Method::DELETE,
        &format!("/projects/{p}/deploy_keys/{k}"),
        json!({}),
    )
    .await
    .unwrap();
    assert!(env.sim.deploy_keys(p).is_empty());
    c(
        Method::DELETE,
        &format!("/projects/{p}/hooks/{h}"),
        json!({}),
    )
    .await
    .unwrap();
    assert!(env.sim.hooks(p).is_empty());

    let fault = json!({"method": "GET", "path_contains": "/user", "kind": {"kind": "status", "value": {"code": 502, "html": true}}, "times": 1});
    assert_eq!(
        c(Method::POST, "/faults", fault).await.unwrap().status(),
        200
    );
    assert_eq!(env.get("/user").await.status(), 502);
    let fault = json!({"kind": {"kind": "delay", "value": 10}});
    c(Method::POST, "/faults", fault).await.unwrap();
    assert_eq!(
        env.sim.state()["faults"][0]["kind"],
        json!({"kind": "delay", "value": 10})
    );
    c(Method::DELETE, "/faults", json!({})).await.unwrap();
    assert_eq!(env.sim.state()["faults"], json!([]));

    c(Method::POST, "/latency", json!({"ms": 20}))
        .await
        .unwrap();
    c(Method::POST, "/latency", json!({"ms": 0})).await.unwrap();
    c(Method::POST, "/rate_limit", json!({"per_minute": 600}))
        .await
        .unwrap();
    let r = env.get("/user").await;
    assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("600"));
    c(Method::POST, "/rate_limit", json!({"per_minute": null}))
        .await
        .unwrap();
    assert!(header(&env.get("/user").await, "ratelimit-limit").is_none());

    c(Method::POST, "/tokens/revoke", json!({"token": "dave-api"}))
        .await
        .unwrap();
    let r = env
        .req(Method::GET, "/user", "dave-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let reqs = body(env.control(Method::GET, "/requests").send().await.unwrap()).await;
    assert!(
        reqs.as_array()
            .unwrap()
            .iter()
            .all(|r| !r["path"].as_str().unwrap().starts_with("/_sim"))
    );
    assert!(reqs.as_array().unwrap().iter().any(|r| r["status"] == 301));
    let state = body(env.control(Method::GET, "/state").send().await.unwrap()).await;
    assert_eq!(state["tokens"]["dave-api"]["revoked"], true);
    assert_eq!(
        state["projects"][p.to_string()]["path_with_namespace"],
        "ops/tool2"
    );
    assert_eq!(state["redirects"]["ops/tool"], p);
    let r = env.control(Method::GET, "/nothing").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let env = Env::new().await;
    let url = env.url("/user");
    env.sim.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = env
        .http
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(r.is_err());
}

// ---- docs/gitlab-contract.md, row by row ----

const APP_LIMIT_BODY: &str = "This endpoint has been requested too many times. Try again later.";

/// A user with a token; returns the user id.
fn user_with_token(env: &Env, name: &str, token: &str) -> u64 {
    let u = env.sim.add_user(name);
    env.sim.add_access_token(u, token, &["api"], None);
    u
}

/// `type blob` of a fresh ed25519 key (no comment).
fn bare_key() -> String {
    let (public, _) = ed25519_public_key();
    let mut parts = public.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect()
}

#[tokio::test]
async fn contract_deploy_key_fingerprint_sha256_is_bare_unpadded_base64() {
    let env = Env::new().await;
    let (public, ssh_keygen_form) = ed25519_public_key();
    let path = format!("/projects/{}/deploy_keys", env.project);
    let r = env
        .send(Method::POST, &path, json!({"title": "ci", "key": public}))
        .await;
    assert_eq!(r.status(), 201);
    let k = body(r).await;

    let fp = k["fingerprint_sha256"].as_str().unwrap();
    assert!(!fp.starts_with("SHA256:"), "{fp}");
    assert_eq!(fp.len(), 43);
    assert!(
        fp.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'),
        "standard base64 alphabet, no padding: {fp}"
    );
    assert_eq!(fp, ssh_keygen_form);

    let md5 = k["fingerprint"].as_str().unwrap();
    let pairs: Vec<&str> = md5.split(':').collect();
    assert_eq!(pairs.len(), 16);
    assert!(pairs.iter().all(|p| {
        p.len() == 2
            && p.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    }));

    // `DeployKeysProject`: exactly these fields, no admin-only ones.
    let mut fields: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "can_push",
            "created_at",
            "expires_at",
            "fingerprint",
            "fingerprint_sha256",
            "id",
            "key",
            "title",
            "usage_type",
        ]
    );
    assert!(
        ["auth_and_signing", "auth", "signing"].contains(&k["usage_type"].as_str().unwrap()),
        "usage_type is one of the enum's names"
    );
    let listed = body(env.get(&path).await).await;
    assert_eq!(listed[0]["fingerprint_sha256"], fp);
    assert!(listed[0].get("projects_with_write_access").is_none());
}

#[tokio::test]
async fn contract_deploy_key_stored_key_keeps_only_the_first_comment_word() {
    let env = Env::new().await;
    let bare = bare_key();
    let (kind, blob) = bare.split_once(' ').unwrap();
    let path = format!("/projects/{}/deploy_keys", env.project);
    let sent = format!("  {kind}   {blob}  glwarden acme/app   (rotated) \n");
    let r = env
        .send(
            Method::POST,
            &path,
            json!({"title": "first", "key": sent, "can_push": false}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let k = body(r).await;
    let stored = format!("{kind} {blob} glwarden");
    assert_eq!(k["key"], stored.as_str());
    assert_eq!(env.sim.deploy_keys(env.project)[0].key, stored);
    let one = body(env.get(&format!("{path}/{}", k["id"])).await).await;
    assert_eq!(one["key"], stored.as_str());

    // Re-POSTing the stored form is idempotent: 201, same id, and neither
    // the title nor can_push changes.
    let r = env
        .send(
            Method::POST,
            &path,
            json!({"title": "second", "key": stored, "can_push": true}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let again = body(r).await;
    assert_eq!(again["id"], k["id"]);
    assert_eq!(again["title"], "first");
    assert_eq!(again["can_push"], false);

    // The multi-word original is compared as text with the stored form,
    // misses, and fails uniqueness.
    let r = env
        .send(Method::POST, &path, json!({"title": "third", "key": sent}))
        .await;
    assert_eq!(r.status(), 400);
    let b = body(r).await;
    assert_eq!(
        b["message"]["deploy_key.fingerprint_sha256"],
        json!(["has already been taken"])
    );
    assert_eq!(env.sim.deploy_keys(env.project).len(), 1);

    let r = env
        .send(Method::POST, &path, json!({"title": "no key"}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await, json!({"error": "key is missing"}));
}

#[tokio::test]
async fn contract_deploy_key_routes_answer_403_to_a_developer() {
    let env = Env::new().await;
    let dev = user_with_token(&env, "dev", "dev-api");
    env.sim.set_member(env.project, dev, 30);
    let key = env
        .sim
        .add_deploy_key(env.project, "k", &bare_key(), false, None);
    let base = format!("/projects/{}/deploy_keys", env.project);
    let one = format!("{base}/{key}");
    let calls = [
        (Method::GET, base.clone(), json!({})),
        (
            Method::POST,
            base.clone(),
            json!({"title": "t", "key": bare_key()}),
        ),
        (Method::GET, one.clone(), json!({})),
        (Method::PUT, one.clone(), json!({"can_push": true})),
        (Method::DELETE, one.clone(), json!({})),
        (Method::POST, format!("{one}/enable"), json!({})),
    ];
    for (method, path, payload) in &calls {
        let r = env
            .req(method.clone(), path, "dev-api")
            .json(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        assert_eq!(body(r).await, json!({"message": "403 Forbidden"}));
    }
    assert_eq!(env.sim.deploy_keys(env.project).len(), 1, "nothing changed");
    assert!(!env.sim.deploy_keys(env.project)[0].can_push);

    let r = env.http.get(env.url(&base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(body(r).await, json!({"message": "401 Unauthorized"}));

    user_with_token(&env, "outsider", "outsider-api");
    let r = env
        .req(Method::PUT, &one, "outsider-api")
        .json(&json!({"can_push": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"message": "404 Project Not Found"}));

    // A Maintainer through a group share may manage deploy keys.
    let team = env.sim.add_group("team");
    let lead = user_with_token(&env, "lead", "lead-api");
    env.sim.set_group_member(team, lead, 40);
    env.sim.share_project(env.project, team, 40);
    let r = env
        .req(Method::GET, &base, "lead-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn contract_group_projects_list_shared_in_projects_unless_with_shared_false() {
    let env = Env::new().await;
    let group = env.sim.add_group("team");
    env.sim.set_group_member(group, env.alice, 40);
    let own = env.sim.add_project("team/own");
    let elsewhere = env.sim.add_project("other/shared-in");
    env.sim.share_project(elsewhere, group, 40);

    let r = env.get("/groups/team/projects").await;
    assert_eq!(r.status(), 200);
    let mut listed = ids(&body(r).await);
    listed.sort_unstable();
    assert_eq!(listed, vec![own, elsewhere], "with_shared defaults to true");

    let r = env.get("/groups/team/projects?with_shared=false").await;
    assert_eq!(header(&r, "x-total").as_deref(), Some("1"));
    assert_eq!(ids(&body(r).await), vec![own]);

    let r = env
        .get(&format!("/groups/{group}/projects?with_shared=true"))
        .await;
    let entries = body(r).await;
    assert_eq!(entries.as_array().unwrap().len(), 2);
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("permissions").is_none() && p["archived"].is_boolean()),
        "plain Project entity"
    );
}

#[tokio::test]
async fn contract_group_projects_ignore_keyset_and_page_by_offset() {
    let env = Env::new().await;
    let group = env.sim.add_group("many");
    env.sim.set_group_member(group, env.alice, 40);
    let mut all: Vec<u64> = (0..5)
        .map(|i| env.sim.add_project(&format!("many/p{i}")))
        .collect();

    // Keyset with the default order would be a 405 on /projects; here the
    // parameter is undeclared and ignored.
    for query in [
        "pagination=keyset&per_page=2",
        "pagination=keyset&order_by=id&sort=asc&per_page=2",
    ] {
        let r = env.get(&format!("/groups/many/projects?{query}")).await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(header(&r, "x-total").as_deref(), Some("5"), "{query}");
        assert_eq!(header(&r, "x-page").as_deref(), Some("1"));
        assert_eq!(header(&r, "x-next-page").as_deref(), Some("2"));
        let link = header(&r, "link").unwrap();
        assert!(link.contains("rel=\"next\"") && link.contains("rel=\"last\""));
        assert!(link.contains("page=2"), "{link}");
        assert!(
            !link.contains("id_after") && !link.contains("id_before"),
            "{link}"
        );
        assert_eq!(body(r).await.as_array().unwrap().len(), 2);
    }
    let r = env
        .get("/groups/many/projects?pagination=keyset&order_by=id&sort=asc&per_page=2&page=3")
        .await;
    assert_eq!(ids(&body(r).await), vec![all[4]]);

    // id_after is a plain filter there, offset headers and all.
    let r = env
        .get(&format!(
            "/groups/many/projects?order_by=id&sort=asc&id_after={}",
            all[1]
        ))
        .await;
    assert_eq!(header(&r, "x-total").as_deref(), Some("3"));
    assert_eq!(ids(&body(r).await), all[2..].to_vec());

    // Default order: created_at desc (newest first).
    all.reverse();
    let r = env.get("/groups/many/projects").await;
    assert_eq!(ids(&body(r).await), all);
}

#[tokio::test]
async fn contract_projects_keyset_needs_order_by_id() {
    let env = Env::new().await;
    let r = env.get("/projects?membership=true&pagination=keyset").await;
    assert_eq!(r.status(), 405);
    assert_eq!(
        body(r).await,
        json!({"error": "Keyset pagination is not yet available for this type of request"})
    );
    let r = env
        .get("/projects?membership=true&pagination=keyset&order_by=id&sort=desc&per_page=1")
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "x-total").is_none());
    assert!(header(&r, "x-page").is_none());
    assert_eq!(ids(&body(r).await), vec![env.project]);
}

#[tokio::test]
async fn contract_min_access_level_counts_a_maintainer_role_reached_through_a_share() {
    let env = Env::new().await;
    let bob = user_with_token(&env, "bob", "bob-api");
    let team = env.sim.add_group("team");
    env.sim.set_group_member(team, bob, 40);
    let shared = env.sim.add_project("vendor/lib");
    env.sim.set_member(shared, bob, 30);
    env.sim.share_project(shared, team, 40);
    // Developer only, directly: not listed at 40.
    let plain = env.sim.add_project("vendor/docs");
    env.sim.set_member(plain, bob, 30);

    let r = env
        .req(
            Method::GET,
            "/projects?membership=true&min_access_level=40&pagination=keyset&order_by=id&sort=asc",
            "bob-api",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ids(&body(r).await), vec![shared]);
    let r = env
        .req(
            Method::GET,
            "/projects?membership=true&min_access_level=30&order_by=id&sort=asc",
            "bob-api",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&body(r).await), vec![shared, plain]);

    // Neither permissions field shows the role the share gives.
    let r = env
        .req(Method::GET, &format!("/projects/{shared}"), "bob-api")
        .send()
        .await
        .unwrap();
    let p = body(r).await;
    assert_eq!(p["permissions"]["project_access"]["access_level"], 30);
    assert_eq!(p["permissions"]["group_access"], Value::Null);
    // ... yet the share makes bob a Maintainer for the role-checked routes.
    let r = env
        .req(Method::GET, &format!("/projects/{shared}/hooks"), "bob-api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A share never raises a role above the share's own level.
    env.sim.share_project(shared, team, 30);
    let r = env
        .req(
            Method::GET,
            "/projects?membership=true&min_access_level=40",
            "bob-api",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body(r).await, json!([]));
}

#[tokio::test]
async fn contract_version_answers_per_simulated_release() {
    let env = Env::new().await;
    for (v, prefix) in [
        (SimVersion::V16_0, "16.0."),
        (SimVersion::V16_11, "16.11."),
        (SimVersion::V17_3, "17.3."),
        (SimVersion::Latest, "18."),
    ] {
        env.sim.set_version(v);
        let r = env.get("/version").await;
        assert_eq!(r.status(), 200);
        let b = body(r).await;
        assert_eq!(b["version"], v.version_string());
        assert!(b["version"].as_str().unwrap().starts_with(prefix));
        assert!(b["revision"].is_string());
        assert_eq!(b["enterprise"], false);
        let kas = b["kas"].as_object().unwrap();
        for k in ["enabled", "externalUrl", "version"] {
            assert!(kas.contains_key(k), "{v:?}: kas.{k}");
        }
        assert_eq!(
            kas.contains_key("externalK8sProxyUrl"),
            v == SimVersion::Latest,
            "{v:?}: externalK8sProxyUrl is 17.6+"
        );
    }
    let r = env.http.get(env.url("/version")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(body(r).await, json!({"message": "401 Unauthorized"}));
    env.sim
        .add_access_token(env.alice, "profile", &["read_user"], None);
    let r = env
        .req(Method::GET, "/version", "profile")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "read_user is enough");
}

/// The hook test and events routes and the hook fields of one release.
async fn hook_surface(env: &Env, version: SimVersion) -> (StatusCode, StatusCode, Value) {
    env.sim.set_version(version);
    let id = env.sim.add_hook(
        env.project,
        HookSpec {
            url: format!("https://ci.example.com/{version:?}"),
            ..HookSpec::default()
        },
    );
    let one = format!("/projects/{}/hooks/{id}", env.project);
    let test = env
        .send(Method::POST, &format!("{one}/test/push_events"), json!({}))
        .await;
    let test_status = test.status();
    if test_status == 404 {
        assert_eq!(body(test).await, json!({"error": "404 Not Found"}));
    }
    let events = env.get(&format!("{one}/events")).await;
    let events_status = events.status();
    if events_status == 404 {
        assert_eq!(body(events).await, json!({"error": "404 Not Found"}));
    }
    let hook = body(env.get(&one).await).await;
    (test_status, events_status, hook)
}

#[tokio::test]
async fn contract_hook_routes_and_fields_follow_the_simulated_release() {
    let env = Env::new().await;

    let (test, events, h) = hook_surface(&env, SimVersion::V16_0).await;
    assert_eq!(
        (test, events),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    for absent in [
        "emoji_events",
        "custom_webhook_template",
        "name",
        "description",
        "custom_headers",
    ] {
        assert!(h.get(absent).is_none(), "16.0 has no {absent}");
    }
    for present in [
        "alert_status",
        "disabled_until",
        "url_variables",
        "push_events",
    ] {
        assert!(h.get(present).is_some(), "16.0 has {present}");
    }

    let (test, events, h) = hook_surface(&env, SimVersion::V16_11).await;
    assert_eq!((test, events), (StatusCode::CREATED, StatusCode::NOT_FOUND));
    assert_eq!(h["emoji_events"], false);
    assert!(h.get("custom_webhook_template").is_some());
    for absent in [
        "name",
        "description",
        "custom_headers",
        "feature_flag_events",
        "resource_access_token_events",
        "branch_filter_strategy",
    ] {
        assert!(h.get(absent).is_none(), "16.11 has no {absent}");
    }

    let (test, events, h) = hook_surface(&env, SimVersion::V17_3).await;
    assert_eq!((test, events), (StatusCode::CREATED, StatusCode::OK));
    assert!(h.get("name").is_some() && h.get("description").is_some());
    assert_eq!(h["custom_headers"], json!([]));
    assert!(
        h.get("milestone_events").is_none(),
        "milestone_events is 18.2+"
    );

    let (test, events, h) = hook_surface(&env, SimVersion::Latest).await;
    assert_eq!((test, events), (StatusCode::CREATED, StatusCode::OK));
    for present in [
        "milestone_events",
        "resource_deploy_token_events",
        "vulnerability_events",
    ] {
        assert_eq!(h[present], false, "latest has {present}");
    }
    for never in [
        "token",
        "member_events",
        "subgroup_events",
        "project_events",
    ] {
        assert!(h.get(never).is_none(), "a project hook never has {never}");
    }
}

#[tokio::test]
async fn contract_new_hook_defaults_and_nulls() {
    let env = Env::new().await;
    let path = format!("/projects/{}/hooks", env.project);
    let r = env
        .send(
            Method::POST,
            &path,
            json!({"url": "https://ci.example.com/new", "token": "t0ken"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let h = body(r).await;
    assert_eq!(h["push_events"], true);
    assert_eq!(h["enable_ssl_verification"], true);
    assert_eq!(h["branch_filter_strategy"], "wildcard");
    assert_eq!(h["confidential_note_events"], Value::Null);
    assert_eq!(h["push_events_branch_filter"], Value::Null);
    assert_eq!(h["disabled_until"], Value::Null);
    assert_eq!(h["alert_status"], "executable");
    for off in [
        "tag_push_events",
        "merge_requests_events",
        "note_events",
        "job_events",
    ] {
        assert_eq!(h[off], false, "{off}");
    }
    assert!(h.get("token").is_none());
    assert_eq!(h["url"], "https://ci.example.com/new");

    let one = format!("{path}/{}", h["id"]);
    let r = env
        .send(Method::PUT, &one, json!({"confidential_note_events": true}))
        .await;
    assert_eq!(body(r).await["confidential_note_events"], true);
}

#[tokio::test]
async fn contract_hook_list_omits_url_variables_and_a_single_get_masks_them() {
    let env = Env::new().await;
    let path = format!("/projects/{}/hooks", env.project);
    let url = "https://ci.example.com/hook/{secret}";
    let r = env
        .send(
            Method::POST,
            &path,
            json!({
                "url": url,
                "url_variables": [{"key": "secret", "value": "s3cr3t-value"}],
            }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = body(r).await["id"].as_u64().unwrap();

    let list = env.get(&path).await;
    let text = list.text().await.unwrap();
    assert!(!text.contains("s3cr3t-value"));
    let list: Value = serde_json::from_str(&text).unwrap();
    assert!(list[0].get("url_variables").is_none());
    assert!(list[0].get("custom_headers").is_none());
    assert_eq!(list[0]["url"], url, "the template, unmasked");

    let one = env.get(&format!("{path}/{id}")).await;
    let text = one.text().await.unwrap();
    assert!(!text.contains("s3cr3t-value"));
    let one: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(one["url_variables"], json!([{"key": "secret"}]));
    assert_eq!(one["url"], url);
}

#[tokio::test]
async fn contract_hook_urls_to_local_addresses_are_refused_unless_allowed() {
    let env = Env::new().await;
    let path = format!("/projects/{}/hooks", env.project);
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://10.1.2.3/hook",
        "https://192.168.1.10/hook",
        "http://localhost/hook",
    ] {
        let r = env.send(Method::POST, &path, json!({"url": url})).await;
        assert_eq!(r.status(), 422, "{url}");
        assert_eq!(body(r).await, json!({"error": "Invalid url given"}));
    }
    assert!(env.sim.hooks(env.project).is_empty());

    let r = env
        .send(
            Method::POST,
            &path,
            json!({"url": "https://ci.example.com/h"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let one = format!("{path}/{}", body(r).await["id"]);
    let r = env
        .send(Method::PUT, &one, json!({"url": "http://10.0.0.7/h"}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(body(r).await, json!({"error": "Invalid url given"}));
    assert_eq!(
        env.sim.hooks(env.project)[0].url,
        "https://ci.example.com/h"
    );

    env.sim.allow_local_hook_urls(true);
    let r = env
        .send(Method::PUT, &one, json!({"url": "http://10.0.0.7/h"}))
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .send(
            Method::POST,
            &path,
            json!({"url": "http://127.0.0.1:9000/hook"}),
        )
        .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn contract_hook_url_change_without_token_resets_the_token() {
    let env = Env::new().await;
    let id = env.sim.add_hook(
        env.project,
        HookSpec {
            url: "https://ci.example.com/old".into(),
            token: Some("secret".into()),
            ..HookSpec::default()
        },
    );
    env.sim.update_hook(env.project, id, |h| {
        h.custom_headers = vec![("X-Env".into(), "prod".into())];
    });
    let one = format!("/projects/{}/hooks/{id}", env.project);

    // The same URL again is no change.
    let r = env
        .send(
            Method::PUT,
            &one,
            json!({"url": "https://ci.example.com/old"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        env.sim.hooks(env.project)[0].token.as_deref(),
        Some("secret")
    );

    let r = env
        .send(
            Method::PUT,
            &one,
            json!({"url": "https://ci.example.com/new"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let h = body(r).await;
    assert!(h.get("token").is_none());
    let stored = &env.sim.hooks(env.project)[0];
    assert_eq!(stored.token, None, "a new URL without a token clears it");
    assert!(stored.custom_headers.is_empty(), "and the custom headers");
}

#[tokio::test]
async fn contract_hook_test_triggers_without_sample_data_are_422() {
    let env = Env::new().await;
    let id = env.sim.add_hook(
        env.project,
        HookSpec {
            url: "https://ci.example.com/t".into(),
            ..HookSpec::default()
        },
    );
    let test = |trigger: &str| format!("/projects/{}/hooks/{id}/test/{trigger}", env.project);
    // Five tests a minute per project and user: this test spends all five.
    for trigger in ["deployment_events", "confidential_note_events"] {
        let r = env.send(Method::POST, &test(trigger), json!({})).await;
        assert_eq!(r.status(), 422, "{trigger}");
        assert_eq!(
            body(r).await,
            json!({"message": "Testing not available for this hook"})
        );
    }
    let r = env
        .send(Method::POST, &test("tag_push_events"), json!({}))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(body(r).await, json!({"message": "201 Created"}));

    // Grape validates the trigger first: an unknown one on an unknown hook is a 400.
    let r = env
        .send(
            Method::POST,
            &format!("/projects/{}/hooks/999999/test/bogus_events", env.project),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        body(r).await,
        json!({"error": "trigger does not have a valid value"})
    );
    let r = env
        .send(
            Method::POST,
            &format!("/projects/{}/hooks/999999/test/push_events", env.project),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"message": "404 Not found"}));

    // A receiver's error answer is a 422 carrying its body.
    env.sim.set_receiver_status("https://ci.example.com/t", 503);
    let r = env
        .send(Method::POST, &test("push_events"), json!({}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(body(r).await, json!({"message": "Service Unavailable"}));
    assert_eq!(env.sim.hooks(env.project)[0].recent_failures, 1);

    // A 3xx is no API success (422) but counts as a good delivery: the
    // hook is enabled again.
    env.sim.update_hook(env.project, id, |h| {
        h.recent_failures = 4;
        h.disabled_until = Some(chrono::Utc::now() + chrono::Duration::minutes(5));
    });
    assert_eq!(
        env.sim.hooks(env.project)[0].alert_status(),
        "temporarily_disabled"
    );
    env.sim.set_receiver_status("https://ci.example.com/t", 302);
    let r = env
        .send(Method::POST, &test("push_events"), json!({}))
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(body(r).await, json!({"message": "Found"}));
    let h = env.sim.hooks(env.project)[0].clone();
    assert_eq!(
        (h.alert_status(), h.recent_failures, h.disabled_until),
        ("executable", 0, None)
    );
}

#[tokio::test]
async fn contract_endpoint_limits_answer_a_json_429_with_retry_after() {
    let env = Env::new().await;
    let group = env.sim.add_group("acme");
    env.sim.set_group_member(group, env.alice, 40);
    let bob = user_with_token(&env, "bob", "bob-api");
    env.sim.set_member(env.project, bob, 40);
    env.sim.set_endpoint_limits(Some(EndpointLimits {
        project: 1,
        projects: 1,
        group_projects: 1,
    }));

    for (path, retry_after) in [
        (format!("/projects/{}", env.project), "60"),
        ("/projects?membership=true".to_string(), "600"),
        (format!("/groups/{group}/projects"), "60"),
    ] {
        assert_eq!(env.get(&path).await.status(), 200, "{path}");
        let r = env.get(&path).await;
        assert_eq!(r.status(), 429, "{path}");
        assert_eq!(
            header(&r, "retry-after").as_deref(),
            Some(retry_after),
            "{path}"
        );
        assert!(
            !r.headers()
                .keys()
                .any(|k| k.as_str().starts_with("ratelimit-")),
            "{path}: no RateLimit-* headers"
        );
        assert_eq!(
            header(&r, "content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(body(r).await, json!({"message": {"error": APP_LIMIT_BODY}}));
    }

    // Other endpoints and other users are not affected.
    let r = env.get(&format!("/projects/{}/hooks", env.project)).await;
    assert_eq!(r.status(), 200);
    let r = env
        .req(
            Method::GET,
            &format!("/projects/{}", env.project),
            "bob-api",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    env.sim.set_endpoint_limits(None);
    assert_eq!(
        env.get(&format!("/projects/{}", env.project))
            .await
            .status(),
        200
    );
}

// ---- token self-rotation (docs/gitlab-contract.md §13) ----

const ROTATE: &str = "/personal_access_tokens/self/rotate";

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

fn days(n: u64) -> chrono::NaiveDate {
    today() + chrono::Days::new(n)
}

/// `POST .../self/rotate` with `token` and an optional JSON body.
async fn rotate(env: &Env, token: &str, json_body: Option<Value>) -> Response {
    let mut req = env.req(Method::POST, ROTATE, token);
    if let Some(b) = json_body {
        req = req.json(&b);
    }
    req.send().await.expect("send")
}

/// Rotates `token` and returns the new secret.
async fn rotated(env: &Env, token: &str) -> String {
    let r = rotate(env, token, None).await;
    assert_eq!(r.status(), 200);
    body(r).await["token"].as_str().expect("token").to_string()
}

async fn user_status(env: &Env, token: &str) -> (StatusCode, Value) {
    let r = env.req(Method::GET, "/user", token).send().await.unwrap();
    (r.status(), body(r).await)
}

fn is_revoked_body(b: &Value) -> bool {
    b["error"] == "invalid_token"
        && b["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Token was revoked"))
}

#[tokio::test]
async fn contract_token_rotation_answers_200_with_a_new_token_and_revokes_the_old() {
    let env = Env::new().await;
    let old_id = env.sim.token_by_secret(TOKEN).unwrap().id;
    let r = rotate(&env, TOKEN, None).await;
    assert_eq!(r.status(), 200, "200, not 201");
    let t = body(r).await;
    let mut fields: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "active",
            "created_at",
            "description",
            "expired",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "revoked",
            "scopes",
            "token",
            "user_id"
        ]
    );
    let new_id = t["id"].as_u64().unwrap();
    assert_ne!(new_id, old_id, "a new id");
    assert_eq!(t["name"], format!("token-{old_id}"), "the old token's name");
    assert_eq!(t["scopes"], json!(["api"]));
    assert_eq!(t["user_id"], env.alice);
    assert_eq!(
        (&t["revoked"], &t["active"], &t["expired"]),
        (&json!(false), &json!(true), &json!(false))
    );
    assert_eq!(t["last_used_at"], Value::Null);
    assert_eq!(t["expires_at"], days(7).to_string());
    let new = t["token"].as_str().unwrap().to_string();
    assert!(new.starts_with("glpat-") && new.len() > "glpat-".len() + 10);
    assert_ne!(new, TOKEN);

    // The old token is revoked at once; the new one works.
    let (status, b) = user_status(&env, TOKEN).await;
    assert_eq!(status, 401);
    assert!(is_revoked_body(&b), "{b}");
    let (status, me) = user_status(&env, &new).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], env.alice);

    // Inspection API.
    let stored = env.sim.token_by_secret(&new).unwrap();
    assert_eq!(stored.id, new_id);
    assert_eq!(stored.previous_personal_access_token_id, Some(old_id));
    assert_eq!(stored.expires_at, Some(days(7)));
    assert!(stored.active());
    assert!(
        !format!("{stored:?}").contains(&new),
        "Debug hides the secret"
    );
    let old = env.sim.token_by_secret(TOKEN).unwrap();
    assert!(old.revoked && !old.active());
    assert_eq!(old.previous_personal_access_token_id, None);
    let active: Vec<u64> = env
        .sim
        .active_tokens_of(env.alice)
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(active, [new_id]);
    assert_eq!(env.sim.rotations(), 1);
}

#[tokio::test]
async fn contract_token_rotation_accepts_api_or_self_rotate_scope() {
    let env = Env::new().await;
    env.sim
        .add_access_token(env.alice, "rotator", &["self_rotate"], None);
    env.sim
        .add_access_token(env.alice, "reader", &["read_api"], None);

    // Before 17.9 there is no `self_rotate` scope: only `api` may rotate.
    env.sim.set_version(SimVersion::V17_3);
    let r = rotate(&env, "rotator", None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(body(r).await["scope"], "api");

    env.sim.set_version(SimVersion::Latest);
    let r = rotate(&env, "rotator", None).await;
    assert_eq!(r.status(), 200, "self_rotate alone suffices");
    let t = body(r).await;
    assert_eq!(t["scopes"], json!(["self_rotate"]), "scopes are kept");
    let (status, _) = user_status(&env, t["token"].as_str().unwrap()).await;
    assert_eq!(status, 403, "self_rotate does not read the user");

    let r = rotate(&env, "reader", None).await;
    assert_eq!(r.status(), 403);
    let b = body(r).await;
    assert_eq!(b["error"], "insufficient_scope");
    assert_eq!(b["scope"], "api self_rotate");
    let (status, _) = user_status(&env, "reader").await;
    assert_eq!(status, 200, "the refused token is untouched");
    assert_eq!(env.sim.rotations(), 1);
}

#[tokio::test]
async fn contract_token_rotation_refuses_oauth_tokens_with_405() {
    let env = Env::new().await;
    env.sim.add_oauth_app("app", "secret");
    env.sim.add_oauth_token(
        env.alice,
        "app",
        "oauth-access",
        "oauth-refresh",
        &["api"],
        7200,
    );
    let r = env
        .http
        .post(env.url(ROTATE))
        .bearer_auth("oauth-access")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(body(r).await, json!({"message": "405 Method Not Allowed"}));
    assert_eq!(env.sim.rotations(), 0);

    let r = rotate(&env, "no-such-token", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(body(r).await, json!({"message": "401 Unauthorized"}));
    env.sim
        .add_access_token(env.alice, "lapsed", &["api"], Some(today()));
    let r = rotate(&env, "lapsed", None).await;
    assert_eq!(r.status(), 401);
    let b = body(r).await;
    assert_eq!(b["error"], "invalid_token");
    assert!(
        b["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Token is expired")
    );
}

#[tokio::test]
async fn contract_token_rotation_route_exists_from_16_11() {
    let env = Env::new().await;
    env.sim.set_version(SimVersion::V16_0);
    let r = rotate(&env, TOKEN, None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(body(r).await, json!({"error": "404 Not Found"}));
    let r = rotate(&env, "no-such-token", None).await;
    assert_eq!(r.status(), 404, "before authentication");
    assert_eq!(user_status(&env, TOKEN).await.0, 200);

    let mut token = TOKEN.to_string();
    for version in [SimVersion::V16_11, SimVersion::V17_3, SimVersion::Latest] {
        env.sim.set_version(version);
        let r = env.req(Method::GET, ROTATE, &token).send().await.unwrap();
        assert_eq!(r.status(), 405, "{version:?}");
        assert_eq!(body(r).await, json!({"error": "405 Not Allowed"}));
        token = rotated(&env, &token).await;
    }
    assert_eq!(env.sim.rotations(), 3);
    assert_eq!(user_status(&env, &token).await.0, 200);
}

#[tokio::test]
async fn contract_token_rotation_expiry_defaults_to_a_week_when_required() {
    let env = Env::new().await;
    let r = rotate(&env, TOKEN, None).await;
    let t = body(r).await;
    assert_eq!(t["expires_at"], days(7).to_string());

    env.sim.set_token_expiry_required(false);
    let token = t["token"].as_str().unwrap().to_string();
    let t = body(rotate(&env, &token, None).await).await;
    assert_eq!(t["expires_at"], Value::Null, "no expiry when not required");
    let token = t["token"].as_str().unwrap().to_string();
    assert_eq!(env.sim.token_by_secret(&token).unwrap().expires_at, None);

    // `expires_at` from the query string, a form body or a JSON body.
    let want = days(30);
    let r = env
        .req(Method::POST, &format!("{ROTATE}?expires_at={want}"), &token)
        .send()
        .await
        .unwrap();
    let t = body(r).await;
    assert_eq!(t["expires_at"], want.to_string());
    let token = t["token"].as_str().unwrap().to_string();

    env.sim.set_token_expiry_required(true);
    let want = days(60);
    let r = env
        .req(Method::POST, ROTATE, &token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("expires_at={want}"))
        .send()
        .await
        .unwrap();
    let t = body(r).await;
    assert_eq!(t["expires_at"], want.to_string());
    let token = t["token"].as_str().unwrap().to_string();

    let want = days(90);
    let t = body(rotate(&env, &token, Some(json!({"expires_at": want.to_string()}))).await).await;
    assert_eq!(t["expires_at"], want.to_string());
    assert_eq!(env.sim.rotations(), 5);
}

#[tokio::test]
async fn contract_token_rotation_beyond_a_year_is_400_and_keeps_the_old_token() {
    let env = Env::new().await;
    let r = rotate(
        &env,
        TOKEN,
        Some(json!({"expires_at": days(366).to_string()})),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        body(r).await,
        json!({"message": format!("400 Bad request - Expiration date must be before {}", days(365))})
    );
    for bad in ["tomorrow", "2025-13-40", "31/01/2026"] {
        let r = rotate(&env, TOKEN, Some(json!({ "expires_at": bad }))).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(body(r).await, json!({"error": "expires_at is invalid"}));
    }
    assert_eq!(
        user_status(&env, TOKEN).await.0,
        200,
        "the old token still works"
    );
    assert_eq!(env.sim.rotations(), 0);
    assert_eq!(env.sim.active_tokens_of(env.alice).len(), 1);

    // today + 365 days is still allowed; with expiry not required, any date.
    let r = rotate(
        &env,
        TOKEN,
        Some(json!({"expires_at": days(365).to_string()})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let token = body(r).await["token"].as_str().unwrap().to_string();
    env.sim.set_token_expiry_required(false);
    let r = rotate(
        &env,
        &token,
        Some(json!({"expires_at": days(800).to_string()})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["expires_at"], days(800).to_string());
}

#[tokio::test]
async fn contract_reusing_a_rotated_token_on_rotate_revokes_its_family() {
    let env = Env::new().await;
    // An unrelated token of the same user, and a rotated chain A -> B -> C.
    env.sim.add_access_token(env.alice, "other", &["api"], None);
    let b = rotated(&env, TOKEN).await;
    let c = rotated(&env, &b).await;

    // On another path the old token is just refused.
    let (status, body_a) = user_status(&env, TOKEN).await;
    assert_eq!(status, 401);
    assert!(is_revoked_body(&body_a));
    assert_eq!(user_status(&env, &c).await.0, 200, "nothing else revoked");

    // On the rotate path it also revokes every active descendant.
    let r = rotate(&env, TOKEN, None).await;
    assert_eq!(r.status(), 401);
    assert!(is_revoked_body(&body(r).await));
    let (status, body_c) = user_status(&env, &c).await;
    assert_eq!(status, 401, "the current token of the family is revoked");
    assert!(is_revoked_body(&body_c));
    assert!(env.sim.token_by_secret(&c).unwrap().revoked);
    assert_eq!(
        user_status(&env, "other").await.0,
        200,
        "other families stay"
    );
    let active: Vec<String> = env
        .sim
        .active_tokens_of(env.alice)
        .into_iter()
        .map(|t| t.token)
        .collect();
    assert_eq!(active, ["other"]);
    assert_eq!(env.sim.rotations(), 2);
}

#[tokio::test]
async fn contract_token_rotation_under_faults() {
    let env = Env::new().await;
    let once = |kind: FaultKind| Fault::on(ROTATE, kind).method("POST").times(1);

    // A replaced answer (5xx page) skips the handler: nothing rotated.
    env.sim.inject(once(FaultKind::error_page(502)));
    assert_eq!(rotate(&env, TOKEN, None).await.status(), 502);
    assert_eq!(user_status(&env, TOKEN).await.0, 200);
    assert_eq!(env.sim.rotations(), 0);

    // Hang: the client times out and GitLab did nothing.
    env.sim.inject(once(FaultKind::Hang));
    let err = env
        .req(Method::POST, ROTATE, TOKEN)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(user_status(&env, TOKEN).await.0, 200);
    assert_eq!(env.sim.rotations(), 0);

    // SlowBody: GitLab rotated, but the answer (the new secret) never
    // arrives before the client gives up; only the status line does.
    env.sim.inject(once(FaultKind::SlowBody {
        chunk_delay: Duration::from_secs(30),
    }));
    let r = env
        .req(Method::POST, ROTATE, TOKEN)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .expect("the status line arrives");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap_err().is_timeout());
    assert_eq!(env.sim.rotations(), 1);
    let (status, b) = user_status(&env, TOKEN).await;
    assert_eq!(status, 401);
    assert!(is_revoked_body(&b));
    let current = env.sim.active_tokens_of(env.alice);
    assert_eq!(current.len(), 1);
    assert_eq!(user_status(&env, &current[0].token).await.0, 200);
}

#[tokio::test]
async fn control_api_sets_token_expiry_required() {
    let env = Env::new().await;
    let r = env
        .control(Method::POST, "/tokens/expiry_required")
        .json(&json!({"required": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state = env.sim.state();
    assert_eq!(state["token_expiry_required"], false);
    let t = body(rotate(&env, TOKEN, None).await).await;
    assert_eq!(t["expires_at"], Value::Null);
    assert_eq!(env.sim.state()["rotations"], 1);
}
