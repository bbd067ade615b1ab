//! One project's check: its repository, then its deploy key and webhook,
//! judged by the pure verdicts in [`crate::probe`]. A repository that is
//! gone or out of reach blocks its key and hook.

use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use crate::gitlab::types::{DeployKey, GitLabVersion, Hook, Project};
use crate::gitlab::{ApiError, ErrorKind, GitLab};
use crate::health::{Component, Finding, Observation, State};
use crate::probe::{
    self, ConnectionVerdict, HookAnswer, HookExpectation, KeyAnswer, KeyExpectation,
};
use crate::store::{CheckTarget, Store};

/// What a first 404 of a project says (the decision hangs on
/// [`Finding::NotFoundOnce`], not on these words).
const NOT_FOUND_ONCE: &str =
    "GitLab answers 404 for the project; not_found if the next check agrees";

/// What checking a project needs, cheap to clone into the project's own
/// task: the sweep runs each check as a task so that decoding and judging
/// answers spreads over the runtime's threads instead of queueing in the
/// sweep's one task.
#[derive(Clone)]
pub(super) struct ProjectChecks {
    pub(super) cfg: Arc<Config>,
    pub(super) store: Store,
}

impl ProjectChecks {
    /// A single 404 is ambiguous (GitLab deleted the project, or GitLab is
    /// having an outage that answers 404): `not_found` is recorded only when
    /// the next check says so too; the first one is `unknown`.
    async fn confirm_not_found(&self, project_id: i64, observed: Observation) -> Observation {
        if observed.state() != State::NotFound {
            return observed;
        }
        let prev = self
            .store
            .health(Component::Repository, project_id)
            .await
            .ok()
            .flatten();
        let seen_before = prev.is_some_and(|h| {
            h.state == Some(State::NotFound)
                || (h.pending == Some(State::Unknown)
                    && h.pending_finding == Some(Finding::NotFoundOnce))
        });
        if seen_before {
            observed
        } else {
            Observation::unknown(format!("{NOT_FOUND_ONCE}: {}", observed.detail()))
                .with_finding(Finding::NotFoundOnce)
        }
    }

    /// Checks one project's three components.
    pub(super) async fn check_project(
        &self,
        client: &GitLab,
        connection: &ConnectionVerdict,
        p: CheckTarget,
        from_list: Option<Project>,
    ) -> ProjectOutcome {
        let mut outcome = ProjectOutcome {
            project_id: p.id,
            observations: Vec::with_capacity(3),
            learnt_path: None,
            found_key_id: None,
            found_hook_id: None,
        };
        if !connection.usable {
            let blocked = match &connection.observation {
                Observation::Unknown { reason, .. } => Observation::unknown(format!(
                    "connection {} could not be checked: {reason}",
                    p.connection
                )),
                other => Observation::Blocked {
                    cause: format!(
                        "connection {} is {}: {}",
                        p.connection,
                        other.state(),
                        other.detail()
                    ),
                },
            };
            for component in Component::PROJECT_COMPONENTS {
                outcome.observations.push((component, blocked.clone()));
            }
            return outcome;
        }

        let gitlab_id = p.gitlab_id as u64;
        // From the bulk list when it had the project (it lists only projects
        // where we are Maintainer or more); otherwise one lookup, which tells
        // not_found from access_lost.
        let answer = match from_list {
            Some(listed) => Ok(listed),
            None => client.project(&gitlab_id.to_string()).await,
        };
        // A project configured by id has no stored path until its first answer.
        let path = match (&answer, p.path.is_empty()) {
            (Ok(found), true) => {
                outcome.learnt_path = Some(found.path_with_namespace.clone());
                found.path_with_namespace.clone()
            }
            _ => p.path.clone(),
        };
        let repository = self
            .confirm_not_found(p.id, probe::repository(&answer, &path))
            .await;
        let blocks = match repository.state() {
            State::NotFound | State::AccessLost => {
                Some(format!("repository is {}", repository.state()))
            }
            State::Blocked => Some(repository.detail().to_owned()),
            _ => None,
        };
        if let Some(cause) = blocks {
            outcome
                .observations
                .push((Component::Repository, repository));
            for component in [Component::DeployKey, Component::Webhook] {
                outcome.observations.push((
                    component,
                    Observation::Blocked {
                        cause: cause.clone(),
                    },
                ));
            }
            return outcome;
        }

        let now = Utc::now();
        // A 403 on the deploy key or hook endpoints (they need Maintainer)
        // is what tells a lost role, not the `permissions` fields.
        let checked = async {
            let key = self.check_deploy_key(client, &p, now).await?;
            let hook = self
                .check_webhook(client, &p, &path, connection.version, now)
                .await?;
            Ok::<_, ApiError>((key, hook))
        }
        .await;
        match checked {
            Ok((key, hook)) => {
                outcome
                    .observations
                    .push((Component::Repository, repository));
                outcome.found_key_id = key.1;
                outcome.observations.push((Component::DeployKey, key.0));
                outcome.found_hook_id = hook.1;
                outcome.observations.push((Component::Webhook, hook.0));
            }
            Err(refusal) => {
                let lost = probe::access_refused(&refusal);
                let cause = format!("repository is {}", lost.state());
                outcome.observations.push((Component::Repository, lost));
                for component in [Component::DeployKey, Component::Webhook] {
                    outcome.observations.push((
                        component,
                        Observation::Blocked {
                            cause: cause.clone(),
                        },
                    ));
                }
            }
        }
        outcome
    }

