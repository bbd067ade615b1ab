//! The journal's records: what a multi-step repair writes before its first
//! step and after each, parsed whole or refused (never a repair with empty
//! values).

use super::{Action, RepairError};
use crate::store::{JournalRow, ProjectRow, Store};

/// A key rotation's journal record (no secrets: the new private key is the
/// entry's sealed `secret`). A record that does not parse is an error, never
/// a rotation with empty values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct KeyRotation {
    pub(super) old_key_id: Option<u64>,
    pub(super) old_fingerprint: Option<String>,
    pub(super) new_fingerprint: String,
    pub(super) public_key: String,
    /// Set once GitLab has the new key.
    #[serde(default)]
    pub(super) new_key_id: Option<u64>,
    /// The project's key ids before the new key was added: a key that was
    /// already there is never deleted as "the key we just added".
    #[serde(default)]
    pub(super) keys_before: Option<Vec<u64>>,
}

/// A webhook repair's journal record (create, fix or rotate; no secrets:
/// the token is the entry's sealed `secret`). A record that does not parse
/// is an error, never a repair with an empty URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct HookRepair {
    /// The URL the hook must have.
    pub(super) url: String,
    /// Our hook before the repair, if any.
    #[serde(default)]
    pub(super) old_hook_id: Option<u64>,
    /// Set once GitLab has the hook with our token.
    #[serde(default)]
    pub(super) hook_id: Option<u64>,
}

/// A purge's journal record: the ids of glwarden's keys and hooks to
/// delete, found before the first delete, and which kinds are done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Purge {
    pub(super) key_ids: Vec<u64>,
    pub(super) hook_ids: Vec<u64>,
    #[serde(default)]
    pub(super) keys_done: bool,
    #[serde(default)]
    pub(super) hooks_done: bool,
}

/// A journal record of one kind: parsed whole from its entry, or an error
/// naming the entry (never a repair with empty values).
pub(super) trait JournalRecord: serde::Serialize + serde::de::DeserializeOwned {
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

    /// Writes the record as a new entry, before the repair's first request,
    /// with the sealed secret it installs.
    async fn begin(
        &self,
        store: &Store,
        project: &ProjectRow,
        action: Action,
        sealed: &[u8],
        cause: &str,
    ) -> Result<JournalRow, RepairError> {
        Ok(store
            .journal_begin(
                project.id,
                action.component(),
                action.name(),
                &self.to_json(),
                Some(sealed),
                cause,
            )
            .await?)
    }
}

impl JournalRecord for HookRepair {
    const KIND: &'static str = "webhook repair";
}

impl JournalRecord for KeyRotation {
    const KIND: &'static str = "key rotation";
}

impl JournalRecord for Purge {
    const KIND: &'static str = "purge";
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn journal_records_parse_whole_or_are_errors() {
        let entry = |action: &str, data: &str| JournalRow {
            id: 9,
            project_id: 1,
            component: crate::health::Component::Webhook,
            action: action.into(),
            step: crate::store::JournalStep::Intent,
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
}
