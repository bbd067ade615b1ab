//! OAuth connections: refresh before expiry, single-flight under concurrency,
//! the rotated pair persisted and used after a restart, a refused refresh,
//! the pair sealed under a master key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use gitlab_sim::HookSpec;
use glwarden::health::State;
use secrecy::ExposeSecret;

const CLIENT_ID: &str = "glwarden-app";
const CLIENT_SECRET: &str = "oauth-client-SECRET";
const ACCESS: &str = "oat-initial-SECRET";
const REFRESH: &str = "ort-initial-SECRET";

fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A config with one OAuth connection and `projects`.
fn oauth_config(fx: &Fixture, projects: &[&Connected], refresh: &str) -> PathBuf {
    let dir = fx.dir.path();
    let mut text = format!(
        "[store]\npath = {:?}\n\n[check]\nconcurrency = 8\n\n[expect]\nwebhook_url = {HOOK_TEMPLATE:?}\n\n\
         [connections.main]\nurl = {:?}\ntoken_kind = \"oauth\"\ntoken_file = {:?}\nrefresh_token_file = {:?}\n\
         client_id = {CLIENT_ID:?}\nclient_secret_file = {:?}\nrequests_per_minute = 60000\n\n",
        fx.db_path().display().to_string(),
        fx.sim.base_url(),
        secret_file(dir, "access", ACCESS).display().to_string(),
        secret_file(dir, "refresh", refresh).display().to_string(),
        secret_file(dir, "client-secret", CLIENT_SECRET)
            .display()
            .to_string(),
    );
    for p in projects {
        text.push_str(&format!(
            "[[projects]]\nconnection = \"main\"\nid = {}\ndeploy_key = {:?}\n\n",
            p.id, p.key.public_openssh
        ));
    }
    let file = dir.join("oauth.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The custody the configuration at `config` sets up.
fn custody(config: &Path) -> std::sync::Arc<glwarden::custody::Custody> {
    glwarden::config::Config::load(config).unwrap().custody
}

fn refreshes(fx: &Fixture) -> usize {
    fx.sim
        .requests()
        .iter()
        .filter(|r| r.path == "/oauth/token")
        .count()
}

#[tokio::test]
async fn many_concurrent_checks_cause_exactly_one_refresh_and_the_rotated_pair_survives_a_restart()
{
    let fx = Fixture::new().await;
    fx.sim.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    // Two minutes left: inside the five-minute refresh margin.
    fx.sim
        .add_oauth_token(fx.user, CLIENT_ID, ACCESS, REFRESH, &["api"], 120);
    let projects: Vec<Connected> = (0..12).map(|i| fx.connect(&format!("acme/o{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = oauth_config(&fx, &refs, REFRESH);

    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let report = glwarden::report::build(&store, &glwarden::check::Selection::All)
        .await
        .unwrap();
    assert_eq!(
        report.connections[0].health.state,
        State::Connected,
        "{}",
        report.connections[0].health.detail
    );
    for p in &projects {
        assert_eq!(states(&store, p.id).await, HEALTHY);
    }
    assert_eq!(
        refreshes(&fx),
        1,
        "twelve projects checked 8 at a time: one refresh"
    );
    let (stored, _) = store
        .oauth_pair("main", &custody(&config))
        .await
        .unwrap()
        .expect("the rotated pair is stored");
    assert_ne!(
        stored.refresh.expose_secret(),
        REFRESH,
        "GitLab rotated the refresh token"
    );
    drop(checker);

    // A restart: the configured pair is dead at GitLab; the stored one is used.
    let (checker, store) = fx.checker(&config).await;
    fx.sim.clear_requests();
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::Connected);
    assert_eq!(refreshes(&fx), 0, "the stored access token is still fresh");

    // Its access token expires: the stored (rotated) refresh token renews it.
    fx.sim.expire_token(stored.access.expose_secret());
    fx.sim.clear_requests();
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::Connected);
    assert_eq!(refreshes(&fx), 1);
    let (again, _) = store
        .oauth_pair("main", &custody(&config))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        again.refresh.expose_secret(),
        stored.refresh.expose_secret()
    );
}

#[tokio::test]
async fn a_refused_refresh_makes_the_connection_not_connected() {
    let fx = Fixture::new().await;
    fx.sim.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    fx.sim
        .add_oauth_token(fx.user, CLIENT_ID, ACCESS, REFRESH, &["api"], 7200);
    let p = fx.connect("acme/app");
    fx.sim.add_hook(p.id, HookSpec::default());
    // A refresh token GitLab does not know (already used, or revoked).
    let config = oauth_config(&fx, &[&p], "ort-unknown");
    fx.sim.expire_token(ACCESS);
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let report = glwarden::report::build(&store, &glwarden::check::Selection::All)
        .await
        .unwrap();
    assert_eq!(report.connections[0].health.state, State::NotConnected);
    assert!(
        report.connections[0]
            .health
            .detail
            .contains("OAuth refresh refused"),
        "{}",
        report.connections[0].health.detail
    );
    assert_eq!(states(&store, p.id).await, [State::Blocked; 3]);
    let json = report.to_json();
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        assert!(!json.contains(secret));
    }
}

#[tokio::test]
async fn an_oversized_token_answer_is_refused_within_the_body_limit() {
    let fx = Fixture::new().await;
    fx.sim.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    // Two minutes left: the first check refreshes.
    fx.sim
        .add_oauth_token(fx.user, CLIENT_ID, ACCESS, REFRESH, &["api"], 120);
    let p = fx.connect("acme/app");
    let config = oauth_config(&fx, &[&p], REFRESH);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[check]\n", "[check]\nmax_response_bytes = 65536\n"),
    )
    .unwrap();
    // The token endpoint answers 200 with a body far past the limit.
    fx.sim.inject(
        gitlab_sim::Fault::on(
            "/oauth/token",
            gitlab_sim::FaultKind::Oversized { bytes: 4 << 20 },
        )
        .method("POST"),
    );
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    // Read no further than the limit and taken as transient: the stored
    // pair is the configured one, nothing is `not_connected`.
    let report = glwarden::report::build(&store, &glwarden::check::Selection::All)
        .await
        .unwrap();
    assert_ne!(report.connections[0].health.state, State::NotConnected);
    assert!(
        store
            .oauth_pair("main", &custody(&config))
            .await
            .unwrap()
            .is_none()
    );
    assert!(refreshes(&fx) >= 1);
    let details: Vec<String> = report
        .projects
        .iter()
        .flat_map(|p| [&p.repository, &p.deploy_key, &p.webhook])
        .map(|c| c.detail.clone())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("body larger than 65536 bytes")),
        "{details:?}"
    );
}

