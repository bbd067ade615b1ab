//! The parts of GitLab's REST v4 entities that glwarden reads. Unknown fields
//! are ignored (serde's default), so newer GitLab versions do not break us;
//! fields GitLab omits on some versions or tiers are `Option` or defaulted.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

/// `GET /user`.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    #[serde(default)]
    pub state: Option<String>,
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

/// Declares [`Hook`] with a field for every event flag GitLab knows, and the
/// list of their names, from one list. Plain fields decode several times
/// faster than a flattened map of unknown keys, which serde buffers whole.
macro_rules! webhook_with_events {
    ($($event:ident),* $(,)?) => {
        /// Webhook event flags GitLab knows for project hooks (reference §2.1).
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
                #[serde(default, deserialize_with = "null_is_false")]
                pub $event: bool,
            )*
        }

        impl Hook {
            /// Whether the event flag `name` (e.g. `push_events`) is on.
            pub fn event_enabled(&self, name: &str) -> bool {
                match name {
                    $(stringify!($event) => self.$event,)*
                    _ => false,
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

/// An event flag GitLab sends as `null` is off.
fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
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
    fn hook_reads_event_flags_and_ignores_unknown_fields() {
        let hook: Hook = serde_json::from_str(
            r#"{"id":1,"url":"https://ci/x","push_events":true,"tag_push_events":false,
                "enable_ssl_verification":true,"alert_status":"executable","disabled_until":null,
                "custom_headers":[{"key":"Authorization"}],"brand_new_field":{"a":1}}"#,
        )
        .unwrap();
        assert!(hook.event_enabled("push_events"));
        assert!(!hook.event_enabled("tag_push_events"));
        assert!(!hook.event_enabled("merge_requests_events"));
        assert!(!hook.event_enabled("no_such_events"));
        let nulls: Hook =
            serde_json::from_str(r#"{"id":2,"url":"https://ci/y","push_events":null}"#).unwrap();
        assert!(!nulls.event_enabled("push_events"));
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
