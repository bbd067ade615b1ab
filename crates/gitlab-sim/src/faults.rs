//! Fault injection: picking the fault for a request and shaping the broken
//! answer. Faults that replace the answer (status pages, garbage, huge
//! bodies, 429s) skip the real handler so they change no state; faults that
//! damage the answer (truncation, wrong shape, slow body) run it first.

use std::time::Duration;

use axum::body::Body;
use serde_json::{Value, json};

use super::reply::{Reply, ReplyBody, build};
use super::world::World;
use super::{Fault, FaultKind};

fn matches(f: &Fault, method: &str, path: &str) -> bool {
    f.method
        .as_deref()
        .is_none_or(|m| m.eq_ignore_ascii_case(method))
        && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
}

/// The first matching fault, counting down its `times`.
pub(crate) fn take(w: &mut World, method: &str, path: &str) -> Option<FaultKind> {
    let i = w.faults.iter().position(|f| matches(f, method, path))?;
    let f = &mut w.faults[i];
    let kind = f.kind.clone();
    if let Some(t) = f.times.as_mut() {
        *t = t.saturating_sub(1);
        if *t == 0 {
            w.faults.remove(i);
        }
    }
    Some(kind)
}

fn reason(code: u16) -> &'static str {
    axum::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The answer for faults that replace the handler, with its status.
pub(crate) fn replacement(kind: &FaultKind) -> Option<(u16, axum::response::Response)> {
    let resp = match kind {
        FaultKind::Status { code, html: true } => {
            // What nginx in front of GitLab serves when Puma is down.
            let title = format!("{code} {}", reason(*code));
            let page = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            (
                *code,
                build(*code, &[], Some("text/html"), Body::from(page)),
            )
        }
        FaultKind::Status { code, html: false } => {
            let r = Reply::message(*code, format!("{code} {}", reason(*code)));
            (*code, r.into_response())
        }
        FaultKind::RateLimited { retry_after } => {
            let mut r = Reply::text(429, "Retry later");
            if let Some(s) = retry_after {
                r = r.header("retry-after", s.to_string());
            }
            (429, r.into_response())
        }
        FaultKind::GarbageJson => {
            let body = "<!DOCTYPE html>{\"id\": 1, \u{0}garbage";
            (
                200,
                build(200, &[], Some("application/json"), Body::from(body)),
            )
        }
        FaultKind::Oversized { bytes } => (
            200,
            build(
                200,
                &[],
                Some("application/json"),
                Body::from(oversized(*bytes)),
            ),
        ),
        _ => return None,
    };
    Some(resp)
}

/// A JSON array of plausible objects at least `bytes` long.
fn oversized(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 128);
    s.push('[');
    let mut id = 1u64;
    while s.len() < bytes {
        if id > 1 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{id},\"title\":\"padding-{id}\",\"key\":\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{id:0>40}\",\"can_push\":false}}"
        ));
        id += 1;
    }
    s.push(']');
    s
}

/// Replaces `id` by a string and drops the fields clients rely on.
fn wrong_shape(v: Value) -> Value {
    const REQUIRED: &[&str] = &[
        "path_with_namespace",
        "fingerprint_sha256",
        "url",
        "key",
        "username",
        "alert_status",
        "access_token",
        "scopes",
    ];
    match v {
        Value::Object(mut m) => {
            m.insert("id".into(), json!("abc"));
            for k in REQUIRED {
                m.remove(*k);
            }
            Value::Object(m)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(wrong_shape).collect()),
        _ => json!({ "unexpected": "shape" }),
    }
}

/// The real answer, damaged as `kind` says.
/// A fixed Ed25519 key that is nobody's: what [`FaultKind::ForeignKey`] serves.
const FOREIGN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC5hh88F3Gy9/e6mU6cIsVL1+G53OxMQQ/Mw7pplXECb foreign";

fn foreign_key(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.contains_key("key") => {
            if let Some(parsed) = super::keys::parse(FOREIGN_KEY) {
                m.insert("key".into(), json!(parsed.text));
                m.insert(
                    "fingerprint_sha256".into(),
                    json!(super::keys::fingerprint_sha256(&parsed.blob)),
                );
                m.insert(
                    "fingerprint".into(),
                    json!(super::keys::fingerprint_md5(&parsed.blob)),
                );
            }
            Value::Object(m)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(foreign_key).collect()),
        other => other,
    }
}

pub(crate) fn damage(kind: Option<&FaultKind>, reply: Reply) -> axum::response::Response {
    match kind {
        Some(FaultKind::SpentWindow { reset }) => {
            let mut reply = reply;
            reply.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("ratelimit-remaining")
                    && !name.eq_ignore_ascii_case("ratelimit-reset")
            });
            reply
                .headers
                .push(("ratelimit-remaining".into(), "0".into()));
            reply
                .headers
                .push(("ratelimit-reset".into(), reset.to_string()));
            reply.into_response()
        }
        Some(FaultKind::ForeignKey) => match reply.body {
            ReplyBody::Json(v) => Reply {
                body: ReplyBody::Json(foreign_key(v)),
                ..reply
            }
            .into_response(),
            _ => reply.into_response(),
        },
        Some(FaultKind::TruncatedJson) => {
            let (bytes, ctype) = reply.body_bytes();
            let cut = bytes[..bytes.len() / 2].to_vec();
            build(200, &reply.headers, ctype, Body::from(cut))
        }
        Some(FaultKind::WrongShape) => {
            let v = match reply.body {
                ReplyBody::Json(v) => wrong_shape(v),
                _ => wrong_shape(Value::Null),
            };
            Reply::ok(v).headers(reply.headers).into_response()
        }
        Some(FaultKind::SlowBody { chunk_delay }) => {
            let (bytes, ctype) = reply.body_bytes();
            build(
                reply.status,
                &reply.headers,
                ctype,
                drip(bytes, *chunk_delay),
            )
        }
        _ => reply.into_response(),
    }
}

/// A body released a few bytes at a time.
fn drip(bytes: Vec<u8>, delay: Duration) -> Body {
    const CHUNK: usize = 8;
    let stream = futures::stream::unfold((bytes, 0usize), move |(bytes, pos)| async move {
        if pos >= bytes.len() {
            return None;
        }
        tokio::time::sleep(delay).await;
        let end = (pos + CHUNK).min(bytes.len());
        let chunk = axum::body::Bytes::copy_from_slice(&bytes[pos..end]);
        Some((Ok::<_, std::io::Error>(chunk), (bytes, end)))
    });
    Body::from_stream(stream)
}
