//! Repairs: what glwarden does about a broken component, and doing it
//! crash-safely.
//!
//! [`decide`] is pure: from a component's stored health, its policy and the
//! rules (confirmation, cooldown, budget, storm guard) to a [`Decision`].
//! [`Repairer`] carries a repair out against GitLab. Every multi-step repair
//! writes its intent to the journal before the first step and each step
//! after it completes; [`Repairer::resume`] finishes whatever a crash left,
//! always forwards (the new key or secret is in the journal), so that
//! afterwards GitLab holds exactly one key and one hook of ours per project,
//! matching what the store holds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use crate::config::{
    Config, MovedPolicy, Policy, RepairOverride, WebhookReenable, expected_hook_url,
};
use crate::custody::{Custody, CustodyError, SecretKind};
use crate::gitlab::types::{GitLabVersion, HookSettings};
use crate::gitlab::{ApiError, GitLab};
use crate::health::{Component, State};
use crate::keys::{KeyDigest, KeyError, digest_of, fingerprint_of, generate_ed25519, is_same_key};
use crate::store::{HealthRow, JournalRow, NewEvent, ProjectRow, Store, StoreError};

/// Whether `url` is a webhook URL glwarden was configured to give the
/// project: one of its templates (past or present, migration 0009) or the
/// project's own `webhook_url`, with `{id}` the project's id and `{path}`
/// any path (the project may have moved since).
pub fn is_our_hook_url(
    templates: &[String],
    own: Option<&String>,
    gitlab_id: i64,
    url: &str,
) -> bool {
    let id = gitlab_id.to_string();
    templates.iter().chain(own).any(|template| {
        let template = template.replace("{id}", &id);
        if template.contains("{path}") {
            crate::probe::url_template_matches(&template, url)
        } else {
            template == url
        }
    })
}

/// One thing glwarden can do to fix a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// New key in, confirmed, stored, then the old one out.
    RegenerateDeployKey,
    /// `PUT can_push=false` on our key.
    MakeKeyReadOnly,
    /// A new hook with a fresh secret token.
    CreateWebhook,
    /// `PUT` the hook's URL, events and SSL setting, resending our token.
    FixWebhook,
    /// A test delivery: GitLab re-enables the hook when the receiver answers 2xx.
    ReenableWebhook,
    /// Delete other hooks to our URL.
    DeleteDuplicateHooks,
    /// Take GitLab's new path as ours.
    FollowRename,
}

impl Action {
    /// The event name (also what the budget and cooldown count).
    pub fn name(&self) -> &'static str {
        match self {
            Action::RegenerateDeployKey => "regenerate_deploy_key",
            Action::MakeKeyReadOnly => "make_key_read_only",
            Action::CreateWebhook => "create_webhook",
            Action::FixWebhook => "fix_webhook",
            Action::ReenableWebhook => "reenable_webhook",
            Action::DeleteDuplicateHooks => "delete_duplicate_hooks",
            Action::FollowRename => "follow_rename",
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Action::RegenerateDeployKey => "regenerate deploy key",
            Action::MakeKeyReadOnly => "make deploy key read-only",
            Action::CreateWebhook => "create webhook",
            Action::FixWebhook => "fix webhook in place",
            Action::ReenableWebhook => "re-enable webhook with a test delivery",
            Action::DeleteDuplicateHooks => "delete duplicate webhooks",
            Action::FollowRename => "follow rename",
        }
    }
}

/// The repair a broken state calls for, if any.
pub fn action_for(component: Component, state: State, detail: &str) -> Option<Action> {
    match (component, state) {
        (
            Component::DeployKey,
            State::Missing | State::Mismatch | State::Expired | State::Expiring,
        ) => Some(Action::RegenerateDeployKey),
        (Component::DeployKey, State::Writable) => Some(Action::MakeKeyReadOnly),
        (Component::Webhook, State::Missing) => Some(Action::CreateWebhook),
        (Component::Webhook, State::Misconfigured) => Some(Action::FixWebhook),
        (Component::Webhook, State::Disabled) => Some(Action::ReenableWebhook),
        (Component::Webhook, State::Healthy) if detail.contains("duplicate hooks") => {
            Some(Action::DeleteDuplicateHooks)
        }
        (Component::Repository, State::Moved) => Some(Action::FollowRename),
        // failing (the receiver's problem), archived, pending_deletion (never
        // followed), access_lost, not_found (a person's decision): reported only.
        _ => None,
    }
}

/// Automatic repairs of one component that may fail in a row, at one
/// state, before glwarden stops repairing it on its own (until the state
/// changes or a person runs `glwarden regenerate`).
pub const MAX_FAILED_REPAIRS: i64 = 3;

/// The event that marks a component's automatic repair as stopped.
pub const STOPPED_EVENT: &str = "repair_stopped";

/// The rules in force for one decision.
#[derive(Debug, Clone)]
pub struct Rules {
    pub confirm_checks: u32,
    /// The project's repository state, `None` while it is unknown or
    /// blocked: keys and hooks are repaired automatically only while it is
    /// `ok` (GitLab refuses the writes, or they are pointless, on archived,
    /// pending_deletion, access_lost and not_found projects; a `moved`
    /// project is followed first).
    pub repository: Option<State>,
    /// Automatic repairs of this component that failed in a row since its
    /// state last changed (a person's `regenerate` starts the count again).
    pub failed_in_a_row: i64,
    /// Why a disabled webhook cannot be re-enabled by a test delivery here
    /// (`repair.webhook_reenable = "off"`, or a GitLab before 16.11).
    pub no_hook_test: Option<String>,
    /// The storm guard's reason, when automatic repairs are paused.
    pub paused: Option<String>,
    pub budget_left: i64,
    /// Whether the project's cooldown for this component has passed.
    pub cooled_down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Repair(Action),
    /// `report` policy: the plan, never carried out.
    Report(Action, String),
    /// Nothing to do, or not now (why).
    Skip(String),
}

/// What the policies say for one project.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub deploy_key: Policy,
    pub webhook: Policy,
    pub moved: MovedPolicy,
}

impl Policies {
    pub fn for_project(cfg: &Config, project: &ProjectRow) -> Policies {
        let global = &cfg.raw.repair;
        let over: RepairOverride = cfg
            .raw
            .projects
            .iter()
            .find(|p| {
                p.connection == project.connection && Some(p.reference()) == project.config_ref
            })
            .and_then(|p| p.repair.clone())
            .unwrap_or_default();
        Policies {
            deploy_key: over.deploy_key.unwrap_or(global.deploy_key),
            webhook: over.webhook.unwrap_or(global.webhook),
            moved: over.moved.unwrap_or(global.moved),
        }
    }

