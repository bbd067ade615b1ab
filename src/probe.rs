//! Probe verdicts: pure functions from GitLab's answers and a project's
//! expectations to an [`Observation`]. No I/O here, so every state of the
//! design's table is unit-tested without a network.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::gitlab::types::{
    AccessTokenInfo, DeployKey, GitLabVersion, Hook, HookEvent, OauthTokenInfo, Project, User,
};
use crate::gitlab::{ApiError, ErrorKind};
use crate::health::{Finding, Observation, State};
use crate::keys::{self, KeyDigest};

use crate::gitlab::types::MAINTAINER;

// ---- connection -----------------------------------------------------------

/// Details of the token, from whichever endpoint suits its kind.
#[derive(Debug, Clone)]
pub enum TokenDetails {
    Access(AccessTokenInfo),
    Oauth(OauthTokenInfo),
}

/// What GitLab said of a connection's token: shown by `status` and
/// exported as `glwarden_connection_token_expiry_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenFacts {
    pub kind: crate::config::TokenKind,
    /// GitLab's id of an access token; OAuth tokens show none.
    pub id: Option<u64>,
    pub scopes: Vec<String>,
    /// The token stops working at the start of this day (UTC). `None`:
    /// no expiry (or an OAuth token, which glwarden refreshes).
    pub expires_at: Option<NaiveDate>,
}

impl TokenFacts {
    /// What the token's own details say of it.
    pub fn from_details(details: &TokenDetails) -> Self {
        match details {
            TokenDetails::Access(info) => TokenFacts {
                kind: crate::config::TokenKind::AccessToken,
                id: Some(info.id),
                scopes: info.scopes.clone(),
                expires_at: info.expires_at,
            },
            TokenDetails::Oauth(info) => TokenFacts {
                kind: crate::config::TokenKind::Oauth,
                id: None,
                scopes: info.scope.clone(),
                expires_at: None,
            },
        }
    }

