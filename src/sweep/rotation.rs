//! Access-token self-rotation (`rotate_before_days`), after the connection
//! step of a sweep that repairs: a token that expires within that many days
//! is rotated with `POST /personal_access_tokens/self/rotate`
//! (docs/gitlab-contract.md §13), the new token is stored sealed before
//! anything else, and the connection is asked again with it.
//!
//! GitLab revokes the old token in the same transaction, and revokes the
//! new one too if a rotated token is rotated again, so a rotation is never
//! retried blindly: it is noted as begun before GitLab is asked, and an
//! answer that did not arrive is settled by asking `GET
//! /personal_access_tokens/self` with the old token. Still working: GitLab
//! did not rotate. Refused: the answer is lost with the only copy of the
//! new token, and the connection says so until a person configures one.

use chrono::{NaiveDate, Utc};
use secrecy::SecretString;

use super::{ConnectionVerdict, Sweeper};
use crate::config::{Connection, TokenKind};
use crate::gitlab::types::{AccessTokenInfo, GitLabVersion};
use crate::gitlab::{ApiError, ErrorKind, GitLab};
use crate::health::{Observation, State};
use crate::store::{NewEvent, Rotation, Store, StoreError};

/// The first release with the endpoint (docs/gitlab-contract.md §13).
const SINCE: GitLabVersion = GitLabVersion {
    major: 16,
    minor: 10,
};

/// GitLab's longest lifetime for a token with an expiry: a year.
const MAX_LIFETIME_DAYS: i64 = 365;

/// The digest of the configured token a rotated one descends from: a
/// different configured token means a person replaced it, and it wins.
pub(crate) fn seed_of(token: &SecretString) -> String {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    format!(
        "{:x}",
        sha2::Sha256::digest(token.expose_secret().as_bytes())
    )
}

/// The rotation row of `conn`'s configured token, its token opened; none
/// for OAuth connections and for a row of another configured token.
pub(crate) async fn stored_rotation(
    store: &Store,
    custody: &crate::custody::Custody,
    conn: &Connection,
) -> Result<Option<Rotation>, StoreError> {
    if conn.kind != TokenKind::AccessToken {
        return Ok(None);
    }
    store
        .rotation(&conn.name, custody, &seed_of(&conn.token))
        .await
}

/// The token `conn` uses: the one its configured token was rotated into
/// (`rotation`, from [`stored_rotation`]), else the configured one.
pub(crate) fn token_in_use(conn: &Connection, rotation: Option<&Rotation>) -> SecretString {
    rotation
        .and_then(|r| r.token.clone())
        .unwrap_or_else(|| conn.token.clone())
}

/// Days before its expiry at which a connection's token is `expiring` (a
/// person's matter): `check.token_expiry_warning_days`, or sooner where
/// glwarden rotates it, once its rotation is due and did not happen.
pub(crate) fn warning_days(cfg: &crate::config::Config, conn: &Connection) -> u32 {
    let warning = cfg.raw.check.token_expiry_warning_days;
    conn.rotate_before_days
        .map_or(warning, |days| days.min(warning))
}

/// Forgets a rotation row that descends from a token no longer configured
/// (a person replaced it): its token, begun rotation and failure are moot.
pub(crate) async fn forget_if_replaced(
    store: &Store,
    connection: &str,
    seed: &str,
) -> Result<(), StoreError> {
    match store.rotation_seed(connection).await? {
        Some(stored) if stored != seed => {
            tracing::info!(
                connection,
                "a new token is configured: the token glwarden rotated before is no longer used"
            );
            store.forget_rotation(connection).await
        }
        _ => Ok(()),
    }
}

/// A connection refused while a rotation of its token is noted says why:
/// the answer of a rotation that ended without one (or that nobody is
/// finishing) is lost; one that another process has under way is not
/// settled yet, and the check says `unknown` rather than flip the state.
pub(crate) fn explain_refusal(
    verdict: &mut ConnectionVerdict,
    rotation: Option<&Rotation>,
    stale_before: chrono::DateTime<Utc>,
) {
    let Some((rotation, begun)) = rotation.and_then(|r| r.begun_at.map(|at| (r, at))) else {
        return;
    };
    if verdict.observation.state() != State::NotConnected {
        return;
    }
    let from = rotation
        .begun_from
        .map_or_else(String::new, |id| format!(" of token {id}"));
    let at = begun.format("%Y-%m-%d %H:%M:%S UTC");
    // Refused either way: its projects are not asked with this token.
    verdict.usable = false;
    verdict.observation = if rotation.failure.is_empty() && begun >= stale_before {
        Observation::unknown(format!(
            "{}: a rotation{from} begun at {at} by another glwarden process is under way",
            verdict.observation.detail()
        ))
    } else {
        Observation::definite(
            State::NotConnected,
            format!(
                "{}: rotation answer lost (the rotation{from} begun at {at} got no stored answer, and GitLab revoked the token it rotated); configure a new token",
                verdict.observation.detail()
            ),
        )
    };
}