    async fn check_deploy_key(
        &self,
        client: &GitLab,
        p: &CheckTarget,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Observation, Option<u64>), ApiError> {
        let Some(fingerprint) = p.fingerprint.as_deref() else {
            return Ok((
                Observation::definite(
                    State::Missing,
                    "glwarden holds no deploy key for this project",
                ),
                None,
            ));
        };
        let Some(digest) = crate::keys::KeyDigest::parse(fingerprint) else {
            return Ok((
                Observation::unknown(format!(
                    "the stored fingerprint `{fingerprint}` is not a SHA-256 fingerprint"
                )),
                None,
            ));
        };
        let expected = KeyExpectation {
            digest,
            read_only: self.cfg.raw.expect.read_only_key,
            warning_days: self.cfg.raw.expect.key_expiry_warning_days,
        };
        let project = p.gitlab_id as u64;
        let by_id: Option<Result<DeployKey, ApiError>> = match p.deploy_key_id {
            Some(id) => Some(client.deploy_key(project, id as u64).await),
            None => None,
        };
        let listing;
        let answer = match &by_id {
            Some(Ok(key)) => KeyAnswer::ById(key),
            Some(Err(e)) if !e.is_not_found() => return undecided(e),
            // No owned id, or it is gone: look through the whole list.
            _ => match client.deploy_keys(project).await {
                Ok(keys) => {
                    listing = keys;
                    KeyAnswer::Listing(&listing)
                }
                Err(e) => return undecided(&e),
            },
        };
        let verdict = probe::deploy_key(answer, &expected, now);
        Ok((verdict.observation, verdict.found_id))
    }

