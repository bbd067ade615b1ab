//! Fixtures shared by glwarden's integration tests (`tests/it`) and its
//! benchmark (`benches/scale.rs`): the GitLab simulator with one user and
//! token, projects connected with a key and hook of ours, configs built from
//! glwarden's own config types, `glwarden run` as a child process, a wait
//! for conditions, and readers of the store and of `/metrics`.
//!
//! A crate rather than a `mod common` so that the benchmark uses the same
//! code as the tests. Test-only: glwarden's lib does not depend on it.

mod config;
mod daemon;
mod fixture;
mod read;
mod repair;

pub use config::{ConfigBuilder, oauth_connection};
pub use daemon::{AppDaemon, DaemonProcess, free_listen, free_port, glwarden, glwarden_bin, run};
pub use fixture::{Connected, Fixture, HOOK_TEMPLATE, TOKEN, secret_file};
pub use read::{
    BROKEN, HEALTHY, active_ids, component, connection_state, metric_sum, states, stored_project,
    wait_until,
};
pub use repair::{
    MASTER_KEY, OneProject, assert_one_matching_hook, assert_one_matching_key, key_id, repair_run,
    writes,
};

// What tests name most often with the fixtures, so that `use glwarden_testkit::*` is enough.
pub use glwarden::config::{MovedPolicy, Policy, WebhookReenable};
