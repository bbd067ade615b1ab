//! The check engine against the simulator: every state from real answers,
//! pagination, renames, transient failures, revoked tokens and rate limits.

use std::time::{Duration, Instant};

use gitlab_sim::{Fault, FaultKind, HookSpec};
use glwarden::health::{Component, State};
use glwarden_testkit::*;

#[tokio::test]
async fn repository_states_come_from_gitlab_answers() {
    let fx = Fixture::new().await;
    let moved = fx.connect("acme/moved");
    let archived = fx.connect("acme/archived");
    let deleting = fx.connect("acme/deleting");
    let lost = fx.connect("acme/lost");
    let gone = fx.connect("acme/gone");
    let fine = fx.connect("acme/fine");
    let all = [&moved, &archived, &deleting, &lost, &gone, &fine];
    let config = fx.write_config(&all, "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    for p in all {
        assert_eq!(
            states(&store, p.id).await,
            HEALTHY,
            "project {} starts healthy",
            p.id
        );
    }

    fx.sim.rename_project(moved.id, "acme/moved-elsewhere");
    fx.sim.set_archived(archived.id, true);
    fx.sim.schedule_deletion(deleting.id);
    fx.sim.set_member(lost.id, fx.user, 30);
    fx.sim.delete_project(gone.id);
    fx.check(&checker).await;
    // One 404 could be an outage: unknown, until the next check agrees.
    let (state, detail) = component(&store, gone.id, Component::Repository).await;
    assert_eq!(state, State::Unknown, "{detail}");
    assert!(
        detail.contains("not_found if the next check agrees"),
        "{detail}"
    );
    fx.check(&checker).await;

    let (state, detail) = component(&store, moved.id, Component::Repository).await;
    assert_eq!(state, State::Moved);
    assert!(
        detail.contains("acme/moved") && detail.contains("acme/moved-elsewhere"),
        "{detail}"
    );
    assert_eq!(states(&store, archived.id).await[0], State::Archived);
    assert_eq!(
        states(&store, deleting.id).await[0],
        State::PendingDeletion,
        "the deletion rename is not a move"
    );
    assert_eq!(
        states(&store, lost.id).await,
        [State::AccessLost, State::Blocked, State::Blocked]
    );
    assert_eq!(
        states(&store, gone.id).await,
        [State::NotFound, State::Blocked, State::Blocked]
    );
    assert_eq!(states(&store, fine.id).await, HEALTHY);
}

