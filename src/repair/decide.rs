//! Whether and how to repair: pure verdicts from a component's stored
//! health, its policy and the rules (confirmation, cooldown, budget, storm
//! guard, failures in a row) to a [`Decision`]. One path decides for the
//! daemon's repair pass, `glwarden repair` and `repair --dry-run`.

use chrono::{DateTime, Utc};

use super::RepairError;
use crate::config::{Config, MovedPolicy, Policy, RepairOverride, WebhookReenable};
use crate::gitlab::types::GitLabVersion;
use crate::health::{Component, Finding, State};
use crate::store::{HealthRow, ProjectRow, Store, StoreError};

/// One thing glwarden can do to fix a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Delete glwarden's key and hook from GitLab and remove the project
    /// from the inventory (a clean disconnect; never decided by a sweep).
    Purge,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::RegenerateDeployKey,
        Action::MakeKeyReadOnly,
        Action::CreateWebhook,
        Action::FixWebhook,
        Action::ReenableWebhook,
        Action::DeleteDuplicateHooks,
        Action::FollowRename,
        Action::Purge,
    ];

    /// The action a stored name (an event's, a journal entry's) stands for.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The component it repairs.
    pub fn component(self) -> Component {
        match self {
            Action::RegenerateDeployKey | Action::MakeKeyReadOnly => Component::DeployKey,
            Action::FollowRename | Action::Purge => Component::Repository,
            Action::CreateWebhook
            | Action::FixWebhook
            | Action::ReenableWebhook
            | Action::DeleteDuplicateHooks => Component::Webhook,
        }
    }

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
            Action::Purge => "purge",
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
            Action::Purge => "delete glwarden's deploy key and webhook, remove the project",
        }
    }
}

/// The repair a broken state calls for, if any.
pub fn action_for(component: Component, state: State, finding: Option<Finding>) -> Option<Action> {
    match (component, state) {
        (
            Component::DeployKey,
            State::Missing | State::Mismatch | State::Expired | State::Expiring,
        ) => Some(Action::RegenerateDeployKey),
        (Component::DeployKey, State::Writable) => Some(Action::MakeKeyReadOnly),
        (Component::Webhook, State::Missing) => Some(Action::CreateWebhook),
        (Component::Webhook, State::Misconfigured) => Some(Action::FixWebhook),
        (Component::Webhook, State::Disabled) => Some(Action::ReenableWebhook),
        (Component::Webhook, State::Healthy) if finding == Some(Finding::DuplicateHooks) => {
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
            !state.is_healthy() || action_for(component, state, health.finding).is_some()
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
    let Some(action) = action_for(component, state, health.finding) else {
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
            finding: None,
            pending_finding: None,
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
    fn only_health_that_calls_for_a_repair_is_decided() {
        let with = |state: &str, detail: &str| HealthRow {
            detail: detail.into(),
            ..health(state, 1, None)
        };
        let cases = [
            (Component::Webhook, with("healthy", "hook 7"), false),
            (
                Component::Webhook,
                HealthRow {
                    finding: Some(Finding::DuplicateHooks),
                    ..with("healthy", "hook 7; duplicate hooks to the same URL: 8")
                },
                true,
            ),
            // The words alone decide nothing.
            (
                Component::Webhook,
                with("healthy", "hook 7; duplicate hooks to the same URL: 8"),
                false,
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
