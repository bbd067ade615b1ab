//! Waiting for a condition, and reading what glwarden stored and published.

use std::time::{Duration, Instant};

use glwarden::health::{Component, State};
use glwarden::store::{ProjectRow, Store};
use glwarden::sweep::Selection;

/// Waits for `cond` to hold, polling every 50 ms; fails naming `what` after
/// `timeout`. Tests wait for the condition they assert, never for a time.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The inventory's row of the active project with this GitLab id.
pub async fn stored_project(store: &Store, gitlab_id: u64) -> ProjectRow {
    store
        .active_projects()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.gitlab_id == gitlab_id as i64)
        .unwrap_or_else(|| panic!("project {gitlab_id} is in the inventory"))
}

/// The GitLab ids of the projects in the inventory.
pub async fn active_ids(store: &Store) -> Vec<i64> {
    store
        .active_projects()
        .await
        .unwrap()
        .iter()
        .map(|p| p.gitlab_id)
        .collect()
}

/// The shown states of a project's components, by GitLab id.
pub async fn states(store: &Store, gitlab_id: u64) -> [State; 3] {
    let report = glwarden::report::build(store, &Selection::One(gitlab_id.to_string()))
        .await
        .unwrap();
    let p = report
        .projects
        .first()
        .expect("project is in the inventory");
    [p.repository.state, p.deploy_key.state, p.webhook.state]
}

/// The shown state and detail of one component.
pub async fn component(store: &Store, gitlab_id: u64, component: Component) -> (State, String) {
    let report = glwarden::report::build(store, &Selection::One(gitlab_id.to_string()))
        .await
        .unwrap();
    let p = report
        .projects
        .first()
        .expect("project is in the inventory");
    let line = match component {
        Component::Repository => &p.repository,
        Component::DeployKey => &p.deploy_key,
        Component::Webhook => &p.webhook,
        Component::Connection => panic!("use connection_state"),
    };
    (line.state, line.detail.clone())
}

/// The shown state of the first connection.
pub async fn connection_state(store: &Store) -> State {
    let report = glwarden::report::build(store, &Selection::All)
        .await
        .unwrap();
    report.connections[0].health.state
}

/// Sum of every sample of `name` whose labels contain all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// States that mean a component is broken (as stored in `health.state`).
pub const BROKEN: &[&str] = &[
    "not_connected",
    "moved",
    "archived",
    "pending_deletion",
    "access_lost",
    "not_found",
    "missing",
    "mismatch",
    "expired",
    "writable",
    "misconfigured",
    "disabled",
    "failing",
];

pub const HEALTHY: [State; 3] = [State::Ok, State::Healthy, State::Healthy];
