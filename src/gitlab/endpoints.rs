//! The endpoints glwarden calls, one method each (docs/gitlab-contract.md
//! names the GitLab source of every answer they decode).

use reqwest::Method;

use super::types::*;
use super::{ApiError, GitLab, decode, encode_id, endpoint_of, json_bytes, retry_transient};

impl GitLab {
    /// `POST /projects/:id/deploy_keys` (idempotent for the same key).
    pub async fn add_deploy_key(
        &self,
        project: u64,
        title: &str,
        public_key: &str,
        can_push: bool,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<DeployKey, ApiError> {
        let mut body =
            serde_json::json!({ "title": title, "key": public_key, "can_push": can_push });
        if let Some(t) = expires_at {
            body["expires_at"] = serde_json::Value::String(t.to_rfc3339());
        }
        let path = format!("projects/{project}/deploy_keys");
        let answer = self
            .write(Method::POST, &path, Some(&json_bytes(&body)))
            .await?;
        decode(&answer, "POST", &endpoint_of(&path))
    }

    /// `PUT /projects/:id/deploy_keys/:key_id` with `can_push`.
    pub async fn set_deploy_key_can_push(
        &self,
        project: u64,
        key: u64,
        can_push: bool,
    ) -> Result<(), ApiError> {
        let body = serde_json::json!({ "can_push": can_push });
        self.write(
            Method::PUT,
            &format!("projects/{project}/deploy_keys/{key}"),
            Some(&json_bytes(&body)),
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /projects/:id/deploy_keys/:key_id`; a 404 means already gone.
    pub async fn delete_deploy_key(&self, project: u64, key: u64) -> Result<(), ApiError> {
        self.delete(&format!("projects/{project}/deploy_keys/{key}"))
            .await
    }

    /// `POST /projects/:id/hooks` with the hook's full settings.
    pub async fn create_hook(
        &self,
        project: u64,
        settings: &HookSettings<'_>,
    ) -> Result<Hook, ApiError> {
        let path = format!("projects/{project}/hooks");
        let answer = self
            .write(Method::POST, &path, Some(&json_bytes(settings)))
            .await?;
        decode(&answer, "POST", &endpoint_of(&path))
    }

    /// `PUT /projects/:id/hooks/:hook_id` (send the token again: a URL change resets it).
    pub async fn update_hook(
        &self,
        project: u64,
        hook: u64,
        settings: &HookSettings<'_>,
    ) -> Result<Hook, ApiError> {
        let path = format!("projects/{project}/hooks/{hook}");
        let answer = self
            .write(Method::PUT, &path, Some(&json_bytes(settings)))
            .await?;
        decode(&answer, "PUT", &endpoint_of(&path))
    }

    /// `DELETE /projects/:id/hooks/:hook_id`; a 404 means already gone.
    pub async fn delete_hook(&self, project: u64, hook: u64) -> Result<(), ApiError> {
        self.delete(&format!("projects/{project}/hooks/{hook}"))
            .await
    }

    /// `POST /projects/:id/hooks/:hook_id/test/:trigger` (GitLab 16.11+): a
    /// test delivery of sample data for `trigger` to the hook's receiver,
    /// with the hook's real token; a 2xx from the receiver re-enables a
    /// disabled hook, a failure counts as one more failure.
    pub async fn test_hook(&self, project: u64, hook: u64, trigger: &str) -> Result<(), ApiError> {
        self.write(
            Method::POST,
            &format!("projects/{project}/hooks/{hook}/test/{trigger}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Who the token belongs to: the connection probe, which every project
    /// of the sweep waits on, so a transient failure is retried first.
    pub async fn current_user(&self) -> Result<User, ApiError> {
        retry_transient(|| self.get("user")).await
    }

    /// `GET /version`: which endpoints this GitLab has.
    pub async fn version(&self) -> Result<VersionInfo, ApiError> {
        self.get("version").await
    }

    pub async fn access_token_self(&self) -> Result<AccessTokenInfo, ApiError> {
        self.get("personal_access_tokens/self").await
    }

    /// `POST /personal_access_tokens/self/rotate` (GitLab 16.10+): a new
    /// token for this one, which GitLab revokes in the same transaction
    /// (docs/gitlab-contract.md §13). Sent once, never retried: rotating a
    /// token that was already rotated revokes the new one too.
    pub async fn rotate_self(
        &self,
        expires_at: Option<chrono::NaiveDate>,
    ) -> Result<RotatedToken, ApiError> {
        let mut body = serde_json::json!({});
        if let Some(date) = expires_at {
            body["expires_at"] = serde_json::Value::String(date.to_string());
        }
        let path = "personal_access_tokens/self/rotate";
        // The answer holds the new token: wiped once parsed, and a parse
        // error says nothing of its text (serde's messages quote values).
        let answer = zeroize::Zeroizing::new(
            self.write(Method::POST, path, Some(&json_bytes(&body)))
                .await?,
        );
        serde_json::from_slice::<RotatedToken>(&answer).map_err(|_| ApiError {
            method: "POST",
            endpoint: endpoint_of(path),
            kind: super::ErrorKind::BadResponse {
                status: 200,
                message:
                    "the rotation's answer is not a token (its text is not shown: it may hold one)"
                        .into(),
            },
        })
    }

    /// `GET /oauth/token/info` at the web root (Doorkeeper's token info route).
    pub async fn oauth_token_info(&self) -> Result<OauthTokenInfo, ApiError> {
        let url = self.web.join("oauth/token/info").expect("static path");
        let answer = self
            .send(Method::GET, url, "/oauth/token/info", None)
            .await?;
        let info: OauthTokenInfo = decode(&answer.body, "GET", "/oauth/token/info")?;
        if let (Some(session), Some(left)) = (&self.options.oauth, info.expires_in) {
            session.set_expires_in(left);
        }
        Ok(info)
    }

    /// A project by numeric id or path (a path is URL-encoded; GitLab redirects
    /// an old path to the numeric id, which we follow).
    pub async fn project(&self, id_or_path: &str) -> Result<Project, ApiError> {
        self.get(&format!("projects/{}", encode_id(id_or_path)))
            .await
    }

    pub async fn group(&self, id_or_path: &str) -> Result<Group, ApiError> {
        self.get(&format!("groups/{}", encode_id(id_or_path))).await
    }

    /// Every project of a group (optionally with subgroups) where we are
    /// Maintainer or higher. `with_shared=false`: GitLab otherwise lists
    /// projects of other groups shared into this one, and glwarden would
    /// install keys and hooks on them. Offset pagination: the route has no
    /// keyset mode (docs/gitlab-contract.md §3).
    pub async fn group_projects(
        &self,
        group: &str,
        include_subgroups: bool,
    ) -> Result<Vec<Project>, ApiError> {
        let subgroups = if include_subgroups { "true" } else { "false" };
        let maintainer = MAINTAINER.to_string();
        self.get_all(
            &format!("groups/{}/projects", encode_id(group)),
            &[
                ("include_subgroups", subgroups),
                ("with_shared", "false"),
                ("min_access_level", maintainer.as_str()),
                ("order_by", "id"),
                ("sort", "asc"),
            ],
        )
        .await
    }

    pub async fn deploy_key(&self, project: u64, key: u64) -> Result<DeployKey, ApiError> {
        self.get(&format!("projects/{project}/deploy_keys/{key}"))
            .await
    }

    pub async fn deploy_keys(&self, project: u64) -> Result<Vec<DeployKey>, ApiError> {
        self.get_all(&format!("projects/{project}/deploy_keys"), &[])
            .await
    }

    pub async fn hook(&self, project: u64, hook: u64) -> Result<Hook, ApiError> {
        self.get(&format!("projects/{project}/hooks/{hook}")).await
    }

    pub async fn hooks(&self, project: u64) -> Result<Vec<Hook>, ApiError> {
        self.get_all(&format!("projects/{project}/hooks"), &[])
            .await
    }

    /// The most recent deliveries of a hook (one page of at most 20, newest first).
    pub async fn hook_events(&self, project: u64, hook: u64) -> Result<Vec<HookEvent>, ApiError> {
        self.get(&format!(
            "projects/{project}/hooks/{hook}/events?per_page=20"
        ))
        .await
    }
}
