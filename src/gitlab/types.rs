//! The parts of GitLab's REST v4 entities that glwarden reads. Unknown fields
//! are ignored (serde's default), so newer GitLab versions do not break us;
//! fields GitLab omits on some versions or tiers are `Option` or defaulted.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// GitLab's Maintainer access level, 40 (`lib/gitlab/access.rb`: `MASTER`
/// in old releases, `MAINTAINER` since; docs/gitlab-contract.md §5): the role
/// glwarden needs on a project to manage deploy keys and hooks, and the
/// `min_access_level` of its listings.
pub const MAINTAINER: u32 = 40;

/// `GET /user`.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    #[serde(default)]
    pub state: Option<String>,
}

/// `GET /version` (`lib/api/version.rb`; the same body as `/metadata`).
#[derive(Debug, Clone, Deserialize)]
pub struct VersionInfo {
    /// e.g. `17.3.1-ee`, `16.11.0-pre`.
    pub version: String,
}

/// A GitLab release, major and minor: what decides which endpoints exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GitLabVersion {
    pub major: u32,
    pub minor: u32,
}

impl GitLabVersion {
    /// `POST /projects/:id/hooks/:hook_id/test/:trigger` (docs/gitlab-contract.md §10.4).
    pub const HOOK_TEST: GitLabVersion = GitLabVersion::new(16, 11);
    /// `GET /projects/:id/hooks/:hook_id/events` (docs/gitlab-contract.md §10.5).
    pub const HOOK_EVENTS: GitLabVersion = GitLabVersion::new(17, 3);

    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// `17.3.1-ee` -> 17.3; `None` for anything without a major and minor.
    pub fn parse(version: &str) -> Option<Self> {
        let mut parts = version.trim().split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }

    pub fn has_hook_test(self) -> bool {
        self >= Self::HOOK_TEST
    }

    pub fn has_hook_events(self) -> bool {
        self >= Self::HOOK_EVENTS
    }
}

impl std::fmt::Display for GitLabVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `POST /personal_access_tokens/self/rotate`'s answer
/// (`Entities::PersonalAccessTokenWithToken`): the new token's id, secret and expiry.
#[derive(Deserialize)]
#[serde(from = "RotatedAnswer")]
pub struct RotatedToken {
    pub id: u64,
    pub token: secrecy::SecretString,
    pub expires_at: Option<NaiveDate>,
}

/// The answer as read; its token moves into a `SecretString` at once.
#[derive(Deserialize)]
struct RotatedAnswer {
    id: u64,
    token: String,
    #[serde(default)]
    expires_at: Option<NaiveDate>,
}

impl From<RotatedAnswer> for RotatedToken {
    fn from(a: RotatedAnswer) -> Self {
        RotatedToken {
            id: a.id,
            token: secrecy::SecretString::from(a.token),
            expires_at: a.expires_at,
        }
    }
}

impl std::fmt::Debug for RotatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `GET /personal_access_tokens/self` (also project and group access tokens).
#[derive(Debug, Clone, Deserialize)]
pub struct AccessTokenInfo {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A date, `YYYY-MM-DD`; the token stops working at the start of that day (UTC).
    #[serde(default)]
    pub expires_at: Option<NaiveDate>,
    /// When it was made: with `expires_at`, its lifetime, which a rotation keeps.
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn yes() -> bool {
    true
}

/// `GET /oauth/token/info`.
#[derive(Debug, Clone, Deserialize)]
pub struct OauthTokenInfo {
    /// GitLab also sends the deprecated alias `scopes` with the same value;
    /// serde's `alias` would reject the pair as a duplicate field.
    #[serde(default)]
    pub scope: Vec<String>,
    /// Seconds until the access token expires; `null` for non-expiring tokens.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct AccessLevel {
    pub access_level: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub project_access: Option<AccessLevel>,
    #[serde(default)]
    pub group_access: Option<AccessLevel>,
}

impl Permissions {
    /// The caller's effective role on the project: the higher of direct and group membership.
    pub fn max_access_level(&self) -> Option<u32> {
        let direct = self.project_access.map(|a| a.access_level);
        let group = self.group_access.map(|a| a.access_level);
        direct.max(group)
    }
}

/// `GET /projects/:id` and the project lists.
#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    pub id: u64,
    pub path_with_namespace: String,
    #[serde(default)]
    pub archived: bool,
    /// Set when deletion is scheduled (EE, or every tier since 18.0).
    #[serde(default)]
    pub marked_for_deletion_on: Option<String>,
    #[serde(default)]
    pub marked_for_deletion_at: Option<String>,
    /// Present on single-project answers; absent on most lists.
    #[serde(default)]
    pub permissions: Option<Permissions>,
}

