//! `glwarden demo`: the real check engine against the built-in simulator.
//!
//! The demo connects a dozen projects on four connections and checks them
//! (all healthy), then breaks them inside the simulator the way they break in
//! life (a key deleted by hand, a rename, a revoked token, a receiver that
//! fails, a GitLab that answers 502) and checks again. Every state in the
//! table comes from the probes reading the simulator's answers. With
//! `--serve` the daemon then runs on it, with the status page.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;

use crate::cli::{DemoArgs, Format};
use crate::config::{Config, RawConfig};
use crate::keys::{GeneratedKey, generate_ed25519};
use crate::store::Store;
use crate::sweep::{Selection, Sweeper};
use gitlab_sim::{Fault, FaultKind, HookSpec, Sim};

const HOOK_URL: &str = "https://ci.example.com/hooks/gitlab/{id}";
use crate::gitlab::types::MAINTAINER;

/// One demo project: where it lives and what happens to it.
struct DemoProject {
    connection: &'static str,
    path: &'static str,
    breakage: Breakage,
}

/// What the simulated week does to a project.
#[derive(Clone, Copy)]
enum Breakage {
    None,
    RenameAndDeleteKey,
    ArchiveExpireKeyDisableHook,
    ScheduleDeletionExpiringKeyFailingHook,
    LowerRole,
    DeleteProject,
    RotateLocalKeyAndEditHook,
    WritableKeyDeleteHook,
    GitLabErrorsOnKeyAndHook,
    GitLabErrorsOnProject,
}

const PROJECTS: &[DemoProject] = &[
    DemoProject {
        connection: "gitlab",
        path: "acme/api",
        breakage: Breakage::None,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/web",
        breakage: Breakage::RenameAndDeleteKey,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/legacy",
        breakage: Breakage::ArchiveExpireKeyDisableHook,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/old-tool",
        breakage: Breakage::ScheduleDeletionExpiringKeyFailingHook,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/secret",
        breakage: Breakage::LowerRole,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/gone",
        breakage: Breakage::DeleteProject,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/mobile",
        breakage: Breakage::RotateLocalKeyAndEditHook,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/docs",
        breakage: Breakage::WritableKeyDeleteHook,
    },
    DemoProject {
        connection: "gitlab",
        path: "acme/search",
        breakage: Breakage::GitLabErrorsOnKeyAndHook,
    },
    DemoProject {
        connection: "expiring",
        path: "ops/deploy-tools",
        breakage: Breakage::None,
    },
    DemoProject {
        connection: "revoked",
        path: "ops/archive-bot",
        breakage: Breakage::None,
    },
    // Last, so that its id is not a prefix of another project's.
    DemoProject {
        connection: "gitlab",
        path: "acme/flaky",
        breakage: Breakage::GitLabErrorsOnProject,
    },
    DemoProject {
        connection: "outage",
        path: "mirror/tools",
        breakage: Breakage::None,
    },
];

