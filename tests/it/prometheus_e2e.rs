//! End to end with a real Prometheus (Debian's `prometheus` package): the
//! simulator, `glwarden run` on a fast schedule, and Prometheus scraping it
//! with the shipped alert rules (their `for:` shortened to seconds). Built
//! only with `--features e2e`; `.ci/run` installs Prometheus and runs it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use glwarden_testkit::*;

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    found.unwrap_or_else(|| panic!("`{name}` is not on PATH: install Debian's prometheus package (apt-get install prometheus)"))
}

/// The shipped rules with every `for:` cut to one second, so that the test
/// waits seconds, not the production minutes; the expressions are untouched.
fn fast_rules(dir: &Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let fast: String = shipped
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("alerts.yml");
    std::fs::write(&path, fast).unwrap();
    path
}

async fn start_prometheus(dir: &Path, glwarden_listen: &str) -> Prometheus {
    let rules = fast_rules(dir);
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: glwarden\n    static_configs:\n      - targets: ['{glwarden_listen}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(find_binary("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let prom = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_for(
        &prom,
        "the glwarden target up",
        |_| true,
        "up{job=\"glwarden\"} == 1",
    )
    .await;
    prom
}

/// Instant query; the result vector.
async fn query(prom: &Prometheus, q: &str) -> Vec<serde_json::Value> {
    let Ok(r) = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[("query", q)])
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Active alerts (pending or firing) as Prometheus reports them.
async fn alerts(prom: &Prometheus) -> Vec<serde_json::Value> {
    let body: serde_json::Value = reqwest::get(format!("{}/api/v1/alerts", prom.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn wait_for(
    prom: &Prometheus,
    what: &str,
    accept: impl Fn(&[serde_json::Value]) -> bool,
    q: &str,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let result = query(prom, q).await;
        if !result.is_empty() && accept(&result) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what} ({q})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_alert(prom: &Prometheus, name: &str, project: Option<&str>, present: bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = alerts(prom).await.into_iter().find(|a| {
            a["labels"]["alertname"] == name && project.is_none_or(|p| a["labels"]["project"] == p)
        });
        match (&found, present) {
            (Some(a), true) => return a["state"].as_str().unwrap_or_default().to_owned(),
            (None, false) => return String::new(),
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {name} to be {}",
            if present { "active" } else { "resolved" }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_fire_and_resolve_on_a_real_prometheus() {
    let fx = Fixture::new().await;
    let p0 = fx.connect("acme/app");
    let p1 = fx.connect("acme/web");
    let config = fx.config(&[&p0, &p1]).daemon("*/1 * * * * *", 0.5);
    let listen = config.listen();
    let config = config.write();
    let mut daemon = fx.start_daemon(&config, &listen).await;

    // promtool accepts the exposition as it is served.
    let mut promtool = Command::new(find_binary("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(daemon.metrics().await.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prom_dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(prom_dir.path(), &listen).await;
    assert!(
        alerts(&prom).await.is_empty(),
        "nothing is broken yet: {:?}",
        alerts(&prom).await
    );

    // A revoked token: the connection alert goes pending, then firing.
    fx.sim.revoke_token(TOKEN);
    let state = wait_alert(&prom, "GlwardenConnectionDisconnected", None, true).await;
    assert!(state == "pending" || state == "firing", "{state}");
    // Blocked components are not alerted on: their cause is.
    assert!(
        alerts(&prom)
            .await
            .iter()
            .all(|a| a["labels"]["alertname"] != "GlwardenDeployKeyBroken")
    );

    // A new token in the credential file and SIGHUP: connected again, the alert resolves.
    let fresh = "glpat-fixture-SECRET-token-0002";
    fx.sim.add_access_token(fx.user, fresh, &["api"], None);
    std::fs::write(fx.dir.path().join("token"), fresh).unwrap();
    daemon.signal("HUP");
    wait_alert(&prom, "GlwardenConnectionDisconnected", None, false).await;

    // A deploy key deleted by hand: the deploy-key alert for that project.
    let key = fx
        .sim
        .deploy_keys(p0.id)
        .into_iter()
        .find(|k| k.ssh_fingerprint() == p0.key.fingerprint)
        .unwrap();
    fx.sim.remove_deploy_key(p0.id, key.id);
    let state = wait_alert(&prom, "GlwardenDeployKeyBroken", Some("acme/app"), true).await;
    assert!(state == "pending" || state == "firing", "{state}");

    // Repaired (the key is put back): the series goes stale and the alert resolves.
    fx.sim
        .add_deploy_key(p0.id, "glwarden", &p0.key.public_openssh, false, None);
    wait_alert(&prom, "GlwardenDeployKeyBroken", Some("acme/app"), false).await;

    assert!(daemon.stop().await.success(), "{}", daemon.log());
    // With the daemon gone, Prometheus sees the target down.
    wait_for(&prom, "up == 0", |_| true, "up{job=\"glwarden\"} == 0").await;
}
