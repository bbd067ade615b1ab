//! What glwarden shows: the stored health of connections and projects, as a
//! table for people or JSON for programs, and the exit status it implies.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::health::{Component, Severity, State};
use crate::store::{HealthRow, Store, StoreError, TransitionRow};
use crate::sweep::Selection;

#[derive(Debug, Serialize)]
pub struct Report {
    /// Who leads, on a store shared by replicas (PostgreSQL); absent on SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderLine>,
    pub connections: Vec<ConnectionLine>,
    pub projects: Vec<ProjectLine>,
}

impl From<crate::store::Leader> for LeaderLine {
    fn from(l: crate::store::Leader) -> Self {
        LeaderLine {
            holder: l.holder,
            token: l.token,
            lease_expires_at: l.expires_at,
        }
    }
}

/// The lease as `status` shows it: the holder (none while no replica
/// leads), its fencing token and when its lease ends.
#[derive(Debug, Serialize)]
pub struct LeaderLine {
    pub holder: Option<String>,
    pub token: i64,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionLine {
    pub name: String,
    #[serde(flatten)]
    pub health: ComponentLine,
    /// The token as GitLab last described it; absent until a sweep read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenLine>,
}

/// A connection's token: kind, GitLab's id, scopes, expiry and days left.
#[derive(Debug, Serialize)]
pub struct TokenLine {
    #[serde(flatten)]
    pub facts: crate::probe::TokenFacts,
    /// Whole days from today (UTC) until it stops working.
    pub days_left: Option<i64>,
    /// Why the last rotation (`rotate_before_days`) failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_failed: Option<String>,
}

impl TokenLine {
    pub fn new(
        facts: crate::probe::TokenFacts,
        today: chrono::NaiveDate,
        rotation_failed: Option<String>,
    ) -> Self {
        TokenLine {
            days_left: facts.days_left(today),
            facts,
            rotation_failed,
        }
    }