/// A connection of the demo: its token and the simulator it talks to.
struct DemoConnection {
    name: &'static str,
    token: &'static str,
    user: u64,
    /// The second simulator stands for a GitLab that goes down.
    on_outage_sim: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| dir.path().join("glwarden-demo.db"));
    let sim = Sim::start()
        .await
        .context("cannot start the GitLab simulator")?;
    let outage = Sim::start()
        .await
        .context("cannot start the second GitLab simulator")?;

    let connections = [
        DemoConnection {
            name: "gitlab",
            token: "glpat-demo-ci-bot",
            user: sim.add_user("ci-bot"),
            on_outage_sim: false,
        },
        DemoConnection {
            name: "expiring",
            token: "glpat-demo-release-bot",
            user: sim.add_user("release-bot"),
            on_outage_sim: false,
        },
        DemoConnection {
            name: "revoked",
            token: "glpat-demo-old-bot",
            user: sim.add_user("old-bot"),
            on_outage_sim: false,
        },
        DemoConnection {
            name: "outage",
            token: "glpat-demo-mirror-bot",
            user: outage.add_user("mirror-bot"),
            on_outage_sim: true,
        },
    ];
    let today = Utc::now().date_naive();
    for c in &connections {
        let target = if c.on_outage_sim { &outage } else { &sim };
        let expires = (c.name == "expiring").then(|| today + chrono::Days::new(5));
        target.add_access_token(c.user, c.token, &["api"], expires);
    }

    // Connect every project: a deploy key of ours and a hook to the CI.
    let mut seeded = Vec::new();
    for p in PROJECTS {
        let conn = connections
            .iter()
            .find(|c| c.name == p.connection)
            .expect("demo connection exists");
        let target = if conn.on_outage_sim { &outage } else { &sim };
        let id = target.add_project(p.path);
        target.set_member(id, conn.user, MAINTAINER);
        let key = generate_ed25519(&format!("glwarden {}", p.path))?;
        target.add_deploy_key(id, "glwarden", &key.public_openssh, false, None);
        target.add_hook(
            id,
            HookSpec {
                url: HOOK_URL.replace("{id}", &id.to_string()),
                push_events: true,
                tag_push_events: true,
                merge_requests_events: true,
                enable_ssl_verification: true,
                token: Some(format!("demo-secret-{id}")),
            },
        );
        seeded.push((id, key));
    }

    let config_file = write_demo_config(dir.path(), &db, &sim, &outage, &connections, &seeded)?;
    let cfg = Arc::new(Config::load(&config_file)?);
    let store = Store::open(&db).await?;
    let checker = Sweeper::new(cfg, store.clone(), None).await?;

    let first = checker.sweep(&Selection::All).await?;
    let before = crate::report::build(&store, &Selection::All).await?;
    println!(
        "First check: {} projects on {} connections, {} GitLab requests; {}.",
        first.projects_checked,
        connections.len(),
        first.requests,
        match before.worst() {
            crate::health::Severity::Healthy => "all healthy",
            crate::health::Severity::Warning => "all healthy, one token expiring",
            _ => "NOT all healthy (unexpected)",
        }
    );
    // A project GitLab no longer has answers 404; one 404 could be an
    // outage, so `not_found` needs two checks in a row: it is deleted now.
    let gone = PROJECTS
        .iter()
        .position(|p| matches!(p.breakage, Breakage::DeleteProject))
        .expect("demo deletes one");
    sim.delete_project(seeded[gone].0);
    checker
        .sweep(&Selection::One(seeded[gone].0.to_string()))
        .await?;
    println!(
        "Now the simulator breaks things the way they break in life, and glwarden checks again.\n"
    );

    // The rotated key for acme/mobile must reach the config the way an operator would put it there.
    let rotated = generate_ed25519("glwarden acme/mobile (rotated)")?;
    break_things(&sim, &outage, &connections, &seeded);
    rewrite_mobile_key(&config_file, &seeded, &rotated)?;
    let cfg = Arc::new(Config::load(&config_file)?);
    let checker = Sweeper::new(cfg, store.clone(), None).await?;
    let second = checker.sweep(&Selection::All).await?;

    let report = crate::report::build(&store, &Selection::All).await?;
    match args.format {
        Format::Table => print!("{}", report.to_table(false)),
        Format::Json => println!("{}", report.to_json()),
    }
    println!(
        "Second check: {} projects, {} state transitions recorded, {} GitLab requests.",
        second.projects_checked, second.transitions, second.requests
    );
    if args.db.is_some() {
        println!("The demo database is kept at {}.", db.display());
    }
    store.close().await;
    if args.serve {
        serve(&args.listen, dir.path(), &config_file, &sim, &seeded).await?;
    }
    sim.shutdown();
    outage.shutdown();
    Ok(0)
}

