//! Pagination gone wrong: a proxy in front of the simulator makes list
//! answers loop or end before their last page.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitlab_sim::HookSpec;
use glwarden::keys::generate_ed25519;

use super::rig::*;
use glwarden_testkit::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Paging {
    Pass,
    /// The `next` link and `x-next-page` dropped: the list seems to end after page 1.
    EndEarly,
    /// The `next` link points back to the first page.
    Loop,
}

struct Proxy {
    upstream: String,
    me: String,
    mode: Mutex<Paging>,
    http: reqwest::Client,
}

fn is_listing(path: &str) -> bool {
    path.starts_with("/api/v4/projects/")
        && (path.ends_with("/hooks") || path.ends_with("/deploy_keys"))
}

async fn proxy_handler(
    axum::extract::State(p): axum::extract::State<Arc<Proxy>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    let upstream = p
        .http
        .request(parts.method.clone(), format!("{}{}", p.upstream, parts.uri))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(upstream) = upstream else {
        return axum::http::Response::builder()
            .status(502)
            .body(axum::body::Body::from("proxy: upstream failed"))
            .unwrap();
    };
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    let bytes = upstream.bytes().await.unwrap_or_default();
    headers.remove("content-length");
    headers.remove("transfer-encoding");
    let mode = *p.mode.lock().unwrap();
    if is_listing(&path) && parts.method == "GET" {
        match mode {
            Paging::Pass => {}
            Paging::EndEarly => {
                headers.remove("link");
                headers.remove("x-next-page");
            }
            Paging::Loop => {
                let first: Vec<String> = query
                    .split('&')
                    .filter(|kv| !kv.starts_with("page="))
                    .map(str::to_owned)
                    .collect();
                let url = format!("{}{path}?{}&page=1", p.me, first.join("&"));
                headers.insert("link", format!("<{url}>; rel=\"next\"").parse().unwrap());
                headers.insert("x-next-page", "1".parse().unwrap());
            }
        }
    }
    let mut resp = axum::http::Response::builder().status(status);
    for (k, v) in &headers {
        resp = resp.header(k, v);
    }
    resp.body(axum::body::Body::from(bytes)).unwrap()
}

async fn start_proxy(upstream: String, mode: Paging) -> Arc<Proxy> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = format!("http://{}", listener.local_addr().unwrap());
    let proxy = Arc::new(Proxy {
        upstream,
        me,
        mode: Mutex::new(mode),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new()
        .fallback(proxy_handler)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    proxy
}

/// A project whose key and hook of ours sit on the second page (after 100 others).
fn connect_behind_100(fx: &Fixture, path: &str) -> Connected {
    let id = fx.sim.add_project(path);
    fx.sim.set_member(id, fx.user, 40);
    for i in 0..100 {
        let other = generate_ed25519(&format!("other {i}")).unwrap();
        fx.sim.add_deploy_key(
            id,
            &format!("other-{i}"),
            &other.public_openssh,
            false,
            None,
        );
        fx.sim.add_hook(
            id,
            HookSpec {
                url: format!("https://other.example.com/{i}"),
                ..Default::default()
            },
        );
    }
    let key = generate_ed25519("glwarden test").unwrap();
    fx.sim
        .add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
    let hook_id = fx.sim.add_hook(
        id,
        HookSpec {
            url: Fixture::hook_url(id),
            push_events: true,
            tag_push_events: true,
            merge_requests_events: true,
            enable_ssl_verification: true,
            token: Some("hook-secret".into()),
        },
    );
    Connected { id, key, hook_id }
}

/// A daemon behind the proxy, started with the proxy already in `mode`: the
/// first sweep (which has no owned ids yet) must walk the lists.
async fn paging_rig(mode: Paging) -> (Fixture, Vec<Connected>, Arc<Proxy>, DaemonProcess) {
    let fx = Fixture::new().await;
    let projects = vec![connect_behind_100(&fx, "acme/crowded")];
    let proxy = start_proxy(fx.sim.base_url(), mode).await;
    let listen = free_listen();
    let me = proxy.me.clone();
    let config = write_daemon_config(&fx, &projects, "", &listen, |c| {
        c.edit(|c| c.connections.get_mut("main").unwrap().url = me)
    });
    let counts = gitlab_counts(&fx, &projects);
    assert_eq!(counts, vec![(101, 101)]);
    let daemon = fx.start_daemon(&config, &listen).await;
    (fx, projects, proxy, daemon)
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_that_loops() {
    let (fx, projects, proxy, mut daemon) = paging_rig(Paging::Loop).await;
    daemon_wait_sweeps(&daemon, 2.0).await;
    let text = daemon.metrics().await;
    assert_eq!(
        metric_sum(
            &text,
            "glwarden_components",
            &["component=\"webhook\"", "state=\"unknown\""]
        ),
        1.0,
        "a looping list decides nothing: {text}"
    );
    assert_eq!(writes_answered(&fx), Vec::<String>::new());
    assert_eq!(gitlab_counts(&fx, &projects), vec![(101, 101)]);
    *proxy.mode.lock().unwrap() = Paging::Pass;
    wait_until(
        "healthy through honest pages",
        Duration::from_secs(30),
        || async {
            let t = daemon.metrics().await;
            metric_sum(&t, "glwarden_components", &["state=\"healthy\""]) == 2.0
        },
    )
    .await;
    assert_eq!(writes_answered(&fx), Vec::<String>::new());
    assert_eq!(gitlab_counts(&fx, &projects), vec![(101, 101)]);
    let facts = db_facts(&fx.db_path()).await;
    assert_eq!(facts.integrity, "ok");
    assert!(facts.events.is_empty(), "{:?}", facts.events);
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_that_ends_early() {
    let (fx, projects, _proxy, mut daemon) = paging_rig(Paging::EndEarly).await;
    daemon_wait_sweeps(&daemon, 2.0).await;
    let facts = db_facts(&fx.db_path()).await;
    let log = daemon.log();
    assert!(daemon.stop().await.success());
    assert_eq!(
        writes_answered(&fx),
        Vec::<String>::new(),
        "a list cut short (x-total-pages 2, no next link) made glwarden write to GitLab"
    );
    assert_eq!(
        gitlab_counts(&fx, &projects),
        vec![(101, 101)],
        "duplicate key or hook created"
    );
    assert!(
        facts.events.is_empty(),
        "repairs ran: {:?}\n{log}",
        facts.events
    );
    for ((component, _), state) in &facts.states {
        if component == "deploy_key" || component == "webhook" {
            assert_ne!(
                state.as_deref(),
                Some("missing"),
                "{component} stored as missing from a list cut short"
            );
        }
    }
}

async fn daemon_wait_sweeps(daemon: &DaemonProcess, n: f64) {
    let sweeps = || async { metric_sum(&daemon.metrics().await, "glwarden_sweeps_total", &[]) };
    let start = sweeps().await;
    wait_until("sweeps", Duration::from_secs(30), || async {
        sweeps().await >= start + n
    })
    .await;
}