#[tokio::test]
async fn with_a_master_key_the_rotated_pair_is_sealed_at_rest_and_survives_a_restart() {
    let fx = Fixture::new().await;
    fx.sim.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    // Two minutes left: the first check refreshes.
    fx.sim
        .add_oauth_token(fx.user, CLIENT_ID, ACCESS, REFRESH, &["api"], 120);
    let p = fx.connect("acme/app");
    let config = oauth_config(&fx, &[&p], REFRESH);
    let master = secret_file(fx.dir.path(), "master.key", &"5a".repeat(32));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[custody]\nmaster_key_file = {:?}\n",
        master.display().to_string()
    ));
    std::fs::write(&config, text).unwrap();

    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::Connected);
    assert_eq!(refreshes(&fx), 1);
    let (stored, _) = store
        .oauth_pair("main", &custody(&config))
        .await
        .unwrap()
        .expect("the rotated pair is stored");
    drop(checker);
    store.close().await;

    // Not a byte of either token is in the database's files.
    let mut db = std::fs::read(fx.db_path()).unwrap();
    db.extend(std::fs::read(fx.db_path().with_extension("db-wal")).unwrap_or_default());
    for token in [
        stored.access.expose_secret(),
        stored.refresh.expose_secret(),
    ] {
        assert!(
            !db.windows(token.len()).any(|w| w == token.as_bytes()),
            "a token is stored in plaintext"
        );
    }

    // A restart opens the sealed pair: the stored access token is used, no refresh.
    let (checker, store) = fx.checker(&config).await;
    fx.sim.clear_requests();
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::Connected);
    assert_eq!(
        refreshes(&fx),
        0,
        "the sealed access token was opened and used"
    );
    drop(checker);
    store.close().await;

    // Without the master key the sealed pair cannot be read, and the error
    // names the connection.
    let text = std::fs::read_to_string(&config).unwrap();
    let keyless = fx.dir.path().join("keyless.toml");
    std::fs::write(&keyless, text.split("[custody]").next().unwrap()).unwrap();
    let cfg = std::sync::Arc::new(glwarden::config::Config::load(&keyless).unwrap());
    let store = glwarden::store::Store::open(&cfg.raw.store.path)
        .await
        .unwrap();
    let err = glwarden::check::Checker::new(cfg, store.clone(), None)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("connection `main`"), "{err}");
    assert!(err.contains("no master key"), "{err}");
    assert!(!err.contains(stored.refresh.expose_secret()));

    // A person re-authorizes: the configured pair wins, the sealed one is
    // never opened, and the connection works again without a master key.
    secret_file(fx.dir.path(), "refresh", "ort-reauthorized-SECRET");
    let cfg = std::sync::Arc::new(glwarden::config::Config::load(&keyless).unwrap());
    glwarden::check::Checker::new(cfg, store.clone(), None)
        .await
        .expect("a new refresh token replaces the pair that cannot be opened");
}
