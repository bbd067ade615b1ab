use super::*;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;

/// psql over TCP as the test user, with the cluster's password: what a client under test sees.
fn psql_tcp(c: &Cluster, conninfo: &str, sql: &str) -> Output {
    let mut cmd = Command::new(&c.psql);
    clear_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", c.password())
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            conninfo,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn refuses(port: u16) -> bool {
    TcpStream::connect((HOST, port)).is_err()
}

#[test]
fn shared_cluster_serves_fresh_databases_over_tls_only() {
    let started = Instant::now();
    let c = cluster();
    eprintln!("cluster() ready after {:?}", started.elapsed());
    assert!(Arc::ptr_eq(&c, &cluster()));

    let (a, b) = (c.create_database(), c.create_database());
    assert_ne!(a, b);
    assert_eq!(c.psql(&a, "SELECT 1"), "1");
    assert_eq!(c.psql(&b, "SELECT 1"), "1");
    assert_eq!(
        c.psql(
            &a,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    assert_eq!(
        c.psql(
            &a,
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'glwarden'"
        ),
        "f"
    );

    // The URL as given, with the password beside it: TLS verified against the CA, and the
    // test user owns its database (it may create tables).
    let url = c.url(&a);
    assert!(!url.contains(c.password()));
    let tls = psql_tcp(
        &c,
        &url,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(stdout(&tls), "t");
    let owner = psql_tcp(&c, &url, "CREATE TABLE t (id BIGINT); SELECT current_user");
    assert_eq!(stdout(&owner), "glwarden");

    // Plain TCP finds no pg_hba.conf entry; a wrong password is refused.
    let plain = format!(
        "host={HOST} port={} user={USER} dbname={a} sslmode=disable",
        c.port()
    );
    let out = psql_tcp(&c, &plain, "SELECT 1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pg_hba.conf entry"));
    let mut cmd = Command::new(&c.psql);
    clear_pg_env(&mut cmd);
    let out = cmd
        .env("PGPASSWORD", "wrong")
        .args(["-X", "-c", "SELECT 1", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}

#[test]
fn concurrent_callers_share_one_cluster_and_get_distinct_databases() {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(|| {
                let c = cluster();
                let db = c.create_database();
                (c, db)
            })
        })
        .collect();
    let all: Vec<(Arc<Cluster>, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (c, _) in &all {
        assert!(Arc::ptr_eq(c, &all[0].0));
    }
    let mut names: Vec<&String> = all.iter().map(|(_, db)| db).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4);
}

#[test]
fn own_cluster_stops_and_is_removed_on_drop() {
    let started = Instant::now();
    let c = Cluster::start();
    eprintln!("Cluster::start() took {:?}", started.elapsed());
    let (port, dir) = (c.port(), c.dir.path().to_path_buf());
    assert!(!refuses(port));
    assert_eq!(c.psql("postgres", "SHOW fsync"), "off");
    drop(c);
    assert!(refuses(port), "port {port} still answers after the drop");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

/// Run as a child process by the tests below: `kill` holds a cluster of its own until it is
/// killed; `exit` takes the shared cluster, leaks a handle to it and returns, so the process
/// exits with a holder left.
#[test]
fn child_holds_a_cluster() {
    let mode = std::env::var("PG_FIXTURE_CHILD").unwrap_or_default();
    let report = |c: &Cluster| println!("PG_FIXTURE_CHILD {} {}", c.port(), c.dir.path().display());
    match mode.as_str() {
        "kill" => {
            let c = Cluster::start();
            report(&c);
            thread::sleep(Duration::from_secs(120));
        }
        "exit" => {
            let c = cluster();
            report(&c);
            std::mem::forget(c);
        }
        _ => {}
    }
}

/// Runs the test above in a child process; returns it, its cluster's port and directory.
fn child(mode: &str) -> (std::process::Child, u16, PathBuf) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "tests::child_holds_a_cluster",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PG_FIXTURE_CHILD", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest prints "test … ... " first, on the same line.
        if let Some((_, rest)) = line.split_once("PG_FIXTURE_CHILD ") {
            let (port, dir) = rest.split_once(' ').unwrap();
            // Keep reading: a closed pipe would fail the child's last lines.
            thread::spawn(move || lines.for_each(drop));
            return (child, port.parse().unwrap(), PathBuf::from(dir));
        }
    }
    panic!("the child printed no cluster: {:?}", child.wait());
}

#[test]
fn shared_cluster_stops_when_the_process_exits() {
    let (mut child, port, dir) = child("exit");
    assert!(child.wait().unwrap().success());
    assert!(
        refuses(port),
        "port {port} still answers after the process exited"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[test]
fn server_dies_with_a_killed_test_process() {
    let (mut child, port, dir) = child("kill");
    assert!(!refuses(port));
    child.kill().unwrap(); // SIGKILL: no drop, no atexit
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while !refuses(port) {
        assert!(
            Instant::now() < deadline,
            "the server outlived its SIGKILLed test process"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The killed process left its directory; the next start removes it.
    assert!(dir.exists());
    drop(Cluster::start());
    assert!(!dir.exists(), "{} was not removed", dir.display());
}