    fn auto(&self, component: Component) -> Option<bool> {
        match component {
            Component::DeployKey => policy_auto(self.deploy_key),
            Component::Webhook => policy_auto(self.webhook),
            Component::Repository => Some(self.moved == MovedPolicy::Follow),
            Component::Connection => None,
        }
    }
}

fn policy_auto(p: Policy) -> Option<bool> {
    match p {
        Policy::Off => None,
        Policy::Report => Some(false),
        Policy::Auto => Some(true),
    }
}

/// Whether a component's stored health calls for a repair decision at all:
/// a state that is not healthy, or a healthy one with something to tidy
/// (duplicate hooks). [`decide_component`] decides nothing for the rest.
pub fn needs_decision(component: Component, health: &HealthRow) -> bool {
    match health.state {
        Some(state) => {
            !state.is_healthy() || action_for(component, state, &health.detail).is_some()
        }
        None => true,
    }
}

/// The one place a repair is decided for a component, from its stored
/// health and the rules in force: the daemon's repair pass, `repair` and
/// `repair --dry-run` all come here. `None` when the health calls for no
/// decision ([`needs_decision`]); else the decision and the rules it used.
#[allow(clippy::too_many_arguments)]
pub async fn decide_component(
    store: &Store,
    cfg: &Config,
    project: &ProjectRow,
    policies: &Policies,
    component: Component,
    health: &HealthRow,
    repository: Option<State>,
    version: Option<GitLabVersion>,
    now: DateTime<Utc>,
) -> Result<Option<(Decision, Rules)>, StoreError> {
    if !needs_decision(component, health) {
        return Ok(None);
    }
    let rules = rules_for(
        store, cfg, project, component, health, repository, version, now,
    )
    .await?;
    let decision = decide(&project.path, component, health, policies, &rules);
    Ok(Some((decision, rules)))
}

/// Decides what to do about one component. Pure.
pub fn decide(
    project_path: &str,
    component: Component,
    health: &HealthRow,
    policies: &Policies,
    rules: &Rules,
) -> Decision {
    // Unknown (transient) and blocked components are never repaired: the
    // last definite state may be stale, or the cause is elsewhere.
    if let Some(pending) = &health.pending {
        return Decision::Skip(format!("{component} is {pending}"));
    }
    let Some(state) = health.state else {
        return Decision::Skip("not checked yet".into());
    };
    let Some(action) = action_for(component, state, &health.detail) else {
        return Decision::Skip(format!("{component} {state}: nothing to repair"));
    };
    let Some(auto) = policies.auto(component) else {
        return Decision::Skip(format!("{component} policy is off"));
    };
    if health.consecutive < i64::from(rules.confirm_checks) {
        return Decision::Skip(format!(
            "{component} {state} seen {} of {} checks needed",
            health.consecutive, rules.confirm_checks
        ));
    }
    if let (Action::ReenableWebhook, Some(why)) = (&action, &rules.no_hook_test) {
        return Decision::Skip(why.clone());
    }
    if component != Component::Repository && rules.repository != Some(State::Ok) {
        let repository = rules
            .repository
            .map(|s| s.to_string())
            .unwrap_or_else(|| "not known".into());
        return Decision::Skip(format!(
            "repository is {repository}: no automatic {component} repair"
        ));
    }
    if !auto {
        let plan = format!(
            "would {} of {project_path}: {state} ({})",
            action.describe(),
            health.detail
        );
        return Decision::Report(action, plan);
    }
    if let Some(reason) = &rules.paused {
        return Decision::Skip(format!("automatic repairs paused: {reason}"));
    }
    if !rules.cooled_down {
        return Decision::Skip(format!("{component} was repaired recently (cooldown)"));
    }
    if rules.budget_left <= 0 {
        return Decision::Skip("hourly repair budget spent".into());
    }
    if rules.failed_in_a_row >= MAX_FAILED_REPAIRS {
        return Decision::Skip(stopped_reason(component, None));
    }
    Decision::Repair(action)
}

/// Why a component's automatic repair is stopped (also the event's text):
/// GitLab refused it for good (`refusal`), or it failed too often in a row.
pub fn stopped_reason(component: Component, refusal: Option<&RepairError>) -> String {
    let why = match refusal {
        Some(e) => format!("GitLab refuses it for good ({e})"),
        None => format!("it failed {MAX_FAILED_REPAIRS} times in a row"),
    };
    format!(
        "automatic {component} repair stopped: {why}; it resumes when the state changes or after `glwarden regenerate`"
    )
}

/// Whether a sweep saw a storm: more than `share` of `total` projects newly
/// broken, and at least `min` of them. Pure.
pub fn is_storm(newly_broken: usize, total: usize, share: f64, min: usize) -> bool {
    total > 0 && newly_broken >= min && newly_broken as f64 / total as f64 > share
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    GitLab(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Refused(String),
}

/// A key rotation's journal record (no secrets: the new private key is the
/// entry's sealed `secret`). A record that does not parse is an error, never
/// a rotation with empty values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct KeyRotation {
    old_key_id: Option<u64>,
    old_fingerprint: Option<String>,
    new_fingerprint: String,
    public_key: String,
    /// Set once GitLab has the new key.
    #[serde(default)]
    new_key_id: Option<u64>,
    /// The project's key ids before the new key was added: a key that was
    /// already there is never deleted as "the key we just added".
    #[serde(default)]
    keys_before: Option<Vec<u64>>,
}

/// A webhook repair's journal record (create, fix or rotate; no secrets:
/// the token is the entry's sealed `secret`). A record that does not parse
/// is an error, never a repair with an empty URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct HookRepair {
    /// The URL the hook must have.
    url: String,
    /// Our hook before the repair, if any.
    #[serde(default)]
    old_hook_id: Option<u64>,
    /// Set once GitLab has the hook with our token.
    #[serde(default)]
    hook_id: Option<u64>,
}

/// A journal record of one kind: parsed whole from its entry, or an error
/// naming the entry (never a repair with empty values).
trait JournalRecord: serde::Serialize + serde::de::DeserializeOwned {
    /// What the record is, for the error.
    const KIND: &'static str;

    fn from_journal(entry: &JournalRow) -> Result<Self, RepairError> {
        serde_json::from_str(&entry.data).map_err(|e| {
            RepairError::Refused(format!(
                "journal entry {} ({}) is not a {} record: {e}",
                entry.id,
                entry.action,
                Self::KIND
            ))
        })
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain fields serialize")
    }
}

impl JournalRecord for HookRepair {
    const KIND: &'static str = "webhook repair";
}

impl JournalRecord for KeyRotation {
    const KIND: &'static str = "key rotation";
}

