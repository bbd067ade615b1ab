//! Pacing and rate limits: each connection's request budget, GitLab's
//! per-endpoint limits, and the pauses a 429 or a spent window impose, all
//! capped by `check.max_rate_limit_wait_seconds`.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::header_str;

/// Splits a per-minute budget into a burst and an even rate whose sum is the budget.
pub(super) fn pacer_shape(requests_per_minute: u32) -> (std::num::NonZeroU32, u32) {
    let r = requests_per_minute.max(2);
    let burst = (r / 600).max(1);
    (
        std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN),
        r - burst,
    )
}

/// First pause after a 5xx or timeout; doubled per consecutive failure.
pub(super) const BACKOFF_BASE: Duration = Duration::from_millis(250);

pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Exponential back-off with ±50% jitter, so that many clients do not retry in step.
pub(super) fn backoff(consecutive_failures: u32) -> Duration {
    use rand::Rng;
    let exp = BACKOFF_BASE.saturating_mul(1u32 << consecutive_failures.saturating_sub(1).min(16));
    let capped = exp.min(BACKOFF_MAX);
    capped.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

/// What GitLab last told us about this connection's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix time when the window resets.
    pub reset: Option<u64>,
}

/// GitLab's application limits on single endpoints, per user, by endpoint
/// class: (class, requests, window in seconds). GitLab.com's figures, and
/// self-managed defaults since 18.1 (docs/gitlab-contract.md §8). Each is
/// paced on its own, a full window's budget at once and then refilled at
/// the window's rate, so one fleet's lookups never spend another's.
pub(super) const ENDPOINT_BUDGETS: &[(&str, u32, u64)] = &[
    ("project", 400, 60),
    ("projects", 2_000, 600),
    ("group_projects", 600, 60),
];

/// Per-connection pacing: the request budget, a pause after a 429 or when
/// GitLab says the window is spent, and back-off after 5xx and timeouts.
/// Shared by every request of the connection. A 429 from an application
/// limit of one endpoint pauses that endpoint class only.
#[derive(Default)]
pub struct RateGate {
    pub(super) paused_until: Mutex<Option<Instant>>,
    /// Endpoint classes paused by their own application limit.
    pub(super) endpoint_paused_until: Mutex<std::collections::HashMap<&'static str, Instant>>,
    pub(super) info: Mutex<RateLimitInfo>,
    /// Until when GitLab asked to be left alone, when that is longer than
    /// `max_rate_limit_wait`: requests fail at once with the time rather
    /// than wait (a far-future `RateLimit-Reset` would stall the connection
    /// for good). Cleared by each sweep's first request, which asks again.
    pub(super) refused_until: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    pub(super) consecutive_failures: std::sync::atomic::AtomicU32,
    pub(super) pacer: Option<Pacer>,
    pub(super) endpoint_pacers: std::collections::HashMap<&'static str, Pacer>,
}

impl RateGate {
    pub(super) fn new(requests_per_minute: Option<u32>) -> Self {
        // A small burst (a tenth of a second's budget) and the rest evenly
        // spaced: burst + rate never exceed the budget in any 60-second
        // window, a sweep is a steady trickle, and requests that arrive
        // together do not each wait on a timer.
        let pacer = requests_per_minute.and_then(|r| {
            let (burst, rate) = pacer_shape(r);
            governor::Quota::with_period(Duration::from_secs_f64(60.0 / f64::from(rate)))
                .map(|q| governor::RateLimiter::direct(q.allow_burst(burst)))
        });
        let endpoint_pacers = ENDPOINT_BUDGETS
            .iter()
            .filter_map(|&(class, limit, window)| {
                let burst = std::num::NonZeroU32::new(limit)?;
                let quota = governor::Quota::with_period(Duration::from_secs(window) / limit)?
                    .allow_burst(burst);
                Some((class, governor::RateLimiter::direct(quota)))
            })
            .collect();
        Self {
            pacer,
            endpoint_pacers,
            ..Self::default()
        }
    }

