//! Prometheus metrics (`prometheus` crate), named per the Prometheus guides:
//! prefix `glwarden_`, base units, `_total` on counters, `_timestamp_seconds`
//! for points in time, `_info` for build metadata.
//!
//! Per-project series scale to large fleets: by default a project has a
//! series only while one of its components is not healthy, and the series is
//! deleted when it recovers (so Prometheus marks it stale and the alert
//! resolves). Aggregate gauges count components per state.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::config::PerProjectSeries;
use crate::gitlab::{RateLimitInfo, RequestObserver};
use crate::health::{Component, State};
use crate::store::HealthSummary;

/// How a sweep ended, the `result` label of `glwarden_sweeps_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepOutcome {
    /// Every connection could be asked.
    Ok,
    /// A connection could not be asked, or the sweep failed.
    Failed,
    /// Cancelled past `schedule.sweep_deadline_intervals`.
    Deadline,
}

impl SweepOutcome {
    fn label(self) -> &'static str {
        match self {
            SweepOutcome::Ok => "ok",
            SweepOutcome::Failed => "failed",
            SweepOutcome::Deadline => "deadline",
        }
    }
}

/// Every metric glwarden exports.
pub struct Metrics {
    registry: Registry,
    per_project: PerProjectSeries,
    connection_up: IntGaugeVec,
    connection_state: IntGaugeVec,
    token_expiry: IntGaugeVec,
    token_rotations: IntCounterVec,
    token_rotation_failed: IntGaugeVec,
    component_unhealthy: IntGaugeVec,
    component_healthy: IntGaugeVec,
    components: IntGaugeVec,
    projects: IntGaugeVec,
    checks: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    rate_limit_remaining: IntGaugeVec,
    rate_limited: IntCounterVec,
    sweep_duration: Histogram,
    sweeps: IntCounterVec,
    sweeps_skipped: IntCounter,
    last_success: Gauge,
    repairs: IntCounterVec,
    repairs_paused: prometheus::IntGauge,
    leader: prometheus::IntGauge,
    repairs_stopped: prometheus::IntGauge,
    journal_entries: prometheus::IntGauge,
    /// Label sets of the per-project series currently exported, so that the
    /// ones that no longer apply can be deleted.
    published: Mutex<Published>,
}

#[derive(Default)]
struct Published {
    unhealthy: HashSet<[String; 4]>,
    healthy: HashSet<[String; 3]>,
    connections: HashSet<String>,
    /// Connections whose token's expiry is exported.
    token_expiries: HashSet<String>,
    /// Connections whose last token rotation failed.
    rotation_failures: HashSet<String>,
    /// Components per component and state, as last published (the status page's counts).
    counts: Vec<(String, String, i64)>,
    last_sweep: Option<LastSweep>,
    /// The sweep under way, if any.
    running: Option<std::sync::Arc<crate::sweep::Progress>>,
}

/// The last sweep this replica finished, for the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastSweep {
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub seconds: f64,
    pub outcome: &'static str,
}

const CONNECTION_STATES: [State; 4] = [
    State::Connected,
    State::Expiring,
    State::NotConnected,
    State::Unknown,
];

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("metric registered once");
    v
}

