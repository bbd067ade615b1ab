//! A throwaway PostgreSQL cluster for tests.
//!
//! [`cluster()`] starts one cluster per test process on first use and shares it between the tests
//! running at the same time; each test takes a fresh, empty database with
//! [`Cluster::create_database`] and connects with [`Cluster::url`] and [`Cluster::password`].
//!
//! What runs:
//! - `initdb` into a new directory `/tmp/pg-fixture-<pid>-XXXXXX` (C locale, UTF-8, `--no-sync`),
//!   then the `postgres` server itself as a child of the test process, with `fsync`,
//!   `synchronous_commit` and `full_page_writes` off.
//! - TCP on `127.0.0.1:<free port>` with TLS only (`hostssl`): a private CA and a server
//!   certificate for `localhost` and `127.0.0.1` are made with `openssl` at start, so clients
//!   can use `sslmode=verify-full` with [`Cluster::ca_file`].
//! - Two roles: `glwarden` (login, password random per cluster, scram-sha-256, **not** a superuser;
//!   it owns every database made by [`Cluster::create_database`]) and the bootstrap superuser
//!   `postgres`, reachable only through the Unix socket in the directory (`trust`), which
//!   [`Cluster::psql`] uses.
//!
//! Binaries: `$PG_BIN` if set, else the newest `/usr/lib/postgresql/*/bin` (Debian), else the
//! directory of `initdb` on `PATH`. None found is a panic naming the package (`apt-get install
//! postgresql`), never a silent skip. `openssl` and `psql` must be installed too.
//!
//! As root (CI), `initdb` and `postgres` refuse to run, so they run as the `postgres` user (set up
//! by the Debian package): the directory is chowned to it and the children switch to its uid and
//! gid before `exec`, with the directory as their working directory. That is what
//! `runuser -u postgres --` does, without a `runuser` process between the test and the server.
//! `psql` runs as the caller (a client may run as root).
//!
//! Lifetime: stopping means SIGQUIT to the server (PostgreSQL's immediate shutdown, what
//! `pg_ctl -m immediate stop` sends), waiting for it to exit, and removing its directory.
//! - The shared cluster of [`cluster()`] lives until the test process exits: an `atexit` hook
//!   stops it when libtest's `main` returns or calls `exit`. It is deliberately not dropped with
//!   the last `Arc`: with tests of other kinds interleaved, the last holder drops often, and a
//!   `Mutex<Weak<_>>` restarted the cluster 7 times for 20 tests (about 0.6 s, and 2 s on a busy
//!   machine, each time).
//! - A cluster of [`Cluster::start`] stops when it drops.
//! - In every case the server has a parent-death signal (`PR_SET_PDEATHSIG` = SIGQUIT), set from
//!   a thread that lives exactly as long as the server, so it also stops when the test process
//!   is SIGKILLed or aborts. That leaves its directory behind (about 40 MB); the next start
//!   removes directories of test processes that are gone.
//!
//! Start-up is mostly `initdb`: on a 2-core machine with other tests running, 1.3 s in all, of
//! which 1.2 s initdb and 0.1 s the certificates, the start and the role (up to 2 s while cargo
//! compiles beside it). Each [`Cluster::create_database`] takes 50–100 ms.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The user tests connect as.
const USER: &str = "glwarden";
/// The bootstrap superuser, reachable only through the Unix socket.
const SUPERUSER: &str = "postgres";
const HOST: &str = "127.0.0.1";
/// Prefix of the cluster directories under /tmp; the owner's pid follows.
const DIR_PREFIX: &str = "pg-fixture-";
/// How long the server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

static SHARED: Mutex<Option<Arc<Cluster>>> = Mutex::new(None);
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The process-wide cluster: started on first use, shared by all tests of the process, stopped
/// and removed when the process exits (see the crate documentation).
pub fn cluster() -> Arc<Cluster> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = &*shared {
        return Arc::clone(cluster);
    }
    let cluster = Arc::new(Cluster::start());
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a function without arguments that does not unwind.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_shared_cluster);
    });
    *shared = Some(Arc::clone(&cluster));
    cluster
}

/// The shared cluster and a fresh database in it, for one test. It blocks
/// (the first call starts the server): call it off an async runtime's
/// workers, e.g. through `tokio::task::spawn_blocking`.
pub fn database() -> (Arc<Cluster>, String) {
    let cluster = cluster();
    let database = cluster.create_database();
    (cluster, database)
}

/// At exit: stops the shared cluster even if a thread still holds a handle (the process is going
/// anyway). Skipped if the lock is taken (a start under way): the parent-death signal then
/// stops the server.
extern "C" fn stop_shared_cluster() {
    let _ = std::panic::catch_unwind(|| {
        if let Ok(mut shared) = SHARED.try_lock() {
            if let Some(cluster) = shared.take() {
                cluster.shutdown();
            }
        }
    });
}

