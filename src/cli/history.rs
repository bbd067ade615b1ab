//! `glwarden history` and `glwarden events`: the transitions and the
//! events (repairs, plans, renames, key reads), newest first.

use std::collections::HashMap;

use anyhow::Context;

use super::{Format, Named, known_project_id};
use crate::health::Component;
use crate::report;

pub(super) async fn events(
    named: Named<'_>,
    project: Option<String>,
    since: Option<String>,
    limit: i64,
    format: Format,
) -> anyhow::Result<u8> {
    let store = named.store;
    let project_id = known_project_id(named, project.as_deref()).await?;
    let projects = store.all_projects().await?;
    let since = match since {
        Some(text) => Some(parse_since(&text)?),
        None => None,
    };
    let rows = store.events(project_id, since, limit).await?;
    let names: HashMap<i64, String> = projects.into_iter().map(|p| (p.id, p.path)).collect();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            for e in &rows {
                let subject = e
                    .project_id
                    .and_then(|id| names.get(&id).cloned())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}  {}  {} {}  {}  before: {}  after: {}  cause: {}",
                    e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    report::escape(&subject),
                    e.component,
                    e.action,
                    report::escape(&e.outcome),
                    report::escape(&e.before),
                    report::escape(&e.after),
                    report::escape(&e.cause),
                );
            }
            if rows.is_empty() {
                println!("no events");
            }
        }
    }
    Ok(0)
}

/// `24h`, `7d`, `90m` ago, or an RFC 3339 time.
pub(super) fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = humantime::parse_duration(text).with_context(|| {
        format!("--since `{text}`: give a duration such as 24h or 7d, or an RFC 3339 time")
    })?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago)?)
}

pub(super) async fn history(
    named: Named<'_>,
    project: Option<String>,
    limit: i64,
    format: Format,
) -> anyhow::Result<u8> {
    let store = named.store;
    let project_id = known_project_id(named, project.as_deref()).await?;
    let projects = store.all_projects().await?;
    let rows = store.transitions(project_id, limit).await?;
    let mut names: HashMap<(bool, i64), String> = projects
        .into_iter()
        .map(|p| ((false, p.id), p.path))
        .collect();
    for (id, name) in store.connections().await? {
        names.insert((true, id), name);
    }
    match format {
        Format::Table => print!("{}", report::transitions_table(&rows, &names)),
        Format::Json => {
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|t| {
                    let is_connection = t.component == Component::Connection;
                    serde_json::json!({
                        "at": t.at, "component": t.component,
                        "subject": names.get(&(is_connection, t.subject_id)),
                        "from": t.from_state, "to": t.to_state, "detail": t.detail,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(0)
}
