//! Secrets never leak: every kind of secret glwarden handles is planted (an
//! access token and the one a repair rotates it into, an OAuth
//! access/refresh token and client secret, deploy private keys made by
//! repairs, webhook secret tokens, the custody master
//! key), every command and the daemon run at `RUST_LOG=trace`, and all that
//! was captured (stdout, stderr, logs, JSON, /metrics, Debug output) is
//! scanned for every one of them. `key private` is the one command that
//! prints a private key, and it is audited. The listener serves only
//! /metrics, /healthz, /readyz and the read-only status pages and API.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use glwarden_testkit::*;
use secrecy::ExposeSecret;

const MASTER_KEY: &str = "9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
const OAUTH_ACCESS: &str = "oauth-access-SECRET-0001";
const OAUTH_REFRESH: &str = "oauth-refresh-SECRET-0001";
const CLIENT_ID: &str = "glwarden-client-id";
const CLIENT_SECRET: &str = "oauth-client-SECRET-0001";
const OPERATOR_TOKEN: &str = "operator-SECRET-0001-0123456789";
const ROTATING: &str = "glpat-rotating-SECRET-0001";

/// Everything captured, by where it came from.
#[derive(Default)]
struct Captured(std::sync::Mutex<Vec<(String, String)>>);

impl Captured {
    fn add(&self, source: impl Into<String>, text: impl Into<String>) {
        self.0.lock().unwrap().push((source.into(), text.into()));
    }
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn glwarden(config: &Path, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(glwarden_bin())
        .arg("-vv")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A config with an access-token connection and an OAuth connection, repairs
/// on `auto` and custody, and a daemon section.
fn write_config(fx: &Fixture, main: &Connected, other: &Connected, listen: &str) -> PathBuf {
    let dir = fx.dir.path();
    let oauth = oauth_connection(
        &fx.sim.base_url(),
        &secret_file(dir, "oauth-access", OAUTH_ACCESS),
        &secret_file(dir, "oauth-refresh", OAUTH_REFRESH),
        CLIENT_ID,
        &secret_file(dir, "client-secret", CLIENT_SECRET),
    );
    fx.config(&[])
        .daemon("*/1 * * * * *", 0.2)
        .listen_on(listen)
        .master_key_file(&secret_file(dir, "master.key", MASTER_KEY))
        .edit(|c| {
            c.http.operator_token_file = Some(secret_file(dir, "operator.token", OPERATOR_TOKEN));
            // The fixture's shorter wait is not this config's.
            c.check.max_rate_limit_wait_seconds =
                glwarden::config::CheckConfig::default().max_rate_limit_wait_seconds;
            c.repair.deploy_key = Policy::Auto;
            c.repair.webhook = Policy::Auto;
            c.repair.confirm_checks = 1;
            c.connections.get_mut("main").unwrap().rotate_before_days = Some(7);
        })
        .connection("oauth", oauth)
        .project_id("main", main.id)
        .project("oauth", other)
        .write()
}

/// The strings that identify a private key: the Ed25519 seed in hex and
/// base64, and the PEM body lines that are not part of the public key.
fn private_key_markers(pem: &str, public: &str) -> Vec<String> {
    use base64::Engine;
    let key = ssh_key::PrivateKey::from_openssh(pem).expect("an OpenSSH private key");
    let seed = key
        .key_data()
        .ed25519()
        .expect("ed25519")
        .private
        .to_bytes();
    let mut markers = vec![
        seed.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        base64::engine::general_purpose::STANDARD.encode(seed),
    ];
    for line in pem.lines() {
        let line = line.trim();
        if line.len() >= 24 && !line.starts_with("-----") && !public.contains(line) {
            markers.push(line.to_owned());
        }
    }
    markers
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_leaks_anywhere() {
    let fx = Fixture::new().await;
    fx.sim.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    // Two minutes left: the first use refreshes, so rotated tokens exist too.
    fx.sim.add_oauth_token(
        fx.user,
        CLIENT_ID,
        OAUTH_ACCESS,
        OAUTH_REFRESH,
        &["api"],
        120,
    );
    // The access token expires in 3 days and is rotated 7 days ahead: the
    // first repair rotates it, so a rotated token is scanned for too.
    fx.sim.add_access_token(
        fx.user,
        ROTATING,
        &["api"],
        chrono::Utc::now()
            .date_naive()
            .checked_add_days(chrono::Days::new(3)),
    );
    secret_file(fx.dir.path(), "token", ROTATING);
    let main = fx.connect("acme/main-project");
    let other = fx.connect("acme/oauth-project");
    // The main project has no key and hook of ours: repairs create both.
    let ours = fx.sim.deploy_keys(main.id)[0].id;
    fx.sim.remove_deploy_key(main.id, ours);
    fx.sim.remove_hook(main.id, main.hook_id);
    let listen = free_listen();
    let config = write_config(&fx, &main, &other, &listen);
    let captured = Captured::default();
    let main_id = main.id.to_string();
    let other_id = other.id.to_string();

    let run = async |args: &[&str]| {
        let out = glwarden(&config, args).await;
        let label = args.join(" ");
        assert!(
            !out.stderr.contains("panicked"),
            "`{label}` panicked: {}",
            out.stderr
        );
        captured.add(format!("`{label}` stdout"), out.stdout.clone());
        captured.add(format!("`{label}` stderr"), out.stderr.clone());
        out
    };

    let out = run(&["config", "check"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("redacted"), "{}", out.stdout);
    run(&["check"]).await;
    run(&["check", "--format", "json"]).await;
    let out = run(&["repair"]).await;
    assert!(out.code.is_some(), "{}", out.stderr);
    run(&["repair", "--dry-run"]).await;
    let out = run(&["regenerate", &other_id, "--deploy-key"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(&["regenerate", &other_id, "--webhook"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for args in [
        vec!["status"],
        vec!["status", "--format", "json"],
        vec!["history"],
        vec!["history", "--format", "json"],
        vec!["events"],
        vec!["events", "--format", "json"],
        vec!["project", "list"],
        vec!["project", "list", "--format", "json"],
        vec!["key", "public", &main_id],
        vec!["key", "public", &other_id],
    ] {
        let out = run(&args).await;
        assert!(out.code.is_some(), "{args:?}: {}", out.stderr);
    }

    // `key private`: the one place a private key is printed, and audited.
    let mut private_keys = Vec::new();
    for (id, public_of) in [(&main_id, main.id), (&other_id, other.id)] {
        let out = glwarden(&config, &["key", "private", id]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout.contains("BEGIN OPENSSH PRIVATE KEY"),
            "{}",
            out.stdout
        );
        captured.add(format!("`key private {id}` stderr"), out.stderr.clone());
        let public = fx
            .sim
            .deploy_keys(public_of)
            .into_iter()
            .map(|k| k.key)
            .collect::<Vec<_>>()
            .join("\n");
        private_keys.push((id.clone(), out.stdout.clone(), public));
    }
    let store = glwarden::store::Store::open(&fx.db_path()).await.unwrap();
    let reads = store
        .events(None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "key_read")
        .count();
    assert_eq!(reads, 2, "each `key private` is recorded in events");
    let custody = glwarden::config::Config::load(&config).unwrap().custody;
    let oauth_pair = store.oauth_pair("oauth", &custody).await.unwrap();
    let rotation = store
        .rotation("main", &custody, &seed(ROTATING))
        .await
        .unwrap()
        .expect("the first repair rotated the access token");
    store.close().await;
    // Every token the user ever had at GitLab, the rotated ones included.
    let rotated_tokens: Vec<String> = fx
        .sim
        .active_tokens_of(fx.user)
        .into_iter()
        .map(|t| t.token)
        .collect();
    assert!(
        fx.sim.rotations() >= 1 && rotated_tokens.len() >= 2,
        "rotated: {rotated_tokens:?}"
    );

    // The daemon, at trace level, for a few sweeps.
    let mut daemon = fx.start_daemon_logging(&config, &listen, "trace").await;
    let sweeps = || async {
        daemon
            .metric("glwarden_sweep_duration_seconds_count")
            .await
            .unwrap_or(0.0)
    };
    let start = sweeps().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sweeps().await < start + 2.0 {
        assert!(Instant::now() < deadline, "no sweeps: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The endpoints and every status page and API answer (which show
    // public keys and fingerprints, never a secret).
    let pages = [
        "/metrics".to_owned(),
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/".to_owned(),
        "/?state=healthy".to_owned(),
        "/api/v1/overview".to_owned(),
        "/api/v1/projects?state=healthy".to_owned(),
        format!("/projects/main/{}", main.id),
        format!("/projects/oauth/{}", other.id),
        format!("/api/v1/projects/main/{}", main.id),
        format!("/api/v1/projects/oauth/{}", other.id),
    ];
    for path in &pages {
        let (code, body) = daemon.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        captured.add(format!("GET {path}"), body);
    }

    // Signed in (and a wrong try), the pages with their buttons.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |token: &'static str| {
        client
            .post(format!("http://{listen}/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    let wrong = sign_in("operator-WRONG-0001-0123456789").await.unwrap();
    captured.add("POST /sign-in (wrong)", wrong.text().await.unwrap());
    let signed = sign_in(OPERATOR_TOKEN).await.unwrap();
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    captured.add("Set-Cookie", cookie.clone());
    let session = cookie.split(';').next().unwrap().to_owned();
    for path in &pages[3..] {
        let body = client
            .get(format!("http://{listen}{path}"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        captured.add(format!("GET {path} (signed in)"), body);
    }

    // Nothing else is served.
    for path in [
        "/metrics/",
        "/metricsx",
        "/healthz/x",
        "/readyz.json",
        "/admin",
        "/debug/pprof/",
        "/api/v4/user",
        "/_sim/state",
        "/.env",
        "/config",
        "/%2e%2e/etc/passwd",
        "/metrics%00",
    ] {
        let (code, body) = daemon.get(path).await;
        assert_eq!(code, 404, "{path} is served: {body}");
        captured.add(format!("GET {path}"), body);
    }
    let client = reqwest::Client::new();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/metrics", "/healthz", "/readyz", "/", "/api/v1/overview"] {
            let r = client
                .request(method.parse().unwrap(), format!("http://{listen}{path}"))
                .body("x")
                .send()
                .await
                .unwrap();
            assert!(
                r.status() == 404 || r.status() == 405,
                "{method} {path} answered {}",
                r.status()
            );
        }
    }
    assert!(daemon.stop().await.success(), "{}", daemon.log());
    captured.add("daemon log (RUST_LOG=trace)", daemon.log());

    // Error paths: a revoked token, a token file readable by others.
    for token in &rotated_tokens {
        fx.sim.revoke_token(token);
    }
    run(&["check"]).await;
    run(&["check", "--format", "json"]).await;
    std::fs::set_permissions(
        fx.dir.path().join("token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(&["config", "check"]).await;
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let out = run(&["status"]).await;
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    std::fs::set_permissions(
        fx.dir.path().join("token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // Debug and Display of the public types that hold secrets.
    let cfg = glwarden::config::Config::load(&config).unwrap();
    captured.add("Debug RawConfig", format!("{:?}", cfg.raw));
    captured.add("Debug Custody", format!("{:?}", cfg.custody));
    for conn in cfg.connections.values() {
        captured.add(
            format!("Debug Connection {}", conn.name),
            format!("{conn:?}"),
        );
        captured.add(
            format!("{} token source", conn.name),
            conn.token_source.clone(),
        );
    }
    captured.add("config render_redacted", cfg.render_redacted());
    if let Some((pair, seed)) = &oauth_pair {
        captured.add("Debug OAuthPair", format!("{pair:?} {seed}"));
    }
    captured.add("Debug Rotation", format!("{rotation:?}"));
    std::fs::set_permissions(
        fx.dir.path().join("token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = glwarden::config::Config::load(&config)
        .err()
        .expect("refused");
    captured.add("ConfigError Display", err.to_string());
    captured.add("ConfigError Debug", format!("{err:?}"));

    // Every secret that was planted or minted.
    let mut secrets: Vec<(String, String)> = vec![
        ("access token".into(), TOKEN.into()),
        ("access token due for rotation".into(), ROTATING.into()),
        ("OAuth access token".into(), OAUTH_ACCESS.into()),
        ("OAuth refresh token".into(), OAUTH_REFRESH.into()),
        ("OAuth client secret".into(), CLIENT_SECRET.into()),
        ("custody master key".into(), MASTER_KEY.into()),
        ("status page operator token".into(), OPERATOR_TOKEN.into()),
        ("fixture hook token".into(), "hook-secret".into()),
    ];
    let (pair, _) = oauth_pair.expect("the rotated OAuth pair is stored");
    assert_ne!(pair.refresh.expose_secret(), OAUTH_REFRESH, "rotated");
    secrets.push((
        "rotated OAuth access token".into(),
        pair.access.expose_secret().to_owned(),
    ));
    secrets.push((
        "rotated OAuth refresh token".into(),
        pair.refresh.expose_secret().to_owned(),
    ));
    for token in &rotated_tokens {
        secrets.push((
            "access token at GitLab (rotated or not)".into(),
            token.clone(),
        ));
    }
    for p in [&main, &other] {
        for h in fx.sim.hooks(p.id) {
            if let Some(token) = h.token {
                secrets.push((format!("hook token of project {}", p.id), token));
            }
        }
    }
    assert!(
        secrets
            .iter()
            .filter(|(what, t)| what.starts_with("hook token") && t.len() == 64)
            .count()
            >= 2,
        "repairs minted hook tokens: {secrets:?}"
    );
    for (id, pem, public) in &private_keys {
        let markers = private_key_markers(pem, public);
        // The scan can see a private key: its markers are in `key private`'s output.
        assert!(markers.len() >= 3, "seed and PEM lines: {markers:?}");
        for m in markers {
            secrets.push((format!("private key of project {id}"), m));
        }
    }

    let captured = captured.0.into_inner().unwrap();
    let mut leaks = Vec::new();
    for (source, text) in &captured {
        for (what, secret) in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{what} in {source}"));
            }
        }
    }
    let total: usize = captured.iter().map(|(_, t)| t.len()).sum();
    assert!(
        total > 100_000,
        "the trace-level captures are substantial ({total} bytes)"
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

/// The store's digest of a configured token (`rotated_tokens.seed`).
fn seed(token: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(token.as_bytes()))
}
