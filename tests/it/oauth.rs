//! OAuth connections: refresh before expiry, single-flight under concurrency,
//! the rotated pair persisted and used after a restart, a refused refresh,
//! the pair sealed under a master key.

use std::path::Path;

use gitlab_sim::HookSpec;
use glwarden::health::State;
use glwarden_testkit::*;
use secrecy::ExposeSecret;

const CLIENT_ID: &str = "glwarden-app";
const CLIENT_SECRET: &str = "oauth-client-SECRET";
const ACCESS: &str = "oat-initial-SECRET";
const REFRESH: &str = "ort-initial-SECRET";

/// A fixture whose user holds an OAuth pair (`ACCESS`, `REFRESH`) of the
/// app `CLIENT_ID`, its access token valid for `seconds_left`.
async fn oauth_fixture(seconds_left: i64) -> Fixture {
    let fx = Fixture::new().await;
    fx.sim.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    fx.sim
        .add_oauth_token(fx.user, CLIENT_ID, ACCESS, REFRESH, &["api"], seconds_left);
    fx
}

/// A config with one OAuth connection, `main`, and `projects`; its refresh
/// token file holds `refresh`.
fn oauth_config(fx: &Fixture, projects: &[&Connected], refresh: &str) -> ConfigBuilder {
    let dir = fx.dir.path();
    let main = oauth_connection(
        &fx.sim.base_url(),
        &secret_file(dir, "access", ACCESS),
        &secret_file(dir, "refresh", refresh),
        CLIENT_ID,
        &secret_file(dir, "client-secret", CLIENT_SECRET),
    );
    let defaults = glwarden::config::CheckConfig::default();
    fx.config(projects)
        .connection("main", main)
        .edit(|c| {
            // Not the fixture's short timeouts: the check section as it was.
            c.check = defaults;
            c.check.concurrency = 8;
        })
        .file(&dir.join("oauth.toml"))
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
    // Two minutes left: inside the five-minute refresh margin.
    let fx = oauth_fixture(120).await;
    let projects: Vec<Connected> = (0..12).map(|i| fx.connect(&format!("acme/o{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = oauth_config(&fx, &refs, REFRESH).write();

    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let report = glwarden::report::build(&store, &glwarden::sweep::Selection::All)
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
    let fx = oauth_fixture(7200).await;
    let p = fx.connect("acme/app");
    fx.sim.add_hook(p.id, HookSpec::default());
    // A refresh token GitLab does not know (already used, or revoked).
    let config = oauth_config(&fx, &[&p], "ort-unknown").write();
    fx.sim.expire_token(ACCESS);
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let report = glwarden::report::build(&store, &glwarden::sweep::Selection::All)
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
    // Two minutes left: the first check refreshes.
    let fx = oauth_fixture(120).await;
    let p = fx.connect("acme/app");
    let config = oauth_config(&fx, &[&p], REFRESH)
        .edit(|c| c.check.max_response_bytes = 65536)
        .write();
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
    let report = glwarden::report::build(&store, &glwarden::sweep::Selection::All)
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
    // Two minutes left: the first check refreshes.
    let fx = oauth_fixture(120).await;
    let p = fx.connect("acme/app");
    let keyless = oauth_config(&fx, &[&p], REFRESH);
    let master = secret_file(fx.dir.path(), "master.key", &"5a".repeat(32));
    let config = keyless.clone().master_key_file(&master).write();

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
    let keyless = keyless.file(&fx.dir.path().join("keyless.toml")).write();
    let cfg = std::sync::Arc::new(glwarden::config::Config::load(&keyless).unwrap());
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    let err = glwarden::sweep::Sweeper::new(cfg, store.clone(), None)
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
    glwarden::sweep::Sweeper::new(cfg, store.clone(), None)
        .await
        .expect("a new refresh token replaces the pair that cannot be opened");
}