#[tokio::test]
async fn deploy_key_states_come_from_gitlab_answers() {
    let fx = Fixture::new().await;
    let missing = fx.connect("acme/missing");
    let mut mismatch = fx.connect("acme/mismatch");
    let expired = fx.connect("acme/expired");
    let expiring = fx.connect("acme/expiring");
    let writable = fx.connect("acme/writable");
    let config = fx.write_config(&[&missing, &mismatch, &expired, &expiring, &writable], "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;

    let key_of = |id: u64, fp: &str| {
        fx.sim
            .deploy_keys(id)
            .into_iter()
            .find(|k| k.ssh_fingerprint() == fp)
            .unwrap()
    };
    fx.sim
        .remove_deploy_key(missing.id, key_of(missing.id, &missing.key.fingerprint).id);
    for (p, when) in [
        (&expired, chrono::Utc::now() - chrono::Duration::hours(1)),
        (&expiring, chrono::Utc::now() + chrono::Duration::days(3)),
    ] {
        fx.sim
            .remove_deploy_key(p.id, key_of(p.id, &p.key.fingerprint).id);
        fx.sim
            .add_deploy_key(p.id, "glwarden", &p.key.public_openssh, false, Some(when));
    }
    fx.sim.set_deploy_key_can_push(
        writable.id,
        key_of(writable.id, &writable.key.fingerprint).id,
        true,
    );
    // glwarden's own key changes (restored from an old backup): GitLab still has the previous one.
    mismatch.key = glwarden::keys::generate_ed25519("rotated").unwrap();
    let config = fx.write_config(&[&missing, &mismatch, &expired, &expiring, &writable], "");
    let (checker, store2) = fx.checker(&config).await;
    fx.check(&checker).await;

    assert_eq!(
        component(&store2, missing.id, Component::DeployKey).await.0,
        State::Missing
    );
    let (state, detail) = component(&store2, mismatch.id, Component::DeployKey).await;
    assert_eq!(state, State::Mismatch);
    assert!(detail.contains(&mismatch.key.fingerprint), "{detail}");
    assert_eq!(
        component(&store2, expired.id, Component::DeployKey).await.0,
        State::Expired
    );
    assert_eq!(
        component(&store2, expiring.id, Component::DeployKey)
            .await
            .0,
        State::Expiring
    );
    assert_eq!(
        component(&store2, writable.id, Component::DeployKey)
            .await
            .0,
        State::Writable
    );
    drop(store);
}

#[tokio::test]
async fn webhook_states_come_from_gitlab_answers() {
    let fx = Fixture::new().await;
    let missing = fx.connect("acme/missing");
    let wrong_url = fx.connect("acme/wrong-url");
    let wrong_events = fx.connect("acme/wrong-events");
    let disabled = fx.connect("acme/disabled");
    let failing = fx.connect("acme/failing");
    let all = [&missing, &wrong_url, &wrong_events, &disabled, &failing];
    // Deliveries are read only when asked for.
    let config = fx.write_config_full(&all, "webhook_deliveries = true\n", "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    for p in all {
        assert_eq!(states(&store, p.id).await, HEALTHY);
    }

    fx.sim.remove_hook(missing.id, missing.hook_id);
    fx.sim.update_hook(wrong_url.id, wrong_url.hook_id, |h| {
        h.url = "https://old-ci.example.com/x".into()
    });
    fx.sim
        .update_hook(wrong_events.id, wrong_events.hook_id, |h| {
            h.merge_requests_events = false;
            h.enable_ssl_verification = false;
        });
    for _ in 0..4 {
        fx.sim.record_delivery(disabled.id, disabled.hook_id, 500);
    }
    fx.sim.record_delivery(failing.id, failing.hook_id, 200);
    fx.sim.record_delivery(failing.id, failing.hook_id, 502);
    fx.check(&checker).await;

    assert_eq!(
        component(&store, missing.id, Component::Webhook).await.0,
        State::Missing
    );
    let (state, detail) = component(&store, wrong_url.id, Component::Webhook).await;
    assert_eq!(state, State::Misconfigured);
    assert!(
        detail.contains("url is https://old-ci.example.com/x"),
        "{detail}"
    );
    let (state, detail) = component(&store, wrong_events.id, Component::Webhook).await;
    assert_eq!(state, State::Misconfigured);
    assert!(detail.contains("merge_requests_events is off"), "{detail}");
    assert!(
        detail.contains("enable_ssl_verification is false"),
        "{detail}"
    );
    let (state, detail) = component(&store, disabled.id, Component::Webhook).await;
    assert_eq!(state, State::Disabled);
    assert!(detail.contains("temporarily disabled"), "{detail}");
    let (state, detail) = component(&store, failing.id, Component::Webhook).await;
    if fx.version.has_hook_events() {
        assert_eq!(state, State::Failing);
        assert!(detail.contains("latest answered 502"), "{detail}");
    } else {
        // No delivery log before GitLab 17.3: judged without it, and said so.
        assert_eq!(state, State::Healthy);
        assert!(
            detail.contains("has no hook events endpoint (17.3+)"),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn our_hook_is_found_on_a_later_page_and_duplicates_are_noted() {
    let fx = Fixture::new().await;
    let id = fx.sim.add_project("acme/busy");
    fx.sim.set_member(id, fx.user, 40);
    let key = glwarden::keys::generate_ed25519("t").unwrap();
    fx.sim
        .add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
    for i in 0..130 {
        fx.sim.add_hook(
            id,
            HookSpec {
                url: format!("https://other.example.com/{i}"),
                ..HookSpec::default()
            },
        );
    }
    let ours = HookSpec {
        url: Fixture::hook_url(id),
        push_events: true,
        tag_push_events: true,
        merge_requests_events: true,
        enable_ssl_verification: true,
        token: None,
    };
    let hook_id = fx.sim.add_hook(id, ours.clone());
    let duplicate = fx.sim.add_hook(id, ours);
    let project = Connected { id, key, hook_id };
    let config = fx.write_config(&[&project], "");
    let (checker, store) = fx.checker(&config).await;
    fx.sim.clear_requests();
    fx.check(&checker).await;

    let (state, detail) = component(&store, id, Component::Webhook).await;
    assert_eq!(state, State::Healthy);
    assert!(
        detail.contains(&format!("duplicate hooks to the same URL: {duplicate}")),
        "{detail}"
    );
    let pages: Vec<String> = fx
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("/api/v4/projects/{id}/hooks"))
        .map(|r| r.query)
        .collect();
    assert_eq!(pages.len(), 2, "two pages of 100: {pages:?}");
    assert!(pages[1].contains("page=2"), "{pages:?}");

    // The id found by listing is kept: the next check reads the hook by id.
    fx.sim.clear_requests();
    fx.check(&checker).await;
    let paths: Vec<String> = fx.sim.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.contains(&format!("/api/v4/projects/{id}/hooks/{hook_id}")),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&format!("/api/v4/projects/{id}/hooks")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_project_configured_by_path_is_resolved_once_and_followed_by_id_after_a_rename() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(
        &[],
        &format!(
            "[[projects]]\nconnection = \"main\"\npath = \"acme/app\"\ndeploy_key = {:?}\n",
            p.key.public_openssh
        ),
    );
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    assert_eq!(states(&store, p.id).await, HEALTHY);

    fx.sim.rename_project(p.id, "acme/app-v2");
    fx.sim.clear_requests();
    fx.check(&checker).await;
    let (state, detail) = component(&store, p.id, Component::Repository).await;
    assert_eq!(state, State::Moved);
    assert!(detail.contains("from acme/app to acme/app-v2"), "{detail}");
    let requests = fx.sim.requests();
    assert!(
        requests.iter().all(|r| !r.path.contains("acme")),
        "after resolution only the numeric id is used: {requests:?}"
    );
    // The old path still answers, by GitLab's redirect to the numeric id.
    let client = checker.client("main").unwrap();
    assert_eq!(client.project("acme/app").await.unwrap().id, p.id);
}

#[tokio::test]
async fn transient_failures_give_unknown_and_keep_the_stored_state() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(&[&p], "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    assert_eq!(states(&store, p.id).await, HEALTHY);
    let before: Vec<_> = store.all_health().await.unwrap();
    let transitions_before = store.transitions(None, 100).await.unwrap().len();

    fx.sim.inject(Fault::on(
        format!("/projects/{}/hooks", p.id),
        FaultKind::error_page(502),
    ));
    fx.sim.inject(Fault::on(
        format!("/projects/{}/deploy_keys", p.id),
        FaultKind::Hang,
    ));
    let started = Instant::now();
    fx.check(&checker).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout bounds the hang"
    );

    let (state, detail) = component(&store, p.id, Component::Webhook).await;
    assert_eq!(state, State::Unknown);
    assert!(
        detail.contains("HTTP 502: 502 Bad Gateway (HTML error page)"),
        "{detail}"
    );
    assert!(detail.contains("last known: healthy"), "{detail}");
    let (state, detail) = component(&store, p.id, Component::DeployKey).await;
    assert_eq!(state, State::Unknown);
    assert!(detail.contains("timed out"), "{detail}");

    // The stored definite state is untouched and no transition was written.
    let after = store.all_health().await.unwrap();
    for row in after
        .iter()
        .filter(|h| h.component != glwarden::health::Component::Connection)
    {
        let was = before
            .iter()
            .find(|b| b.component == row.component && b.subject_id == row.subject_id)
            .unwrap();
        assert_eq!(row.state, was.state, "{}", row.component);
        assert_eq!(row.since, was.since, "{}", row.component);
    }
    assert_eq!(
        store.transitions(None, 100).await.unwrap().len(),
        transitions_before
    );

    fx.sim.clear_faults();
    fx.check(&checker).await;
    assert_eq!(states(&store, p.id).await, HEALTHY);
}

#[tokio::test]
async fn a_revoked_token_blocks_its_projects_without_per_project_calls() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..5).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx.write_config(&refs, "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::Connected);

    fx.sim.revoke_token(TOKEN);
    fx.sim.clear_requests();
    fx.check(&checker).await;
    assert_eq!(connection_state(&store).await, State::NotConnected);
    for p in &projects {
        assert_eq!(states(&store, p.id).await, [State::Blocked; 3]);
    }
    let requests = fx.sim.requests();
    assert_eq!(
        requests.len(),
        1,
        "one probe of the connection, nothing per project: {requests:?}"
    );
    assert_eq!(requests[0].path, "/api/v4/user");
    assert_eq!(requests[0].status, 401);
}

#[tokio::test]
async fn a_429_pauses_the_connection_for_retry_after_then_retries() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(&[&p], "");
    let (checker, store) = fx.checker(&config).await;
    fx.sim.inject(
        Fault::on(
            format!("/projects/{}/hooks", p.id),
            FaultKind::RateLimited {
                retry_after: Some(2),
            },
        )
        .times(1),
    );
    fx.sim.clear_requests();
    let started = Instant::now();
    fx.check(&checker).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "waited Retry-After: {elapsed:?}"
    );
    assert_eq!(
        states(&store, p.id).await,
        HEALTHY,
        "the retried request succeeded"
    );
    let hook_requests: Vec<u16> = fx
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/hooks"))
        .map(|r| r.status)
        .collect();
    assert_eq!(hook_requests, vec![429, 200]);
}