/// Triggers `POST .../hooks/:id/test/:trigger` accepts and can build
/// sample data for, in the order a re-enabling test prefers them
/// (`deployment_events`, `feature_flag_events` and `confidential_note_events`
/// answer 422 "Testing not available"; docs/gitlab-contract.md §10.4).
pub const TESTABLE_TRIGGERS: &[&str] = &[
    "push_events",
    "tag_push_events",
    "merge_requests_events",
    "pipeline_events",
    "job_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "wiki_page_events",
    "releases_events",
    "emoji_events",
    "resource_access_token_events",
];

impl RepairError {
    /// A refusal that repeating cannot change: GitLab refuses the hook URL
    /// itself (422 `Invalid url given`, or `... is blocked`, when local
    /// requests from hooks are not allowed; docs/gitlab-contract.md
    /// §10.7). Reported once; not retried every cooldown.
    pub fn is_permanent(&self) -> bool {
        match self {
            RepairError::GitLab(e) => matches!(
                &e.kind,
                crate::gitlab::ErrorKind::Rejected { status: 422, message }
                    if message.contains("Invalid url given") || message.contains("is blocked")
            ),
            _ => false,
        }
    }
}

/// Carries repairs out and records them.
pub struct Repairer {
    cfg: Arc<Config>,
    store: Store,
    custody: Arc<Custody>,
}

impl Repairer {
    pub fn new(cfg: Arc<Config>, store: Store) -> Self {
        let custody = cfg.custody.clone();
        Self {
            cfg,
            store,
            custody,
        }
    }

