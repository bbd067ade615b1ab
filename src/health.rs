//! The vocabulary of health: components, their states (the design's table),
//! and what one check observed.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What is checked: the connection (per credential) and three components per project.
/// Stored as its name (TEXT), the same word `as_str` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum Component {
    Connection,
    Repository,
    DeployKey,
    Webhook,
}

impl Component {
    pub const PROJECT_COMPONENTS: [Component; 3] = [
        Component::Repository,
        Component::DeployKey,
        Component::Webhook,
    ];

    /// A component of a project (subject: a project id), rather than the
    /// connection (subject: a connection id).
    pub fn is_project(self) -> bool {
        self != Component::Connection
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Connection => "connection",
            Component::Repository => "repository",
            Component::DeployKey => "deploy_key",
            Component::Webhook => "webhook",
        }
    }

    /// The definitive states of this component, healthy first.
    pub fn states(self) -> &'static [State] {
        use State::*;
        match self {
            Component::Connection => &[Connected, Expiring, NotConnected],
            Component::Repository => &[Ok, Moved, Archived, PendingDeletion, AccessLost, NotFound],
            Component::DeployKey => &[Healthy, Missing, Mismatch, Expired, Expiring, Writable],
            Component::Webhook => &[Healthy, Missing, Misconfigured, Disabled, Failing],
        }
    }

    /// What a person does about this component in `state`: the README's
    /// "what to do" column (`readme_says_what_to_do_as_the_code_does`).
    pub fn what_to_do(self, state: State) -> &'static str {
        use Component as C;
        use State::*;
        match (self, state) {
            (_, Connected | Ok | Healthy) => "—",
            (C::Webhook, Unknown) => "check the hook in GitLab",
            (_, Unknown) if self == C::Connection => {
                "nothing yet; it is never treated as `not_connected`"
            }
            (_, Unknown) => "nothing yet: the next check asks again",
            (_, Blocked) => "repair the connection or repository it depends on",
            (C::Connection, Expiring) => "rotate the token",
            (C::Connection, _) => "issue a new token; its projects are `blocked` meanwhile",
            (C::Repository, Moved) => "update the CI's clone URL",
            (C::Repository, Archived) => "unarchive, or remove it from the inventory",
            (C::Repository, PendingDeletion) => "restore it in GitLab, or let it go",
            (C::Repository, AccessLost) => "give the token's user Maintainer on the project",
            (C::Repository, _) => "the project was deleted or is no longer visible",
            (C::DeployKey, Missing) => "add the key, or let glwarden repair it",
            (C::DeployKey, Mismatch) => "re-add the key glwarden holds",
            (C::DeployKey, Expired) => "add a new key",
            (C::DeployKey, Expiring) => "rotate soon",
            (C::DeployKey, _) => "make it read-only",
            (C::Webhook, Missing) => "create it",
            (C::Webhook, Misconfigured) => "fix the hook",
            (C::Webhook, Disabled) => "fix the receiver, then send a test delivery",
            (C::Webhook, _) => "look at the receiver",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Component::Connection,
            Component::Repository,
            Component::DeployKey,
            Component::Webhook,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| format!("unknown component `{s}`"))
    }
}

/// Every state of the design's table, plus `unknown` (could not ask) and
/// `blocked` (not asked, because the connection or repository it depends on is broken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum State {
    Connected,
    Expiring,
    NotConnected,
    Ok,
    Moved,
    Archived,
    PendingDeletion,
    AccessLost,
    NotFound,
    Healthy,
    Missing,
    Mismatch,
    Expired,
    Writable,
    Misconfigured,
    Disabled,
    Failing,
    Unknown,
    Blocked,
}

/// How bad a state is, for exit codes and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Healthy,
    /// Works today, needs attention soon (an expiring token or key).
    Warning,
    /// Could not be determined.
    Unknown,
    Broken,
}

