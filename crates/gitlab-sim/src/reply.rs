//! A response built under the world lock and turned into an HTTP response
//! after the lock is released, plus the GitLab/Grape error body shapes:
//! helpers (`not_found!`, `forbidden!`, ...) answer `{"message": ...}`,
//! Grape's `error!` and parameter validation answer `{"error": ...}`.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub(crate) enum ReplyBody {
    Json(Value),
    Text(String),
    Empty,
}

#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
}

pub(crate) type Res = Result<Reply, Reply>;

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(v),
        }
    }

    pub fn ok(v: Value) -> Reply {
        Self::json(200, v)
    }

    pub fn created(v: Value) -> Reply {
        Self::json(201, v)
    }

    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            headers: Vec::new(),
            body: ReplyBody::Empty,
        }
    }

    pub fn text(status: u16, s: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Text(s.into()),
        }
    }

    /// `{"message": msg}`: the API helpers' shape.
    pub fn message(status: u16, msg: impl Into<String>) -> Reply {
        Self::json(status, json!({ "message": msg.into() }))
    }

    /// `{"error": msg}`: Grape's `error!` and parameter validation shape.
    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Self::json(status, json!({ "error": msg.into() }))
    }

    /// `not_found!('Project')` -> `404 Project Not Found`.
    pub fn not_found(resource: &str) -> Reply {
        Self::message(404, format!("404 {resource} Not Found"))
    }

    /// ActiveRecord::RecordNotFound rescued by the API.
    pub fn record_not_found() -> Reply {
        Self::message(404, "404 Not found")
    }

    pub fn forbidden() -> Reply {
        Self::message(403, "403 Forbidden")
    }

    /// Grape's answer for a route that does not exist.
    pub fn route_not_found() -> Reply {
        Self::error(404, "404 Not Found")
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn headers(mut self, hs: Vec<(String, String)>) -> Reply {
        self.headers.extend(hs);
        self
    }

    /// Serialised body and its content type.
    pub fn body_bytes(&self) -> (Vec<u8>, Option<&'static str>) {
        match &self.body {
            ReplyBody::Json(v) => (
                serde_json::to_vec(v).unwrap_or_default(),
                Some("application/json"),
            ),
            ReplyBody::Text(s) => (s.clone().into_bytes(), Some("text/plain; charset=utf-8")),
            ReplyBody::Empty => (Vec::new(), None),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (bytes, ctype) = self.body_bytes();
        build(self.status, &self.headers, ctype, Body::from(bytes))
    }
}

/// Assembles a response; invalid header names or values are skipped (they
/// can only come from a test's own control input).
pub(crate) fn build(
    status: u16,
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: Body,
) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    if let Some(ct) = content_type {
        h.insert("content-type", HeaderValue::from_str(ct).expect("static"));
    }
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    resp
}