    /// Carries out `action` on `project`, records the event, returns the outcome text.
    pub async fn execute(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        action: &Action,
        cause: &str,
        new_path: Option<&str>,
    ) -> Result<String, RepairError> {
        let component = match action {
            Action::RegenerateDeployKey | Action::MakeKeyReadOnly => Component::DeployKey,
            Action::FollowRename => Component::Repository,
            _ => Component::Webhook,
        };
        let result = match action {
            Action::RegenerateDeployKey => self.regenerate_key(client, project, cause).await,
            Action::MakeKeyReadOnly => self.make_read_only(client, project).await,
            Action::CreateWebhook => self.create_webhook(client, project, cause).await,
            Action::FixWebhook => self.fix_webhook(client, project, cause, false).await,
            Action::ReenableWebhook => self.reenable_webhook(client, project).await,
            Action::DeleteDuplicateHooks => {
                self.delete_duplicates(client, project, project.hook_id.map(|h| h as u64))
                    .await
            }
            Action::FollowRename => self.follow_rename(project, new_path).await,
        };
        let (before, after, outcome) = match &result {
            Ok((before, after)) => (before.clone(), after.clone(), "ok".to_owned()),
            Err(e) => (String::new(), String::new(), format!("failed: {e}")),
        };
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: component.as_str(),
                action: action.name(),
                cause,
                before: &before,
                after: &after,
                outcome: &outcome,
            })
            .await?;
        match &result {
            Ok(_) => {
                tracing::info!(project = %project.path, action = action.name(), before, after, "repaired")
            }
            Err(e) => {
                tracing::warn!(project = %project.path, action = action.name(), error = %e, "repair failed")
            }
        }
        result.map(|_| outcome)
    }

    /// Regenerate: the "Regenerate" button, forced (for `glwarden regenerate --webhook`).
    pub async fn rotate_webhook(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        cause: &str,
    ) -> Result<String, RepairError> {
        let result = match project.hook_id {
            Some(_) => self.fix_webhook(client, project, cause, true).await,
            None => self.create_webhook(client, project, cause).await,
        };
        let (before, after, outcome) = match &result {
            Ok((b, a)) => (b.clone(), a.clone(), "ok".to_owned()),
            Err(e) => (String::new(), String::new(), format!("failed: {e}")),
        };
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: "webhook",
                action: "fix_webhook",
                cause,
                before: &before,
                after: &after,
                outcome: &outcome,
            })
            .await?;
        result.map(|_| outcome)
    }

    // ---- deploy key -------------------------------------------------------

    fn key_title(&self, project: &ProjectRow) -> String {
        self.cfg
            .raw
            .repair
            .key_title
            .replace("{path}", &project.path)
            .replace("{id}", &project.gitlab_id.to_string())
    }

    /// New key in, confirmed, stored, old key out; journalled at each step.
    async fn regenerate_key(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        cause: &str,
    ) -> Result<(String, String), RepairError> {
        if !self.custody.can_store() {
            return Err(CustodyError::NoMasterKey.into());
        }
        let key = generate_ed25519(&self.key_title(project))?;
        let sealed = self.custody.seal(
            project.id,
            SecretKind::DeployKey,
            key.private_openssh.as_bytes(),
        )?;
        let rotation = KeyRotation {
            old_key_id: project.deploy_key_id.map(|id| id as u64),
            old_fingerprint: project.fingerprint.clone(),
            new_fingerprint: key.fingerprint.clone(),
            public_key: key.public_openssh.clone(),
            new_key_id: None,
            keys_before: None,
        };
        let entry = self
            .store
            .journal_begin(
                project.id,
                "deploy_key",
                Action::RegenerateDeployKey.name(),
                &rotation.to_json(),
                Some(&sealed),
                cause,
            )
            .await?;
        self.resume_key(client, project, &entry).await
    }

    /// Finishes a key rotation from whatever step the journal says. Whatever
    /// GitLab answers, it leaves at most one key of ours on the project: a
    /// new key that cannot be confirmed as ours is deleted again (only if
    /// this rotation added it) and the entry is closed, not resumed forever.
    async fn resume_key(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
    ) -> Result<(String, String), RepairError> {
        let mut rotation = KeyRotation::from_journal(entry)?;
        let gitlab_id = project.gitlab_id as u64;
        let new_digest = KeyDigest::of_public_key(&rotation.public_key)?;
        let sealed = entry
            .secret
            .clone()
            .ok_or_else(|| RepairError::Refused("journal entry has no key".into()))?;

        // Add (idempotent at GitLab for the same key) unless it is already there.
        if rotation.new_key_id.is_none() {
            let existing = client.deploy_keys(gitlab_id).await?;
            let id = match existing.iter().find(|k| is_same_key(k, &new_digest)) {
                Some(k) => k.id,
                None => {
                    let can_push = !self.cfg.raw.expect.read_only_key;
                    let expires = self
                        .cfg
                        .raw
                        .repair
                        .key_expires_days
                        .map(|d| Utc::now() + chrono::Duration::days(i64::from(d)));
                    client
                        .add_deploy_key(
                            gitlab_id,
                            &self.key_title(project),
                            &rotation.public_key,
                            can_push,
                            expires,
                        )
                        .await?
                        .id
                }
            };
            rotation.keys_before = Some(existing.iter().map(|k| k.id).collect());
            rotation.new_key_id = Some(id);
            self.store
                .journal_step(entry.id, "created", &rotation.to_json())
                .await?;
        }
        let new_key_id = rotation.new_key_id.expect("set above");

        // Confirm GitLab has it, by its key material, before relying on it.
        let confirmed = client.deploy_key(gitlab_id, new_key_id).await;
        let unconfirmed = match &confirmed {
            Ok(k) if is_same_key(k, &new_digest) => None,
            Ok(k) => Some(format!(
                "GitLab serves key {new_key_id} as {}, not the new key {new_digest}",
                digest_of(k)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "(unreadable)".into())
            )),
            Err(e) if e.is_not_found() => Some(format!(
                "GitLab answers 404 for the new key {new_key_id} just added"
            )),
            // Transient: the entry stays for the next pass to confirm.
            Err(_) => None,
        };
        if let Err(e) = confirmed {
            if unconfirmed.is_none() {
                return Err(e.into());
            }
        }
        if let Some(why) = unconfirmed {
            return Err(self
                .undo_unconfirmed_key(client, project, entry, &rotation, why)
                .await);
        }
        if entry.step != "stored" {
            self.store
                .journal_step(entry.id, "confirmed", &rotation.to_json())
                .await?;
            self.store
                .set_deploy_key(
                    project.id,
                    Some(new_key_id),
                    &rotation.public_key,
                    &rotation.new_fingerprint,
                    Some(&sealed),
                )
                .await?;
            self.export_key_file(project, &sealed)?;
            self.store
                .journal_step(entry.id, "stored", &rotation.to_json())
                .await?;
        }

        // Only now the old key goes (a 404 is success): never a moment
        // without a working key. The key under the old id and any other copy
        // of the old material, but only where the material was glwarden's:
        // an id that names someone else's key leaves it alone.
        let old_digest = rotation
            .old_fingerprint
            .as_deref()
            .and_then(KeyDigest::parse)
            .filter(|d| *d != new_digest);
        let old_id = rotation.old_key_id.filter(|old| *old != new_key_id);
        if old_id.is_some() || old_digest.is_some() {
            let owned: Vec<KeyDigest> = self
                .store
                .owned_key_fingerprints(project.id)
                .await?
                .iter()
                .filter_map(|f| KeyDigest::parse(f))
                .collect();
            for k in client.deploy_keys(gitlab_id).await? {
                let old =
                    Some(k.id) == old_id || old_digest.as_ref().is_some_and(|d| is_same_key(&k, d));
                if k.id == new_key_id || !old {
                    continue;
                }
                if owned.iter().any(|d| is_same_key(&k, d)) {
                    client.delete_deploy_key(gitlab_id, k.id).await?;
                } else {
                    tracing::warn!(
                        project = %project.path,
                        key_id = k.id,
                        "the old key id names a key glwarden never held; left in place"
                    );
                }
            }
        }
        self.store.journal_finish(entry.id).await?;
        Ok((
            format!(
                "key {} {}",
                rotation
                    .old_key_id
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "-".into()),
                rotation.old_fingerprint.as_deref().unwrap_or("-")
            ),
            format!("key {new_key_id} {}", rotation.new_fingerprint),
        ))
    }

    /// A new key GitLab will not confirm: deleted again by its id when this
    /// rotation added it (it was not on the project before), the journal
    /// entry closed, and why returned as the repair's failure.
    async fn undo_unconfirmed_key(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
        rotation: &KeyRotation,
        why: String,
    ) -> RepairError {
        let gitlab_id = project.gitlab_id as u64;
        let Some(new_key_id) = rotation.new_key_id else {
            return RepairError::Refused(why);
        };
        let added_by_us = rotation
            .keys_before
            .as_ref()
            .is_some_and(|before| !before.contains(&new_key_id));
        let undone = if added_by_us {
            match client.delete_deploy_key(gitlab_id, new_key_id).await {
                Ok(()) => format!("key {new_key_id} deleted again"),
                // The entry stays: the next pass tries the delete again.
                Err(e) => {
                    return RepairError::Refused(format!(
                        "{why}; deleting key {new_key_id} again failed: {e}"
                    ));
                }
            }
        } else {
            format!("key {new_key_id} was on the project before, left alone")
        };
        let mut closed = rotation.clone();
        closed.new_key_id = None;
        let result = async {
            self.store
                .journal_step(entry.id, "abandoned", &closed.to_json())
                .await?;
            self.store.journal_finish(entry.id).await
        }
        .await;
        if let Err(e) = result {
            return e.into();
        }
        RepairError::Refused(format!("new key not confirmed: {why}; {undone}"))
    }

    async fn make_read_only(
        &self,
        client: &GitLab,
        project: &ProjectRow,
    ) -> Result<(String, String), RepairError> {
        let key = project
            .deploy_key_id
            .ok_or_else(|| RepairError::Refused("no deploy key id of ours is known".into()))?;
        client
            .set_deploy_key_can_push(project.gitlab_id as u64, key as u64, false)
            .await?;
        Ok((
            format!("key {key} can_push=true"),
            format!("key {key} can_push=false"),
        ))
    }

    /// Writes the project's private key to the configured key directory, if any.
    fn export_key_file(&self, project: &ProjectRow, sealed: &[u8]) -> Result<(), RepairError> {
        if let Some(dir) = &self.cfg.raw.custody.key_dir {
            let private = self
                .custody
                .open(project.id, SecretKind::DeployKey, sealed)?;
            let file = crate::custody::key_file_path(dir, &project.connection, project.gitlab_id);
            let (folder, name) = (
                file.parent().expect("has a connection folder"),
                file.file_name().expect("has a name").to_string_lossy(),
            );
            crate::custody::write_private_file(folder, &name, &private).map_err(|e| {
                RepairError::Refused(format!("cannot write the key file {}: {e}", file.display()))
            })?;
        }
        Ok(())
    }

    // ---- webhook ----------------------------------------------------------

    fn expected_url(&self, project: &ProjectRow) -> Result<String, RepairError> {
        expected_hook_url(
            &self.cfg,
            project.webhook_url.as_deref(),
            project.gitlab_id as u64,
            &project.path,
        )
        .ok_or_else(|| {
            RepairError::Refused("no webhook URL expected: set expect.webhook_url".into())
        })
    }

    /// The hook's settings as the CI needs them, with our secret token.
    fn hook_settings<'a>(&'a self, url: &'a str, token: &'a str) -> HookSettings<'a> {
        let expect = &self.cfg.raw.expect;
        HookSettings {
            url,
            token,
            enable_ssl_verification: expect.enable_ssl_verification,
            events: expect
                .webhook_events
                .iter()
                .map(|event| (event.as_str(), true))
                .collect(),
        }
    }

    /// A fresh secret token: 32 bytes from the OS RNG, hex; both buffers
    /// are wiped when dropped.
    fn new_token() -> Zeroizing<String> {
        use rand::RngCore;
        use std::fmt::Write;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut bytes[..]);
        let mut hex = Zeroizing::new(String::with_capacity(64));
        for b in bytes.iter() {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    async fn create_webhook(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        cause: &str,
    ) -> Result<(String, String), RepairError> {
        if !self.custody.can_store() {
            return Err(CustodyError::NoMasterKey.into());
        }
        let url = self.expected_url(project)?;
        let token = Self::new_token();
        let sealed = self
            .custody
            .seal(project.id, SecretKind::HookToken, token.as_bytes())?;
        let data = HookRepair {
            url,
            old_hook_id: project.hook_id.map(|h| h as u64),
            hook_id: None,
        }
        .to_json();
        let entry = self
            .store
            .journal_begin(
                project.id,
                "webhook",
                Action::CreateWebhook.name(),
                &data,
                Some(&sealed),
                cause,
            )
            .await?;
        self.resume_hook(client, project, &entry).await
    }

    /// Finishes a hook creation or fix from whatever step the journal says.
    /// A write GitLab refuses for good (a blocked URL) changed nothing at
    /// GitLab: the entry is closed rather than resumed on every pass.
    async fn resume_hook(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
    ) -> Result<(String, String), RepairError> {
        let result = self.resume_hook_steps(client, project, entry).await;
        if let Err(e) = &result {
            if e.is_permanent() {
                self.store.journal_finish(entry.id).await?;
            }
        }
        result
    }

    async fn resume_hook_steps(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        entry: &JournalRow,
    ) -> Result<(String, String), RepairError> {
        let mut data = HookRepair::from_journal(entry)?;
        let gitlab_id = project.gitlab_id as u64;
        let url = data.url.clone();
        let sealed = entry
            .secret
            .clone()
            .ok_or_else(|| RepairError::Refused("journal entry has no token".into()))?;
        let token = self
            .custody
            .open(project.id, SecretKind::HookToken, &sealed)?;
        let token = std::str::from_utf8(&token)
            .map_err(|_| RepairError::Refused("the stored webhook secret is not text".into()))?;
        let settings = self.hook_settings(&url, token);

        let mut hook_id = data.hook_id;
        if hook_id.is_none() {
            // A crash after GitLab created the hook but before we learnt its
            // id leaves it there: adopt it (and set our token) rather than add another.
            let existing = client.hooks(gitlab_id).await?;
            let mut candidates: Vec<u64> = Vec::new();
            if entry.action == Action::FixWebhook.name() {
                // Rewritten only while its URL is one of glwarden's: a hook
                // someone pointed elsewhere (or an id naming another's hook)
                // is left alone, and ours is created beside it.
                let templates = self.store.hook_url_templates().await?;
                let old = data.old_hook_id;
                match existing.iter().find(|h| Some(h.id) == old) {
                    Some(h)
                        if is_our_hook_url(
                            &templates,
                            project.webhook_url.as_ref(),
                            project.gitlab_id,
                            &h.url,
                        ) =>
                    {
                        candidates.push(h.id)
                    }
                    Some(h) => tracing::warn!(
                        project = %project.path,
                        hook_id = h.id,
                        "the hook's URL is not one glwarden was configured for; left in place, a new hook is created"
                    ),
                    None => {}
                }
            }
            candidates.extend(existing.iter().filter(|h| h.url == url).map(|h| h.id).max());
            let mut fixed = None;
            for id in candidates {
                match client.update_hook(gitlab_id, id, &settings).await {
                    Ok(hook) => {
                        fixed = Some(hook);
                        break;
                    }
                    // Gone since we last looked: try the next, or create one.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let hook = match fixed {
                Some(hook) => hook,
                None => client.create_hook(gitlab_id, &settings).await?,
            };
            hook_id = Some(hook.id);
            data.hook_id = Some(hook.id);
            self.store
                .journal_step(entry.id, "created", &data.to_json())
                .await?;
        } else if entry.step == "created" {
            // Make sure the token GitLab holds is the one we are about to store.
            client
                .update_hook(gitlab_id, hook_id.unwrap_or_default(), &settings)
                .await?;
        }
        let hook_id = hook_id.unwrap_or_default();
        if entry.step != "stored" {
            self.store
                .set_hook(project.id, hook_id, Some(&sealed))
                .await?;
            self.store
                .journal_step(entry.id, "stored", &data.to_json())
                .await?;
        }
        self.delete_duplicates(client, project, Some(hook_id))
            .await?;
        self.store.journal_finish(entry.id).await?;
        let before = data
            .old_hook_id
            .map(|h| format!("hook {h}"))
            .unwrap_or_else(|| "no hook".into());
        Ok((before, format!("hook {hook_id} {url}")))
    }

    /// `PUT` the hook back to what the CI needs, resending our secret (a URL
    /// change resets it at GitLab); `new_secret` rotates the secret too.
    async fn fix_webhook(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        cause: &str,
        new_secret: bool,
    ) -> Result<(String, String), RepairError> {
        let hook_id = project
            .hook_id
            .ok_or_else(|| RepairError::Refused("no webhook id of ours is known".into()))?;
        let stored = self
            .store
            .project_secret(project.id, SecretKind::HookToken)
            .await?;
        let sealed = match (stored, new_secret) {
            (Some(sealed), false) => sealed,
            _ => {
                if !self.custody.can_store() {
                    return Err(CustodyError::NoMasterKey.into());
                }
                self.custody.seal(
                    project.id,
                    SecretKind::HookToken,
                    Self::new_token().as_bytes(),
                )?
            }
        };
        let url = self.expected_url(project)?;
        let data = HookRepair {
            url,
            old_hook_id: Some(hook_id as u64),
            hook_id: None,
        }
        .to_json();
        let entry = self
            .store
            .journal_begin(
                project.id,
                "webhook",
                Action::FixWebhook.name(),
                &data,
                Some(&sealed),
                cause,
            )
            .await?;
        self.resume_hook(client, project, &entry).await
    }

    async fn reenable_webhook(
        &self,
        client: &GitLab,
        project: &ProjectRow,
    ) -> Result<(String, String), RepairError> {
        let hook_id = project
            .hook_id
            .ok_or_else(|| RepairError::Refused("no webhook id of ours is known".into()))?;
        // The test must be of an event the hook subscribes to: the CI's
        // receiver sees what it would see for real.
        let hook = client
            .hook(project.gitlab_id as u64, hook_id as u64)
            .await?;
        let trigger = TESTABLE_TRIGGERS
            .iter()
            .find(|t| hook.event(t) == Some(true))
            .ok_or_else(|| {
                RepairError::Refused(format!(
                    "hook {hook_id} subscribes to no event GitLab can test ({})",
                    TESTABLE_TRIGGERS.join(", ")
                ))
            })?;
        // On failure (the receiver is down) the hook stays disabled and no
        // new hook is made: a new hook would fail the same way.
        client
            .test_hook(project.gitlab_id as u64, hook_id as u64, trigger)
            .await
            .map_err(|e| {
                RepairError::Refused(format!(
                    "test delivery ({trigger}) failed, hook {hook_id} stays disabled: {e}"
                ))
            })?;
        Ok((
            format!("hook {hook_id} disabled"),
            format!("hook {hook_id} re-enabled by a test delivery ({trigger})"),
        ))
    }

    /// Deletes hooks to our URL other than `keep`.
    async fn delete_duplicates(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        keep: Option<u64>,
    ) -> Result<(String, String), RepairError> {
        let url = self.expected_url(project)?;
        let gitlab_id = project.gitlab_id as u64;
        let hooks = client.hooks(gitlab_id).await?;
        let keep = keep.or_else(|| hooks.iter().find(|h| h.url == url).map(|h| h.id));
        let mut deleted = Vec::new();
        for h in hooks.iter().filter(|h| h.url == url && Some(h.id) != keep) {
            client.delete_hook(gitlab_id, h.id).await?;
            deleted.push(h.id.to_string());
        }
        Ok((
            format!(
                "duplicates {}",
                if deleted.is_empty() {
                    "-".into()
                } else {
                    deleted.join(",")
                }
            ),
            format!(
                "hook {}",
                keep.map(|k| k.to_string()).unwrap_or_else(|| "-".into())
            ),
        ))
    }

    // ---- moved repository -------------------------------------------------

    async fn follow_rename(
        &self,
        project: &ProjectRow,
        new_path: Option<&str>,
    ) -> Result<(String, String), RepairError> {
        let new_path = new_path
            .ok_or_else(|| RepairError::Refused("GitLab's new path is not known".into()))?;
        // The expected webhook URL follows when it is derived from {path}.
        self.store.set_path(project.id, new_path).await?;
        Ok((project.path.clone(), new_path.to_owned()))
    }

    // ---- recovery ---------------------------------------------------------

    /// Finishes every unfinished repair in the journal (on start). Returns
    /// how many were finished and how many failed (left for the next start).
    pub async fn resume(
        &self,
        clients: &std::collections::BTreeMap<String, Arc<GitLab>>,
    ) -> Result<(usize, usize), StoreError> {
        let mut done = (0, 0);
        for entry in self.store.journal().await? {
            let Some(project) = self.store.project(entry.project_id).await? else {
                self.store.journal_finish(entry.id).await?;
                continue;
            };
            let Some(client) = clients.get(&project.connection) else {
                continue;
            };
            let result = match entry.action.as_str() {
                "regenerate_deploy_key" => self.resume_key(client, &project, &entry).await,
                "create_webhook" | "fix_webhook" => {
                    self.resume_hook(client, &project, &entry).await
                }
                other => Err(RepairError::Refused(format!(
                    "unknown journal action {other}"
                ))),
            };
            let outcome = match &result {
                Ok(_) => {
                    done.0 += 1;
                    "ok (resumed after a crash)".to_owned()
                }
                Err(e) => {
                    done.1 += 1;
                    format!("failed on resume: {e}")
                }
            };
            let (before, after) = result.unwrap_or_default();
            self.store
                .record_event(&NewEvent {
                    project_id: Some(project.id),
                    component: &entry.component,
                    action: &entry.action,
                    cause: &entry.cause,
                    before: &before,
                    after: &after,
                    outcome: &outcome,
                })
                .await?;
            tracing::info!(project = %project.path, action = entry.action.as_str(), step = entry.step.as_str(), outcome, "journal entry resumed");
        }
        Ok(done)
    }

    /// The private key the CI clones with, opened from custody (audited).
    pub async fn private_key(
        &self,
        project: &ProjectRow,
    ) -> Result<zeroize::Zeroizing<String>, RepairError> {
        let sealed = self
            .store
            .project_secret(project.id, SecretKind::DeployKey)
            .await?
            .ok_or_else(|| {
                RepairError::Refused(format!(
                    "glwarden holds no private key for {}",
                    project.path
                ))
            })?;
        let bytes = self
            .custody
            .open(project.id, SecretKind::DeployKey, &sealed)?;
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: "deploy_key",
                action: "key_read",
                cause: "glwarden key private",
                before: "",
                after: project.fingerprint.as_deref().unwrap_or_default(),
                outcome: "ok",
            })
            .await?;
        Ok(text)
    }

    /// Takes custody of an existing key and hook after checking GitLab has
    /// them; no write at GitLab.
    pub async fn adopt(
        &self,
        client: &GitLab,
        project: &ProjectRow,
        private_key: Option<&str>,
        hook_url: Option<&str>,
        hook_token: Option<&str>,
    ) -> Result<String, RepairError> {
        let gitlab_id = project.gitlab_id as u64;
        let mut notes = Vec::new();
        if let Some(private) = private_key {
            let key = ssh_key::PrivateKey::from_openssh(private.trim())
                .map_err(|e| RepairError::Refused(format!("not an OpenSSH private key: {e}")))?;
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| RepairError::Refused(e.to_string()))?;
            let fp = fingerprint_of(&public)?;
            let digest = KeyDigest::of_public_key(&public)?;
            let found = client
                .deploy_keys(gitlab_id)
                .await?
                .into_iter()
                .find(|k| is_same_key(k, &digest))
                .ok_or_else(|| {
                    RepairError::Refused(format!(
                        "GitLab has no deploy key with fingerprint {fp} on {}",
                        project.path
                    ))
                })?;
            let sealed =
                self.custody
                    .seal(project.id, SecretKind::DeployKey, private.trim().as_bytes())?;
            self.store
                .set_deploy_key(project.id, Some(found.id), &public, &fp, Some(&sealed))
                .await?;
            self.export_key_file(project, &sealed)?;
            notes.push(format!("deploy key {} ({fp})", found.id));
        }
        if let Some(url) = hook_url {
            let hook = client
                .hooks(gitlab_id)
                .await?
                .into_iter()
                .find(|h| h.url == url)
                .ok_or_else(|| {
                    RepairError::Refused(format!("GitLab has no hook to {url} on {}", project.path))
                })?;
            let sealed = match hook_token {
                Some(t) => Some(self.custody.seal(
                    project.id,
                    SecretKind::HookToken,
                    t.trim().as_bytes(),
                )?),
                None => None,
            };
            self.store
                .set_hook(project.id, hook.id, sealed.as_deref())
                .await?;
            notes.push(format!("hook {}", hook.id));
        }
        let after = notes.join(", ");
        self.store
            .record_event(&NewEvent {
                project_id: Some(project.id),
                component: "project",
                action: "adopt",
                cause: "glwarden project add --adopt",
                before: "",
                after: &after,
                outcome: "ok",
            })
            .await?;
        Ok(after)
    }
}