/// Days of life the rotated token gets: the old token's, at most a year,
/// and more than `rotate_before_days` (or it would be rotated again at once).
pub(crate) fn new_lifetime_days(info: &AccessTokenInfo, rotate_before_days: u32) -> i64 {
    let lifetime = match (info.created_at, info.expires_at) {
        (Some(created), Some(expires)) => (expires - created.date_naive()).num_days(),
        _ => MAX_LIFETIME_DAYS,
    };
    lifetime.clamp(i64::from(rotate_before_days) + 1, MAX_LIFETIME_DAYS)
}

/// What became of one connection's rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// A new token is stored and in use.
    Ok { from: u64, to: u64 },
    /// The old token stays in use (or the answer is lost); why.
    Failed(String),
    /// Another glwarden process (a command beside the daemon) is rotating
    /// it, or just did: not asked.
    Busy,
}

/// How long a claimed rotation may stay unended before it is taken for
/// one that no process is finishing (a crash, an answer that never came):
/// longer than the claim's owner can wait for its slot and GitLab's answer
/// (each of a 429's two pauses, the request, and GitLab still working on a
/// request the client gave up on). 6 minutes with the defaults.
pub(crate) fn claim_window(cfg: &crate::config::Config) -> chrono::TimeDelta {
    let wait = cfg.raw.check.request_timeout() * 4
        + std::time::Duration::from_secs(cfg.raw.check.max_rate_limit_wait_seconds) * 2;
    chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::hours(1))
}

fn stale_before(cfg: &crate::config::Config) -> chrono::DateTime<Utc> {
    Utc::now() - claim_window(cfg)
}

impl Sweeper {
    /// Rotates the tokens due under `rotate_before_days`; returns each
    /// attempt by connection. Only the leader rotates (GitLab writes are
    /// gated, and `rotated_tokens` is fenced on PostgreSQL).
    pub(super) async fn rotate_tokens(
        &self,
        verdicts: &mut std::collections::BTreeMap<String, ConnectionVerdict>,
    ) -> Result<Vec<(String, Rotated)>, StoreError> {
        let mut done = Vec::new();
        if !self.store.leads() {
            return Ok(done);
        }
        let today = Utc::now().date_naive();
        for (name, conn) in &self.cfg.connections {
            let (Some(days), TokenKind::AccessToken) = (conn.rotate_before_days, conn.kind) else {
                continue;
            };
            let Some(verdict) = verdicts.get_mut(name) else {
                continue;
            };
            let due = verdict.usable
                && verdict
                    .token
                    .as_ref()
                    .and_then(|t| t.days_left(today))
                    .is_some_and(|left| left <= i64::from(days));
            if !due {
                continue;
            }
            let outcome = self.rotate_one(conn, days, verdict).await?;
            done.push((name.clone(), outcome));
        }
        Ok(done)
    }

