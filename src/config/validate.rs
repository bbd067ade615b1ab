//! Checks on the raw configuration, each naming the key at fault, and the
//! URLs derived from it (a connection's base URL, a project's expected
//! webhook URL).

use super::{Config, RawConfig, parse_cron};
use url::Url;

/// GitLab's longest access token lifetime (`expires_at` at most a year
/// ahead, docs/gitlab-contract.md §13): rotating earlier than that would
/// rotate at every sweep.
pub const MAX_ROTATE_BEFORE_DAYS: u32 = 364;

/// A connection's `url`, checked, in the form the store keeps it.
pub fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{raw}` has no host"));
    }
    // The token travels in every request: plain HTTP only where it cannot
    // leave the machine (the simulator, a local TLS-terminating proxy).
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(format!(
            "`{raw}` would send the token unencrypted: use https:// (http:// is accepted only for a loopback address)"
        ));
    }
    Ok(url)
}

pub(super) type KeyProblem = (String, String);

pub(super) fn validate(raw: &RawConfig) -> Result<(), KeyProblem> {
    let c = &raw.check;
    if c.concurrency == 0 || c.concurrency > 256 {
        return Err((
            "check.concurrency".into(),
            "must be between 1 and 256".into(),
        ));
    }
    if c.request_timeout_seconds == 0 {
        return Err((
            "check.request_timeout_seconds".into(),
            "must be at least 1".into(),
        ));
    }
    if c.connect_timeout_seconds == 0 {
        return Err((
            "check.connect_timeout_seconds".into(),
            "must be at least 1".into(),
        ));
    }
    if c.max_response_bytes < 1024 {
        return Err((
            "check.max_response_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    parse_cron(&raw.schedule.cron).map_err(|r| ("schedule.cron".to_owned(), r))?;
    let r = &raw.repair;
    if r.confirm_checks == 0 {
        return Err(("repair.confirm_checks".into(), "must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&r.storm_share) || r.storm_share == 0.0 {
        return Err((
            "repair.storm_share".into(),
            "must be above 0 and at most 1".into(),
        ));
    }
    if r.key_title.trim().is_empty() {
        return Err(("repair.key_title".into(), "must not be empty".into()));
    }
    if !(0.0..=1.0).contains(&raw.schedule.spread) {
        return Err(("schedule.spread".into(), "must be between 0 and 1".into()));
    }
    // Past the spread, or a paced sweep would be cancelled before its last check.
    if !(raw.schedule.sweep_deadline_intervals.is_finite()
        && raw.schedule.sweep_deadline_intervals > raw.schedule.spread
        && raw.schedule.sweep_deadline_intervals <= 1000.0)
    {
        return Err((
            "schedule.sweep_deadline_intervals".into(),
            "must be more than schedule.spread and at most 1000".into(),
        ));
    }
    // Renewed every third of a lease: under 3 s a renewal every second
    // could miss its lease on a loaded machine.
    if !(3..=3600).contains(&raw.ha.lease_seconds) {
        return Err((
            "ha.lease_seconds".into(),
            "must be between 3 and 3600".into(),
        ));
    }
    raw.http
        .listen
        .parse::<std::net::SocketAddr>()
        .map_err(|e| {
            (
                "http.listen".to_owned(),
                format!("`{}` is not an address:port: {e}", raw.http.listen),
            )
        })?;
    for (name, conn) in &raw.connections {
        if conn.requests_per_minute == 0 {
            return Err((
                format!("connections.{name}.requests_per_minute"),
                "must be at least 1".into(),
            ));
        }
        if let Some(days) = conn.rotate_before_days {
            let key = format!("connections.{name}.rotate_before_days");
            if conn.token_kind == super::TokenKind::Oauth {
                // docs/gitlab-contract.md §13: `not_allowed!` for anything
                // but an access token.
                return Err((
                    key,
                    "GitLab rotates only personal, project and group access tokens (an OAuth token gets 405); OAuth tokens are refreshed instead".into(),
                ));
            }
            if !(1..=MAX_ROTATE_BEFORE_DAYS).contains(&days) {
                return Err((
                    key,
                    format!("must be between 1 and {MAX_ROTATE_BEFORE_DAYS} days, not {days}"),
                ));
            }
        }
    }
    if let Some(template) = &raw.expect.webhook_url {
        validate_url_template(template).map_err(|r| ("expect.webhook_url".to_owned(), r))?;
    }
    for (i, event) in raw.expect.webhook_events.iter().enumerate() {
        if !crate::gitlab::types::HOOK_EVENTS.contains(&event.as_str()) {
            return Err((
                format!("expect.webhook_events[{i}]"),
                format!(
                    "`{event}` is not a GitLab webhook event flag (known: {})",
                    crate::gitlab::types::HOOK_EVENTS.join(", ")
                ),
            ));
        }
    }
    for name in raw.connections.keys() {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                format!("connections.{name}"),
                "a connection name may use only letters, digits, `-` and `_`".into(),
            ));
        }
    }
    for (i, p) in raw.projects.iter().enumerate() {
        let key = |field: &str| format!("projects[{i}].{field}");
        if !raw.connections.contains_key(&p.connection) {
            return Err((
                key("connection"),
                format!("no connection named `{}` is configured", p.connection),
            ));
        }
        match (&p.id, &p.path) {
            (None, None) => return Err((key("id"), "a project needs `id` or `path`".into())),
            (Some(_), Some(_)) => {
                return Err((key("path"), "give `id` or `path`, not both".into()));
            }
            (None, Some(path)) if !path.contains('/') => {
                return Err((
                    key("path"),
                    format!("`{path}` is not a path with namespace (group/project)"),
                ));
            }
            _ => {}
        }
        if let Some(t) = &p.webhook_url {
            validate_url_template(t).map_err(|r| (key("webhook_url"), r))?;
        }
        if let Some(k) = &p.deploy_key {
            crate::keys::fingerprint_of(k).map_err(|e| (key("deploy_key"), e.to_string()))?;
        }
    }
    for (i, d) in raw.discover.iter().enumerate() {
        if !raw.connections.contains_key(&d.connection) {
            return Err((
                format!("discover[{i}].connection"),
                format!("no connection named `{}` is configured", d.connection),
            ));
        }
        if d.group.trim().is_empty() {
            return Err((
                format!("discover[{i}].group"),
                "must name a group id or path".into(),
            ));
        }
        // glwarden records that discovery found a project, not which rule.
        if let Some((j, other)) = raw.discover[..i]
            .iter()
            .enumerate()
            .find(|(_, o)| o.connection == d.connection && o.purge_on_leave != d.purge_on_leave)
        {
            return Err((
                format!("discover[{i}].purge_on_leave"),
                format!(
                    "is {} but discover[{j}] of the same connection `{}` says {}: the discovery rules of one connection must agree",
                    d.purge_on_leave, d.connection, other.purge_on_leave
                ),
            ));
        }
    }
    Ok(())
}

/// Fills a webhook URL template for one project.
/// The webhook URL glwarden expects for a project: its own `webhook_url`,
/// else `expect.webhook_url` filled in; `None` when neither is set.
pub fn expected_hook_url(
    cfg: &Config,
    own: Option<&str>,
    project_id: u64,
    path: &str,
) -> Option<String> {
    own.map(str::to_owned).or_else(|| {
        cfg.raw
            .expect
            .webhook_url
            .as_deref()
            .map(|t| expand_url_template(t, project_id, path))
    })
}

pub fn expand_url_template(template: &str, project_id: u64, path: &str) -> String {
    template
        .replace("{id}", &project_id.to_string())
        .replace("{path}", path)
}

/// Checks a webhook URL (or template with `{id}`, `{path}`) as the
/// configuration does: known placeholders, http(s), https unless loopback.
/// Every way a URL reaches glwarden (config, `project add`) goes through here.
pub fn validate_url_template(template: &str) -> Result<(), String> {
    let sample = expand_url_template(template, 1, "group/project");
    if let Some(bad) = sample.find(['{', '}']) {
        return Err(format!(
            "`{template}` has an unknown placeholder near position {bad} (known: {{id}}, {{path}})"
        ));
    }
    parse_base_url(&sample).map(|_| ())
}
