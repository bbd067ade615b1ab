//! glwarden keeps CI connected to GitLab: it checks every connected project's
//! repository, deploy key and webhook (and the credential behind them), records
//! their health in SQLite and repairs them by policy.
//!
//! The modules read as the flow (docs/architecture.md): [`config`] →
//! [`inventory`] → [`sweep`] (per connection: the [`gitlab`] client's answers
//! judged by [`probe`]) → [`store`] → [`repair`]; [`daemon`] runs sweeps on a
//! schedule and serves metrics; [`cli`] is the command line and [`report`]
//! its tables. [`health`] holds the states, [`keys`] and [`custody`] the key
//! material. The GitLab simulator the demo and the tests run against is the
//! `gitlab-sim` crate (`crates/gitlab-sim`).

pub mod cli;
pub mod config;
pub mod custody;
pub mod daemon;
pub mod gitlab;
pub mod health;
pub mod inventory;
pub mod keys;
pub mod probe;
pub mod repair;
pub mod report;
pub mod store;
pub mod sweep;
pub mod telemetry;
