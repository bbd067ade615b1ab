//! Property tests: arbitrary bytes into every GitLab response decoder, the
//! error classifier and the config loader never panic; odd project paths and
//! details (unicode, quotes, newlines, very long) come out of the table, the
//! JSON and the metrics escaped, never breaking the format.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use glwarden::config::PerProjectSeries;
use glwarden::daemon::metrics::Metrics;
use glwarden::gitlab::error::{classify, sanitize, text_summary};
use glwarden::gitlab::types::{
    AccessTokenInfo, DeployKey, Group, Hook, HookEvent, OauthTokenInfo, Project, User,
};
use glwarden::health::State;
use glwarden::report::{ComponentLine, ConnectionLine, ProjectLine, Report, escape};
use proptest::prelude::*;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Decodes `bytes` as every GitLab entity and list of entities glwarden reads.
fn decode_all(bytes: &[u8]) {
    macro_rules! each {
        ($($t:ty),*) => {$(
            let _ = serde_json::from_slice::<$t>(bytes);
            let _ = serde_json::from_slice::<Vec<$t>>(bytes);
        )*};
    }
    each!(
        User,
        AccessTokenInfo,
        OauthTokenInfo,
        Project,
        Group,
        DeployKey,
        Hook,
        HookEvent
    );
    if let Ok(hook) = serde_json::from_slice::<Hook>(bytes) {
        let _ = hook.event("push_events");
    }
    if let Ok(event) = serde_json::from_slice::<HookEvent>(bytes) {
        let _ = (event.status_code(), event.succeeded(), event.status_text());
    }
    if let Ok(project) = serde_json::from_slice::<Project>(bytes) {
        let _ = project.permissions.as_ref().map(|p| p.max_access_level());
    }
}

/// Arbitrary JSON, biased towards the field names GitLab entities have.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let field = prop_oneof![
        Just("id".to_owned()),
        Just("username".to_owned()),
        Just("path_with_namespace".to_owned()),
        Just("permissions".to_owned()),
        Just("project_access".to_owned()),
        Just("group_access".to_owned()),
        Just("access_level".to_owned()),
        Just("fingerprint_sha256".to_owned()),
        Just("expires_at".to_owned()),
        Just("can_push".to_owned()),
        Just("url".to_owned()),
        Just("alert_status".to_owned()),
        Just("disabled_until".to_owned()),
        Just("response_status".to_owned()),
        Just("scopes".to_owned()),
        Just("scope".to_owned()),
        Just("marked_for_deletion_on".to_owned()),
        Just("archived".to_owned()),
        Just("push_events".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        ".{0,40}".prop_map(serde_json::Value::String),
        Just(serde_json::json!("2025-01-31")),
        Just(serde_json::json!("2025-01-31T10:00:00.000Z")),
        Just(serde_json::json!("9999-99-99T99:99:99Z")),
        Just(serde_json::json!("SHA256:AAAA")),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
    ];
    leaf.prop_recursive(4, 64, 10, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(field.clone(), inner, 0..10)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_json(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        decode_all(&bytes);
    }

    #[test]
    fn classify_never_panics_and_bounds_its_message(
        status in any::<u16>(),
        content_type in prop_oneof![
            Just("application/json".to_owned()),
            Just("text/html".to_owned()),
            Just("text/plain".to_owned()),
            Just(String::new()),
            ".{0,30}",
        ],
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            ".{0,300}".prop_map(|s| format!("<html><head><title>{s}</title></head></html>").into_bytes()),
            ".{0,300}".prop_map(|s| format!("<TITLE>{s}").into_bytes()),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            ".{0,300}".prop_map(|s| serde_json::to_vec(&serde_json::json!({"message": s})).unwrap()),
            ".{0,300}".prop_map(|s| serde_json::to_vec(&serde_json::json!({"error": s, "error_description": s})).unwrap()),
        ],
        retry in proptest::option::of(0u64..100_000),
    ) {
        let kind = classify(status, &content_type, &body, retry.map(Duration::from_secs));
        let shown = format!("{kind:?}");
        prop_assert!(!shown.is_empty());
        let summary = text_summary(status, &content_type, &body);
        prop_assert!(!summary.chars().any(char::is_control), "{summary:?}");
        prop_assert!(summary.len() <= 200 + 4 + 3 + "(HTML error page)".len() + 1, "{}", summary.len());
    }

    #[test]
    fn sanitize_gives_one_short_line(text in ".{0,1000}") {
        let out = sanitize(&text);
        prop_assert!(!out.chars().any(char::is_control), "{out:?}");
        prop_assert!(out.len() <= 200 + 4 + 3, "{}", out.len());
    }

    #[test]
    fn escape_leaves_no_control_character(text in ".{0,300}") {
        let out = escape(&text);
        prop_assert!(!out.chars().any(char::is_control), "{out:?}");
        if !text.chars().any(char::is_control) {
            prop_assert_eq!(out, text);
        }
    }

    #[test]
    fn fingerprint_of_never_panics(
        text in prop_oneof![
            ".{0,200}",
            ".{0,200}".prop_map(|s| format!("ssh-ed25519 {s}")),
            "[A-Za-z0-9+/=]{0,120}".prop_map(|s| format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5{s} c")),
            "[A-Za-z0-9+/=]{0,400}".prop_map(|s| format!("ssh-rsa AAAAB3NzaC1yc2E{s}")),
        ]
    ) {
        let _ = glwarden::keys::fingerprint_of(&text);
    }
}