/// `demo --serve`: the daemon on the demo's configuration, sweeping every
/// ten seconds and repairing keys and hooks on its own, with the status
/// page and an operator token; meanwhile the simulated GitLab keeps losing
/// a key or a hook now and then. Until Ctrl-C.
async fn serve(
    listen: &str,
    dir: &Path,
    config_file: &Path,
    sim: &Sim,
    seeded: &[(u64, GeneratedKey)],
) -> anyhow::Result<()> {
    use std::fmt::Write;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let operator_token = hex(&rand::random::<[u8; 24]>());
    let operator_file = dir.join("operator.token");
    write_private(&operator_file, &operator_token)?;
    let master_file = dir.join("master.key");
    write_private(&master_file, &hex(&rand::random::<[u8; 32]>()))?;
    let mut toml = std::fs::read_to_string(config_file)?;
    // The demo's tables come first in the file: these sections are new.
    writeln!(
        toml,
        "\n[schedule]\ncron = \"*/10 * * * * *\"\nspread = 0.2\n\n[http]\nlisten = {listen:?}\noperator_token_file = {:?}\n\n[custody]\nmaster_key_file = {:?}\n\n[repair]\ndeploy_key = \"auto\"\nwebhook = \"auto\"\nconfirm_checks = 1\ncooldown_minutes = 0\n",
        operator_file.display().to_string(),
        master_file.display().to_string()
    )?;
    std::fs::write(config_file, toml)?;
    let cfg = Arc::new(Config::load(config_file)?);
    // Installed before the URL is printed: a Ctrl-C from then on stops the
    // daemon cleanly rather than killing the process.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (daemon, addr) = crate::daemon::Daemon::build(cfg).await?;
    println!();
    println!("Serving the demo fleet: http://{addr}/ (status page), http://{addr}/metrics");
    println!("Operator token (sign in to press the buttons): {operator_token}");
    println!(
        "glwarden sweeps every 10 s and repairs keys and hooks; the simulator breaks one now and then. Ctrl-C stops."
    );

    // Now and then a key or a hook of a project on the healthy connection
    // goes, as people delete them by hand.
    let targets: Vec<u64> = PROJECTS
        .iter()
        .zip(seeded)
        .filter(|(p, _)| p.connection == "gitlab")
        .map(|(_, (id, _))| *id)
        .collect();
    let (_reload, reloads) = tokio::sync::mpsc::channel(1);
    let daemon = daemon.run_until(
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        },
        reloads,
    );
    tokio::pin!(daemon);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(20));
    tick.tick().await;
    let mut round = 0usize;
    loop {
        tokio::select! {
            stopped = &mut daemon => return stopped,
            _ = tick.tick() => {}
        }
        let id = targets[round % targets.len()];
        if round % 2 == 0 {
            if let Some(key) = sim.deploy_keys(id).first() {
                sim.remove_deploy_key(id, key.id);
            }
        } else if let Some(hook) = sim.hooks(id).first() {
            sim.remove_hook(id, hook.id);
        }
        round += 1;
    }
}