/// Rules for `decide`, read from the store. `health` is the component's
/// stored row, `repository` the project's definite repository state and
/// `version` the instance's release, all already in the caller's hands.
#[allow(clippy::too_many_arguments)]
pub async fn rules_for(
    store: &Store,
    cfg: &Config,
    project: &ProjectRow,
    component: Component,
    health: &HealthRow,
    repository: Option<State>,
    version: Option<GitLabVersion>,
    now: DateTime<Utc>,
) -> Result<Rules, StoreError> {
    let r = &cfg.raw.repair;
    let used = store
        .repairs_since(now - chrono::Duration::hours(1))
        .await?;
    let cooled_down = match store.last_repair(project.id, component.as_str()).await? {
        Some(t) => now - t >= chrono::Duration::minutes(r.cooldown_minutes as i64),
        None => true,
    };
    let failed_in_a_row = store
        .failed_repairs_in_a_row(project.id, component.as_str(), health.since)
        .await?;
    Ok(Rules {
        confirm_checks: r.confirm_checks,
        repository,
        failed_in_a_row,
        no_hook_test: no_hook_test(r.webhook_reenable, version),
        paused: store.repairs_paused().await?.map(|(reason, _)| reason),
        budget_left: i64::from(r.budget_per_hour) - used,
        cooled_down,
    })
}