impl Metrics {
    pub fn new(per_project: PerProjectSeries) -> Arc<Metrics> {
        let r = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new("glwarden_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(info.clone())).expect("registered once");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "glwarden_gitlab_request_duration_seconds",
                "Duration of GitLab API requests.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["connection", "endpoint"],
        )
        .expect("valid metric");
        r.register(Box::new(request_duration.clone()))
            .expect("registered once");
        let sweep_duration = Histogram::with_opts(
            HistogramOpts::new(
                "glwarden_sweep_duration_seconds",
                "Duration of whole sweeps.",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(sweep_duration.clone()))
            .expect("registered once");
        let sweeps_skipped = IntCounter::new(
            "glwarden_sweeps_skipped_total",
            "Sweeps not started because the previous one was still running.",
        )
        .expect("valid metric");
        r.register(Box::new(sweeps_skipped.clone()))
            .expect("registered once");
        let last_success = Gauge::new(
            "glwarden_last_successful_sweep_timestamp_seconds",
            "Unix time at which the last successful sweep finished.",
        )
        .expect("valid metric");
        r.register(Box::new(last_success.clone()))
            .expect("registered once");

        let leader = prometheus::IntGauge::new(
            "glwarden_leader",
            "1 while this replica leads (sweeps, repairs, OAuth refresh), 0 while it stands by; on SQLite the one daemon always leads.",
        )
        .expect("valid metric");
        r.register(Box::new(leader.clone()))
            .expect("registered once");

        let repairs_paused = prometheus::IntGauge::new(
            "glwarden_repairs_paused",
            "1 while the storm guard has paused automatic repairs.",
        )
        .expect("valid metric");
        r.register(Box::new(repairs_paused.clone()))
            .expect("registered once");
        let repairs_stopped = prometheus::IntGauge::new(
            "glwarden_repairs_stopped",
            "Broken components whose automatic repair failed 3 times in a row and is stopped until their state changes or `glwarden regenerate` runs.",
        )
        .expect("valid metric");
        r.register(Box::new(repairs_stopped.clone()))
            .expect("registered once");
        let journal_entries = prometheus::IntGauge::new(
            "glwarden_repair_journal_entries",
            "Unfinished repairs in the journal (resumed at the next start or sweep).",
        )
        .expect("valid metric");
        r.register(Box::new(journal_entries.clone()))
            .expect("registered once");

        Arc::new(Metrics {
            repairs: counter_vec(
                &r,
                "glwarden_repairs_total",
                "Repairs carried out, by component and outcome.",
                &["component", "outcome"],
            ),
            repairs_paused,
            leader,
            repairs_stopped,
            journal_entries,
            per_project,
            connection_up: gauge_vec(
                &r,
                "glwarden_connection_up",
                "1 when the connection's last definite state is connected or expiring, 0 when not_connected.",
                &["connection"],
            ),
            connection_state: gauge_vec(
                &r,
                "glwarden_connection_state",
                "Current state of each connection (one-hot).",
                &["connection", "state"],
            ),
            token_expiry: gauge_vec(
                &r,
                "glwarden_connection_token_expiry_timestamp_seconds",
                "Unix time at which the connection's access token stops working (the start of its expiry date, UTC), as GitLab last said; absent for tokens without an expiry and for OAuth tokens, which glwarden refreshes.",
                &["connection"],
            ),
            token_rotations: counter_vec(
                &r,
                "glwarden_token_rotations_total",
                "Access token rotations this replica tried (rotate_before_days), by outcome: ok or failed.",
                &["connection", "outcome"],
            ),
            token_rotation_failed: gauge_vec(
                &r,
                "glwarden_token_rotation_failed",
                "1 while the connection's last token rotation failed (the reason is in `glwarden status` and `glwarden events`); absent otherwise.",
                &["connection"],
            ),
            component_unhealthy: gauge_vec(
                &r,
                "glwarden_component_unhealthy",
                "1 for each project component in a broken or expiring state (not unknown or blocked), labelled with the state; absent once healthy.",
                &["connection", "project", "component", "state"],
            ),
            component_healthy: gauge_vec(
                &r,
                "glwarden_component_healthy",
                "1 when the project's component is healthy, else 0 (only with metrics.per_project = \"all\").",
                &["connection", "project", "component"],
            ),
            components: gauge_vec(
                &r,
                "glwarden_components",
                "Number of project components per component and state.",
                &["component", "state"],
            ),
            projects: gauge_vec(
                &r,
                "glwarden_projects",
                "Projects in the inventory per connection.",
                &["connection"],
            ),
            checks: counter_vec(
                &r,
                "glwarden_checks_total",
                "Component checks by component and resulting state.",
                &["component", "result"],
            ),
            requests: counter_vec(
                &r,
                "glwarden_gitlab_requests_total",
                "GitLab API requests by connection, endpoint class and status class.",
                &["connection", "endpoint", "status_class"],
            ),
            request_duration,
            rate_limit_remaining: gauge_vec(
                &r,
                "glwarden_gitlab_rate_limit_remaining",
                "Requests left in the current window, as GitLab last reported (RateLimit-Remaining).",
                &["connection"],
            ),
            rate_limited: counter_vec(
                &r,
                "glwarden_gitlab_rate_limited_total",
                "GitLab answers with status 429.",
                &["connection"],
            ),
            sweep_duration,
            sweeps: counter_vec(
                &r,
                "glwarden_sweeps_total",
                "Sweeps by result.",
                &["result"],
            ),
            sweeps_skipped,
            last_success,
            published: Mutex::new(Published::default()),
            registry: r,
        })
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// An observer for one connection's GitLab client.
    pub fn observer(self: &Arc<Self>, connection: &str) -> Arc<dyn RequestObserver> {
        // Export 0 rather than nothing for series we know exist.
        self.rate_limited.with_label_values(&[connection]).inc_by(0);
        Arc::new(ConnectionObserver {
            metrics: self.clone(),
            connection: connection.to_owned(),
        })
    }

    pub fn count_checks(&self, counts: &BTreeMap<(Component, State), u64>) {
        for ((component, state), n) in counts {
            self.checks
                .with_label_values(&[component.as_str(), state.as_str()])
                .inc_by(*n);
        }
    }

    pub fn sweep_finished(&self, duration: Duration, outcome: SweepOutcome) {
        self.published.lock().expect("metrics lock").last_sweep = Some(LastSweep {
            finished_at: chrono::Utc::now(),
            seconds: duration.as_secs_f64(),
            outcome: outcome.label(),
        });
        self.sweep_duration.observe(duration.as_secs_f64());
        self.sweeps.with_label_values(&[outcome.label()]).inc();
        if outcome == SweepOutcome::Ok {
            self.last_success.set(chrono::Utc::now().timestamp() as f64);
        }
    }

    /// The token rotations a sweep tried.
    pub fn token_rotations(&self, rotations: &[(String, crate::sweep::Rotated)]) {
        for (connection, rotated) in rotations {
            let outcome = match rotated {
                crate::sweep::Rotated::Ok { .. } => "ok",
                crate::sweep::Rotated::Failed(_) => "failed",
                crate::sweep::Rotated::Busy => continue,
            };
            self.token_rotations
                .with_label_values(&[connection.as_str(), outcome])
                .inc();
        }
    }

    /// What a run's repair pass did, and the repair state after it.
    pub fn repair_pass(
        &self,
        repairs: &[(Component, crate::sweep::RepairResult)],
        paused: bool,
        stopped: usize,
        journal_entries: usize,
    ) {
        for (component, outcome) in repairs {
            self.repairs
                .with_label_values(&[component.as_str(), outcome.as_str()])
                .inc();
        }
        self.repairs_paused.set(i64::from(paused));
        self.repairs_stopped.set(stopped as i64);
        self.journal_entries.set(journal_entries as i64);
    }

    /// A sweep began (with how far it has come) or ended (`None`).
    pub fn sweep_running(&self, progress: Option<std::sync::Arc<crate::sweep::Progress>>) {
        self.published.lock().expect("metrics lock").running = progress;
    }

    /// How far the sweep under way has come.
    pub fn running_sweep(&self) -> Option<crate::sweep::Reading> {
        let published = self.published.lock().expect("metrics lock");
        published.running.as_ref().map(|p| p.read())
    }

    /// The counts per component and state last published, and the last
    /// sweep this replica finished (the status page reads what `/metrics` says).
    pub fn published(&self) -> (Vec<(String, String, i64)>, Option<LastSweep>) {
        let published = self.published.lock().expect("metrics lock");
        (published.counts.clone(), published.last_sweep.clone())
    }

    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    pub fn sweep_skipped(&self) {
        self.sweeps_skipped.inc();
    }

    /// Sets every health series from the stored health, deleting the series
    /// of components that recovered and of projects that left the inventory.
    pub fn publish(&self, summary: &HealthSummary) {
        let mut published = self.published.lock().expect("metrics lock");
        published.counts = summary.counts.clone();

        let mut connections = HashSet::new();
        for (name, shown, definite) in &summary.connections {
            for state in CONNECTION_STATES {
                self.connection_state
                    .with_label_values(&[name.as_str(), state.as_str()])
                    .set(i64::from(*shown == state));
            }
            match definite {
                Some(State::Connected | State::Expiring) => self
                    .connection_up
                    .with_label_values(&[name.as_str()])
                    .set(1),
                Some(State::NotConnected) => self
                    .connection_up
                    .with_label_values(&[name.as_str()])
                    .set(0),
                _ => {}
            }
            connections.insert(name.clone());
        }
        for gone in published.connections.difference(&connections) {
            let _ = self.connection_up.remove_label_values(&[gone]);
            let _ = self.projects.remove_label_values(&[gone]);
            for state in CONNECTION_STATES {
                let _ = self
                    .connection_state
                    .remove_label_values(&[gone, state.as_str()]);
            }
        }
        published.connections = connections;

        let mut expiring = HashSet::new();
        for (name, token) in &summary.tokens {
            let Some(at) = token
                .expires_at
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp())
            else {
                continue;
            };
            self.token_expiry
                .with_label_values(&[name.as_str()])
                .set(at);
            expiring.insert(name.clone());
        }
        for gone in published.token_expiries.difference(&expiring) {
            let _ = self.token_expiry.remove_label_values(&[gone]);
        }
        published.token_expiries = expiring;

        let failing: HashSet<String> = summary
            .rotation_failures
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        for gone in published.rotation_failures.difference(&failing) {
            let _ = self.token_rotation_failed.remove_label_values(&[gone]);
        }
        for name in &failing {
            self.token_rotation_failed
                .with_label_values(&[name.as_str()])
                .set(1);
        }
        published.rotation_failures = failing;

        // Only definite problems are listed per project: `unknown` and
        // `blocked` are counted, not listed, or an outage or a revoked token
        // would put every project of a large fleet into the exposition at
        // once; no alert needs them (the cause has its own series).
        let unhealthy: HashSet<[String; 4]> = summary
            .problems
            .iter()
            .map(|p| {
                [
                    p.connection.clone(),
                    p.path.clone(),
                    p.component.clone(),
                    p.state.clone(),
                ]
            })
            .collect();
        for stale in published.unhealthy.difference(&unhealthy) {
            let _ = self
                .component_unhealthy
                .remove_label_values(&stale.each_ref().map(String::as_str));
        }
        for labels in &unhealthy {
            self.component_unhealthy
                .with_label_values(&labels.each_ref().map(String::as_str))
                .set(1);
        }
        published.unhealthy = unhealthy;

        let mut healthy = HashSet::new();
        if self.per_project == PerProjectSeries::All {
            for (connection, path, component, ok) in summary.all.iter().flatten() {
                let labels = [connection.clone(), path.clone(), component.clone()];
                self.component_healthy
                    .with_label_values(&labels.each_ref().map(String::as_str))
                    .set(i64::from(*ok));
                healthy.insert(labels);
            }
        }
        for stale in published.healthy.difference(&healthy) {
            let _ = self
                .component_healthy
                .remove_label_values(&stale.each_ref().map(String::as_str));
        }
        published.healthy = healthy;

        for component in Component::PROJECT_COMPONENTS {
            for state in component
                .states()
                .iter()
                .chain(&[State::Unknown, State::Blocked])
            {
                let n = summary
                    .counts
                    .iter()
                    .filter(|(c, s, _)| c == component.as_str() && s == state.as_str())
                    .map(|(_, _, n)| *n)
                    .sum();
                self.components
                    .with_label_values(&[component.as_str(), state.as_str()])
                    .set(n);
            }
        }
        for (connection, n) in &summary.projects {
            self.projects
                .with_label_values(&[connection.as_str()])
                .set(*n);
        }
    }
}

/// Counts one connection's requests.
struct ConnectionObserver {
    metrics: Arc<Metrics>,
    connection: String,
}

impl RequestObserver for ConnectionObserver {
    fn request_done(&self, endpoint: &'static str, status_class: &'static str, elapsed: Duration) {
        let m = &self.metrics;
        m.requests
            .with_label_values(&[self.connection.as_str(), endpoint, status_class])
            .inc();
        m.request_duration
            .with_label_values(&[self.connection.as_str(), endpoint])
            .observe(elapsed.as_secs_f64());
        if status_class == "429" {
            m.rate_limited
                .with_label_values(&[self.connection.as_str()])
                .inc();
        }
    }

