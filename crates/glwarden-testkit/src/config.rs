//! Configs built from glwarden's own config types and written as TOML, so
//! that a test says which fields it sets instead of splicing text.

use std::path::{Path, PathBuf};

use glwarden::config::{ConnectionConfig, MovedPolicy, Policy, RawConfig};

use crate::fixture::Connected;

/// A config under construction; [`ConfigBuilder::write`] writes it.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub raw: RawConfig,
    file: PathBuf,
}

/// A config type from a JSON literal: only the fields given, the rest from
/// the type's serde defaults, as glwarden would read them from a file.
fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid config value")
}

/// An OAuth connection to `url`, its secrets in files.
pub fn oauth_connection(
    url: &str,
    access_file: &Path,
    refresh_file: &Path,
    client_id: &str,
    client_secret_file: &Path,
) -> ConnectionConfig {
    from_json(serde_json::json!({
        "url": url,
        "token_kind": "oauth",
        "token_file": access_file,
        "refresh_token_file": refresh_file,
        "client_id": client_id,
        "client_secret_file": client_secret_file,
        "requests_per_minute": 60000,
    }))
}

impl ConfigBuilder {
    /// Defaults everywhere but the store and one connection, `main`, to
    /// `gitlab` with the token in `token_file`; to be written to `file`.
    pub fn new(db: &Path, gitlab: &str, token_file: &Path, file: &Path) -> ConfigBuilder {
        let mut raw: RawConfig = toml::from_str("").expect("an empty config is valid");
        raw.store.path = db.to_owned();
        raw.connections.insert(
            "main".into(),
            from_json(serde_json::json!({ "url": gitlab, "token_file": token_file })),
        );
        ConfigBuilder {
            raw,
            file: file.to_owned(),
        }
    }

    pub fn edit(mut self, f: impl FnOnce(&mut RawConfig)) -> ConfigBuilder {
        f(&mut self.raw);
        self
    }

    /// The connection named `name` (`main` unless a test adds another).
    pub fn connection_mut(&mut self, name: &str) -> &mut ConnectionConfig {
        self.raw
            .connections
            .get_mut(name)
            .unwrap_or_else(|| panic!("no connection `{name}` in the config"))
    }

    pub fn connection(mut self, name: &str, connection: ConnectionConfig) -> ConfigBuilder {
        self.raw.connections.insert(name.into(), connection);
        self
    }

    /// Lists `p` on `connection` by id, with its public key.
    pub fn project(mut self, connection: &str, p: &Connected) -> ConfigBuilder {
        self.raw.projects.push(from_json(serde_json::json!({
            "connection": connection,
            "id": p.id,
            "deploy_key": p.key.public_openssh,
        })));
        self
    }

    /// Lists the project with GitLab id `id` on `connection`, nothing else given.
    pub fn project_id(mut self, connection: &str, id: u64) -> ConfigBuilder {
        self.raw.projects.push(from_json(
            serde_json::json!({ "connection": connection, "id": id }),
        ));
        self
    }

    /// A daemon on a fast schedule (`cron`, with `spread`, 10 s of shutdown
    /// grace), listening on a free loopback port ([`ConfigBuilder::listen`]).
    pub fn daemon(self, cron: &str, spread: f64) -> ConfigBuilder {
        self.edit(|c| {
            c.schedule.cron = cron.into();
            c.schedule.spread = spread;
            c.schedule.shutdown_grace_seconds = 10;
            c.http.listen = crate::free_listen();
        })
    }

    /// Listens on `listen` instead (a restarted or reloaded daemon keeps its address).
    pub fn listen_on(self, listen: &str) -> ConfigBuilder {
        self.edit(|c| c.http.listen = listen.into())
    }

    /// The address the daemon will listen on.
    pub fn listen(&self) -> String {
        self.raw.http.listen.clone()
    }

    /// Keys and hooks on `policy`, confirmed after `confirm` checks; on
    /// `auto`, renames are followed too.
    pub fn repairs(self, policy: Policy, confirm: u32) -> ConfigBuilder {
        self.edit(|c| {
            c.repair.deploy_key = policy;
            c.repair.webhook = policy;
            c.repair.moved = match policy {
                Policy::Auto => MovedPolicy::Follow,
                _ => MovedPolicy::Report,
            };
            c.repair.confirm_checks = confirm;
        })
    }

    /// Custody under the master key in `file`.
    pub fn master_key_file(self, file: &Path) -> ConfigBuilder {
        self.edit(|c| c.custody.master_key_file = Some(file.to_owned()))
    }

    /// Merges `extra` TOML over the config: tables key by key, `[[...]]`
    /// entries appended, other values replaced. For one-off lines a test
    /// reads best as TOML; anything but glwarden's keys is refused here.
    pub fn toml(self, extra: &str) -> ConfigBuilder {
        if extra.trim().is_empty() {
            return self;
        }
        let over: toml::Value = toml::from_str(extra).expect("extra TOML parses");
        let mut base = toml::Value::try_from(&self.raw).expect("the config serializes");
        merge(&mut base, over);
        ConfigBuilder {
            raw: base.try_into().expect("extra TOML names glwarden's keys"),
            file: self.file,
        }
    }

    /// Writes to `file` instead.
    pub fn file(mut self, file: &Path) -> ConfigBuilder {
        self.file = file.to_owned();
        self
    }

    /// Writes the config as TOML; returns its path.
    pub fn write(&self) -> PathBuf {
        let text = toml::to_string(&self.raw).expect("the config serializes");
        std::fs::write(&self.file, text).unwrap();
        self.file.clone()
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    use toml::Value::{Array, Table};
    match (base, over) {
        (Table(base), Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Array(base), Array(over))
            if base.iter().chain(&over).all(|v| v.is_table()) && !over.is_empty() =>
        {
            base.extend(over)
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(dir: &Path) -> ConfigBuilder {
        ConfigBuilder::new(
            &dir.join("glwarden.db"),
            "http://127.0.0.1:1",
            &crate::secret_file(dir, "token", "glpat-x"),
            &dir.join("glwarden.toml"),
        )
    }

    /// What the builder writes, glwarden reads back as the same config.
    #[test]
    fn a_written_config_loads_as_built() {
        let dir = tempfile::tempdir().unwrap();
        let built = builder(dir.path())
            .daemon("*/1 * * * * *", 0.5)
            .repairs(Policy::Auto, 2)
            .master_key_file(&crate::secret_file(
                dir.path(),
                "master.key",
                &"5a".repeat(32),
            ))
            .toml("[check]\nconcurrency = 3\n\n[[projects]]\nconnection = \"main\"\nid = 7\n");
        let loaded = glwarden::config::Config::load(&built.write()).expect("loads");
        assert_eq!(format!("{:?}", loaded.raw), format!("{:?}", built.raw));
        assert_eq!(loaded.raw.check.concurrency, 3);
        assert_eq!(loaded.raw.projects.len(), 1);
    }

    #[test]
    fn extra_toml_merges_tables_appends_entries_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let b = builder(dir.path())
            .toml("[[projects]]\nconnection = \"main\"\nid = 1\n")
            .toml("[[projects]]\nconnection = \"main\"\nid = 2\n[expect]\nwebhook_events = [\"push\"]\n");
        assert_eq!(b.raw.projects.len(), 2);
        assert_eq!(b.raw.expect.webhook_events, vec!["push".to_owned()]);
        let refused = std::panic::catch_unwind(|| builder(dir.path()).toml("[check]\nnope = 1\n"));
        assert!(refused.is_err());
    }
}
