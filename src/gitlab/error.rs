//! Every way a GitLab request can fail, classified so that callers can tell a
//! real answer about the world (401, 403, 404, 405) from a transient failure
//! (5xx, 429, timeouts, resets, bodies that are not the JSON we expect).
//!
//! Messages quote GitLab's own words (bounded and sanitised) and the endpoint
//! path, never a header or a query string, so no credential can leak into them.

use std::time::Duration;

/// A failed request: which endpoint, and what went wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} {endpoint}: {kind}")]
pub struct ApiError {
    pub method: &'static str,
    /// Path below the API root, without the query string.
    pub endpoint: String,
    pub kind: ErrorKind,
}

/// Why a 401 was answered: GitLab's `lib/api/api_guard.rb` answers an
/// expired or revoked token with `invalid_token` and an `error_description`
/// ("Token is expired. …", "Token was revoked. …").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Expired,
    Revoked,
    /// GitLab refused the OAuth refresh token.
    RefreshRefused,
}

impl TokenProblem {
    pub fn describe(self) -> &'static str {
        match self {
            TokenProblem::Unknown => "token unknown to GitLab",
            TokenProblem::Expired => "token expired",
            TokenProblem::Revoked => "token revoked",
            TokenProblem::RefreshRefused => "OAuth refresh refused",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ErrorKind {
    #[error("HTTP 401: {}", .problem.describe())]
    Unauthorized { problem: TokenProblem },
    #[error("HTTP 403: token lacks the `{scope}` scope")]
    InsufficientScope { scope: String },
    #[error("HTTP 403: {message}")]
    Forbidden { message: String },
    #[error("HTTP 404: {message}")]
    NotFound { message: String },
    #[error("HTTP 405: {message}")]
    MovedProject { message: String },
    #[error("HTTP 429: rate limited{}", retry_hint(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// GitLab asked for a wait longer than `check.max_rate_limit_wait_seconds`.
    #[error(
        "rate limited until {} (longer than check.max_rate_limit_wait_seconds): not asked again this sweep",
        .until.format("%Y-%m-%d %H:%M:%S UTC")
    )]
    RateLimitedUntil {
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Not sent: this replica's leader lease may have run out (another
    /// replica may lead now). Says nothing about GitLab.
    #[error("not sent: this replica no longer holds the leader's lease")]
    NotLeading,
    #[error("HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("unusable answer (HTTP {status}): {message}")]
    BadResponse { status: u16, message: String },
}

fn retry_hint(after: &Option<Duration>) -> String {
    match after {
        Some(d) => format!(", retry after {}s", d.as_secs()),
        None => String::new(),
    }
}

impl ErrorKind {
    /// A failure that says nothing about the world: the component becomes
    /// `unknown`, keeps its last known state and is never repaired because of it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited { .. }
                | ErrorKind::RateLimitedUntil { .. }
                | ErrorKind::Server { .. }
                | ErrorKind::Timeout
                | ErrorKind::Connection(_)
                | ErrorKind::BadResponse { .. }
                | ErrorKind::NotLeading
        )
    }
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::NotFound { .. })
    }
}

/// Classifies a non-2xx answer from its status, content type and body.
pub fn classify(
    status: u16,
    content_type: &str,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ErrorKind {
    let json: Option<serde_json::Value> = if looks_like_json(content_type, body) {
        serde_json::from_slice(body).ok()
    } else {
        None
    };
    let message = json
        .as_ref()
        .map(message_of)
        .unwrap_or_else(|| text_summary(status, content_type, body));
    match status {
        429 => ErrorKind::RateLimited { retry_after },
        500..=599 => ErrorKind::Server { status, message },
        // A 4xx behind an HTML page is not GitLab speaking (a proxy, a
        // maintenance page): only a JSON body is taken as GitLab's word.
        _ if json.is_none() => ErrorKind::BadResponse { status, message },
        401 => {
            let description = json
                .as_ref()
                .and_then(|j| j.get("error_description"))
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            let problem = if description.contains("expired") {
                TokenProblem::Expired
            } else if description.contains("revoked") {
                TokenProblem::Revoked
            } else {
                TokenProblem::Unknown
            };
            ErrorKind::Unauthorized { problem }
        }
        403 => match json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(|e| e.as_str())
        {
            Some("insufficient_scope") => ErrorKind::InsufficientScope {
                scope: json
                    .as_ref()
                    .and_then(|j| j.get("scope"))
                    .and_then(|s| s.as_str())
                    .unwrap_or("api")
                    .to_owned(),
            },
            _ => ErrorKind::Forbidden { message },
        },
        404 => ErrorKind::NotFound { message },
        405 => ErrorKind::MovedProject { message },
        _ => ErrorKind::Rejected { status, message },
    }
}

fn looks_like_json(content_type: &str, body: &[u8]) -> bool {
    content_type.contains("json")
        || body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[')
}

/// GitLab's error text: `message` (a string or a validation map) or
/// `error`/`error_description` (`lib/api/api_guard.rb`, and Doorkeeper's
/// OAuth errors).
fn message_of(json: &serde_json::Value) -> String {
    let text = match (
        json.get("message"),
        json.get("error"),
        json.get("error_description"),
    ) {
        (Some(serde_json::Value::String(m)), _, _) => m.clone(),
        (Some(other), _, _) => other.to_string(),
        (None, Some(e), Some(d)) => format!("{}: {}", as_text(e), as_text(d)),
        (None, Some(e), None) => as_text(e),
        _ => json.to_string(),
    };
    sanitize(&text)
}

fn as_text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

/// A readable one-line summary of a non-JSON body (an HTML 502 page, plain text).
pub fn text_summary(status: u16, content_type: &str, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let is_html = content_type.contains("html") || text.trim_start().starts_with('<');
    if is_html {
        let title = extract_title(&text).unwrap_or_else(|| canonical_reason(status).to_owned());
        return format!("{} (HTML error page)", sanitize(&title));
    }
    let text = text.trim();
    if text.is_empty() {
        canonical_reason(status).to_owned()
    } else {
        sanitize(text)
    }
}

fn extract_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = lower[start..].find("</title>")? + start;
    let title = html.get(start..end)?.trim();
    (!title.is_empty()).then(|| title.to_owned())
}

fn canonical_reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status")
}