    /// Whole days from `today` until the token stops working.
    pub fn days_left(&self, today: NaiveDate) -> Option<i64> {
        self.expires_at.map(|d| (d - today).num_days())
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionVerdict {
    pub observation: Observation,
    /// The token's details, when they could be read this sweep.
    pub token: Option<TokenFacts>,
    /// Whether project checks may go ahead with this connection.
    pub usable: bool,
    /// The instance's release (`GET /version`), when it could be read this
    /// sweep: which hook endpoints may be asked.
    pub version: Option<GitLabVersion>,
}

/// The connection's state from `GET /user` and the token's own details.
pub fn connection(
    user: &Result<User, ApiError>,
    token: Option<&Result<TokenDetails, ApiError>>,
    today: NaiveDate,
    warning_days: u32,
) -> ConnectionVerdict {
    let user = match user {
        Ok(user) => user,
        Err(e) => {
            let observation = match &e.kind {
                ErrorKind::Unauthorized { problem } => {
                    Observation::definite(State::NotConnected, problem.describe())
                }
                ErrorKind::InsufficientScope { scope } => Observation::definite(
                    State::NotConnected,
                    format!("token lacks the `{scope}` scope"),
                ),
                ErrorKind::Forbidden { message } => Observation::definite(
                    State::NotConnected,
                    format!("GitLab refuses this user: {message}"),
                ),
                _ => Observation::unknown(e.to_string()),
            };
            return ConnectionVerdict {
                observation,
                token: None,
                usable: false,
                version: None,
            };
        }
    };
    let who = format!("as @{}", user.username);
    let observation = match token {
        None => Observation::definite(State::Connected, who),
        Some(Ok(TokenDetails::Access(info))) => access_token_state(info, &who, today, warning_days),
        Some(Ok(TokenDetails::Oauth(info))) => {
            if info.scope.iter().any(|s| s == "api") {
                Observation::definite(State::Connected, format!("{who} (OAuth)"))
            } else {
                Observation::definite(
                    State::NotConnected,
                    format!(
                        "OAuth token lacks the `api` scope (has: {})",
                        info.scope.join(", ")
                    ),
                )
            }
        }
        Some(Err(e)) => match &e.kind {
            // Not a personal/project/group access token: GitLab answers 400
            // (`lib/api/personal_access_tokens/self_information.rb`); its
            // expiry cannot be read, but the token works.
            ErrorKind::Rejected { status: 400, .. } => Observation::definite(
                State::Connected,
                format!("{who} (token expiry not readable)"),
            ),
            ErrorKind::Unauthorized { problem } => {
                Observation::definite(State::NotConnected, problem.describe())
            }
            _ => Observation::unknown(e.to_string()),
        },
    };
    let usable = matches!(
        observation.state(),
        State::Connected | State::Expiring | State::Unknown
    );
    ConnectionVerdict {
        observation,
        token: match token {
            Some(Ok(details)) => Some(TokenFacts::from_details(details)),
            _ => None,
        },
        usable,
        version: None,
    }
}

fn access_token_state(
    info: &AccessTokenInfo,
    who: &str,
    today: NaiveDate,
    warning_days: u32,
) -> Observation {
    if info.revoked {
        return Observation::definite(State::NotConnected, "token revoked");
    }
    if let Some(expires) = info.expires_at {
        if expires <= today {
            return Observation::definite(
                State::NotConnected,
                format!("token expired on {expires}"),
            );
        }
    }
    if !info.active {
        return Observation::definite(State::NotConnected, "token inactive");
    }
    if !info.scopes.iter().any(|s| s == "api") {
        return Observation::definite(
            State::NotConnected,
            format!(
                "token lacks the `api` scope (has: {})",
                info.scopes.join(", ")
            ),
        );
    }
    match info.expires_at {
        Some(expires) if (expires - today).num_days() <= i64::from(warning_days) => {
            Observation::definite(
                State::Expiring,
                format!(
                    "{who}; token expires on {expires} (in {} days)",
                    (expires - today).num_days()
                ),
            )
        }
        _ => Observation::definite(State::Connected, who.to_owned()),
    }
}

// ---- repository -----------------------------------------------------------

/// The repository's state from `GET /projects/:id` (or a list entry).
/// `stored_path` is the path we last saw.
pub fn repository(answer: &Result<Project, ApiError>, stored_path: &str) -> Observation {
    let project = match answer {
        Ok(p) => p,
        Err(e) => {
            return match &e.kind {
                ErrorKind::NotFound { message } => Observation::definite(
                    State::NotFound,
                    format!("GitLab answers 404 ({message})"),
                ),
                ErrorKind::Forbidden { message } => Observation::definite(
                    State::AccessLost,
                    format!("GitLab answers 403 ({message})"),
                ),
                ErrorKind::InsufficientScope { scope } => Observation::definite(
                    State::AccessLost,
                    format!("token lacks the `{scope}` scope"),
                ),
                ErrorKind::Unauthorized { problem } => Observation::Blocked {
                    cause: format!("connection: {}", problem.describe()),
                },
                _ => Observation::unknown(e.to_string()),
            };
        }
    };
    if is_deletion_scheduled(project) {
        return Observation::definite(
            State::PendingDeletion,
            format!(
                "scheduled for deletion (now {})",
                project.path_with_namespace
            ),
        );
    }
    // `permissions` is not evidence of a lost role: `project_access` is the
    // direct membership only and `group_access` the project's own group
    // chain, so a Maintainer through a group share or an admin is in neither
    // (docs/gitlab-contract.md §5). `access_lost` comes from GitLab refusing
    // (a 403 here, or on the deploy key and hook endpoints, which need
    // Maintainer: see `access_refused`).
    if project.archived {
        return Observation::definite(State::Archived, "project is archived");
    }
    if project.path_with_namespace != stored_path {
        return Observation::definite(
            State::Moved,
            format!(
                "moved from {stored_path} to {}",
                project.path_with_namespace
            ),
        );
    }
    Observation::definite(State::Ok, "")
}

/// GitLab renames a project scheduled for deletion to
/// `<path>-deletion_scheduled-<id>` (behind a flag since 18.3) or, without
/// the flag and before it, `<path>-deleted-<id>`
/// (`Projects::MarkForDeletionService`; docs/gitlab-contract.md §7): that is
/// not a move. `archived` is no signal (newer releases leave it false).
pub fn is_deletion_scheduled(project: &Project) -> bool {
    let id = project.id;
    project.marked_for_deletion_on.is_some()
        || project.marked_for_deletion_at.is_some()
        || project
            .path_with_namespace
            .rsplit('/')
            .next()
            .is_some_and(|last| {
                last.ends_with(&format!("-deletion_scheduled-{id}"))
                    || last.ends_with(&format!("-deleted-{id}"))
            })
}

/// The repository's state when GitLab refuses (403) an endpoint that needs
/// Maintainer (deploy keys, hooks): the evidence of a lost role.
pub fn access_refused(refusal: &ApiError) -> Observation {
    Observation::definite(
        State::AccessLost,
        format!(
            "GitLab refuses {} {} ({}): Maintainer ({MAINTAINER}) or higher is needed to manage deploy keys and hooks",
            refusal.method, refusal.endpoint, refusal.kind
        ),
    )
}

// ---- deploy key -----------------------------------------------------------

/// What the project's deploy key must look like.
#[derive(Debug, Clone)]
pub struct KeyExpectation {
    /// The key glwarden holds.
    pub digest: KeyDigest,
    pub read_only: bool,
    pub warning_days: u32,
}

/// How the key was looked up.
#[derive(Debug, Clone, Copy)]
pub enum KeyAnswer<'a> {
    /// `GET /deploy_keys/:id` with the id we own.
    ById(&'a DeployKey),
    /// The full list, when we own no id or the owned id is gone.
    Listing(&'a [DeployKey]),
}

#[derive(Debug, Clone)]
pub struct KeyVerdict {
    pub observation: Observation,
    /// Id of the key that is ours, when it was found by listing.
    pub found_id: Option<u64>,
}

/// The deploy key's state. A key is ours when its key material is ours
/// ([`keys::is_same_key`]), whatever form GitLab gives its fingerprint in.
pub fn deploy_key(
    answer: KeyAnswer<'_>,
    expected: &KeyExpectation,
    now: DateTime<Utc>,
) -> KeyVerdict {
    match answer {
        KeyAnswer::ById(key) => {
            if !keys::is_same_key(key, &expected.digest) {
                let theirs = keys::digest_of(key)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "(none readable)".into());
                let detail = format!(
                    "key {} at GitLab is {theirs}, glwarden holds {}",
                    key.id, expected.digest
                );
                return KeyVerdict {
                    observation: Observation::definite(State::Mismatch, detail),
                    found_id: None,
                };
            }
            KeyVerdict {
                observation: key_condition(key, expected, now),
                found_id: None,
            }
        }
        KeyAnswer::Listing(keys) => {
            match keys.iter().find(|k| keys::is_same_key(k, &expected.digest)) {
                Some(key) => KeyVerdict {
                    observation: key_condition(key, expected, now),
                    found_id: Some(key.id),
                },
                None => KeyVerdict {
                    observation: Observation::definite(
                        State::Missing,
                        format!(
                            "no deploy key {} among {} on the project",
                            expected.digest,
                            keys.len()
                        ),
                    ),
                    found_id: None,
                },
            }
        }
    }
}

fn key_condition(key: &DeployKey, expected: &KeyExpectation, now: DateTime<Utc>) -> Observation {
    if let Some(expires) = key.expires_at {
        if expires <= now {
            return Observation::definite(
                State::Expired,
                format!("key {} expired at {}", key.id, rfc3339(expires)),
            );
        }
    }
    if key.can_push && expected.read_only {
        return Observation::definite(
            State::Writable,
            format!("key {} can push; policy says read-only", key.id),
        );
    }
    if let Some(expires) = key.expires_at {
        if expires - now <= Duration::days(i64::from(expected.warning_days)) {
            return Observation::definite(
                State::Expiring,
                format!(
                    "key {} expires at {} (in {} days)",
                    key.id,
                    rfc3339(expires),
                    days_until(now, expires)
                ),
            );
        }
    }
    Observation::definite(State::Healthy, format!("key {}", key.id))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whole days left, rounded up: a key expiring in 2 days and 23 hours has 3 days left.
fn days_until(now: DateTime<Utc>, then: DateTime<Utc>) -> i64 {
    let hours = (then - now).num_hours();
    (hours + 23).div_euclid(24)
}

// ---- webhook ----------------------------------------------------------------

/// What the project's webhook must look like.
#[derive(Debug, Clone)]
pub struct HookExpectation<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub enable_ssl_verification: bool,
}

/// How the hook was looked up.
#[derive(Debug, Clone, Copy)]
pub enum HookAnswer<'a> {
    ById(&'a Hook),
    Listing(&'a [Hook]),
}

/// The hook that is ours, and the ids of other hooks to the same URL.
#[derive(Debug, Clone)]
pub struct HookSelection<'a> {
    pub hook: Option<&'a Hook>,
    pub duplicates: Vec<u64>,
    /// Hooks whose URL has URL variables (`{name}`) and may be ours:
    /// GitLab never returns the variables' values, so this cannot be told.
    pub unverifiable: Vec<u64>,
    /// Hooks on the project, when the list was read.
    pub listed: Option<usize>,
}

/// Picks our hook: the owned id, or else the first hook to our URL.
pub fn select_hook<'a>(answer: HookAnswer<'a>, expected_url: &str) -> HookSelection<'a> {
    match answer {
        HookAnswer::ById(hook) => HookSelection {
            hook: Some(hook).filter(|h| !has_url_variables(&h.url)),
            duplicates: Vec::new(),
            unverifiable: [hook]
                .iter()
                .filter(|h| has_url_variables(&h.url))
                .map(|h| h.id)
                .collect(),
            listed: None,
        },
        HookAnswer::Listing(hooks) => {
            let mut matching = hooks.iter().filter(|h| h.url == expected_url);
            let hook = matching.next();
            HookSelection {
                hook,
                duplicates: matching.map(|h| h.id).collect(),
                unverifiable: hooks
                    .iter()
                    .filter(|h| url_template_matches(&h.url, expected_url))
                    .map(|h| h.id)
                    .collect(),
                listed: Some(hooks.len()),
            }
        }
    }
}

