//! Rack::Attack-style authenticated API throttle: a fixed 60 s window per
//! user (all of a user's tokens share it, glwarden's docs/gitlab-contract.md §8), `RateLimit-*`
//! headers on every API answer while a limit is set, and a plain-text
//! `Retry later` 429 with `Retry-After` and `RateLimit-ResetTime`.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::reply::Reply;
use super::world::{Window, World};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts the request; `Ok(headers)` to add, or the 429 answer.
pub(crate) fn check(w: &mut World, user: Option<u64>) -> Result<Vec<(String, String)>, Reply> {
    let Some(limit) = w.rate_limit else {
        return Ok(Vec::new());
    };
    let key = user.map_or_else(|| "anonymous".to_string(), |u| format!("user:{u}"));
    let slot = w.rate_windows.entry(key).or_default();
    let (observed, left) = Window::hit(slot, WINDOW, Instant::now());
    let left_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let reset_at = Utc::now() + chrono::Duration::seconds(left_secs as i64);
    let headers = vec![
        ("ratelimit-limit".to_string(), limit.to_string()),
        (
            "ratelimit-name".to_string(),
            if user.is_some() {
                "throttle_authenticated_api"
            } else {
                "throttle_unauthenticated_api"
            }
            .to_string(),
        ),
        ("ratelimit-observed".to_string(), observed.to_string()),
        (
            "ratelimit-remaining".to_string(),
            limit.saturating_sub(observed).to_string(),
        ),
        (
            "ratelimit-reset".to_string(),
            reset_at.timestamp().to_string(),
        ),
    ];
    if observed <= limit {
        return Ok(headers);
    }
    Err(Reply::text(429, "Retry later")
        .headers(headers)
        .header("retry-after", left_secs.max(1).to_string())
        .header(
            "ratelimit-resettime",
            reset_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ))
}