    async fn rotate_one(
        &self,
        conn: &Connection,
        days: u32,
        verdict: &mut ConnectionVerdict,
    ) -> Result<Rotated, StoreError> {
        let name = conn.name.as_str();
        let client = &self.clients[name];
        let seed = seed_of(&conn.token);
        // The token's own details: its id and lifetime (asked again, as the
        // probe keeps only what `status` shows).
        let info = match client.access_token_self().await {
            Ok(info) => info,
            Err(e) => {
                return Ok(Rotated::Failed(format!(
                    "the token's details could not be read: {e}"
                )));
            }
        };
        // Claimed first: the row also holds a refusal, and a claim another
        // process holds means it decides.
        let claimed = self
            .store
            .rotation_begun(
                name,
                &seed,
                info.id as i64,
                Utc::now(),
                stale_before(&self.cfg),
            )
            .await?;
        if !claimed {
            tracing::info!(
                connection = name,
                "another glwarden process is rotating this token, or just did: not asked"
            );
            return Ok(Rotated::Busy);
        }
        if let Some(version) = verdict.version.filter(|v| *v < SINCE) {
            let why = format!(
                "GitLab {}.{} has no token self-rotation (16.10 or later); rotate the token by hand",
                version.major, version.minor
            );
            return self.failed(name, &info, why, false).await;
        }
        let expires_at = today_plus(new_lifetime_days(&info, days));
        let answer = client.rotate_self(expires_at).await;
        let rotated = match answer {
            Ok(rotated) => rotated,
            Err(e) if matches!(e.kind, ErrorKind::NotLeading) => {
                // Not sent: another replica leads now, and it decides. The
                // note is withdrawn if the database still lets this replica
                // write (if not, the new leader's probe finds the token
                // working and rotates it afresh).
                if let Err(withdrawn) = self.store.rotation_failed(name, "", false).await {
                    tracing::debug!(error = %withdrawn, "the rotation note stays for the new leader");
                }
                return Ok(Rotated::Failed(e.to_string()));
            }
            Err(e) if not_processed(&e) => {
                let why = format!("GitLab did not take the rotation: {e}; the token stays in use");
                return self.failed(name, &info, why, false).await;
            }
            Err(e) => return self.settle_unanswered(client, name, &info, e).await,
        };
        // Stored before anything else: GitLab has revoked the old token.
        client.set_token(&rotated.token);
        let answer = Answered {
            seed: seed.clone(),
            token: rotated.token.clone(),
            id: rotated.id,
            expires_at: rotated.expires_at,
        };
        let stored = self.store_answer(name, &answer).await;
        if let Err(e) = &stored {
            tracing::error!(connection = name, error = %e, "the rotated token could not be stored; it is used from memory, stored again at each sweep, and lost if the process ends first");
            self.unstored
                .lock()
                .expect("unstored lock")
                .insert(name.to_owned(), answer);
        }
        let expiry = rotated
            .expires_at
            .map_or_else(|| "no expiry".to_owned(), |d| format!("expires {d}"));
        let event = NewEvent {
            project_id: None,
            component: "connection",
            action: "rotate_token",
            cause: &format!(
                "connection {name}: token {} expires within {days} days",
                info.id
            ),
            before: &format!(
                "token {}, {}",
                info.id,
                info.expires_at
                    .map_or_else(|| "no expiry".to_owned(), |d| format!("expires {d}"))
            ),
            after: &format!("token {}, {expiry}", rotated.id),
            outcome: if stored.is_ok() {
                "ok"
            } else {
                "ok (not stored yet: used from memory, stored again at each sweep)"
            },
        };
        self.store.record_event(&event).await?;
        tracing::info!(connection = name, from = info.id, to = rotated.id, expiry = %expiry, "access token rotated");
        // Asked again with the new token: the connection's state is its.
        let mut again =
            super::probe_connection(client, conn.kind, warning_days(&self.cfg, conn)).await;
        if again.version.is_none() {
            again.version = verdict.version;
        }
        *verdict = again;
        Ok(Rotated::Ok {
            from: info.id,
            to: rotated.id,
        })
    }

    /// A rotation whose answer did not arrive (a timeout, a 5xx, an answer
    /// not understood): GitLab may have rotated, or may still be doing so.
    /// The old token refused says it did, and the answer is lost; the old
    /// token still working says nothing yet (the request may still be
    /// running), so the claim stays until [`claim_window`] has passed and
    /// a later sweep finds out.
    async fn settle_unanswered(
        &self,
        client: &GitLab,
        name: &str,
        info: &AccessTokenInfo,
        e: ApiError,
    ) -> Result<Rotated, StoreError> {
        let why = match client.access_token_self().await {
            Err(check) if matches!(check.kind, ErrorKind::Unauthorized { .. }) => format!(
                "rotation answer lost: GitLab rotated token {} but its answer did not arrive ({e}); the new token is unknown, configure a new token",
                info.id
            ),
            _ => format!(
                "the rotation's answer did not arrive ({e}); whether GitLab rotated is not known yet: the token stays in use, and a sweep after {} finds out",
                (Utc::now() + claim_window(&self.cfg)).format("%H:%M:%S UTC")
            ),
        };
        self.failed(name, info, why, true).await
    }