pub const ALL_STATES: [State; 19] = [
    State::Connected,
    State::Expiring,
    State::NotConnected,
    State::Ok,
    State::Moved,
    State::Archived,
    State::PendingDeletion,
    State::AccessLost,
    State::NotFound,
    State::Healthy,
    State::Missing,
    State::Mismatch,
    State::Expired,
    State::Writable,
    State::Misconfigured,
    State::Disabled,
    State::Failing,
    State::Unknown,
    State::Blocked,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connected => "connected",
            State::Expiring => "expiring",
            State::NotConnected => "not_connected",
            State::Ok => "ok",
            State::Moved => "moved",
            State::Archived => "archived",
            State::PendingDeletion => "pending_deletion",
            State::AccessLost => "access_lost",
            State::NotFound => "not_found",
            State::Healthy => "healthy",
            State::Missing => "missing",
            State::Mismatch => "mismatch",
            State::Expired => "expired",
            State::Writable => "writable",
            State::Misconfigured => "misconfigured",
            State::Disabled => "disabled",
            State::Failing => "failing",
            State::Unknown => "unknown",
            State::Blocked => "blocked",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            State::Connected | State::Ok | State::Healthy => Severity::Healthy,
            State::Expiring => Severity::Warning,
            State::Unknown => Severity::Unknown,
            // Blocked components are not broken themselves, but their cause is,
            // and it is reported on its own row: count them as broken work.
            _ => Severity::Broken,
        }
    }

    pub fn is_healthy(self) -> bool {
        self.severity() == Severity::Healthy
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state `{s}`"))
    }
}

/// What a check found beside a component's state, kept as data (store
/// columns `finding` and `pending_finding`, migration 0010) so that no
/// decision hangs on the words of a detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum Finding {
    /// A healthy webhook with other hooks to the same URL (each push would
    /// reach the CI more than once): a repair deletes the others.
    DuplicateHooks,
    /// The repository answered 404 once: `not_found` only if the next check
    /// agrees (a single 404 may be an outage).
    NotFoundOnce,
}

/// What one check concluded about one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// GitLab answered and the answer decides the state.
    Definite {
        state: State,
        detail: String,
        finding: Option<Finding>,
    },
    /// GitLab could not be asked (transient failure), or its answer does
    /// not decide yet: the last known state stands.
    Unknown {
        reason: String,
        finding: Option<Finding>,
    },
    /// Not asked: something it depends on is broken.
    Blocked { cause: String },
}

impl Observation {
    pub fn definite(state: State, detail: impl Into<String>) -> Self {
        Observation::Definite {
            state,
            detail: detail.into(),
            finding: None,
        }
    }

    pub fn unknown(reason: impl Into<String>) -> Self {
        Observation::Unknown {
            reason: reason.into(),
            finding: None,
        }
    }

    /// The same observation with `found` noted beside it.
    pub fn with_finding(self, found: Finding) -> Self {
        match self {
            Observation::Definite { state, detail, .. } => Observation::Definite {
                state,
                detail,
                finding: Some(found),
            },
            Observation::Unknown { reason, .. } => Observation::Unknown {
                reason,
                finding: Some(found),
            },
            blocked @ Observation::Blocked { .. } => blocked,
        }
    }

    /// The state to show for this observation.
    pub fn state(&self) -> State {
        match self {
            Observation::Definite { state, .. } => *state,
            Observation::Unknown { .. } => State::Unknown,
            Observation::Blocked { .. } => State::Blocked,
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Observation::Definite { detail, .. } => detail,
            Observation::Unknown { reason, .. } => reason,
            Observation::Blocked { cause } => cause,
        }
    }

    pub fn finding(&self) -> Option<Finding> {
        match self {
            Observation::Definite { finding, .. } | Observation::Unknown { finding, .. } => {
                *finding
            }
            Observation::Blocked { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's states table and the status page say the same: each
    /// row's "what to do" cell is `what_to_do` of its component and state.
    #[test]
    fn readme_says_what_to_do_as_the_code_does() {
        let readme = include_str!("../README.md");
        let mut component = None;
        let mut rows = 0;
        for line in readme.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line
                .split(" | ")
                .map(|c| c.trim_matches(['|', ' ']))
                .collect();
            let [first, state, _, todo] = cells[..] else {
                continue;
            };
            if let Ok(c) = first.parse::<Component>() {
                component = Some(c);
            }
            let (Some(c), Ok(state)) = (component, state.trim_matches('`').parse::<State>()) else {
                continue;
            };
            assert_eq!(c.what_to_do(state), todo, "{c} {state}");
            rows += 1;
        }
        assert_eq!(rows, 22, "the README's state table");
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in ALL_STATES {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("broken".parse::<State>().is_err());
    }

    #[test]
    fn every_component_state_is_listed_once() {
        for c in [
            Component::Connection,
            Component::Repository,
            Component::DeployKey,
            Component::Webhook,
        ] {
            let states = c.states();
            assert!(states[0].is_healthy());
            assert!(states[1..].iter().all(|s| !s.is_healthy()));
            assert_eq!(c.as_str().parse::<Component>().unwrap(), c);
        }
    }
}
