//! Webhook repairs: create, fix, re-enable, rotate, and the removal of
//! duplicates, each through the journal; and which hook URLs are ours.

use zeroize::Zeroizing;

use super::journal::{HookRepair, JournalRecord};
use super::{Action, RepairError, Repairer};
use crate::config::expected_hook_url;
use crate::custody::{CustodyError, SecretKind};
use crate::gitlab::GitLab;
use crate::gitlab::types::HookSettings;
use crate::store::{JournalRow, JournalStep, NewEvent, ProjectRow};

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

impl Repairer {
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

    pub(super) async fn create_webhook(
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
        let entry = HookRepair {
            url,
            old_hook_id: project.hook_id.map(|h| h as u64),
            hook_id: None,
        }
        .begin(&self.store, project, Action::CreateWebhook, &sealed, cause)
        .await?;
        self.resume_hook(client, project, &entry).await
    }

    /// Finishes a hook creation or fix from whatever step the journal says.
    /// A write GitLab refuses for good (a blocked URL) changed nothing at
    /// GitLab: the entry is closed rather than resumed on every pass.
    pub(super) async fn resume_hook(
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
                .journal_step(entry.id, JournalStep::Created, &data.to_json())
                .await?;
        } else if entry.step == JournalStep::Created {
            // Make sure the token GitLab holds is the one we are about to store.
            client
                .update_hook(gitlab_id, hook_id.unwrap_or_default(), &settings)
                .await?;
        }
        let hook_id = hook_id.unwrap_or_default();
        if entry.step != JournalStep::Stored {
            self.store
                .set_hook(project.id, hook_id, Some(&sealed))
                .await?;
            self.store
                .journal_step(entry.id, JournalStep::Stored, &data.to_json())
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
    pub(super) async fn fix_webhook(
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
        let entry = HookRepair {
            url,
            old_hook_id: Some(hook_id as u64),
            hook_id: None,
        }
        .begin(&self.store, project, Action::FixWebhook, &sealed, cause)
        .await?;
        self.resume_hook(client, project, &entry).await
    }

    pub(super) async fn reenable_webhook(
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
    pub(super) async fn delete_duplicates(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