    /// One line: "access token 12 (api), expires 2027-01-31 (61 days left)".
    pub fn describe(&self) -> String {
        let f = &self.facts;
        let kind = match (f.kind, f.id) {
            (crate::config::TokenKind::Oauth, _) => "OAuth token".to_owned(),
            (_, Some(id)) => format!("access token {id}"),
            (_, None) => "access token".to_owned(),
        };
        let scopes = if f.scopes.is_empty() {
            "no scopes".to_owned()
        } else {
            f.scopes.join(", ")
        };
        let expiry = match (f.kind, f.expires_at, self.days_left) {
            (crate::config::TokenKind::Oauth, ..) => "refreshed by glwarden".to_owned(),
            (_, Some(date), Some(days)) if days < 0 => format!("expired on {date}"),
            (_, Some(date), Some(days)) => format!("expires {date} ({days} days left)"),
            _ => "no expiry".to_owned(),
        };
        match &self.rotation_failed {
            Some(why) => format!("{kind} ({scopes}), {expiry}; rotation failed: {why}"),
            None => format!("{kind} ({scopes}), {expiry}"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ProjectLine {
    pub connection: String,
    pub gitlab_id: i64,
    pub path: String,
    pub repository: ComponentLine,
    pub deploy_key: ComponentLine,
    pub webhook: ComponentLine,
}

impl ProjectLine {
    fn components(&self) -> [(Component, &ComponentLine); 3] {
        [
            (Component::Repository, &self.repository),
            (Component::DeployKey, &self.deploy_key),
            (Component::Webhook, &self.webhook),
        ]
    }
}

#[derive(Debug, Serialize)]
pub struct ComponentLine {
    pub state: State,
    pub detail: String,
    /// Since when the last definite state holds.
    pub since: Option<DateTime<Utc>>,
    pub last_checked: Option<DateTime<Utc>>,
    /// The last definite state, when an unknown or blocked check hides it.
    pub last_known: Option<State>,
}

impl ComponentLine {
    fn from_row(row: Option<&HealthRow>) -> Self {
        match row {
            None => ComponentLine {
                state: State::Unknown,
                detail: "not checked yet".into(),
                since: None,
                last_checked: None,
                last_known: None,
            },
            Some(row) => ComponentLine {
                state: row.shown_state(),
                detail: row.shown_detail(),
                // An unknown or blocked condition holds since it began, not since the last known state.
                since: if row.pending.is_some() {
                    row.pending_since
                } else {
                    row.since
                },
                last_checked: row.last_checked,
                last_known: row.pending.and(row.state),
            },
        }
    }
}

/// Reads the stored health of the selected projects and of their connections.
pub async fn build(store: &Store, selection: &Selection) -> Result<Report, StoreError> {
    let rows = selection.projects(store).await?;
    let connection_rows = store.connections().await?;
    // One project's report reads its own rows, not the whole fleet's.
    let health_rows = match selection {
        Selection::All => store.all_health().await?,
        Selection::One(_) => {
            let subjects: Vec<i64> = rows
                .iter()
                .map(|p| p.id)
                .chain(connection_rows.iter().map(|(id, _)| *id))
                .collect();
            store.health_of(&subjects).await?
        }
    };
    let health: HashMap<(Component, i64), HealthRow> = health_rows
        .into_iter()
        .map(|h| ((h.component, h.subject_id), h))
        .collect();
    let line = |component: Component, subject: i64| {
        ComponentLine::from_row(health.get(&(component, subject)))
    };
    let mut projects: Vec<ProjectLine> = Vec::with_capacity(rows.len());
    for p in rows {
        let mut project = ProjectLine {
            repository: line(Component::Repository, p.id),
            deploy_key: line(Component::DeployKey, p.id),
            webhook: line(Component::Webhook, p.id),
            path: if p.path.is_empty() {
                format!("#{}", p.gitlab_id)
            } else {
                p.path
            },
            connection: p.connection,
            gitlab_id: p.gitlab_id,
        };
        // A broken component whose automatic repair is stopped says so
        // (few components are broken, so this is few reads).
        for (component, c) in [
            (Component::DeployKey, &mut project.deploy_key),
            (Component::Webhook, &mut project.webhook),
        ] {
            if c.state.severity() != Severity::Broken {
                continue;
            }
            let failed = store
                .failed_repairs_in_a_row(p.id, component.as_str(), c.since)
                .await?;
            if failed >= crate::repair::MAX_FAILED_REPAIRS {
                c.detail.push_str(
                    "; automatic repair stopped after failing (see `glwarden events`); `glwarden regenerate` resumes it",
                );
            }
        }
        projects.push(project);
    }
    let mut tokens: HashMap<String, crate::probe::TokenFacts> =
        store.tokens().await?.into_iter().collect();
    let mut rotation_failures: HashMap<String, String> =
        store.rotation_failures().await?.into_iter().collect();
    let today = Utc::now().date_naive();
    let connections = connection_rows
        .into_iter()
        .filter(|(_, name)| {
            matches!(selection, Selection::All) || projects.iter().any(|p| &p.connection == name)
        })
        .map(|(id, name)| ConnectionLine {
            token: tokens
                .remove(&name)
                .map(|facts| TokenLine::new(facts, today, rotation_failures.remove(&name))),
            name,
            health: line(Component::Connection, id),
        })
        .collect();
    let leader = store.leader().await?.map(LeaderLine::from);
    Ok(Report {
        leader,
        connections,
        projects,
    })
}

impl Report {
    /// Worst severity over every connection and component shown.
    pub fn worst(&self) -> Severity {
        let connections = self.connections.iter().map(|c| c.health.state.severity());
        let components = self
            .projects
            .iter()
            .flat_map(|p| p.components().map(|(_, c)| c.state.severity()));
        connections
            .chain(components)
            .max()
            .unwrap_or(Severity::Healthy)
    }

    /// 0 all healthy (expiring counts as healthy, with a warning), 1 something
    /// broken, 2 something could not be checked.
    pub fn exit_code(&self) -> i32 {
        match self.worst() {
            Severity::Healthy | Severity::Warning => 0,
            Severity::Broken => 1,
            Severity::Unknown => 2,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Two tables: connections, then projects with one detail line per
    /// component that is not healthy (with since-when, if `with_since`).
    pub fn to_table(&self, with_since: bool) -> String {
        let mut out = String::new();
        if let Some(leader) = &self.leader {
            out.push_str(&match (&leader.holder, leader.lease_expires_at) {
                (Some(holder), Some(until)) => format!(
                    "leader: {} (fencing token {}, lease until {})\n",
                    escape(holder),
                    leader.token,
                    until.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                _ => "leader: none (no replica holds the lease: nothing sweeps or repairs)\n"
                    .to_owned(),
            });
        }
        let mut conns = new_table(&["CONNECTION", "STATE", "SINCE", "DETAIL", "TOKEN"]);
        for c in &self.connections {
            conns.add_row(vec![
                escape(&c.name),
                c.health.state.to_string(),
                since(c.health.since),
                escape(&c.health.detail),
                c.token
                    .as_ref()
                    .map_or_else(|| "not read yet".to_owned(), |t| escape(&t.describe())),
            ]);
        }
        out.push_str(&conns.to_string());
        out.push('\n');
        let mut projects = new_table(&[
            "CONNECTION",
            "PROJECT",
            "REPOSITORY",
            "DEPLOY KEY",
            "WEBHOOK",
            "DETAIL",
        ]);
        for p in &self.projects {
            let details: Vec<String> = p
                .components()
                .iter()
                .filter(|(_, c)| !c.state.is_healthy())
                .map(|(component, c)| match with_since {
                    true => format!(
                        "{component}: {} (since {})",
                        escape(&c.detail),
                        since(c.since)
                    ),
                    false => format!("{component}: {}", escape(&c.detail)),
                })
                .collect();
            projects.add_row(vec![
                escape(&p.connection),
                escape(&p.path),
                p.repository.state.to_string(),
                p.deploy_key.state.to_string(),
                p.webhook.state.to_string(),
                details.join("\n"),
            ]);
        }
        out.push_str(&projects.to_string());
        out.push('\n');
        out
    }
}

/// Renders the history of transitions, naming each row's project or connection.
pub fn transitions_table(rows: &[TransitionRow], names: &HashMap<(bool, i64), String>) -> String {
    let mut table = new_table(&["AT", "SUBJECT", "COMPONENT", "FROM", "TO", "DETAIL"]);
    for t in rows {
        let is_connection = t.component == Component::Connection;
        let subject = names
            .get(&(is_connection, t.subject_id))
            .cloned()
            .unwrap_or_else(|| format!("#{}", t.subject_id));
        table.add_row(vec![
            t.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            escape(&subject),
            t.component.as_str().to_owned(),
            t.from_state.map_or("-", State::as_str).to_owned(),
            t.to_state.as_str().to_owned(),
            escape(&t.detail),
        ]);
    }
    format!("{table}\n")
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if table.width().is_none() {
        table.set_width(160);
    }
    table
}

fn since(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// Shows control characters (a newline in a project title, an escape
/// sequence in an error body) as escapes, so that no value can break the
/// table or forge lines in a terminal.
pub fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escape("ünïcödé \"quoted\""), "ünïcödé \"quoted\"");
    }

    fn line(state: State) -> ComponentLine {
        ComponentLine {
            state,
            detail: String::new(),
            since: None,
            last_checked: None,
            last_known: None,
        }
    }

    fn report(states: [State; 3]) -> Report {
        Report {
            leader: None,
            connections: vec![ConnectionLine {
                name: "main".into(),
                health: line(State::Connected),
                token: None,
            }],
            projects: vec![ProjectLine {
                connection: "main".into(),
                gitlab_id: 1,
                path: "a/b".into(),
                repository: line(states[0]),
                deploy_key: line(states[1]),
                webhook: line(states[2]),
            }],
        }
    }

    #[test]
    fn exit_codes_follow_the_worst_state() {
        assert_eq!(
            report([State::Ok, State::Healthy, State::Healthy]).exit_code(),
            0
        );
        assert_eq!(
            report([State::Ok, State::Expiring, State::Healthy]).exit_code(),
            0
        );
        assert_eq!(
            report([State::Ok, State::Healthy, State::Unknown]).exit_code(),
            2
        );
        assert_eq!(
            report([State::Ok, State::Missing, State::Unknown]).exit_code(),
            1
        );
        assert_eq!(
            report([State::NotFound, State::Blocked, State::Blocked]).exit_code(),
            1
        );
    }

    #[test]
    fn table_lists_details_of_unhealthy_components_only() {
        let mut r = report([State::Ok, State::Missing, State::Healthy]);
        r.projects[0].deploy_key.detail = "no key".into();
        r.projects[0].webhook.detail = "hook 4".into();
        let table = r.to_table(false);
        assert!(table.contains("deploy_key: no key"));
        assert!(!table.contains("hook 4"));
    }

    #[test]
    fn a_token_line_says_kind_scopes_expiry_and_a_failed_rotation() {
        use crate::config::TokenKind;
        use crate::probe::TokenFacts;
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let access = |expires: Option<(i32, u32, u32)>| TokenFacts {
            kind: TokenKind::AccessToken,
            id: Some(12),
            scopes: vec!["api".into(), "self_rotate".into()],
            expires_at: expires.and_then(|(y, m, d)| chrono::NaiveDate::from_ymd_opt(y, m, d)),
        };
        let oauth = TokenFacts {
            kind: TokenKind::Oauth,
            id: None,
            scopes: vec!["api".into()],
            expires_at: None,
        };
        for (facts, failed, shown) in [
            (
                access(Some((2027, 1, 31))),
                None,
                "access token 12 (api, self_rotate), expires 2027-01-31 (61 days left)",
            ),
            (
                access(None),
                None,
                "access token 12 (api, self_rotate), no expiry",
            ),
            (
                access(Some((2026, 11, 30))),
                None,
                "access token 12 (api, self_rotate), expired on 2026-11-30",
            ),
            (oauth, None, "OAuth token (api), refreshed by glwarden"),
            (
                access(Some((2026, 12, 4))),
                Some("GitLab refused the rotation: HTTP 403"),
                "access token 12 (api, self_rotate), expires 2026-12-04 (3 days left); rotation failed: GitLab refused the rotation: HTTP 403",
            ),
        ] {
            let line = TokenLine::new(facts, today, failed.map(str::to_owned));
            assert_eq!(line.describe(), shown);
        }
    }
}
