//! The status page in a real browser: Debian's `chromium`, driven through
//! `chromium-driver` (WebDriver, with fantoccini), against the daemon in
//! this process and the simulator. The overview lists a project whose key
//! was deleted; the operator signs in, opens the project, presses
//! "Regenerate deploy key", and the page then shows the key healthy and
//! the rotation's event; a POST without the CSRF token or the session is
//! refused (403) and changes nothing. Screenshots of the overview and the project page
//! are written to `target/screenshots/` (copies are in `docs/`).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use glwarden_testkit::*;

const OPERATOR_TOKEN: &str = "operator-token-browser-0123456789";

/// `chromedriver` on a free port, stopped when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = free_port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    wait_until("chromedriver answers", Duration::from_secs(30), || async {
        reqwest::get(format!("{}/status", driver.url))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    driver
}

/// The element `locator` finds, waited for (at most 60 s): a page a click
/// asked for may still be loading.
async fn element(
    browser: &fantoccini::Client,
    locator: Locator<'_>,
) -> fantoccini::elements::Element {
    let what = format!("{locator:?}");
    browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Clicks the element `locator` finds, once it is there.
async fn click(browser: &fantoccini::Client, locator: Locator<'_>) {
    element(browser, locator).await.click().await.unwrap();
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_regenerates_a_deleted_key_in_chromium() {
    let fx = Fixture::new().await;
    let keyless = fx.connect("acme/keyless");
    let fine = fx.connect("acme/fine");
    let token_file = secret_file(fx.dir.path(), "operator-token", OPERATOR_TOKEN);
    let config = fx
        .config(&[&keyless, &fine])
        .daemon("*/2 * * * * *", 0.2)
        .repairs(Policy::Report, 1)
        .master_key_file(&fx.master_key_file())
        .edit(|c| c.http.operator_token_file = Some(token_file))
        .write();
    fx.sim.remove_deploy_key(keyless.id, key_id(&fx, &keyless));
    let mut daemon = fx.spawn_daemon(&config).await;
    let base = format!("http://{}", daemon.listen);
    wait_until("the key is missing", Duration::from_secs(30), || async {
        daemon.get("/").await.1.contains(">acme/keyless</a>")
    })
    .await;

    let driver = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1100,1000"]
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session");

    // The overview lists the project whose key was deleted.
    browser.goto(&format!("{base}/")).await.unwrap();
    let row = element(
        &browser,
        Locator::XPath("//tr[td/a[text()='acme/keyless']]"),
    )
    .await;
    assert!(row.text().await.unwrap().contains("missing"));
    std::fs::write(
        screenshots().join("overview.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // Sign in with the operator token.
    click(&browser, Locator::LinkText("Sign in")).await;
    element(&browser, Locator::Css("input[name=token]"))
        .await
        .send_keys(OPERATOR_TOKEN)
        .await
        .unwrap();
    click(&browser, Locator::Css("form[action='/sign-in'] button")).await;
    // Each element after a click is waited for: the next page may still be
    // loading (a form's POST returns when it is answered, not when the
    // click does).
    element(&browser, Locator::Css("form[action='/sign-out']")).await;

    // Open the project and press Regenerate.
    click(&browser, Locator::LinkText("acme/keyless")).await;
    click(
        &browser,
        Locator::XPath("//button[text()='Regenerate deploy key']"),
    )
    .await;
    let result = element(&browser, Locator::Css("p[role=status]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(result.starts_with("done"), "{result}");

    // Back on the project: the key is healthy after the re-check, and the
    // rotation is an event, done from the status page. A daemon sweep that
    // read GitLab before the new key was added may record `missing` after
    // the re-check (seen in CI): the page is read again until the key shows
    // healthy, which the next sweep confirms.
    click(&browser, Locator::LinkText("Back to the project")).await;
    let project_url = format!("{base}/projects/main/{}", keyless.id);
    let key_row = Locator::XPath("//tr[td[text()='deploy_key']][td/span]");
    wait_until("the key shows healthy", Duration::from_secs(60), || async {
        let row = element(&browser, key_row).await.text().await.unwrap();
        if row.contains("healthy") {
            return true;
        }
        browser.goto(&project_url).await.unwrap();
        false
    })
    .await;
    let page = browser.source().await.unwrap();
    assert!(
        page.contains("<td>regenerate_deploy_key</td><td>status page (operator)</td>"),
        "{page}"
    );
    std::fs::write(
        screenshots().join("project.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // The browser's session without the page's CSRF token, or no session at
    // all, is refused and changes nothing.
    let session = browser
        .get_named_cookie("glwarden_session")
        .await
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    let keys_before = fx.sim.deploy_keys(keyless.id);
    let form = format!(
        "connection=main&project={}&action=regenerate_deploy_key&csrf=",
        keyless.id
    );
    for cookie in [Some(format!("glwarden_session={}", session.value())), None] {
        let mut post = reqwest::Client::new()
            .post(format!("{base}/actions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone());
        if let Some(cookie) = &cookie {
            post = post.header("cookie", cookie);
        }
        assert_eq!(post.send().await.unwrap().status(), 403, "{cookie:?}");
    }
    assert_eq!(fx.sim.deploy_keys(keyless.id), keys_before);

    // Readable at 360 px: tables scroll in their own boxes, the page does not.
    browser.set_window_size(360, 900).await.unwrap();
    for path in ["/", &format!("/projects/main/{}", keyless.id)] {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            serde_json::Value::Bool(true),
            "{path} is wider than 360 px"
        );
    }
    std::fs::write(
        screenshots().join("project-360px.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    let cfg = glwarden::config::Config::load(&config).unwrap();
    let store = glwarden::store::Store::connect(&cfg.store).await.unwrap();
    assert_one_matching_key(&fx, &store, keyless.id).await;
    store.close().await;

    browser.close().await.unwrap();
    daemon.stop().await.unwrap();
}