#[tokio::test]
async fn discovery_finds_maintained_projects_of_a_group_and_its_subgroups() {
    let fx = Fixture::new().await;
    let group = fx.sim.add_group("platform");
    fx.sim.set_group_member(group, fx.user, 40);
    let a = fx.sim.add_project("platform/a");
    let b = fx.sim.add_project("platform/team/b");
    let elsewhere = fx.sim.add_project("other/c");
    let config = fx.write_config(
        &[],
        "[[discover]]\nconnection = \"main\"\ngroup = \"platform\"\n",
    );
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let ids = active_ids(&store).await;
    assert!(
        ids.contains(&(a as i64)) && ids.contains(&(b as i64)),
        "{ids:?}"
    );
    assert!(!ids.contains(&(elsewhere as i64)));
    // Discovered projects hold no key of ours yet: that is what `missing` means.
    assert_eq!(
        component(&store, a, Component::DeployKey).await.0,
        State::Missing
    );
}

#[tokio::test]
async fn removing_a_project_from_the_config_keeps_its_history() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let q = fx.connect("acme/other");
    let config = fx.write_config(&[&p, &q], "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let id = store
        .active_projects()
        .await
        .unwrap()
        .iter()
        .find(|r| r.gitlab_id == p.id as i64)
        .unwrap()
        .id;
    assert!(!store.transitions(Some(id), 10).await.unwrap().is_empty());

    let config = fx.write_config(&[&q], "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let active: Vec<i64> = store
        .active_projects()
        .await
        .unwrap()
        .iter()
        .map(|r| r.gitlab_id)
        .collect();
    assert_eq!(active, vec![q.id as i64]);
    assert!(
        !store.transitions(Some(id), 10).await.unwrap().is_empty(),
        "history survives removal"
    );
}

#[tokio::test]
async fn large_inventories_read_project_metadata_in_bulk_at_about_two_requests_a_project() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..250)
        .map(|i| fx.connect(&format!("fleet/p{i:03}")))
        .collect();
    // Someone else's project the token can also see: listed, not ours, ignored.
    fx.sim.add_project("fleet/not-ours");
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx.write_config(&refs, "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await; // learns paths and owned ids

    fx.sim.clear_requests();
    fx.check(&checker).await;
    let requests = fx.sim.requests();
    let per_project = requests.len() as f64 / projects.len() as f64;
    assert!(
        per_project <= 2.05,
        "{} requests for {} healthy projects = {per_project:.3}",
        requests.len(),
        projects.len()
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.path.starts_with("/api/v4/projects/") && r.path.matches('/').count() == 4)
            .count(),
        0,
        "no per-project lookups when the bulk list has them"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.path == "/api/v4/projects")
            .count(),
        3,
        "keyset pages of 100"
    );

    // A rename shows in the list; a project that left the list is looked up alone.
    fx.sim.rename_project(projects[0].id, "fleet/renamed");
    fx.sim.set_member(projects[1].id, fx.user, 30);
    fx.sim.clear_requests();
    fx.check(&checker).await;
    assert_eq!(states(&store, projects[0].id).await[0], State::Moved);
    assert_eq!(
        states(&store, projects[1].id).await,
        [State::AccessLost, State::Blocked, State::Blocked]
    );
    let single: Vec<String> = fx
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/v4/projects/") && r.path.matches('/').count() == 4)
        .map(|r| r.path)
        .collect();
    assert_eq!(single, vec![format!("/api/v4/projects/{}", projects[1].id)]);
}