/// The webhook's state. `deliveries` is the hook's recent log, newest first,
/// when it was read.
pub fn webhook(
    selection: &HookSelection<'_>,
    expected: &HookExpectation<'_>,
    deliveries: Option<&[HookEvent]>,
    now: DateTime<Utc>,
) -> Observation {
    let Some(hook) = selection.hook else {
        if let Some(id) = selection.unverifiable.first() {
            // Never "missing": a repair would create a second hook beside it.
            return Observation::unknown(format!(
                "hook {id} uses URL variables; GitLab does not return their values, so glwarden cannot verify whether it points at {}",
                expected.url
            ));
        }
        return Observation::definite(
            State::Missing,
            format!(
                "no hook to {} among {} on the project",
                expected.url,
                selection.listed.unwrap_or(0)
            ),
        );
    };
    let mut notes = Vec::new();
    if !selection.duplicates.is_empty() {
        let ids: Vec<String> = selection.duplicates.iter().map(u64::to_string).collect();
        notes.push(format!(
            "duplicate hooks to the same URL: {}",
            ids.join(", ")
        ));
    }
    let (differences, unreported) = hook_differences(hook, expected);
    if !unreported.is_empty() {
        notes.push(format!(
            "not verifiable on this GitLab (the hook answer has no {})",
            unreported.join(", ")
        ));
    }
    let disabled = disabled_detail(hook, now);
    let (state, mut detail) = if !differences.is_empty() {
        if let Some(d) = &disabled {
            notes.push(d.clone());
        }
        (
            State::Misconfigured,
            format!("hook {}: {}", hook.id, differences.join("; ")),
        )
    } else if let Some(d) = disabled {
        (State::Disabled, format!("hook {}: {d}", hook.id))
    } else if let Some(f) = deliveries.and_then(failing_detail) {
        (State::Failing, format!("hook {}: {f}", hook.id))
    } else {
        (State::Healthy, format!("hook {}", hook.id))
    };
    for note in notes {
        detail.push_str("; ");
        detail.push_str(&note);
    }
    let observation = Observation::definite(state, detail);
    if selection.duplicates.is_empty() {
        observation
    } else {
        observation.with_finding(Finding::DuplicateHooks)
    }
}