// ---------------------------------------------------------------------------
// the config loader

/// Loads `bytes` as a config file; an error names the file, never a panic.
fn load(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("glwarden.toml");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    if let Err(e) = glwarden::config::Config::load(&file) {
        let text = e.to_string();
        assert!(
            text.contains(&file.display().to_string()),
            "the error does not name the file: {text}"
        );
        assert!(!text.contains('\n') || text.lines().count() < 40, "{text}");
    }
}

const SECTIONS: &[&str] = &[
    "store",
    "log",
    "schedule",
    "http",
    "metrics",
    "check",
    "expect",
    "repair",
    "custody",
    "connections.main",
    "connections.\"odd name\"",
];
const KEYS: &[&str] = &[
    "path",
    "level",
    "format",
    "cron",
    "spread",
    "shutdown_grace_seconds",
    "listen",
    "per_project",
    "concurrency",
    "request_timeout_seconds",
    "connect_timeout_seconds",
    "max_response_bytes",
    "max_rate_limit_wait_seconds",
    "webhook_deliveries",
    "token_expiry_warning_days",
    "webhook_url",
    "webhook_events",
    "enable_ssl_verification",
    "read_only_key",
    "key_expiry_warning_days",
    "url",
    "token_kind",
    "token_file",
    "token_env",
    "token_credential",
    "requests_per_minute",
    "refresh_token_file",
    "client_id",
    "deploy_key",
    "webhook",
    "moved",
    "confirm_checks",
    "master_key_file",
    "allow_plaintext",
    "storm_share",
    "x",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("-0".to_owned()),
        Just("0".to_owned()),
        Just("true".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"*/1 * * * * *\"".to_owned()),
        Just("\"not a cron\"".to_owned()),
        Just("\"http://127.0.0.1:1\"".to_owned()),
        Just("\"/dev/null\"".to_owned()),
        Just("\"/nonexistent/file\"".to_owned()),
        Just("\"auto\"".to_owned()),
        Just("\"oauth\"".to_owned()),
        Just("\"json\"".to_owned()),
        Just("[\"push_events\", 1]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        ".{0,30}".prop_map(|s| format!("{s:?}")),
        ".{0,20}",
    ]
}

