//! The simulator with one user and token, and projects connected to it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gitlab_sim::{HookSpec, Sim, SimVersion};
use glwarden::config::Config;
use glwarden::keys::{GeneratedKey, generate_ed25519};
use glwarden::store::Store;
use glwarden::sweep::{Selection, Sweeper};

use crate::config::ConfigBuilder;

pub const TOKEN: &str = "glpat-fixture-SECRET-token-0001";
pub const HOOK_TEMPLATE: &str = "https://ci.example.com/hooks/{id}";

pub struct Fixture {
    pub sim: Sim,
    /// The GitLab release the simulator acts as (`GLWARDEN_SIM_VERSION`).
    pub version: SimVersion,
    pub dir: tempfile::TempDir,
    pub user: u64,
}

/// A project connected at the simulator.
pub struct Connected {
    pub id: u64,
    pub key: GeneratedKey,
    pub hook_id: u64,
}

/// Writes `value` to `dir/name`, readable by the owner only (glwarden
/// refuses secret files that others can read).
pub fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

impl Fixture {
    pub async fn new() -> Fixture {
        let sim = Sim::start().await.expect("simulator starts");
        // .ci/run runs the check and repair suites once per GitLab release
        // the simulator can act as (docs/gitlab-contract.md).
        let version: SimVersion = std::env::var("GLWARDEN_SIM_VERSION")
            .map(|v| v.parse().expect("GLWARDEN_SIM_VERSION"))
            .unwrap_or_default();
        sim.set_version(version);
        let user = sim.add_user("ci-bot");
        sim.add_access_token(user, TOKEN, &["api"], None);
        let dir = tempfile::tempdir().unwrap();
        secret_file(dir.path(), "token", TOKEN);
        Fixture {
            sim,
            version,
            dir,
            user,
        }
    }

    pub fn hook_url(id: u64) -> String {
        HOOK_TEMPLATE.replace("{id}", &id.to_string())
    }

    /// A project where the fixture's user is Maintainer, with our key and hook.
    pub fn connect(&self, path: &str) -> Connected {
        let id = self.sim.add_project(path);
        self.sim.set_member(id, self.user, 40);
        let key = generate_ed25519("glwarden test").unwrap();
        self.sim
            .add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
        let hook_id = self.sim.add_hook(
            id,
            HookSpec {
                url: Self::hook_url(id),
                push_events: true,
                tag_push_events: true,
                merge_requests_events: true,
                enable_ssl_verification: true,
                token: Some("hook-secret".into()),
            },
        );
        Connected { id, key, hook_id }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("glwarden.db")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// The master key file `MASTER_KEY` in the fixture's directory.
    pub fn master_key_file(&self) -> PathBuf {
        secret_file(self.dir.path(), "master.key", crate::MASTER_KEY)
    }

    /// A config listing `projects` by id (with their public keys), for a
    /// connection `main` to the simulator with short timeouts; written by
    /// [`ConfigBuilder::write`] to `glwarden.toml` in the fixture's directory.
    pub fn config(&self, projects: &[&Connected]) -> ConfigBuilder {
        let mut builder = ConfigBuilder::new(
            &self.db_path(),
            &self.sim.base_url(),
            &self.token_file(),
            &self.dir.path().join("glwarden.toml"),
        )
        .edit(|c| {
            c.connections.get_mut("main").unwrap().requests_per_minute = 60_000;
            c.check.request_timeout_seconds = 2;
            c.check.max_rate_limit_wait_seconds = 10;
            c.expect.webhook_url = Some(HOOK_TEMPLATE.into());
        });
        for p in projects {
            builder = builder.project("main", p);
        }
        builder
    }

    /// Writes a config listing `projects` and `extra` TOML (merged over it).
    pub fn write_config(&self, projects: &[&Connected], extra: &str) -> PathBuf {
        self.config(projects).toml(extra).write()
    }

    /// Like `write_config`, with more lines for the `[check]` section.
    pub fn write_config_full(
        &self,
        projects: &[&Connected],
        check_lines: &str,
        extra: &str,
    ) -> PathBuf {
        self.config(projects)
            .toml(&format!("[check]\n{check_lines}"))
            .toml(extra)
            .write()
    }

    /// A sweeper on `config`'s store, and the store. On PostgreSQL the
    /// sweeper writes under a lease the test takes (and keeps) for itself.
    pub async fn checker(&self, config: &Path) -> (Sweeper, Store) {
        let cfg = Arc::new(Config::load(config).expect("config loads"));
        let store = Store::connect(&cfg.store).await.unwrap();
        let lease = store
            .lead_for_command(std::time::Duration::from_secs(cfg.raw.ha.lease_seconds))
            .await
            .expect("the test's store is free to lead");
        let sweeper = Sweeper::new(cfg, lease.store.clone(), None).await.unwrap();
        (sweeper, store)
    }

    /// Runs a check of everything.
    pub async fn check(&self, checker: &Sweeper) {
        checker.sweep(&Selection::All).await.expect("check runs");
    }
}
