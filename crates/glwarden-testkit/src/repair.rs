//! What repair tests share: a run with repairs on, the writes GitLab saw,
//! and the checks that custody and GitLab agree after a repair.

use glwarden::custody::{Custody, SecretKind};
use glwarden::store::Store;
use glwarden::sweep::{Selection, SweepOptions, SweepSummary, Sweeper};

use glwarden::config::Policy;

use crate::config::ConfigBuilder;
use crate::fixture::{Connected, Fixture};
use crate::read::stored_project;

/// The master key of configs written with [`Fixture::master_key_file`].
pub const MASTER_KEY: &str = "5f9c3a1e7b2d4c6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

/// A check of everything with repairs on.
pub async fn repair_run(checker: &Sweeper) -> SweepSummary {
    checker
        .sweep_with(
            &Selection::All,
            &SweepOptions {
                repair: true,
                ..Default::default()
            },
        )
        .await
        .expect("run")
}

/// The requests that changed something at GitLab, as `METHOD path`.
pub fn writes(fx: &Fixture) -> Vec<String> {
    fx.sim
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// GitLab's id of our deploy key on `p`.
pub fn key_id(fx: &Fixture, p: &Connected) -> u64 {
    fx.sim
        .deploy_keys(p.id)
        .into_iter()
        .find(|k| k.ssh_fingerprint() == p.key.fingerprint)
        .expect("our key is on the project")
        .id
}

fn custody() -> Custody {
    Custody::new(
        Some(&secrecy::SecretString::from(MASTER_KEY.to_owned())),
        false,
    )
    .unwrap()
}

/// The project's stored key material and what GitLab holds agree: exactly
/// one key of ours, its fingerprint ours, and the private key opens to it.
pub async fn assert_one_matching_key(fx: &Fixture, store: &Store, gitlab_id: u64) {
    let row = stored_project(store, gitlab_id).await;
    let keys = fx.sim.deploy_keys(gitlab_id);
    assert_eq!(keys.len(), 1, "exactly one key at GitLab: {keys:?}");
    assert_eq!(
        Some(keys[0].ssh_fingerprint()),
        row.fingerprint,
        "stored fingerprint is GitLab's"
    );
    assert_eq!(row.deploy_key_id, Some(keys[0].id as i64));
    let sealed = store
        .project_secret(row.id, SecretKind::DeployKey)
        .await
        .unwrap()
        .expect("private key stored");
    let private = custody()
        .open(row.id, SecretKind::DeployKey, &sealed)
        .unwrap();
    let key = ssh_key::PrivateKey::from_openssh(&private[..]).unwrap();
    let fp = glwarden::keys::fingerprint_of(&key.public_key().to_openssh().unwrap()).unwrap();
    assert_eq!(
        Some(fp),
        row.fingerprint,
        "the stored private key is the one at GitLab"
    );
    assert!(store.journal().await.unwrap().is_empty(), "journal empty");
}

/// The stored hook token opens and equals the one GitLab holds; one hook of ours.
pub async fn assert_one_matching_hook(fx: &Fixture, store: &Store, gitlab_id: u64) {
    let row = stored_project(store, gitlab_id).await;
    let ours: Vec<_> = fx
        .sim
        .hooks(gitlab_id)
        .into_iter()
        .filter(|h| h.url == Fixture::hook_url(gitlab_id))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one hook of ours: {ours:?}");
    assert_eq!(row.hook_id, Some(ours[0].id as i64));
    let sealed = store
        .project_secret(row.id, SecretKind::HookToken)
        .await
        .unwrap()
        .expect("hook token stored");
    let token = custody()
        .open(row.id, SecretKind::HookToken, &sealed)
        .unwrap();
    assert_eq!(
        ours[0].token.as_deref().map(str::as_bytes),
        Some(&token[..]),
        "GitLab has our secret"
    );
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(store.journal().await.unwrap().is_empty(), "journal empty");
}

/// The set-up most repair tests start from: one project, `acme/app`,
/// connected; a config with keys and hooks on `auto` (confirmed after one
/// check, renames followed) and custody under [`MASTER_KEY`], which `tweak`
/// may change; a checker on it. Nothing has run yet.
pub struct OneProject {
    pub fx: Fixture,
    pub p: Connected,
    pub config: std::path::PathBuf,
    pub checker: Sweeper,
    pub store: Store,
}

impl OneProject {
    pub async fn new(tweak: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> OneProject {
        let fx = Fixture::new().await;
        let p = fx.connect("acme/app");
        let config = tweak(
            fx.config(&[&p])
                .repairs(Policy::Auto, 1)
                .master_key_file(&fx.master_key_file()),
        )
        .write();
        let (checker, store) = fx.checker(&config).await;
        OneProject {
            fx,
            p,
            config,
            checker,
            store,
        }
    }
}