/// Each field of our hook that differs from what the CI needs, and the
/// expected event flags GitLab's answer lacks (a flag newer than the
/// instance's version): those cannot be compared, so they are no difference.
fn hook_differences<'e>(
    hook: &Hook,
    expected: &HookExpectation<'e>,
) -> (Vec<String>, Vec<&'e str>) {
    let mut out = Vec::new();
    let mut unreported = Vec::new();
    if hook.url != expected.url {
        out.push(format!("url is {}, expected {}", hook.url, expected.url));
    }
    for event in expected.events {
        match hook.event(event) {
            Some(true) => {}
            Some(false) => out.push(format!("{event} is off")),
            None => unreported.push(event.as_str()),
        }
    }
    if hook.enable_ssl_verification != expected.enable_ssl_verification {
        out.push(format!(
            "enable_ssl_verification is {}, expected {}",
            hook.enable_ssl_verification, expected.enable_ssl_verification
        ));
    }
    (out, unreported)
}

/// Whether a hook URL has URL variables (`{name}`, GitLab 15.7+): GitLab
/// returns the URL with the placeholders, never their values.
pub fn has_url_variables(url: &str) -> bool {
    url.find('{').is_some_and(|open| url[open..].contains('}'))
}

/// Whether `template`, a URL with `{name}` placeholders, could be `url` once
/// filled in: its literal parts appear in `url` in order, the first at the
/// start and the last at the end.
pub fn url_template_matches(template: &str, url: &str) -> bool {
    if !has_url_variables(template) {
        return false;
    }
    let mut literals = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        literals.push(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    literals.push(rest);
    let (first, last) = (literals[0], literals[literals.len() - 1]);
    if !url.starts_with(first) || !url[first.len()..].ends_with(last) {
        return false;
    }
    let mut middle = &url[first.len()..url.len() - last.len()];
    for literal in &literals[1..literals.len() - 1] {
        match middle.find(literal) {
            Some(at) => middle = &middle[at + literal.len()..],
            None => return false,
        }
    }
    true
}

/// GitLab's auto-disable state (docs/gitlab-contract.md §10.6).
fn disabled_detail(hook: &Hook, now: DateTime<Utc>) -> Option<String> {
    match hook.alert_status.as_deref() {
        Some("disabled") => Some("disabled by GitLab after repeated delivery failures".into()),
        Some("temporarily_disabled") => Some(match hook.disabled_until {
            Some(until) if until > now => format!(
                "temporarily disabled by GitLab after delivery failures, until {}",
                rfc3339(until)
            ),
            _ => "temporarily disabled by GitLab after delivery failures".into(),
        }),
        _ => None,
    }
}

/// `failing` when the most recent delivery was not answered 2xx.
fn failing_detail(deliveries: &[HookEvent]) -> Option<String> {
    let latest = deliveries.first()?;
    if latest.succeeded() {
        return None;
    }
    let failed = deliveries.iter().take_while(|e| !e.succeeded()).count();
    Some(format!(
        "last {failed} of {} recent deliveries failed (latest answered {})",
        deliveries.len(),
        latest.status_text()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitlab::error::TokenProblem;
    use crate::gitlab::types::{AccessLevel, Permissions};

    fn err(kind: ErrorKind) -> ApiError {
        ApiError {
            method: "GET",
            endpoint: "/x".into(),
            kind,
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn user() -> Result<User, ApiError> {
        Ok(User {
            id: 1,
            username: "ci-bot".into(),
            state: Some("active".into()),
        })
    }

    fn pat(
        scopes: &[&str],
        expires: Option<NaiveDate>,
        revoked: bool,
    ) -> Result<TokenDetails, ApiError> {
        Ok(TokenDetails::Access(AccessTokenInfo {
            id: 1,
            name: Some("t".into()),
            revoked,
            active: !revoked,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: expires,
            created_at: None,
        }))
    }

    fn conn_state(
        user: Result<User, ApiError>,
        token: Option<Result<TokenDetails, ApiError>>,
    ) -> (State, bool) {
        let v = connection(&user, token.as_ref(), today(), 14);
        (v.observation.state(), v.usable)
    }

    #[test]
    fn connection_states() {
        assert_eq!(
            conn_state(user(), Some(pat(&["api"], None, false))),
            (State::Connected, true)
        );
        let soon = today() + Duration::days(5);
        assert_eq!(
            conn_state(user(), Some(pat(&["api"], Some(soon), false))),
            (State::Expiring, true)
        );
        let later = today() + Duration::days(60);
        assert_eq!(
            conn_state(user(), Some(pat(&["api"], Some(later), false))),
            (State::Connected, true)
        );
        assert_eq!(
            conn_state(user(), Some(pat(&["api"], Some(today()), false))).0,
            State::NotConnected
        );
        assert_eq!(
            conn_state(user(), Some(pat(&["read_api"], None, false))),
            (State::NotConnected, false)
        );
        assert_eq!(
            conn_state(user(), Some(pat(&["api"], None, true))).0,
            State::NotConnected
        );
        for problem in [
            TokenProblem::Revoked,
            TokenProblem::Expired,
            TokenProblem::Unknown,
        ] {
            let (state, usable) = conn_state(Err(err(ErrorKind::Unauthorized { problem })), None);
            assert_eq!((state, usable), (State::NotConnected, false));
        }
    }

    #[test]
    fn connection_transient_failure_is_unknown_never_not_connected() {
        let (state, usable) = conn_state(
            Err(err(ErrorKind::Server {
                status: 502,
                message: "Bad Gateway".into(),
            })),
            None,
        );
        assert_eq!((state, usable), (State::Unknown, false));
        let (state, _) = conn_state(Err(err(ErrorKind::Timeout)), None);
        assert_eq!(state, State::Unknown);
        // /user worked but the token details timed out: usable, state unknown.
        assert_eq!(
            conn_state(user(), Some(Err(err(ErrorKind::Timeout)))),
            (State::Unknown, true)
        );
    }

    #[test]
    fn connection_with_a_non_pat_token_or_oauth() {
        let rejected = Err(err(ErrorKind::Rejected {
            status: 400,
            message: "requires a personal access token".into(),
        }));
        assert_eq!(conn_state(user(), Some(rejected)).0, State::Connected);
        let oauth = |scope: &[&str]| {
            Some(Ok(TokenDetails::Oauth(OauthTokenInfo {
                scope: scope.iter().map(|s| s.to_string()).collect(),
                expires_in: Some(7000),
            })))
        };
        assert_eq!(conn_state(user(), oauth(&["api"])).0, State::Connected);
        assert_eq!(
            conn_state(user(), oauth(&["read_user"])).0,
            State::NotConnected
        );
    }

    fn project(id: u64, path: &str) -> Project {
        Project {
            id,
            path_with_namespace: path.into(),
            archived: false,
            marked_for_deletion_on: None,
            marked_for_deletion_at: None,
            permissions: Some(Permissions {
                project_access: Some(AccessLevel { access_level: 40 }),
                group_access: None,
            }),
        }
    }

    #[test]
    fn repository_states() {
        let ok = repository(&Ok(project(7, "acme/app")), "acme/app");
        assert_eq!(ok.state(), State::Ok);

        let moved = repository(&Ok(project(7, "acme/app-renamed")), "acme/app");
        assert_eq!(moved.state(), State::Moved);
        assert!(moved.detail().contains("acme/app") && moved.detail().contains("acme/app-renamed"));

        let mut archived = project(7, "acme/app");
        archived.archived = true;
        assert_eq!(
            repository(&Ok(archived), "acme/app").state(),
            State::Archived
        );

        // `permissions` below Maintainer is no evidence: the role may come
        // through a group share (in neither field) or admin rights.
        for (direct, group) in [(Some(30), Some(20)), (Some(30), None), (None, None)] {
            let mut shared = project(7, "acme/app");
            shared.permissions = Some(Permissions {
                project_access: direct.map(|access_level| AccessLevel { access_level }),
                group_access: group.map(|access_level| AccessLevel { access_level }),
            });
            assert_eq!(repository(&Ok(shared), "acme/app").state(), State::Ok);
        }
        // A 403 from an endpoint that needs Maintainer is the evidence.
        let refused = access_refused(&ApiError {
            method: "GET",
            endpoint: "/projects/7/deploy_keys".into(),
            kind: ErrorKind::Forbidden {
                message: "403 Forbidden".into(),
            },
        });
        assert_eq!(refused.state(), State::AccessLost);
        assert!(refused.detail().contains("/projects/7/deploy_keys"));

        let not_found = repository(
            &Err(err(ErrorKind::NotFound {
                message: "404 Project Not Found".into(),
            })),
            "acme/app",
        );
        assert_eq!(not_found.state(), State::NotFound);
        let forbidden = repository(
            &Err(err(ErrorKind::Forbidden {
                message: "403 Forbidden".into(),
            })),
            "acme/app",
        );
        assert_eq!(forbidden.state(), State::AccessLost);
    }

    #[test]
    fn the_legacy_deleted_rename_is_deletion_too() {
        let p = project(42, "acme/app-deleted-42");
        assert_eq!(
            repository(&Ok(p), "acme/app").state(),
            State::PendingDeletion
        );
        // Another project's id in the suffix: a rename like any other.
        let other = project(42, "acme/app-deleted-7");
        assert_eq!(repository(&Ok(other), "acme/app").state(), State::Moved);
    }

    #[test]
    fn deletion_scheduled_rename_is_not_a_move() {
        let mut p = project(177483, "acme/app-deletion_scheduled-177483");
        p.archived = true;
        let obs = repository(&Ok(p), "acme/app");
        assert_eq!(obs.state(), State::PendingDeletion);
        // Marked by the field alone (EE), path unchanged.
        let mut p = project(9, "acme/app");
        p.marked_for_deletion_on = Some("2026-11-20".into());
        assert_eq!(
            repository(&Ok(p), "acme/app").state(),
            State::PendingDeletion
        );
        // A suffix naming another id is a plain rename.
        let p = project(9, "acme/app-deletion_scheduled-8");
        assert_eq!(repository(&Ok(p), "acme/app").state(), State::Moved);
    }

    #[test]
    fn repository_transient_failures_are_unknown() {
        for kind in [
            ErrorKind::Timeout,
            ErrorKind::Connection("reset".into()),
            ErrorKind::Server {
                status: 503,
                message: "x".into(),
            },
            ErrorKind::RateLimited { retry_after: None },
            ErrorKind::BadResponse {
                status: 200,
                message: "not JSON".into(),
            },
        ] {
            assert_eq!(repository(&Err(err(kind)), "a/b").state(), State::Unknown);
        }
        let revoked = repository(
            &Err(err(ErrorKind::Unauthorized {
                problem: TokenProblem::Revoked,
            })),
            "a/b",
        );
        assert_eq!(revoked.state(), State::Blocked);
    }

    const OURS: &str = "SHA256:kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY";
    /// The same key as GitLab serves its fingerprint (no prefix).
    const OURS_AS_GITLAB: &str = "kKds9tDKJ3IvoRK1w0aZ2qcLLMUc6WL2bfUygodMVKY";
    const OTHER: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn key(id: u64, fp: &str) -> DeployKey {
        DeployKey {
            id,
            title: "glwarden".into(),
            key: String::new(),
            fingerprint_sha256: Some(fp.into()),
            can_push: false,
            expires_at: None,
        }
    }

    fn expect_key() -> KeyExpectation {
        KeyExpectation {
            digest: KeyDigest::parse(OURS).unwrap(),
            read_only: true,
            warning_days: 14,
        }
    }

    #[test]
    fn deploy_key_states() {
        for form in [OURS, OURS_AS_GITLAB] {
            let healthy = deploy_key(KeyAnswer::ById(&key(1, form)), &expect_key(), now());
            assert_eq!(healthy.observation.state(), State::Healthy, "{form}");
        }

        let other = deploy_key(KeyAnswer::ById(&key(1, OTHER)), &expect_key(), now());
        assert_eq!(other.observation.state(), State::Mismatch);
        assert!(
            other
                .observation
                .detail()
                .contains(&format!("SHA256:{OTHER}"))
        );

        let mut expired = key(1, OURS);
        expired.expires_at = Some(now() - Duration::hours(1));
        assert_eq!(
            deploy_key(KeyAnswer::ById(&expired), &expect_key(), now())
                .observation
                .state(),
            State::Expired
        );

        let mut expiring = key(1, OURS);
        expiring.expires_at = Some(now() + Duration::days(3));
        assert_eq!(
            deploy_key(KeyAnswer::ById(&expiring), &expect_key(), now())
                .observation
                .state(),
            State::Expiring
        );

        let mut writable = key(1, OURS);
        writable.can_push = true;
        assert_eq!(
            deploy_key(KeyAnswer::ById(&writable), &expect_key(), now())
                .observation
                .state(),
            State::Writable
        );
        let allowed = KeyExpectation {
            read_only: false,
            ..expect_key()
        };
        assert_eq!(
            deploy_key(KeyAnswer::ById(&writable), &allowed, now())
                .observation
                .state(),
            State::Healthy
        );
    }

    #[test]
    fn deploy_key_listing_finds_ours_by_fingerprint_or_reports_missing() {
        let keys = vec![key(3, OTHER), key(9, OURS_AS_GITLAB)];
        let found = deploy_key(KeyAnswer::Listing(&keys), &expect_key(), now());
        assert_eq!(found.observation.state(), State::Healthy);
        assert_eq!(found.found_id, Some(9));
        let missing = deploy_key(KeyAnswer::Listing(&keys[..1]), &expect_key(), now());
        assert_eq!(missing.observation.state(), State::Missing);
        assert_eq!(missing.found_id, None);
    }

    #[test]
    fn deploy_key_without_sha256_field_is_fingerprinted_locally() {
        let mut k = key(1, OURS);
        k.fingerprint_sha256 = None;
        k.key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5hh88F3Gy9/e6mU6cIsVL1+G53OxMQQ/Mw7pplXECb demo"
                .into();
        assert_eq!(
            deploy_key(KeyAnswer::ById(&k), &expect_key(), now())
                .observation
                .state(),
            State::Healthy
        );
    }

    const URL: &str = "https://ci.example.com/hooks/7";

    fn hook(id: u64, url: &str) -> Hook {
        let mut h: Hook = serde_json::from_value(serde_json::json!({
            "id": id, "url": url, "push_events": true, "tag_push_events": true,
            "merge_requests_events": true, "enable_ssl_verification": true,
            "alert_status": "executable", "disabled_until": null
        }))
        .unwrap();
        h.id = id;
        h
    }

    fn events() -> Vec<String> {
        vec![
            "push_events".into(),
            "tag_push_events".into(),
            "merge_requests_events".into(),
        ]
    }

    fn hook_state(h: &Hook, deliveries: Option<&[HookEvent]>) -> Observation {
        let ev = events();
        let exp = HookExpectation {
            url: URL,
            events: &ev,
            enable_ssl_verification: true,
        };
        webhook(
            &select_hook(HookAnswer::ById(h), URL),
            &exp,
            deliveries,
            now(),
        )
    }

    #[test]
    fn webhook_states() {
        assert_eq!(hook_state(&hook(1, URL), None).state(), State::Healthy);

        let wrong = hook_state(&hook(1, "https://old.example.com/hooks/7"), None);
        assert_eq!(wrong.state(), State::Misconfigured);
        assert!(
            wrong
                .detail()
                .contains("url is https://old.example.com/hooks/7")
        );

        let mut h = hook(1, URL);
        h.tag_push_events = Some(false);
        h.enable_ssl_verification = false;
        let mis = hook_state(&h, None);
        assert_eq!(mis.state(), State::Misconfigured);
        assert!(
            mis.detail().contains("tag_push_events is off"),
            "{}",
            mis.detail()
        );
        assert!(
            mis.detail().contains("enable_ssl_verification is false"),
            "{}",
            mis.detail()
        );

        let mut h = hook(1, URL);
        h.alert_status = Some("temporarily_disabled".into());
        h.disabled_until = Some(now() + Duration::minutes(4));
        let dis = hook_state(&h, None);
        assert_eq!(dis.state(), State::Disabled);
        assert!(dis.detail().contains("until"));
        h.alert_status = Some("disabled".into());
        assert_eq!(hook_state(&h, None).state(), State::Disabled);

        let log = |statuses: &[&str]| -> Vec<HookEvent> {
            statuses
                .iter()
                .enumerate()
                .map(|(i, s)| HookEvent {
                    id: i as u64,
                    response_status: serde_json::Value::String(s.to_string()),
                    created_at: None,
                })
                .collect()
        };
        let failing = hook_state(&hook(1, URL), Some(&log(&["502", "500", "200"])));
        assert_eq!(failing.state(), State::Failing);
        assert!(
            failing.detail().contains("last 2 of 3"),
            "{}",
            failing.detail()
        );
        assert_eq!(
            hook_state(&hook(1, URL), Some(&log(&["200", "500"]))).state(),
            State::Healthy
        );
        assert_eq!(hook_state(&hook(1, URL), Some(&[])).state(), State::Healthy);
    }

    #[test]
    fn an_event_flag_gitlab_does_not_return_is_no_misconfiguration() {
        // GitLab 16.0's entity has no `emoji_events`: the answer lacks it.
        let ev = vec!["push_events".to_owned(), "emoji_events".to_owned()];
        let exp = HookExpectation {
            url: URL,
            events: &ev,
            enable_ssl_verification: true,
        };
        let h = hook(1, URL);
        assert_eq!(h.event("emoji_events"), None);
        let seen = webhook(&select_hook(HookAnswer::ById(&h), URL), &exp, None, now());
        assert_eq!(seen.state(), State::Healthy, "{}", seen.detail());
        assert!(seen.detail().contains("emoji_events"), "{}", seen.detail());
        // Returned and off: a difference.
        let mut off = hook(1, URL);
        off.emoji_events = Some(false);
        let seen = webhook(&select_hook(HookAnswer::ById(&off), URL), &exp, None, now());
        assert_eq!(seen.state(), State::Misconfigured);
    }

    #[test]
    fn url_templates_match_what_they_could_be() {
        for (template, url, matches) in [
            (
                "https://{host}/hooks/7",
                "https://ci.example.com/hooks/7",
                true,
            ),
            (
                "https://ci.example.com/{path}",
                "https://ci.example.com/hooks/7",
                true,
            ),
            ("{all}", "https://ci.example.com/hooks/7", true),
            (
                "https://{a}.example.com/{b}/7",
                "https://ci.example.com/hooks/7",
                true,
            ),
            (
                "https://{host}/hooks/8",
                "https://ci.example.com/hooks/7",
                false,
            ),
            (
                "http://{host}/hooks/7",
                "https://ci.example.com/hooks/7",
                false,
            ),
            (
                "https://{a}/x/{b}/7",
                "https://ci.example.com/hooks/7",
                false,
            ),
            // No variables: only equality makes it ours, not a template.
            (
                "https://ci.example.com/hooks/7",
                "https://ci.example.com/hooks/7",
                false,
            ),
        ] {
            assert_eq!(
                url_template_matches(template, url),
                matches,
                "{template} ~ {url}"
            );
        }
    }

    #[test]
    fn a_hook_with_url_variables_is_never_missing() {
        let ev = events();
        let exp = HookExpectation {
            url: URL,
            events: &ev,
            enable_ssl_verification: true,
        };
        let hooks = vec![
            hook(4, "https://other.example.com/x"),
            hook(5, "https://{host}/hooks/7"),
        ];
        let seen = webhook(
            &select_hook(HookAnswer::Listing(&hooks), URL),
            &exp,
            None,
            now(),
        );
        assert_eq!(seen.state(), State::Unknown, "{}", seen.detail());
        assert!(seen.detail().contains("hook 5") && seen.detail().contains("URL variables"));
        // Our own hook, by id, edited to use variables: not verifiable either.
        let seen = webhook(
            &select_hook(HookAnswer::ById(&hooks[1]), URL),
            &exp,
            None,
            now(),
        );
        assert_eq!(seen.state(), State::Unknown);
        // A template that cannot be our URL does not hide a missing hook.
        let unrelated = vec![hook(6, "https://{host}/elsewhere")];
        let seen = webhook(
            &select_hook(HookAnswer::Listing(&unrelated), URL),
            &exp,
            None,
            now(),
        );
        assert_eq!(seen.state(), State::Missing);
    }

    #[test]
    fn webhook_listing_matches_by_url_and_notes_duplicates() {
        let hooks = vec![hook(1, "https://other/x"), hook(5, URL), hook(6, URL)];
        let sel = select_hook(HookAnswer::Listing(&hooks), URL);
        assert_eq!(sel.hook.map(|h| h.id), Some(5));
        assert_eq!(sel.duplicates, vec![6]);
        let ev = events();
        let exp = HookExpectation {
            url: URL,
            events: &ev,
            enable_ssl_verification: true,
        };
        let obs = webhook(&sel, &exp, None, now());
        assert_eq!(obs.state(), State::Healthy);
        assert!(obs.detail().contains("duplicate hooks to the same URL: 6"));
        assert_eq!(obs.finding(), Some(Finding::DuplicateHooks));
        let alone = select_hook(HookAnswer::Listing(&hooks[..2]), URL);
        assert_eq!(webhook(&alone, &exp, None, now()).finding(), None);

        let none = select_hook(HookAnswer::Listing(&hooks[..1]), URL);
        let missing = webhook(&none, &exp, None, now());
        assert_eq!(missing.state(), State::Missing);
        assert!(missing.detail().contains("among 1"));
    }
}