/// Why a disabled hook cannot be re-enabled by a test delivery, if it cannot.
fn no_hook_test(setting: WebhookReenable, version: Option<GitLabVersion>) -> Option<String> {
    match (setting, version) {
        (WebhookReenable::Off, _) => Some(
            "webhook re-enabling is off (repair.webhook_reenable = \"off\"): re-enable it in GitLab"
                .into(),
        ),
        (WebhookReenable::Test, Some(v)) if !v.has_hook_test() => Some(format!(
            "GitLab {v} has no hook test endpoint ({}+): re-enable the hook in GitLab",
            GitLabVersion::HOOK_TEST
        )),
        (WebhookReenable::Test, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(state: &str, consecutive: i64, pending: Option<&str>) -> HealthRow {
        HealthRow {
            component: Component::DeployKey,
            subject_id: 1,
            state: Some(state.parse().expect("a state")),
            detail: "detail".into(),
            since: None,
            consecutive,
            last_checked: None,
            pending: pending.map(|p| p.parse().expect("a state")),
            pending_detail: None,
            pending_since: None,
        }
    }

    fn rules() -> Rules {
        Rules {
            confirm_checks: 2,
            repository: Some(State::Ok),
            failed_in_a_row: 0,
            no_hook_test: None,
            paused: None,
            budget_left: 10,
            cooled_down: true,
        }
    }

    const AUTO: Policies = Policies {
        deploy_key: Policy::Auto,
        webhook: Policy::Auto,
        moved: MovedPolicy::Follow,
    };

    #[test]
    fn confirmed_broken_states_are_repaired_under_auto() {
        let d = decide(
            "a/b",
            Component::DeployKey,
            &health("missing", 2, None),
            &AUTO,
            &rules(),
        );
        assert_eq!(d, Decision::Repair(Action::RegenerateDeployKey));
        let d = decide(
            "a/b",
            Component::DeployKey,
            &health("writable", 3, None),
            &AUTO,
            &rules(),
        );
        assert_eq!(d, Decision::Repair(Action::MakeKeyReadOnly));
        let mut h = health("misconfigured", 2, None);
        h.component = Component::Webhook;
        assert_eq!(
            decide("a/b", Component::Webhook, &h, &AUTO, &rules()),
            Decision::Repair(Action::FixWebhook)
        );
        assert_eq!(
            decide(
                "a/b",
                Component::Repository,
                &health("moved", 2, None),
                &AUTO,
                &rules()
            ),
            Decision::Repair(Action::FollowRename)
        );
    }

    #[test]
    fn never_on_unconfirmed_unknown_blocked_or_unrepairable() {
        assert!(matches!(
            decide(
                "a/b",
                Component::DeployKey,
                &health("missing", 1, None),
                &AUTO,
                &rules()
            ),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide(
                "a/b",
                Component::DeployKey,
                &health("missing", 5, Some("unknown")),
                &AUTO,
                &rules()
            ),
            Decision::Skip(_)
        ));
        assert!(matches!(
            decide(
                "a/b",
                Component::DeployKey,
                &health("missing", 5, Some("blocked")),
                &AUTO,
                &rules()
            ),
            Decision::Skip(_)
        ));
        for state in ["pending_deletion", "archived", "access_lost", "not_found"] {
            assert!(matches!(
                decide(
                    "a/b",
                    Component::Repository,
                    &health(state, 5, None),
                    &AUTO,
                    &rules()
                ),
                Decision::Skip(_)
            ));
        }
        assert!(matches!(
            decide(
                "a/b",
                Component::Webhook,
                &health("failing", 5, None),
                &AUTO,
                &rules()
            ),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn report_gives_the_plan_and_off_gives_nothing() {
        let report = Policies {
            deploy_key: Policy::Report,
            ..AUTO
        };
        match decide(
            "group/app",
            Component::DeployKey,
            &health("mismatch", 2, None),
            &report,
            &rules(),
        ) {
            Decision::Report(Action::RegenerateDeployKey, plan) => {
                assert_eq!(
                    plan,
                    "would regenerate deploy key of group/app: mismatch (detail)"
                )
            }
            other => panic!("{other:?}"),
        }
        let off = Policies {
            deploy_key: Policy::Off,
            ..AUTO
        };
        assert!(matches!(
            decide(
                "a/b",
                Component::DeployKey,
                &health("missing", 2, None),
                &off,
                &rules()
            ),
            Decision::Skip(_)
        ));
        let report_moves = Policies {
            moved: MovedPolicy::Report,
            ..AUTO
        };
        assert!(matches!(
            decide(
                "a/b",
                Component::Repository,
                &health("moved", 2, None),
                &report_moves,
                &rules()
            ),
            Decision::Report(Action::FollowRename, _)
        ));
    }

    #[test]
    fn pause_cooldown_and_budget_hold_automatic_repairs() {
        let h = health("missing", 2, None);
        let paused = Rules {
            paused: Some("storm".into()),
            ..rules()
        };
        assert!(
            matches!(decide("a/b", Component::DeployKey, &h, &AUTO, &paused), Decision::Skip(r) if r.contains("paused"))
        );
        let hot = Rules {
            cooled_down: false,
            ..rules()
        };
        assert!(
            matches!(decide("a/b", Component::DeployKey, &h, &AUTO, &hot), Decision::Skip(r) if r.contains("cooldown"))
        );
        let spent = Rules {
            budget_left: 0,
            ..rules()
        };
        assert!(
            matches!(decide("a/b", Component::DeployKey, &h, &AUTO, &spent), Decision::Skip(r) if r.contains("budget"))
        );
    }

    #[test]
    fn keys_and_hooks_are_repaired_only_on_an_ok_repository() {
        let key = health("missing", 2, None);
        let hook = HealthRow {
            component: Component::Webhook,
            ..health("missing", 2, None)
        };
        for repository in [
            Some(State::Archived),
            Some(State::PendingDeletion),
            Some(State::AccessLost),
            Some(State::NotFound),
            Some(State::Moved),
            None,
        ] {
            let r = Rules {
                repository,
                ..rules()
            };
            for (component, h) in [(Component::DeployKey, &key), (Component::Webhook, &hook)] {
                assert!(
                    matches!(decide("a/b", component, h, &AUTO, &r), Decision::Skip(why) if why.starts_with("repository is")),
                    "{component} on a {repository:?} repository"
                );
            }
        }
        // The move itself is still followed, whatever the repository is.
        let moved = HealthRow {
            component: Component::Repository,
            ..health("moved", 2, None)
        };
        let r = Rules {
            repository: Some(State::Moved),
            ..rules()
        };
        assert_eq!(
            decide("a/b", Component::Repository, &moved, &AUTO, &r),
            Decision::Repair(Action::FollowRename)
        );
        assert_eq!(
            decide("a/b", Component::DeployKey, &key, &AUTO, &rules()),
            Decision::Repair(Action::RegenerateDeployKey)
        );
    }

    #[test]
    fn repairs_stop_after_three_failures_in_a_row() {
        let h = health("missing", 2, None);
        for (failed, repairs) in [(0, true), (2, true), (3, false), (7, false)] {
            let r = Rules {
                failed_in_a_row: failed,
                ..rules()
            };
            let decision = decide("a/b", Component::DeployKey, &h, &AUTO, &r);
            assert_eq!(
                matches!(decision, Decision::Repair(_)),
                repairs,
                "{failed}: {decision:?}"
            );
            if !repairs {
                assert!(
                    matches!(decision, Decision::Skip(why) if why.contains("stopped") && why.contains("regenerate"))
                );
            }
        }
        // `report` still reports the plan: nothing is written anyway.
        let report = Policies {
            deploy_key: Policy::Report,
            ..AUTO
        };
        let r = Rules {
            failed_in_a_row: 5,
            ..rules()
        };
        assert!(matches!(
            decide("a/b", Component::DeployKey, &h, &report, &r),
            Decision::Report(..)
        ));
    }

    #[test]
    fn hooks_are_ours_by_the_urls_glwarden_was_configured_for() {
        let templates = vec![
            "https://ci.example.com/hooks/{id}".to_owned(),
            "https://old-ci.example.com/{path}/hook".to_owned(),
        ];
        let own = "https://special.example.com/receiver".to_owned();
        let cases: &[(Option<&String>, &str, bool)] = &[
            (None, "https://ci.example.com/hooks/42", true),
            (None, "https://ci.example.com/hooks/43", false),
            (None, "https://ci.example.com/hooks/42/more", false),
            // `{path}` is any path: the project may have moved since.
            (None, "https://old-ci.example.com/acme/app/hook", true),
            (None, "https://old-ci.example.com/acme/app/other", false),
            (None, "https://special.example.com/receiver", false),
            (Some(&own), "https://special.example.com/receiver", true),
            (None, "https://attacker.example.com/hooks/42", false),
        ];
        for (own, url, ours) in cases {
            assert_eq!(
                is_our_hook_url(&templates, *own, 42, url),
                *ours,
                "{url} with {own:?}"
            );
        }
        assert!(!is_our_hook_url(
            &[],
            None,
            42,
            "https://ci.example.com/hooks/42"
        ));
    }

    #[test]
    fn only_health_that_calls_for_a_repair_is_decided() {
        let with = |state: &str, detail: &str| HealthRow {
            detail: detail.into(),
            ..health(state, 1, None)
        };
        let cases = [
            (Component::Webhook, with("healthy", "hook 7"), false),
            (
                Component::Webhook,
                with("healthy", "hook 7; duplicate hooks to the same URL: 8"),
                true,
            ),
            (Component::Webhook, with("missing", ""), true),
            // Nothing to repair, but a plan says so.
            (Component::Webhook, with("failing", "HTTP 502"), true),
            (Component::DeployKey, with("expiring", "in 3 days"), true),
            (Component::Repository, with("ok", ""), false),
            (Component::Repository, with("moved", "a -> b"), true),
            (
                Component::Webhook,
                HealthRow {
                    state: None,
                    ..with("healthy", "")
                },
                true,
            ),
        ];
        for (component, row, expected) in cases {
            assert_eq!(
                needs_decision(component, &row),
                expected,
                "{component} {:?} {}",
                row.state,
                row.detail
            );
        }
    }

    #[test]
    fn journal_records_parse_whole_or_are_errors() {
        let entry = |action: &str, data: &str| JournalRow {
            id: 9,
            project_id: 1,
            component: "webhook".into(),
            action: action.into(),
            step: "begun".into(),
            data: data.into(),
            secret: None,
            cause: "test".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let hook = HookRepair::from_journal(&entry(
            "fix_webhook",
            r#"{"url":"https://ci/1","old_hook_id":7}"#,
        ))
        .unwrap();
        assert_eq!(
            (hook.url.as_str(), hook.old_hook_id, hook.hook_id),
            ("https://ci/1", Some(7), None)
        );
        // Round trip through the journal's JSON.
        let again =
            HookRepair::from_journal(&entry("fix_webhook", &hook.to_json().to_string())).unwrap();
        assert_eq!(again.old_hook_id, Some(7));
        for bad in ["", "{}", r#"{"url":7}"#, r#"{"old_hook_id":7}"#] {
            let e = HookRepair::from_journal(&entry("create_webhook", bad)).unwrap_err();
            assert!(
                e.to_string()
                    .contains("journal entry 9 (create_webhook) is not a webhook repair record"),
                "{bad}: {e}"
            );
        }
        let e = KeyRotation::from_journal(&entry("regenerate_deploy_key", r#"{"url":"x"}"#))
            .unwrap_err();
        assert!(
            e.to_string().contains("is not a key rotation record"),
            "{e}"
        );
    }

    #[test]
    fn storms_need_both_share_and_count() {
        assert!(is_storm(50, 100, 0.2, 5));
        assert!(
            !is_storm(20, 100, 0.2, 5),
            "exactly the share is not more than it"
        );
        assert!(
            !is_storm(3, 4, 0.2, 5),
            "a small fleet needs at least the minimum"
        );
        assert!(!is_storm(0, 0, 0.2, 5));
    }
}