#[tokio::test]
async fn a_failed_page_of_the_bulk_listing_is_retried_not_replaced_by_lookups() {
    let fx = Fixture::new().await;
    let projects: Vec<Connected> = (0..3).map(|i| fx.connect(&format!("acme/p{i}"))).collect();
    let refs: Vec<&Connected> = projects.iter().collect();
    let config = fx.write_config_full(&refs, "bulk_list_min_projects = 1\n", "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    fx.sim.clear_requests();
    // The first request after the connection probe is the listing's first page.
    fx.sim.inject(
        Fault::on("/api/v4/projects", FaultKind::error_page(502))
            .method("GET")
            .times(1),
    );
    fx.check(&checker).await;
    let listing: Vec<u16> = fx
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v4/projects")
        .map(|r| r.status)
        .collect();
    assert_eq!(listing, vec![502, 200], "the page is read again");
    let lookups = fx
        .sim
        .requests()
        .iter()
        .filter(|r| {
            projects
                .iter()
                .any(|p| r.path == format!("/api/v4/projects/{}", p.id))
        })
        .count();
    assert_eq!(lookups, 0, "no project looked up one by one");
    for p in &projects {
        assert_eq!(states(&store, p.id).await, HEALTHY);
    }
}

#[tokio::test]
async fn the_bulk_listing_is_merged_in_id_order_and_only_unlisted_projects_are_looked_up() {
    let fx = Fixture::new().await;
    let a = fx.connect("acme/a");
    // Listed by GitLab, not in the inventory: passed over.
    let _other = fx.connect("acme/not-ours");
    let b = fx.connect("acme/b");
    let c = fx.connect("acme/c");
    let d = fx.connect("acme/d");
    // Developer on b: the Maintainer list leaves it out.
    fx.sim.set_member(b.id, fx.user, 30);
    let config = fx.write_config_full(&[&d, &b, &a, &c], "bulk_list_min_projects = 1\n", "");
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    fx.sim.clear_requests();
    fx.check(&checker).await;

    let lookups: Vec<String> = fx
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v4/projects/") && r.path.matches('/').count() == 4)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(lookups, vec![format!("/api/v4/projects/{}", b.id)]);
    for p in [&a, &c, &d] {
        assert_eq!(states(&store, p.id).await, HEALTHY);
    }
    assert_eq!(states(&store, b.id).await[0], State::AccessLost);
}

#[tokio::test]
async fn one_bad_answer_to_the_connection_probe_is_retried_not_a_blind_sweep() {
    let fx = Fixture::new().await;
    let p = fx.connect("acme/app");
    let config = fx.write_config(&[&p], "");
    let (checker, store) = fx.checker(&config).await;
    fx.sim.inject(
        Fault::on("/api/v4/user", FaultKind::error_page(502))
            .method("GET")
            .times(1),
    );
    fx.check(&checker).await;
    let probes: Vec<u16> = fx
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v4/user")
        .map(|r| r.status)
        .collect();
    assert_eq!(probes, vec![502, 200]);
    assert_eq!(connection_state(&store).await, State::Connected);
    assert_eq!(states(&store, p.id).await, HEALTHY);
}

// ---- GitLab's real answers (issue 13, docs/gitlab-contract.md) -------------

#[tokio::test]
async fn discovery_leaves_out_projects_shared_into_the_group() {
    let fx = Fixture::new().await;
    let group = fx.sim.add_group("platform");
    fx.sim.set_group_member(group, fx.user, 40);
    let own = fx.sim.add_project("platform/own");
    // Another group's project, shared into ours: GitLab lists it under
    // `GET /groups/:id/projects` unless `with_shared=false`.
    let foreign = fx.sim.add_project("partners/their-app");
    fx.sim.share_project(foreign, group, 40);
    let config = fx.write_config(
        &[],
        "[[discover]]\nconnection = \"main\"\ngroup = \"platform\"\n",
    );
    let (checker, store) = fx.checker(&config).await;
    fx.check(&checker).await;
    let ids = active_ids(&store).await;
    assert_eq!(ids, vec![own as i64]);
    let listed: Vec<String> = fx
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/projects") && r.path.contains("/groups/"))
        .map(|r| r.query)
        .collect();
    assert!(
        listed
            .iter()
            .all(|q| q.contains("with_shared=false") && !q.contains("keyset")),
        "{listed:?}"
    );
}

#[tokio::test]
async fn maintainer_through_a_group_share_is_not_access_lost() {
    let fx = Fixture::new().await;
    // Developer directly, Maintainer through the project's share with a
    // group the user maintains: `permissions` shows only the Developer role.
    let p = fx.connect("acme/app");
    fx.sim.set_member(p.id, fx.user, 30);
    let team = fx.sim.add_group("ci-team");
    fx.sim.set_group_member(team, fx.user, 40);
    fx.sim.share_project(p.id, team, 40);
    // Another, through a share that gives only Developer: GitLab refuses
    // the deploy key endpoints, and that 403 is what `access_lost` rests on.
    let q = fx.connect("acme/readonly");
    fx.sim.set_member(q.id, fx.user, 30);
    let readers = fx.sim.add_group("readers");
    fx.sim.set_group_member(readers, fx.user, 40);
    fx.sim.share_project(q.id, readers, 30);
    for bulk in [false, true] {
        let check_lines = if bulk {
            "bulk_list_min_projects = 1\n"
        } else {
            "bulk_list_min_projects = 1000\n"
        };
        let config = fx.write_config_full(&[&p, &q], check_lines, "");
        let (checker, store) = fx.checker(&config).await;
        fx.check(&checker).await;
        assert_eq!(states(&store, p.id).await, HEALTHY, "bulk listing {bulk}");
        let (state, detail) = component(&store, q.id, Component::Repository).await;
        assert_eq!(state, State::AccessLost, "bulk listing {bulk}: {detail}");
        assert!(detail.contains("403"), "{detail}");
        assert_eq!(
            component(&store, q.id, Component::DeployKey).await.0,
            State::Blocked
        );
    }
}