    async fn check_webhook(
        &self,
        client: &GitLab,
        p: &CheckTarget,
        path: &str,
        version: Option<GitLabVersion>,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Observation, Option<u64>), ApiError> {
        let Some(url) = expected_webhook_url(&self.cfg, p, path) else {
            return Ok((
                Observation::unknown("no webhook URL expected: set expect.webhook_url"),
                None,
            ));
        };
        let expect = &self.cfg.raw.expect;
        let expected = HookExpectation {
            url: &url,
            events: &expect.webhook_events,
            enable_ssl_verification: expect.enable_ssl_verification,
        };
        let project = p.gitlab_id as u64;
        let by_id: Option<Result<Hook, ApiError>> = match p.hook_id {
            Some(id) => Some(client.hook(project, id as u64).await),
            None => None,
        };
        let listing;
        let answer = match &by_id {
            Some(Ok(hook)) => HookAnswer::ById(hook),
            Some(Err(e)) if !e.is_not_found() => return undecided(e),
            _ => match client.hooks(project).await {
                Ok(hooks) => {
                    listing = hooks;
                    HookAnswer::Listing(&listing)
                }
                Err(e) => return undecided(&e),
            },
        };
        let selection = probe::select_hook(answer, &url);
        let found_id = match answer {
            HookAnswer::Listing(_) => selection.hook.map(|h| h.id),
            HookAnswer::ById(_) => None,
        };
        // The delivery log exists from GitLab 17.3; on an older instance no
        // request is sent and the detail says why `failing` is not judged.
        // When the version could not be read, a 404 from the route says the same.
        let mut log_note = None;
        let deliveries = match (self.cfg.raw.check.webhook_deliveries, selection.hook) {
            (true, Some(_)) if version.is_some_and(|v| !v.has_hook_events()) => {
                log_note = Some(format!(
                    "delivery log not read: GitLab {} has no hook events endpoint ({}+)",
                    version.expect("checked"),
                    GitLabVersion::HOOK_EVENTS
                ));
                None
            }
            (true, Some(hook)) => match client.hook_events(project, hook.id).await {
                Err(e) if version.is_none() && e.is_not_found() => {
                    log_note = Some(
                        "delivery log not read: GitLab answers 404 for the hook events endpoint (17.3+)"
                            .to_owned(),
                    );
                    None
                }
                read => Some(read),
            },
            _ => None,
        };
        let observation = match &deliveries {
            Some(Err(e)) => {
                // Without the log, `failing` cannot be ruled out: only a
                // broken verdict that does not depend on it is definite.
                let without = probe::webhook(&selection, &expected, None, now);
                if without.state() == State::Healthy {
                    return undecided(e).map(|(o, _)| (o, found_id));
                }
                without
            }
            Some(Ok(events)) => probe::webhook(&selection, &expected, Some(events), now),
            None => probe::webhook(&selection, &expected, None, now),
        };
        let observation = match (observation, log_note) {
            (
                Observation::Definite {
                    state,
                    detail,
                    finding,
                },
                Some(note),
            ) => Observation::Definite {
                state,
                detail: format!("{detail}; {note}"),
                finding,
            },
            (observation, _) => observation,
        };
        Ok((observation, found_id))
    }
}

/// The URL our hook must have: the project's own, or the template filled in.
pub fn expected_webhook_url(cfg: &Config, p: &CheckTarget, path: &str) -> Option<String> {
    crate::config::expected_hook_url(cfg, p.webhook_url.as_deref(), p.gitlab_id as u64, path)
}

/// A failed request that does not decide the component's state; a 403 is
/// returned as the refusal that decides the repository's (`access_lost`).
fn undecided(e: &ApiError) -> Result<(Observation, Option<u64>), ApiError> {
    let observation = match &e.kind {
        ErrorKind::Forbidden { .. } => return Err(e.clone()),
        ErrorKind::Unauthorized { problem } => Observation::Blocked {
            cause: format!("connection: {}", problem.describe()),
        },
        ErrorKind::InsufficientScope { .. } => Observation::Blocked {
            cause: format!("access refused: {e}"),
        },
        _ => Observation::unknown(e.to_string()),
    };
    Ok((observation, None))
}

/// What checking one project produced.
pub(super) struct ProjectOutcome {
    pub(super) project_id: i64,
    pub(super) observations: Vec<(Component, Observation)>,
    pub(super) learnt_path: Option<String>,
    pub(super) found_key_id: Option<u64>,
    pub(super) found_hook_id: Option<u64>,
}
