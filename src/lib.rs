//! glwarden keeps CI connected to GitLab: it checks every connected project's
//! repository, deploy key and webhook (and the credential behind them), records
//! their health in SQLite and reports it.
//!
//! Flow: [`config`] → [`inventory`] → [`check`] (per connection: [`gitlab`]
//! client → [`probe`] verdicts) → [`store`] → [`repair`] → [`report`];
//! [`daemon`] runs sweeps on a schedule and serves [`metrics`] through
//! [`server`]; [`cli`] is the command line. The GitLab simulator the demo and
//! the tests run against is the `gitlab-sim` crate (`crates/gitlab-sim`).

pub mod check;
pub mod cli;
pub mod config;
pub mod custody;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod gitlab;
pub mod health;
pub mod inventory;
pub mod keys;
pub mod listing;
pub mod metrics;
pub mod probe;
pub mod repair;
pub mod report;
pub mod server;
pub mod store;
pub mod telemetry;