    fn rate_limit(&self, info: RateLimitInfo) {
        if let Some(remaining) = info.remaining {
            self.metrics
                .rate_limit_remaining
                .with_label_values(&[self.connection.as_str()])
                .set(remaining.min(i64::MAX as u64) as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Problem;

    fn summary(key_state: Option<&str>, with_project: bool) -> HealthSummary {
        let mut counts = vec![];
        let mut problems = vec![];
        let mut all = vec![];
        if with_project {
            counts.push(("repository".to_owned(), "ok".to_owned(), 1));
            counts.push(("webhook".to_owned(), "healthy".to_owned(), 1));
            let key = key_state.unwrap_or("healthy");
            counts.push(("deploy_key".to_owned(), key.to_owned(), 1));
            if key != "healthy" {
                problems.push(Problem {
                    connection: "main".into(),
                    path: "acme/\"odd\"\nname".into(),
                    component: "deploy_key".into(),
                    state: key.into(),
                });
            }
            all.push((
                "main".to_owned(),
                "acme/app".to_owned(),
                "webhook".to_owned(),
                true,
            ));
        }
        HealthSummary {
            connections: vec![("main".into(), State::Connected, Some(State::Connected))],
            counts,
            projects: vec![("main".into(), i64::from(with_project))],
            problems,
            all: Some(all),
            tokens: Vec::new(),
            rotation_failures: Vec::new(),
        }
    }

    #[test]
    fn a_tokens_expiry_is_exported_while_gitlab_tells_one() {
        use crate::config::TokenKind;
        use crate::probe::TokenFacts;
        let m = Metrics::new(PerProjectSeries::Unhealthy);
        let token = |expires_at| TokenFacts {
            kind: TokenKind::AccessToken,
            id: Some(3),
            scopes: vec!["api".into()],
            expires_at,
        };
        let mut s = summary(None, true);
        s.tokens = vec![(
            "main".into(),
            token(chrono::NaiveDate::from_ymd_opt(2027, 1, 31)),
        )];
        m.publish(&s);
        // 2027-01-31T00:00:00Z: the token stops working as that day starts.
        assert!(m.render().contains(
            "glwarden_connection_token_expiry_timestamp_seconds{connection=\"main\"} 1801353600"
        ));
        s.tokens = vec![("main".into(), token(None))];
        m.publish(&s);
        assert!(
            !m.render()
                .contains("glwarden_connection_token_expiry_timestamp_seconds{")
        );
    }

    #[test]
    fn unhealthy_series_exist_only_while_unhealthy() {
        let m = Metrics::new(PerProjectSeries::Unhealthy);
        m.publish(&summary(Some("missing"), true));
        let text = m.render();
        assert!(text.contains("glwarden_component_unhealthy{component=\"deploy_key\",connection=\"main\",project=\"acme/\\\"odd\\\"\\nname\",state=\"missing\"} 1"), "{text}");
        assert!(text.contains("glwarden_components{component=\"deploy_key\",state=\"missing\"} 1"));
        assert!(text.contains("glwarden_components{component=\"webhook\",state=\"healthy\"} 1"));
        assert!(!text.contains("glwarden_component_healthy{"));

        m.publish(&summary(None, true));
        let text = m.render();
        assert!(!text.contains("glwarden_component_unhealthy{"), "{text}");
        assert!(text.contains("glwarden_components{component=\"deploy_key\",state=\"missing\"} 0"));
    }

    #[test]
    fn per_project_all_adds_health_gauges_and_removal_deletes_them() {
        let m = Metrics::new(PerProjectSeries::All);
        m.publish(&summary(None, true));
        assert!(
            m.render()
                .contains("glwarden_component_healthy{component=\"webhook\"")
        );
        m.publish(&summary(None, false));
        let text = m.render();
        assert!(!text.contains("glwarden_component_healthy{"), "{text}");
        assert!(text.contains("glwarden_projects{connection=\"main\"} 0"));
    }

    #[test]
    fn connection_series_are_one_hot() {
        let m = Metrics::new(PerProjectSeries::Unhealthy);
        m.publish(&summary(None, true));
        let text = m.render();
        assert!(
            text.contains("glwarden_connection_state{connection=\"main\",state=\"connected\"} 1")
        );
        assert!(
            text.contains(
                "glwarden_connection_state{connection=\"main\",state=\"not_connected\"} 0"
            )
        );
        assert!(text.contains("glwarden_connection_up{connection=\"main\"} 1"));
        assert!(text.contains("glwarden_build_info{version=\""));
    }
}