/// Bounds a message to one short line without control characters, so that a
/// hostile body cannot forge log lines or flood a terminal.
pub fn sanitize(text: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_bodies_tell_revoked_expired_unknown() {
        let revoked = br#"{"error":"invalid_token","error_description":"Token was revoked. You have to re-authorize from the user."}"#;
        let expired = br#"{"error":"invalid_token","error_description":"Token is expired. You can either do re-authorization or token refresh."}"#;
        let unknown = br#"{"message":"401 Unauthorized"}"#;
        let kind = |b: &[u8]| classify(401, "application/json", b, None);
        assert!(matches!(
            kind(revoked),
            ErrorKind::Unauthorized {
                problem: TokenProblem::Revoked
            }
        ));
        assert!(matches!(
            kind(expired),
            ErrorKind::Unauthorized {
                problem: TokenProblem::Expired
            }
        ));
        assert!(matches!(
            kind(unknown),
            ErrorKind::Unauthorized {
                problem: TokenProblem::Unknown
            }
        ));
    }

    #[test]
    fn forbidden_tells_scope_from_role() {
        let scope = br#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api"}"#;
        match classify(403, "application/json", scope, None) {
            ErrorKind::InsufficientScope { scope } => assert_eq!(scope, "api"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(
                403,
                "application/json",
                br#"{"message":"403 Forbidden"}"#,
                None
            ),
            ErrorKind::Forbidden { .. }
        ));
    }

    #[test]
    fn html_502_is_transient_with_a_readable_message() {
        let page = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";
        let kind = classify(502, "text/html", page, None);
        assert!(kind.is_transient());
        assert_eq!(
            kind.to_string(),
            "HTTP 502: 502 Bad Gateway (HTML error page)"
        );
    }

    #[test]
    fn html_404_from_a_proxy_is_not_taken_as_gitlab_saying_not_found() {
        let kind = classify(
            404,
            "text/html",
            b"<html><title>Not Found</title></html>",
            None,
        );
        assert!(kind.is_transient(), "{kind:?}");
    }

    #[test]
    fn moved_project_and_validation_errors() {
        let moved = classify(
            405,
            "application/json",
            br#"{"message":"Non GET methods are not allowed for moved projects"}"#,
            None,
        );
        assert!(matches!(moved, ErrorKind::MovedProject { .. }));
        let invalid = classify(
            422,
            "application/json",
            br#"{"error":"Invalid url given"}"#,
            None,
        );
        assert_eq!(invalid.to_string(), "HTTP 422: Invalid url given");
        assert!(!invalid.is_transient());
    }

    #[test]
    fn plain_text_429_keeps_retry_after() {
        let kind = classify(
            429,
            "text/plain",
            b"Retry later",
            Some(Duration::from_secs(7)),
        );
        assert_eq!(kind.to_string(), "HTTP 429: rate limited, retry after 7s");
        assert!(kind.is_transient());
    }

    #[test]
    fn sanitize_removes_control_characters_and_bounds_length() {
        let s = sanitize(&format!("line1\nline2\u{1b}[31m{}", "x".repeat(500)));
        assert!(!s.contains('\n') && !s.contains('\u{1b}'));
        assert!(s.chars().count() <= 202);
    }
}
