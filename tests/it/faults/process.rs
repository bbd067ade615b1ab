//! The process: SIGKILLed mid-sweep and mid-repair, then restarted.

use std::time::{Duration, Instant};

use gitlab_sim::{Fault, FaultKind};

use super::rig::*;
use glwarden_testkit::*;

fn sigkill(d: &mut DaemonProcess) {
    d.child.kill().unwrap();
    let status = d.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_sweep_then_restart() {
    let mut rig = rig(6, "concurrency = 2\n").await;
    let before = baseline(&rig).await;
    for round in 0..3 {
        rig.fx.sim.set_latency(Duration::from_millis(150));
        rig.fx.sim.clear_requests();
        wait_until("a sweep under way", Duration::from_secs(15), || async {
            rig.fx
                .sim
                .requests()
                .iter()
                .filter(|r| r.path.starts_with("/api/v4/projects/"))
                .count()
                >= 2 + round
        })
        .await;
        sigkill(&mut rig.daemon);
        rig.fx.sim.set_latency(Duration::ZERO);
        let facts = db_facts(&rig.fx.db_path()).await;
        assert_eq!(facts.integrity, "ok", "after SIGKILL {round}");
        assert_eq!(facts.secrets, before.db.secrets);
        rig.daemon = rig.fx.start_daemon(&rig.config, &rig.listen).await;
        rig.wait_all_healthy("a SIGKILL").await;
    }
    assert_unharmed(&mut rig, &before, "SIGKILL mid-sweep", &[]).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_repair_then_restart() {
    let mut rig = rig(3, "").await;
    let p = rig.projects[1].id;
    let ours = rig.fx.sim.deploy_keys(p)[0].id;
    // A genuine breakage: the key deleted by hand. The confirming read of the
    // new key is slowed so that the process dies after GitLab created it and
    // before glwarden saw it confirmed.
    rig.fx.sim.clear_requests();
    rig.fx.sim.inject(
        Fault::on(
            format!("/projects/{p}/deploy_keys/"),
            FaultKind::Delay(Duration::from_millis(1500)),
        )
        .method("GET"),
    );
    rig.fx.sim.remove_deploy_key(p, ours);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reqs = rig.fx.sim.requests();
        let created = reqs.iter().position(|r| {
            r.method == "POST" && r.path == format!("/api/v4/projects/{p}/deploy_keys")
        });
        if let Some(i) = created {
            if reqs[i + 1..].iter().any(|r| {
                r.method == "GET" && r.path.contains(&format!("/projects/{p}/deploy_keys/"))
            }) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no repair under way: {reqs:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(&mut rig.daemon);
    rig.fx.sim.clear_faults();
    let facts = db_facts(&rig.fx.db_path()).await;
    assert_eq!(facts.integrity, "ok");
    assert_eq!(rig.fx.sim.deploy_keys(p).len(), 1, "GitLab created the key");
    rig.daemon = rig.fx.start_daemon(&rig.config, &rig.listen).await;
    rig.wait_all_healthy("SIGKILL mid-repair").await;
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;

    // Exactly one key of ours, and custody holds its private key.
    let keys = rig.fx.sim.deploy_keys(p);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let store = glwarden::store::Store::open(&rig.fx.db_path())
        .await
        .unwrap();
    assert!(
        store.journal().await.unwrap().is_empty(),
        "journal finished"
    );
    let row = stored_project(&store, p).await;
    assert_eq!(
        row.fingerprint.as_deref(),
        Some(keys[0].ssh_fingerprint().as_str())
    );
    let custody = glwarden::custody::Custody::new(
        Some(&secrecy::SecretString::from(MASTER_KEY.to_owned())),
        false,
    )
    .unwrap();
    let sealed = store
        .project_secret(row.id, glwarden::custody::SecretKind::DeployKey)
        .await
        .unwrap()
        .expect("private key in custody");
    let private = custody
        .open(row.id, glwarden::custody::SecretKind::DeployKey, &sealed)
        .unwrap();
    let key = ssh_key::PrivateKey::from_openssh(&private[..]).unwrap();
    assert_eq!(
        glwarden::keys::fingerprint_of(&key.public_key().to_openssh().unwrap()).unwrap(),
        keys[0].ssh_fingerprint()
    );
    let regenerations = store
        .events(None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "regenerate_deploy_key")
        .count();
    store.close().await;
    assert!(regenerations >= 1);
    assert_eq!(db_facts(&rig.fx.db_path()).await.integrity, "ok");
    let hooks: Vec<usize> = rig
        .projects
        .iter()
        .map(|p| rig.fx.sim.hooks(p.id).len())
        .collect();
    assert_eq!(hooks, vec![1, 1, 1], "no hook duplicated");
    rig.stop().await;
}