/// A running throwaway cluster (see the crate documentation). One of [`Cluster::start`] stops and
/// is removed on drop; the shared one of [`cluster()`] at process exit.
pub struct Cluster {
    // Field order: the server drops before its directory.
    postmaster: Postmaster,
    dir: tempfile::TempDir,
    psql: PathBuf,
    port: u16,
    password: String,
    ca: PathBuf,
}

impl Cluster {
    /// Starts a cluster of its own, not shared with other tests: for a test that stops or
    /// restarts the server, or needs an empty cluster. Most tests want [`cluster()`].
    pub fn start() -> Cluster {
        remove_stale_directories();
        let bin = bin_dir();
        let run_as = run_as();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("pg-fixture: cannot create a directory under /tmp: {e}"));
        let path = dir.path().to_path_buf();

        let ca = make_certificates(&path);
        if let Some((uid, gid)) = run_as {
            for p in [
                path.clone(),
                path.join("server.key"),
                path.join("server.crt"),
            ] {
                chown(&p, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("pg-fixture: chown {}: {e}", p.display()));
            }
        }

        let data = path.join("data");
        let mut initdb = server_command(&bin.join("initdb"), &path, run_as);
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"]);
        run(&mut initdb, "initdb");
        // TLS only over TCP: a plain connection finds no pg_hba.conf entry.
        fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\nhostssl all all {HOST}/32 scram-sha-256\n"),
        )
        .expect("pg-fixture: write pg_hba.conf");

        // The port is free when picked, but another process may take it before the server binds
        // it: then try another one.
        let mut attempt = 0;
        let (postmaster, port) = loop {
            attempt += 1;
            let port = free_port();
            let postmaster = Postmaster::spawn(&bin.join("postgres"), &path, port, run_as);
            match postmaster.wait_ready(&data) {
                Ok(()) => break (postmaster, port),
                Err(log) if attempt < 5 && log.contains("could not bind") => continue,
                Err(log) => panic!(
                    "pg-fixture: the PostgreSQL server did not start ({}):\n{log}",
                    path.display()
                ),
            }
        };

        let psql = if bin.join("psql").is_file() {
            bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let cluster = Cluster {
            postmaster,
            dir,
            psql,
            port,
            password: random_hex(16),
            ca,
        };
        cluster.psql(
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN PASSWORD '{}'", cluster.password),
        );
        cluster
    }

    /// Stops the server and removes its directory; idempotent.
    fn shutdown(&self) {
        self.postmaster.stop();
        let _ = fs::remove_dir_all(self.dir.path());
    }

    /// A fresh, empty database owned by [`Cluster::user`]; returns its name (`t_<pid>_<n>`).
    pub fn create_database(&self) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {USER}"));
        name
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `glwarden`, a login role without superuser rights.
    pub fn user(&self) -> &str {
        USER
    }

    /// The password of [`Cluster::user`], random per cluster.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The CA certificate that signed the server's certificate (for `sslrootcert`).
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// `postgres://glwarden@127.0.0.1:<port>/<database>?sslmode=verify-full&sslrootcert=<ca>`;
    /// the password is not in it (see [`Cluster::password`]).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}@{HOST}:{}/{database}?sslmode=verify-full&sslrootcert={}",
            self.port,
            encode_query(&self.ca.to_string_lossy())
        )
    }

    /// Runs SQL as the superuser in `database` through psql over the Unix socket, and returns
    /// what it printed (unaligned, tuples only, trailing newline removed). Panics on an error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut cmd = Command::new(&self.psql);
        clear_pg_env(&mut cmd);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null());
        let out = run(&mut cmd, "psql");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        text
    }
}

/// The server process, owned by a thread that lives exactly as long as it does: the parent-death
/// signal fires when the thread that forked the child exits, not the process.
struct Postmaster {
    stop: Mutex<Option<Sender<()>>>,
    /// The server's exit, seen while waiting for it to start (a Mutex: Receiver is not Sync).
    exited: Mutex<Receiver<io::Result<ExitStatus>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    log: PathBuf,
}