    /// Waits for the budgets and until no pause is in force.
    pub(super) async fn wait(&self, class: &'static str) {
        self.wait_pause().await;
        self.wait_endpoint_pause(class).await;
        if let Some(pacer) = self.endpoint_pacers.get(class) {
            pacer.until_ready().await;
        }
        if let Some(pacer) = &self.pacer {
            pacer.until_ready().await;
        }
        // A pause may have started while we waited for a slot.
        self.wait_pause().await;
        self.wait_endpoint_pause(class).await;
    }

    pub(super) async fn wait_endpoint_pause(&self, class: &'static str) {
        loop {
            let until = self
                .endpoint_paused_until
                .lock()
                .expect("rate gate lock")
                .get(class)
                .copied();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Pauses one endpoint class until `now + d` (never shortens a pause).
    pub(super) fn pause_endpoint_for(&self, class: &'static str, d: Duration) {
        let Some(until) = Instant::now().checked_add(d) else {
            return;
        };
        let mut pauses = self.endpoint_paused_until.lock().expect("rate gate lock");
        let entry = pauses.entry(class).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    pub(super) async fn wait_pause(&self) {
        loop {
            let until = *self.paused_until.lock().expect("rate gate lock");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// Pauses the connection until `now + d` (never shortens a longer pause).
    pub(super) fn pause_for(&self, d: Duration) {
        let Some(until) = Instant::now().checked_add(d) else {
            return;
        };
        let mut guard = self.paused_until.lock().expect("rate gate lock");
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    /// A wait GitLab asked for (`Retry-After`, or `RateLimit-Reset` with
    /// nothing remaining): beyond `cap`, nothing is sent until it ends (or
    /// the next sweep) and its end is returned; within it, `None`, and the
    /// caller pauses. Checked: `Retry-After: 18446744073709551615` is a
    /// valid header and no clock reaches it. A refusal is never shortened.
    pub(super) fn refuse_beyond(
        &self,
        wait: Duration,
        cap: Duration,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        if wait <= cap {
            return None;
        }
        let until = chrono::TimeDelta::from_std(wait)
            .ok()
            .and_then(|d| chrono::Utc::now().checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let mut guard = self.refused_until.lock().expect("rate gate lock");
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
        Some(until)
    }

    /// The refusal in force, if any.
    pub(super) fn refusal(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let until = *self.refused_until.lock().expect("rate gate lock");
        until.filter(|t| *t > chrono::Utc::now())
    }

    pub fn info(&self) -> RateLimitInfo {
        *self.info.lock().expect("rate gate lock")
    }

    /// A 5xx or timeout: pause the connection, longer each time in a row.
    /// Requests that fail while a pause is already in force were in flight
    /// together and are one incident: they do not lengthen the pause.
    pub(super) fn failed(&self) {
        // Checked and set under one lock: two failures at the same instant
        // must not both find no pause and both lengthen the next one.
        let now = Instant::now();
        let mut paused_until = self.paused_until.lock().expect("rate gate lock");
        if paused_until.is_some_and(|t| t > now) {
            return;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        *paused_until = Some(now + backoff(n));
    }

    pub(super) fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }
}

/// Whether a 429 comes from an application limit on one endpoint
/// (`check_rate_limit!`: a JSON body, no `RateLimit-*` headers) rather than
/// from Rack::Attack's per-user throttle (plain text `Retry later`, with
/// `RateLimit-Name` and friends); docs/gitlab-contract.md §8.
pub(super) fn is_endpoint_limit(headers: &HeaderMap) -> bool {
    let json = header_str(headers, "content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    json && !headers.contains_key("ratelimit-name") && !headers.contains_key("ratelimit-limit")
}

/// How long GitLab asks us to wait: `Retry-After` seconds, else the
/// `RateLimit-Reset` unix time.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(secs) =
        header_str(headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    let reset =
        header_str(headers, "ratelimit-reset").and_then(|v| v.trim().parse::<i64>().ok())?;
    let now = chrono::Utc::now().timestamp();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1) as u64))
}

type Pacer = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;