/// Applies each project's breakage to the simulated GitLab.
fn break_things(
    sim: &Sim,
    outage: &Sim,
    connections: &[DemoConnection],
    seeded: &[(u64, GeneratedKey)],
) {
    let in_a_minute_ago = Utc::now() - chrono::Duration::minutes(1);
    for (p, (id, key)) in PROJECTS.iter().zip(seeded) {
        let id = *id;
        let our_key = || {
            sim.deploy_keys(id)
                .into_iter()
                .find(|k| k.ssh_fingerprint() == key.fingerprint)
        };
        let our_hook = || sim.hooks(id).into_iter().next();
        match p.breakage {
            Breakage::None => {}
            Breakage::RenameAndDeleteKey => {
                sim.rename_project(id, "acme/web-app");
                if let Some(k) = our_key() {
                    sim.remove_deploy_key(id, k.id);
                }
            }
            Breakage::ArchiveExpireKeyDisableHook => {
                sim.set_archived(id, true);
                // GitLab keys cannot change their expiry: the key is re-added with one.
                if let Some(k) = our_key() {
                    sim.remove_deploy_key(id, k.id);
                }
                sim.add_deploy_key(
                    id,
                    "glwarden",
                    &key.public_openssh,
                    false,
                    Some(in_a_minute_ago),
                );
                if let Some(h) = our_hook() {
                    for _ in 0..4 {
                        sim.record_delivery(id, h.id, 502);
                    }
                }
            }
            Breakage::ScheduleDeletionExpiringKeyFailingHook => {
                sim.schedule_deletion(id);
                if let Some(k) = our_key() {
                    sim.remove_deploy_key(id, k.id);
                }
                let soon = Utc::now() + chrono::Duration::days(3);
                sim.add_deploy_key(id, "glwarden", &key.public_openssh, false, Some(soon));
                if let Some(h) = our_hook() {
                    sim.record_delivery(id, h.id, 503);
                }
            }
            Breakage::LowerRole => {
                let user = connections[0].user;
                sim.set_member(id, user, 30);
            }
            // Deleted before the second-to-last check (see `run`).
            Breakage::DeleteProject => {}
            Breakage::RotateLocalKeyAndEditHook => {
                if let Some(h) = our_hook() {
                    sim.update_hook(id, h.id, |hook| {
                        hook.url = "http://old-ci.example.com/hooks/gitlab".into();
                        hook.tag_push_events = false;
                        hook.enable_ssl_verification = false;
                    });
                }
            }
            Breakage::WritableKeyDeleteHook => {
                if let Some(k) = our_key() {
                    sim.set_deploy_key_can_push(id, k.id, true);
                }
                if let Some(h) = our_hook() {
                    sim.remove_hook(id, h.id);
                }
            }
            Breakage::GitLabErrorsOnKeyAndHook => {
                sim.inject(Fault::on(
                    format!("/projects/{id}/deploy_keys"),
                    FaultKind::error_page(502),
                ));
                sim.inject(Fault::on(format!("/projects/{id}/hooks"), FaultKind::Reset));
            }
            Breakage::GitLabErrorsOnProject => sim.inject(Fault::on(
                format!("/api/v4/projects/{id}"),
                FaultKind::error_page(503),
            )),
        }
    }
    sim.revoke_token(connections[2].token);
    outage.inject(Fault::everywhere(FaultKind::error_page(502)));
}

fn write_demo_config(
    dir: &Path,
    db: &Path,
    sim: &Sim,
    outage: &Sim,
    connections: &[DemoConnection],
    seeded: &[(u64, GeneratedKey)],
) -> anyhow::Result<std::path::PathBuf> {
    use std::fmt::Write;
    let mut toml = String::new();
    writeln!(toml, "[store]\npath = {:?}\n", db.display().to_string())?;
    writeln!(
        toml,
        "[check]\nconcurrency = 4\nrequest_timeout_seconds = 5\nwebhook_deliveries = true\n"
    )?;
    writeln!(toml, "[expect]\nwebhook_url = {HOOK_URL:?}\n")?;
    for c in connections {
        let token_file = dir.join(format!("{}.token", c.name));
        write_private(&token_file, c.token)?;
        let url = if c.on_outage_sim {
            outage.base_url()
        } else {
            sim.base_url()
        };
        writeln!(
            toml,
            "[connections.{}]\nurl = {url:?}\ntoken_file = {:?}\nrequests_per_minute = 60000\n",
            c.name,
            token_file.display().to_string()
        )?;
    }
    for (p, (id, key)) in PROJECTS.iter().zip(seeded) {
        writeln!(
            toml,
            "[[projects]]\nconnection = {:?}\nid = {id}\ndeploy_key = {:?}\n",
            p.connection, key.public_openssh
        )?;
    }
    let file = dir.join("glwarden-demo.toml");
    std::fs::write(&file, toml)?;
    // The raw form must parse, or the demo would prove nothing about real configs.
    let _: RawConfig = toml::from_str(&std::fs::read_to_string(&file)?)?;
    Ok(file)
}

/// The operator rotated acme/mobile's key in the config, but GitLab still has the old one.
fn rewrite_mobile_key(
    file: &Path,
    seeded: &[(u64, GeneratedKey)],
    rotated: &GeneratedKey,
) -> anyhow::Result<()> {
    let index = PROJECTS
        .iter()
        .position(|p| p.path == "acme/mobile")
        .expect("demo has acme/mobile");
    let text = std::fs::read_to_string(file)?;
    let text = text.replace(&seeded[index].1.public_openssh, &rotated.public_openssh);
    std::fs::write(file, text)?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