/// `GET /groups/:id`.
#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    pub id: u64,
    pub full_path: String,
}

/// A project deploy key (`Entities::DeployKeysProject`).
#[derive(Debug, Clone, Deserialize)]
pub struct DeployKey {
    pub id: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub key: String,
    /// `SHA256:<base64>`; since GitLab 15.2.
    #[serde(default)]
    pub fingerprint_sha256: Option<String>,
    #[serde(default)]
    pub can_push: bool,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The first GitLab release whose `ProjectHook` entity returns an event flag,
/// for flags that are not in every release glwarden supports (16.0 and
/// later); docs/gitlab-contract.md §10. Before it the flag cannot be verified.
pub fn hook_event_since(event: &str) -> Option<GitLabVersion> {
    let (major, minor) = match event {
        "emoji_events" => (16, 11),
        "feature_flag_events" | "resource_access_token_events" => (17, 3),
        "vulnerability_events" => (17, 7),
        "milestone_events" => (18, 2),
        "resource_deploy_token_events" => (18, 10),
        _ => return None,
    };
    Some(GitLabVersion::new(major, minor))
}

/// Declares [`Hook`] with a field for every event flag GitLab knows, and the
/// list of their names, from one list. Plain fields decode several times
/// faster than a flattened map of unknown keys, which serde buffers whole.
macro_rules! webhook_with_events {
    ($($event:ident),* $(,)?) => {
        /// Webhook event flags GitLab knows for project hooks (docs/gitlab-contract.md §10.1).
        pub const HOOK_EVENTS: &[&str] = &[$(stringify!($event)),*];

        /// A project webhook.
        #[derive(Debug, Clone, Deserialize)]
        pub struct Hook {
            pub id: u64,
            pub url: String,
            #[serde(default = "yes")]
            pub enable_ssl_verification: bool,
            /// `executable`, `temporarily_disabled` or `disabled`; absent before 15.7.
            #[serde(default)]
            pub alert_status: Option<String>,
            #[serde(default)]
            pub disabled_until: Option<DateTime<Utc>>,
            $(
                /// `None` when this GitLab's `ProjectHook` entity does not
                /// return the flag (it is newer than the version).
                #[serde(default, deserialize_with = "null_is_false")]
                pub $event: Option<bool>,
            )*
        }

        impl Hook {
            /// The event flag `name` (e.g. `push_events`): `None` when
            /// GitLab did not return it.
            pub fn event(&self, name: &str) -> Option<bool> {
                match name {
                    $(stringify!($event) => self.$event,)*
                    _ => None,
                }
            }
        }
    };
}

webhook_with_events!(
    push_events,
    tag_push_events,
    merge_requests_events,
    issues_events,
    confidential_issues_events,
    note_events,
    confidential_note_events,
    job_events,
    pipeline_events,
    wiki_page_events,
    deployment_events,
    feature_flag_events,
    releases_events,
    milestone_events,
    emoji_events,
    resource_access_token_events,
    resource_deploy_token_events,
    vulnerability_events,
);

/// An event flag GitLab sends as `null` is off (a new hook's
/// `confidential_note_events`, docs/gitlab-contract.md §10.9); one it
/// does not send at all stays `None` (serde's default).
fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Some(Option::<bool>::deserialize(d)?.unwrap_or(false)))
}

/// One delivery in a hook's log (`GET /projects/:id/hooks/:hook_id/events`).
#[derive(Debug, Clone, Deserialize)]
pub struct HookEvent {
    pub id: u64,
    /// A string such as `"200"` (or `"internal error"` when no HTTP answer came).
    #[serde(default)]
    pub response_status: serde_json::Value,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

impl HookEvent {
    /// The HTTP status the receiver answered, when there was one.
    pub fn status_code(&self) -> Option<u16> {
        match &self.response_status {
            serde_json::Value::String(s) => s.trim().parse().ok(),
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.status_code(), Some(200..=299))
    }

