//! The database: locked by another process, read-only, on a full disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection;

use super::rig::*;
use glwarden_testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_file_locked_by_another_process() {
    let mut rig = rig(3, "").await;
    let before = baseline(&rig).await;
    let failed = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(rig.fx.db_path());
    let mut locker = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    sqlx::query("UPDATE repair_state SET reason = reason WHERE id = 1")
        .execute(&mut locker)
        .await
        .unwrap();
    // Writes wait out the 5 s busy timeout, then the sweep fails.
    wait_until(
        "a sweep failed on the lock",
        Duration::from_secs(40),
        || async {
            rig.sum("glwarden_sweeps_total", &["result=\"failed\""])
                .await
                > failed
        },
    )
    .await;
    assert!(rig.alive(), "{}", rig.daemon.log());
    assert_eq!(rig.daemon.get("/healthz").await.0, 200);
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;
    rig.wait_all_healthy("the lock").await;
    assert_unharmed(&mut rig, &before, "database locked", &[]).await;
    rig.stop().await;
}

/// Makes files immutable (writes through open descriptors fail with EPERM)
/// and undoes it on drop.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Option<Immutable> {
        for p in &paths {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Immutable(paths.clone());
                return None;
            }
        }
        Some(Immutable(paths))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_becomes_read_only() {
    let mut rig = rig(3, "").await;
    let before = baseline(&rig).await;
    let failed = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let db = rig.fx.db_path();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let Some(guard) = Immutable::set(vec![db.clone(), wal]) else {
        panic!("chattr +i is not available here: this row needs root and ext4/xfs");
    };
    wait_until(
        "a sweep failed on the read-only store",
        Duration::from_secs(40),
        || async {
            rig.sum("glwarden_sweeps_total", &["result=\"failed\""])
                .await
                > failed
        },
    )
    .await;
    assert!(rig.alive(), "{}", rig.daemon.log());
    assert_eq!(rig.daemon.get("/healthz").await.0, 200);
    drop(guard);
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;
    rig.wait_all_healthy("the read-only store").await;
    assert_unharmed(&mut rig, &before, "read-only database", &[]).await;
    rig.stop().await;
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
            .then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.flush();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn database_disk_full() {
    let fx_dir_probe = tempfile::tempdir().unwrap();
    let mnt = fx_dir_probe.path().join("small");
    let Some(tmpfs) = Tmpfs::mount(mnt.clone(), "8m") else {
        panic!("cannot mount a tmpfs here (needs CAP_SYS_ADMIN): the full-disk row cannot run");
    };
    let db = mnt.join("glwarden.db");
    let on_tmpfs = db.clone();
    let mut rig = rig_at(3, "", Some(db.clone()), |c| {
        c.edit(|c| c.store.path = on_tmpfs)
    })
    .await;
    let before = baseline(&rig).await;
    let failed = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let filler = fill(&mnt);
    let sweeps = rig.sweeps().await;
    rig.wait_sweeps(3.0, Duration::from_secs(60)).await;
    let failed_now = rig
        .sum("glwarden_sweeps_total", &["result=\"failed\""])
        .await;
    let log = rig.daemon.log();
    assert!(rig.alive(), "{log}");
    assert_eq!(rig.daemon.get("/healthz").await.0, 200);
    std::fs::remove_file(&filler).unwrap();
    rig.wait_sweeps(2.0, Duration::from_secs(30)).await;
    rig.wait_all_healthy("the full disk").await;
    assert_unharmed(&mut rig, &before, "full disk", &[]).await;
    assert!(
        failed_now > failed,
        "the full disk never made a sweep fail ({sweeps} sweeps before): the fault did not bite\n{log}"
    );
    rig.stop().await;
    drop(tmpfs);
}