impl Postmaster {
    fn spawn(postgres: &Path, dir: &Path, port: u16, run_as: Option<(u32, u32)>) -> Postmaster {
        let log = dir.join("postgres.log");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("pg-fixture: open postgres.log");
        let mut cmd = server_command(postgres, dir, run_as);
        let d = dir.display();
        cmd.arg("-D").arg(dir.join("data"));
        for setting in [
            format!("listen_addresses={HOST}"),
            format!("port={port}"),
            format!("unix_socket_directories={d}"),
            "ssl=on".into(),
            format!("ssl_cert_file={d}/server.crt"),
            format!("ssl_key_file={d}/server.key"),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("pg-fixture: dup postgres.log"))
            .stderr(log_file);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid) without allocating. std runs it after the
        // uid/gid switch, which would otherwise clear the parent-death signal.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGQUIT as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The test process died between fork and prctl: no signal will come.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }

        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (exit_tx, exit_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("pg-fixture-{port}"))
            .spawn(move || match cmd.spawn() {
                Ok(child) => {
                    let _ = exit_tx.send(Ok(watch(child, &stop_rx)));
                }
                Err(e) => {
                    let _ = exit_tx.send(Err(e));
                }
            })
            .expect("pg-fixture: spawn the server's thread");
        Postmaster {
            stop: Mutex::new(Some(stop_tx)),
            exited: Mutex::new(exit_rx),
            thread: Mutex::new(Some(thread)),
            log,
        }
    }

    /// Waits until the server accepts connections: the status line of `postmaster.pid` says
    /// `ready` (what `pg_ctl -w` waits for). On failure, returns the server's log.
    fn wait_ready(&self, data: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(status) = self
                .exited
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_recv()
            {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                return Err(match status {
                    Ok(status) => format!("exited with {status}\n{log}"),
                    Err(e) => format!("could not be started: {e}\n{log}"),
                });
            }
            let pid_file = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pid_file.lines().nth(7).map(str::trim) == Some("ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("not ready after {READY_TIMEOUT:?}\n{log}"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Postmaster {
    /// Asks the server's thread to stop the server and waits for it; idempotent.
    fn stop(&self) {
        drop(
            self.stop
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The server thread's body: waits for the stop request (or the handle's drop), then sends
/// SIGQUIT and reaps the server, killing it after 10 s. Owning the `Child` here means a signal
/// never goes to a reaped (and possibly reused) pid.
fn watch(mut child: Child, stop: &Receiver<()>) -> ExitStatus {
    // Ok or Disconnected: stop requested, or the handle is gone.
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_millis(50)) {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
    }
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().expect("pg-fixture: wait for the server")
}

/// A command for initdb or postgres: as root, switched to the `postgres` user; in `dir`; without
/// the caller's PG* variables.
fn server_command(program: &Path, dir: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    clear_pg_env(&mut cmd);
    cmd.current_dir(dir);
    if let Some((uid, gid)) = run_as {
        // std drops the supplementary groups too when root switches uid.
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", dir)
            .env("USER", SUPERUSER)
            .env("LOGNAME", SUPERUSER);
    }
    cmd
}

/// PGHOST, PGSSLMODE, PGOPTIONS, PGDATA... of the caller must not change what the fixture does.
fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "pg-fixture: cannot run {what} ({:?}): {e}",
            cmd.get_program()
        )
    });
    if !out.status.success() {
        panic!(
            "pg-fixture: {what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `$PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb`
/// on PATH (where `postgres` must be too).
fn bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_server(&dir),
            "pg-fixture: PG_BIN={} holds no initdb and postgres",
            dir.display()
        );
        return dir;
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            continue;
        }
        // Debian's /usr/local or alternatives links: the server sits beside the real initdb.
        if let Some(real) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            if has_server(&real) {
                return real;
            }
        }
        if has_server(&dir) {
            return dir;
        }
    }
    panic!(
        "pg-fixture: no PostgreSQL server found (looked at $PG_BIN, /usr/lib/postgresql/*/bin and \
         initdb on PATH). Install it: `apt-get install postgresql` on Debian or Ubuntu, or set PG_BIN \
         to the directory holding initdb and postgres"
    );
}

/// As root: the uid and gid of the `postgres` user, since initdb and postgres refuse root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new(SUPERUSER).unwrap();
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into pwd and buf, whose sizes are given.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        panic!(
            "pg-fixture: running as root needs the user `postgres` to run the server as (PostgreSQL \
             refuses root); `apt-get install postgresql` creates it"
        );
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// A private CA and a server certificate (SAN localhost and 127.0.0.1) in `dir`; returns the
/// CA's path. The server certificate says CA:FALSE: webpki (rustls, so sqlx) refuses a CA
/// certificate used as an end entity.
fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        run(&mut cmd, "openssl (is it installed?)");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "7",
                "-subj",
                "/CN=pg-fixture test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("pg-fixture: write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    // The server refuses a key readable by others; nothing needs the CA's key any more.
    fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600))
        .expect("pg-fixture: chmod server.key");
    let _ = fs::remove_file(dir.join("ca.key"));
    dir.join("ca.crt")
}

fn free_port() -> u16 {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .expect("pg-fixture: find a free port on 127.0.0.1")
        .port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("pg-fixture: read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes what may not stand in a URL query value.
fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes `/tmp/pg-fixture-<pid>-*` directories whose test process is gone (it was killed, so
/// its server died of the parent-death signal and nothing removed the directory).
fn remove_stale_directories() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn owner_pid(name: &OsStr) -> Option<libc::pid_t> {
    let rest = name.to_str()?.strip_prefix(DIR_PREFIX)?;
    let pid: libc::pid_t = rest.split_once('-')?.0.parse().ok()?;
    (pid > 0 && pid as u32 != std::process::id()).then_some(pid)
}

#[cfg(test)]
mod tests;