    /// The status as GitLab reported it, for details.
    pub fn status_text(&self) -> String {
        match &self.response_status {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_gate_endpoints() {
        for (text, version) in [
            ("17.3.1-ee", Some((17, 3))),
            ("16.11.0-pre", Some((16, 11))),
            ("16.0.0", Some((16, 0))),
            ("18.10.2+ee.0", Some((18, 10))),
            ("", None),
            ("seventeen", None),
            ("17", None),
        ] {
            assert_eq!(
                GitLabVersion::parse(text),
                version.map(|(major, minor)| GitLabVersion::new(major, minor)),
                "{text}"
            );
        }
        let v = |s| GitLabVersion::parse(s).unwrap();
        assert!(!v("16.0.0").has_hook_test() && !v("16.0.0").has_hook_events());
        assert!(!v("16.10.9").has_hook_test());
        assert!(v("16.11.0").has_hook_test() && !v("16.11.0").has_hook_events());
        assert!(!v("17.2.9").has_hook_events());
        assert!(v("17.3.0").has_hook_events() && v("18.0.0").has_hook_events());
        assert_eq!(v("16.11.3").to_string(), "16.11");
    }

    #[test]
    fn hook_reads_event_flags_and_ignores_unknown_fields() {
        let hook: Hook = serde_json::from_str(
            r#"{"id":1,"url":"https://ci/x","push_events":true,"tag_push_events":false,
                "enable_ssl_verification":true,"alert_status":"executable","disabled_until":null,
                "custom_headers":[{"key":"Authorization"}],"brand_new_field":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(hook.event("push_events"), Some(true));
        assert_eq!(hook.event("tag_push_events"), Some(false));
        // Not in the answer (a flag this GitLab version lacks): not known.
        assert_eq!(hook.event("merge_requests_events"), None);
        assert_eq!(hook.event("no_such_events"), None);
        let nulls: Hook =
            serde_json::from_str(r#"{"id":2,"url":"https://ci/y","push_events":null}"#).unwrap();
        assert_eq!(nulls.event("push_events"), Some(false), "null is off");
        assert!(
            nulls.enable_ssl_verification,
            "verification is on unless GitLab says off"
        );
    }

    #[test]
    fn token_expiry_is_a_date() {
        let t: AccessTokenInfo = serde_json::from_str(
            r#"{"id":4,"name":"t","revoked":false,"scopes":["api"],"active":true,"expires_at":"2026-12-01"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_at, NaiveDate::from_ymd_opt(2026, 12, 1));
    }

    #[test]
    fn oauth_token_info_with_deprecated_aliases() {
        let info: OauthTokenInfo = serde_json::from_str(
            r#"{"resource_owner_id":1,"scope":["api"],"expires_in":300,"application":{"uid":"x"},
                "created_at":1,"scopes":["api"],"expires_in_seconds":300}"#,
        )
        .unwrap();
        assert_eq!(info.scope, vec!["api"]);
        assert_eq!(info.expires_in, Some(300));
    }

    #[test]
    fn hook_event_status_may_be_string_or_number() {
        let e: HookEvent = serde_json::from_str(r#"{"id":1,"response_status":"502"}"#).unwrap();
        assert_eq!(e.status_code(), Some(502));
        let e: HookEvent =
            serde_json::from_str(r#"{"id":1,"response_status":"internal error"}"#).unwrap();
        assert_eq!(e.status_code(), None);
        assert!(!e.succeeded());
    }
}

/// What `POST`/`PUT .../hooks` send: the hook as the CI needs it. The
/// secret token is borrowed from a wiped buffer, so serializing it makes no
/// copy of ours (the HTTP stack's own copy is beyond reach).
#[derive(Serialize)]
pub struct HookSettings<'a> {
    pub url: &'a str,
    pub token: &'a str,
    pub enable_ssl_verification: bool,
    /// Event flags set to true, by GitLab's field name (`push_events`, ...).
    #[serde(flatten)]
    pub events: std::collections::BTreeMap<&'a str, bool>,
}

impl std::fmt::Debug for HookSettings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSettings")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .field("enable_ssl_verification", &self.enable_ssl_verification)
            .field("events", &self.events)
            .finish()
    }
}