    /// Stores a rotation's answer, trying a few times: it is the only copy
    /// of the new token.
    async fn store_answer(&self, name: &str, answer: &Answered) -> Result<(), StoreError> {
        let mut tries = 0;
        loop {
            let stored = self
                .store
                .rotation_answered(
                    name,
                    &answer.seed,
                    &answer.token,
                    answer.id as i64,
                    answer.expires_at,
                    &self.cfg.custody,
                    Utc::now(),
                )
                .await;
            match stored {
                Err(e) if tries < 3 && !e.is_fenced() => {
                    tries += 1;
                    tracing::warn!(connection = name, error = %e, tries, "storing the rotated token failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(1 << tries)).await;
                }
                other => return other,
            }
        }
    }

    /// Stores the rotated tokens an earlier sweep could not (the first
    /// thing of a sweep's connection step); true when `name` has one still
    /// unstored, which is then the token in use.
    pub(super) async fn store_unstored(&self, name: &str) -> bool {
        let pending = self
            .unstored
            .lock()
            .expect("unstored lock")
            .get(name)
            .cloned();
        let Some(answer) = pending else {
            return false;
        };
        match self.store_answer(name, &answer).await {
            Ok(()) => {
                self.unstored.lock().expect("unstored lock").remove(name);
                tracing::info!(connection = name, "the rotated token is stored now");
                false
            }
            Err(e) => {
                tracing::error!(connection = name, error = %e, "the rotated token still cannot be stored; it is used from memory");
                true
            }
        }
    }

    async fn failed(
        &self,
        name: &str,
        info: &AccessTokenInfo,
        why: String,
        may_have_rotated: bool,
    ) -> Result<Rotated, StoreError> {
        let previous = self
            .store
            .rotation_failures()
            .await?
            .into_iter()
            .find_map(|(connection, why)| (connection == name).then_some(why));
        self.store
            .rotation_failed(name, &why, may_have_rotated)
            .await?;
        // Told once: a GitLab that cannot rotate says so at every sweep of
        // the days before the token expires.
        if previous.as_deref() == Some(why.as_str()) {
            tracing::debug!(
                connection = name,
                reason = why.as_str(),
                "access token still not rotated"
            );
            return Ok(Rotated::Failed(why));
        }
        self.store
            .record_event(&NewEvent {
                project_id: None,
                component: "connection",
                action: "rotate_token",
                cause: &format!("connection {name}: token {} expires soon", info.id),
                before: &format!("token {}", info.id),
                after: "",
                outcome: &format!("failed: {why}"),
            })
            .await?;
        tracing::warn!(
            connection = name,
            reason = why.as_str(),
            "access token not rotated"
        );
        Ok(Rotated::Failed(why))
    }
}

/// An answer after which GitLab has certainly not rotated: a 4xx (scope,
/// method, route, expiry limit; a 401 too: the token was dead already) or
/// a 429 (throttled before the endpoint ran). A timeout, a 5xx, a lost
/// connection or a 200 not understood may hide a rotation.
fn not_processed(e: &ApiError) -> bool {
    matches!(
        e.kind,
        ErrorKind::RateLimited { .. } | ErrorKind::RateLimitedUntil { .. }
    ) || !e.is_transient()
}

/// A rotation's answer, kept until the store has it.
#[derive(Clone)]
pub(crate) struct Answered {
    seed: String,
    token: SecretString,
    id: u64,
    expires_at: Option<NaiveDate>,
}

fn today_plus(days: i64) -> Option<NaiveDate> {
    Utc::now()
        .date_naive()
        .checked_add_days(chrono::Days::new(days.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(created: &str, expires: Option<&str>) -> AccessTokenInfo {
        AccessTokenInfo {
            id: 4,
            name: None,
            revoked: false,
            active: true,
            scopes: vec!["api".into()],
            expires_at: expires.map(|d| d.parse().unwrap()),
            created_at: Some(format!("{created}T10:00:00Z").parse().unwrap()),
        }
    }

    #[test]
    fn a_rotated_token_keeps_its_lifetime_within_gitlabs_year() {
        // A 90-day token gets 90 days again.
        assert_eq!(
            new_lifetime_days(&info("2026-01-01", Some("2026-04-01")), 7),
            90
        );
        // Never more than a year, whatever it had (older tokens: 400 days and more).
        assert_eq!(
            new_lifetime_days(&info("2024-01-01", Some("2026-01-01")), 7),
            365
        );
        // Never so short that it is due again at once.
        assert_eq!(
            new_lifetime_days(&info("2026-01-01", Some("2026-01-05")), 7),
            8
        );
        // Lifetime unknown: a year.
        let mut unknown = info("2026-01-01", None);
        unknown.created_at = None;
        assert_eq!(new_lifetime_days(&unknown, 7), 365);
    }

    #[test]
    fn only_an_answer_gitlab_gave_before_rotating_settles_it() {
        let error = |kind| ApiError {
            method: "POST",
            endpoint: "/personal_access_tokens/self/rotate".into(),
            kind,
        };
        assert!(not_processed(&error(ErrorKind::Rejected {
            status: 400,
            message: "Expiration date must be before 2027-12-01".into()
        })));
        assert!(not_processed(&error(ErrorKind::RateLimited {
            retry_after: None
        })));
        assert!(!not_processed(&error(ErrorKind::Timeout)));
        assert!(!not_processed(&error(ErrorKind::Server {
            status: 502,
            message: String::new()
        })));
        // A 200 whose body was not a token: GitLab may have rotated.
        assert!(!not_processed(&error(ErrorKind::BadResponse {
            status: 200,
            message: String::new()
        })));
    }
}