fn toml_ish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
        Just("[[projects]]".to_owned()),
        Just("[[discover]]".to_owned()),
        (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        ".{0,30}",
    ];
    prop::collection::vec(line, 0..25).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_loader_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load(&bytes);
    }

    #[test]
    fn config_loader_never_panics_on_toml_ish_text(text in toml_ish()) {
        load(text.as_bytes());
    }

    /// A valid file with one key's value replaced: an error names that key.
    #[test]
    fn config_errors_name_the_key(which in 0usize..14, value in toml_value()) {
        // Only values that are TOML on their own: a syntax error (`level = {`)
        // is reported by line and column, which the parser may place on a
        // later line, and has its own test above.
        prop_assume!(toml::from_str::<toml::Table>(&format!("x = {value}")).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "glpat-x").unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let keys: [(&str, &str, String); 14] = [
            ("store", "path", format!("{:?}", dir.path().join("db").display().to_string())),
            ("log", "level", "\"info\"".into()),
            ("log", "format", "\"text\"".into()),
            ("schedule", "cron", "\"0 */5 * * * *\"".into()),
            ("schedule", "spread", "0.8".into()),
            ("http", "listen", "\"127.0.0.1:9184\"".into()),
            ("metrics", "per_project", "\"all\"".into()),
            ("check", "concurrency", "4".into()),
            ("check", "request_timeout_seconds", "10".into()),
            ("check", "max_response_bytes", "100000".into()),
            ("expect", "webhook_url", "\"https://ci.example.com/{id}\"".into()),
            ("expect", "key_expiry_warning_days", "14".into()),
            ("connections.main", "url", "\"https://gitlab.example.com\"".into()),
            ("connections.main", "requests_per_minute", "600".into()),
        ];
        let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, (section, key, good)) in keys.iter().enumerate() {
            let v = if i == which { value.clone() } else { good.clone() };
            sections.entry(section).or_default().push(format!("{key} = {v}"));
        }
        sections
            .entry("connections.main")
            .or_default()
            .push(format!("token_file = {:?}", token.display().to_string()));
        let text: String = sections
            .iter()
            .map(|(s, lines)| format!("[{s}]\n{}\n\n", lines.join("\n")))
            .collect();
        let file = dir.path().join("glwarden.toml");
        std::fs::write(&file, &text).unwrap();
        if let Err(e) = glwarden::config::Config::load(&file) {
            let msg = e.to_string();
            prop_assert!(msg.contains(&file.display().to_string()), "{msg}");
            let (section, key, _) = &keys[which];
            let dotted = format!("{}.{key}", section.trim_start_matches("connections."));
            prop_assert!(
                msg.contains(key) || msg.contains(&dotted),
                "the error does not name `{section}.{key}`: {msg}\n{text}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// odd project paths through the table, the JSON and the metrics

fn line(state: State, detail: &str) -> ComponentLine {
    ComponentLine {
        state,
        detail: detail.to_owned(),
        since: None,
        last_checked: None,
        last_known: None,
    }
}

fn report(connection: &str, path: &str, detail: &str) -> Report {
    Report {
        leader: None,
        connections: vec![ConnectionLine {
            name: connection.to_owned(),
            health: line(State::Connected, detail),
            token: None,
        }],
        projects: vec![ProjectLine {
            connection: connection.to_owned(),
            gitlab_id: 7,
            path: path.to_owned(),
            repository: line(State::Moved, detail),
            deploy_key: line(State::Missing, detail),
            webhook: line(State::Healthy, ""),
        }],
    }
}

/// A parsed sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses one line of the Prometheus text format (0.0.4) strictly.
fn parse_exposition_line(l: &str) -> Result<Option<Sample>, String> {
    if l.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = l.strip_prefix("# ") {
        let mut words = rest.splitn(3, ' ');
        let kind = words.next().unwrap_or_default();
        let name = words.next().unwrap_or_default();
        if !(kind == "HELP" || kind == "TYPE") || !valid_name(name) {
            return Err(format!("bad comment line: {l:?}"));
        }
        return Ok(None);
    }
    let name_end = l
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {l:?}"))?;
    let name = &l[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name in {l:?}"));
    }
    let mut rest = &l[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or_else(|| format!("no '=' in {l:?}"))?;
            let label = &rest[..eq];
            if !valid_name(label) {
                return Err(format!("bad label name {label:?} in {l:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("unquoted value in {l:?}"))?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated value in {l:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {l:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {l:?}"))?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value in {l:?}"))?,
    };
    Ok(Some((name.to_owned(), labels, value)))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The checks every rendering of an odd path must pass.
fn check_rendering(connection: &str, path: &str, detail: &str) -> Result<(), TestCaseError> {
    let r = report(connection, path, detail);

    // JSON parses back to the same strings.
    let json: serde_json::Value = serde_json::from_str(&r.to_json())
        .map_err(|e| TestCaseError::fail(format!("JSON does not parse: {e}")))?;
    prop_assert_eq!(json["projects"][0]["path"].as_str(), Some(path));
    prop_assert_eq!(json["projects"][0]["connection"].as_str(), Some(connection));
    prop_assert_eq!(
        json["projects"][0]["deploy_key"]["detail"].as_str(),
        Some(detail)
    );
    prop_assert_eq!(json["connections"][0]["name"].as_str(), Some(connection));

    // The table: every line is a table line; no raw control character.
    let table = r.to_table(false);
    for l in table.lines() {
        let first = l.chars().next();
        prop_assert!(
            first.is_some_and(|c| "┌│├└╞╪┆┊┝┼┬┴┐┘┤─═".contains(c)),
            "a line of the table does not start with a border: {:?}\n{}",
            l,
            table
        );
        prop_assert!(
            !l.chars().any(char::is_control),
            "control character in {:?}",
            l
        );
    }
    let with_since = r.to_table(true);
    prop_assert!(!with_since.chars().any(|c| c.is_control() && c != '\n'));

    // Metrics: every line parses; the project label round-trips.
    for per_project in [PerProjectSeries::Unhealthy, PerProjectSeries::All] {
        let metrics = Metrics::new(per_project);
        metrics.publish(&summary_of(&r));
        let text = metrics.render();
        let mut seen = false;
        for l in text.lines() {
            let sample = parse_exposition_line(l).map_err(TestCaseError::fail)?;
            if let Some((name, labels, _)) = sample {
                let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                if name == "glwarden_component_unhealthy" {
                    prop_assert_eq!(get("project"), Some(path));
                    prop_assert_eq!(get("connection"), Some(connection));
                    seen = true;
                }
                if let Some(c) = get("connection") {
                    prop_assert_eq!(c, connection);
                }
            }
        }
        prop_assert!(seen, "no component_unhealthy series:\n{}", text);
        // Label values are bounded: never the error detail.
        if detail.len() > 3 && !path.contains(detail) && !connection.contains(detail) {
            prop_assert!(!text.contains(detail));
        }
    }
    Ok(())
}

fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[\"'\\\\\n\r\t{}=,# ]{0,40}",
        "[a-z/\u{202e}\u{200b}\u{0301}\u{1f600}\u{ffff}\u{7f}\u{85}\u{2028}]{0,40}",
        ".{500,2000}",
    ]
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn odd_paths_and_details_stay_well_formed(
        path in odd_text(),
        connection in "[a-z_][a-z0-9_\"\\\\\n ]{0,12}",
        detail in odd_text(),
    ) {
        check_rendering(&connection, &path, &detail)?;
    }
}

const NASTY: &[&str] = &[
    "acme/\"quoted\"",
    "acme/back\\slash",
    "acme/new\nline",
    "acme/cr\rreturn",
    "acme/tab\there",
    "acme/esc\u{1b}[31mred",
    "acme/ünïcødé/日本語/😀",
    "acme/rtl\u{202e}gnp.exe",
    "acme/nul\u{0}byte",
    "acme/line\u{2028}separator",
    "acme/{brace}=\"x\",y=\"z\"",
    "# HELP fake",
];

#[test]
fn nasty_paths_pass_promtool_and_a_very_long_path_survives() {
    let long = "a/".repeat(5_000);
    let mut all: Vec<String> = NASTY.iter().map(|s| s.to_string()).collect();
    all.push(long);
    for path in &all {
        check_rendering("main", path, "detail with \"quotes\"\nand a newline")
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        eprintln!("promtool not installed: exposition checked by the parser above only");
        return;
    }
    for path in &all {
        let metrics = Metrics::new(PerProjectSeries::All);
        metrics.publish(&summary_of(&report("main", path, "d")));
        let text = metrics.render();
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Lint remarks (naming conventions) are not format errors.
        assert!(
            !said.contains("parsing error") && !said.contains("error while linting"),
            "promtool rejects the exposition for {path:?}: {said}"
        );
    }
}

// ---------------------------------------------------------------------------
// the command line: misuse and bad files

fn glwarden_out(args: &[&str], config: Option<&std::path::Path>) -> (Option<i32>, String, String) {
    let mut cmd = glwarden_testkit::glwarden(&[]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_cli_misuse_prints_usage_help_and_exits_2() {
    let mut offenders = Vec::new();
    for args in [
        vec![],
        vec!["bogus"],
        vec!["check", "--format", "xml"],
        vec!["status", "--nope"],
        vec!["history", "--limit", "abc"],
        vec!["regenerate"],
        vec!["regenerate", "1"],
        vec!["regenerate", "1", "--deploy-key", "--webhook", "--x"],
        vec!["project"],
        vec!["project", "add"],
        vec!["project", "remove"],
        vec!["key"],
        vec!["key", "private"],
        vec!["config"],
        vec!["events", "--since"],
        vec!["--config"],
        vec!["repair", "now"],
    ] {
        let (code, _, stderr) = glwarden_out(&args, None);
        if code != Some(2) || !stderr.contains("Usage:") || stderr.contains("panicked") {
            offenders.push(format!("{args:?} -> exit {code:?}:\n{stderr}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "misuse without usage help:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_config_error_is_one_message_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "glpat-x").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let open = dir.path().join("open-token");
    std::fs::write(&open, "glpat-x").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let conn = format!(
        "[connections.main]\nurl = \"https://gitlab.example.com\"\ntoken_file = {:?}\n",
        token.display().to_string()
    );
    let cases: Vec<(String, &str)> = vec![
        (format!("{conn}[check]\nbogus = 1\n"), "bogus"),
        (format!("{conn}[check]\nconcurrency = 0\n"), "concurrency"),
        (format!("{conn}[check]\nconcurrency = \"many\"\n"), "concurrency"),
        (format!("{conn}[schedule]\ncron = \"not a cron\"\n"), "cron"),
        (format!("{conn}[schedule]\nspread = 7\n"), "spread"),
        (format!("{conn}[http]\nlisten = 5\n"), "listen"),
        (format!("{conn}[metrics]\nper_project = \"some\"\n"), "per_project"),
        (format!("{conn}[log]\nformat = \"xml\"\n"), "format"),
        (format!("{conn}[repair]\ndeploy_key = \"sometimes\"\n"), "deploy_key"),
        (format!("{conn}[expect]\nwebhook_events = [\"push_events\", \"nonsense_events\"]\n"), "webhook_events"),
        (format!("{conn}[custody]\nmaster_key_file = \"/nonexistent/master.key\"\n"), "master_key"),
        (format!("{conn}[[projects]]\nconnection = \"nope\"\nid = 1\n"), "connection"),
        (format!("{conn}[[projects]]\nconnection = \"main\"\n"), "projects"),
        (format!("{conn}[[projects]]\nconnection = \"main\"\nid = 1\ndeploy_key = \"not a key\"\n"), "deploy_key"),
        ("[connections.main]\nurl = \"ftp://gitlab.example.com\"\ntoken_env = \"GLWARDEN_TEST_UNSET\"\n".into(), "url"),
        ("[connections.main]\nurl = \"https://gitlab.example.com\"\ntoken_file = \"/nonexistent/token\"\n".into(), "token_file"),
        (format!("[connections.main]\nurl = \"https://gitlab.example.com\"\ntoken_file = {:?}\n", open.display().to_string()), "token_file"),
        (format!("[connections.main]\nurl = \"https://gitlab.example.com\"\ntoken_file = {:?}\ntoken_env = \"X\"\n", token.display().to_string()), "token"),
        ("[connections.main]\nurl = \"https://gitlab.example.com\"\n".into(), "token"),
        ("[[[ not toml".into(), ""),
        ("\u{0}\u{1}binary".into(), ""),
    ];
    let mut problems = Vec::new();
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        for args in [["config", "check"].as_slice(), ["status"].as_slice()] {
            let (code, _, stderr) = glwarden_out(args, Some(&file));
            let mut wrong = Vec::new();
            if code != Some(3) {
                wrong.push(format!("exit {code:?}"));
            }
            if stderr.contains("panicked") {
                wrong.push("panicked".into());
            }
            if !stderr.contains(&file.display().to_string()) {
                wrong.push("the file is not named".into());
            }
            if !stderr.contains(key) {
                wrong.push(format!("`{key}` is not named"));
            }
            // One message: one error line (a TOML snippet under it is fine), no chain.
            let messages = stderr
                .lines()
                .filter(|l| {
                    l.starts_with("error") || l.starts_with("Error") || l.contains("Caused by")
                })
                .count();
            if messages != 1 {
                wrong.push(format!("{messages} messages"));
            }
            if stderr.contains("glpat-x") {
                wrong.push("the token is printed".into());
            }
            if !wrong.is_empty() {
                problems.push(format!(
                    "{args:?} case {i} {text:?}: {}\n{stderr}",
                    wrong.join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A missing file is named too.
    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = glwarden_out(&["status"], Some(&missing));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

/// The store's health summary for a report (what the daemon publishes).
fn summary_of(r: &glwarden::report::Report) -> glwarden::store::HealthSummary {
    let mut summary = glwarden::store::HealthSummary {
        connections: r
            .connections
            .iter()
            .map(|c| (c.name.clone(), c.health.state, c.health.last_known))
            .collect(),
        all: Some(Vec::new()),
        ..Default::default()
    };
    for p in &r.projects {
        for (component, line) in [
            ("repository", &p.repository),
            ("deploy_key", &p.deploy_key),
            ("webhook", &p.webhook),
        ] {
            let state = line.state.as_str().to_owned();
            summary
                .counts
                .push((component.to_owned(), state.clone(), 1));
            if !line.state.is_healthy() && !matches!(state.as_str(), "unknown" | "blocked") {
                summary.problems.push(glwarden::store::Problem {
                    connection: p.connection.clone(),
                    path: p.path.clone(),
                    component: component.to_owned(),
                    state,
                });
            }
            if let Some(all) = summary.all.as_mut() {
                all.push((
                    p.connection.clone(),
                    p.path.clone(),
                    component.to_owned(),
                    line.state.is_healthy(),
                ));
            }
        }
    }
    summary
}
