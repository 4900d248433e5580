//! A real PostgreSQL for alock's tests and examples.
//!
//! [`database_url`] returns `DATABASE_URL` when it is set. Otherwise it starts,
//! once per process, a throwaway cluster from the PostgreSQL server programs
//! installed on this machine (found on `PATH`, through `pg_config --bindir`, or
//! under `/usr/lib/postgresql/*/bin`), in a temporary directory, on a free
//! loopback port. A watchdog process stops the server and removes the directory
//! when this process exits, however it exits. Run as root, the server runs as
//! the `postgres` user (or `nobody`), since PostgreSQL refuses to run as root.
//!
//! [`pgbouncer_url`] puts a real PgBouncer, in each pool mode, in front of
//! that server.
#![forbid(unsafe_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use alock::LockId;

pub mod model;
mod pgbouncer;
mod wire;
pub use pgbouncer::{PoolMode, pgbouncer_url};
use sqlx::{Connection, PgConnection};
pub use wire::RoundTrips;

/// The URL of the server every test and example in this process shares.
///
/// # Panics
///
/// When `DATABASE_URL` is unset and no PostgreSQL server programs are
/// installed, or the throwaway cluster fails to start; the message says why
/// and how to fix it.
pub fn database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => TestServer::start(&[]).into_url(),
    })
}

/// Opens a new session on the shared server.
pub async fn connect() -> PgConnection {
    PgConnection::connect(database_url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", database_url()))
}

/// A key no other test in any process sharing the server uses: the first
/// half is this process's id, the second a per-process counter.
pub fn unique_key() -> LockId {
    static NEXT: AtomicI32 = AtomicI32::new(1);
    LockId::Int4Pair(
        std::process::id() as i32,
        NEXT.fetch_add(1, Ordering::Relaxed),
    )
}

/// `n` keys from [`unique_key`].
pub fn unique_keys(n: usize) -> Vec<LockId> {
    (0..n).map(|_| unique_key()).collect()
}

/// `n` int8 keys, as unique as [`unique_key`]'s pairs: the pair's two halves
/// as one int8, which the server keeps as a different lock (`objsubid` 1,
/// not 2).
pub fn unique_int8_keys(n: usize) -> Vec<LockId> {
    unique_keys(n)
        .into_iter()
        .map(|id| match id {
            LockId::Int4Pair(a, b) => LockId::Int8((i64::from(a) << 32) | i64::from(b as u32)),
            other => other,
        })
        .collect()
}

/// A new session whose `deadlock_timeout` is `timeout`, and its pid: two
/// sessions with different timeouts decide which of them the deadlock
/// detector cancels.
pub async fn session_with_deadlock_timeout(timeout: &str) -> (PgConnection, i32) {
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    sqlx::query("SELECT set_config('deadlock_timeout', $1, false)")
        .bind(timeout)
        .execute(&mut conn)
        .await
        .expect("set deadlock_timeout");
    (conn, pid)
}

/// The advisory lock a session holds on one id, as `pg_locks` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// No granted row.
    Nothing,
    /// A granted `ShareLock` row.
    Shared,
    /// A granted `ExclusiveLock` row.
    Exclusive,
    /// Granted rows in both modes.
    Both,
}

/// What `pid` holds on `id` in the current database, read by `observer`.
pub async fn held(observer: &mut PgConnection, pid: i32, id: LockId) -> Held {
    let (classid, objid, objsubid) = id.pg_locks_row();
    let modes: Vec<String> = sqlx::query_scalar(
        "SELECT mode FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND pid = $1
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid::int8 = $2 AND objid::int8 = $3 AND objsubid = $4",
    )
    .bind(pid)
    .bind(i64::from(classid))
    .bind(i64::from(objid))
    .bind(objsubid)
    .fetch_all(observer)
    .await
    .expect("read pg_locks");
    let shared = modes.iter().any(|m| m == "ShareLock");
    let exclusive = modes.iter().any(|m| m == "ExclusiveLock");
    match (shared, exclusive) {
        (false, false) => Held::Nothing,
        (true, false) => Held::Shared,
        (false, true) => Held::Exclusive,
        (true, true) => Held::Both,
    }
}

/// Asserts that `conn` answers a fresh query with its own result: no stale
/// error or row from an abandoned statement, no aborted transaction.
pub async fn assert_answers(conn: &mut PgConnection, what: &str) {
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(one, 1, "{what}");
}

/// Sets the session's own `lock_timeout`, e.g. `"30ms"`.
pub async fn set_lock_timeout(conn: &mut PgConnection, value: &str) {
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(value)
        .execute(conn)
        .await
        .expect("set lock_timeout");
}

/// Whether every id is free for another session (see [`is_free`]).
pub async fn all_free(ids: &[LockId]) -> bool {
    for id in ids {
        if !is_free(*id).await {
            return false;
        }
    }
    true
}

/// The backend process id of a session.
pub async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pg_backend_pid()")
}

/// Whether `id` is free for another session: a fresh probe session can take
/// it exclusively at once (and gives it straight back).
pub async fn is_free(id: LockId) -> bool {
    let mut probe = connect().await;
    // Unlocked in the same statement: a lock left to the end of the probe's
    // session would linger until its backend exits, after close() returns.
    let taken: bool = match id {
        LockId::Int8(k) => sqlx::query_scalar(
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN pg_advisory_unlock($1) ELSE false END",
        )
        .bind(k),
        LockId::Int4Pair(a, b) => sqlx::query_scalar(
            "SELECT CASE WHEN pg_try_advisory_lock($1, $2) \
             THEN pg_advisory_unlock($1, $2) ELSE false END",
        )
        .bind(a)
        .bind(b),
    }
    .fetch_one(&mut probe)
    .await
    .expect("probe lock");
    probe.close().await.expect("close probe");
    taken
}

/// The sessions (pids) that hold `id` granted, in any mode, whoever they are.
pub async fn holders(observer: &mut PgConnection, id: LockId) -> Vec<i32> {
    let (classid, objid, objsubid) = id.pg_locks_row();
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = $3 ORDER BY pid",
    )
    .bind(i64::from(classid))
    .bind(i64::from(objid))
    .bind(objsubid)
    .fetch_all(observer)
    .await
    .expect("read pg_locks")
}

/// A throwaway PostgreSQL cluster owned by this process.
#[derive(Debug)]
pub struct TestServer {
    url: String,
    /// The server's own command line, to start it again.
    postgres: Vec<std::ffi::OsString>,
    dir: PathBuf,
    server: std::process::Child,
}

impl TestServer {
    /// Starts a new cluster with extra `postgres -c name=value` settings,
    /// e.g. `[("max_locks_per_transaction", "10")]`.
    ///
    /// # Panics
    ///
    /// When no server programs are installed or the cluster fails to start.
    pub fn start(settings: &[(&str, &str)]) -> TestServer {
        let bin = server_bindir().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server programs (initdb, postgres) were found on PATH, \
                 through `pg_config --bindir`, or under /usr/lib/postgresql/*/bin. \
                 Install them (Debian/Ubuntu: `apt-get install postgresql`) \
                 or set DATABASE_URL to a server you own."
            )
        });
        let user = run_as();
        let dir = temp_dir();
        let data = dir.join("data");
        if let Some((uid, gid)) = user.as_ref().map(|u| (u.uid, u.gid)) {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        }

        let mut initdb = command(&user, &bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args(["--username=postgres", "--auth=trust", "--encoding=UTF8"])
            .args(["--no-sync", "--no-instructions"]);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let mut postgres: Vec<std::ffi::OsString> = vec![
            bin.join("postgres").into(),
            "-D".into(),
            data.into(),
            "-p".into(),
            port.to_string().into(),
            "-k".into(),
            dir.clone().into(),
        ];
        for setting in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=200",
        ] {
            postgres.extend(["-c".into(), setting.into()]);
        }
        for (name, value) in settings {
            postgres.extend(["-c".into(), format!("{name}={value}").into()]);
        }
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let server = run_postgres(&postgres, &dir);
        wait_until_accepting(&url, &dir);
        TestServer {
            url,
            postgres,
            dir,
            server,
        }
    }

    /// Restarts the cluster, as a server crash or an operator would: a
    /// fast shutdown, which ends every session, then a new start on the
    /// same port and data. Returns once it accepts connections again.
    ///
    /// # Panics
    ///
    /// When the server does not stop or start.
    pub fn restart(&mut self) {
        let stop = Command::new("kill")
            .args(["-INT", &self.server.id().to_string()])
            .status()
            .expect("signal the server");
        assert!(stop.success(), "the server was not running");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .server
            .try_wait()
            .expect("wait for the server")
            .is_none()
        {
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.server = run_postgres(&self.postgres, &self.dir);
        wait_until_accepting(&self.url, &self.dir);
    }

    /// The connection URL of this cluster.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn into_url(self) -> String {
        self.url
    }
}

/// Starts the server's command line, logging to the cluster's directory,
/// with a watchdog that stops it when this process exits.
fn run_postgres(command_line: &[std::ffi::OsString], dir: &Path) -> std::process::Child {
    let user = run_as();
    let mut postgres = command(&user, Path::new(&command_line[0]));
    postgres.args(&command_line[1..]);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("open server log");
    if let Some(u) = &user {
        std::os::unix::fs::chown(dir.join("server.log"), Some(u.uid), Some(u.gid))
            .expect("chown server log");
    }
    let child = postgres
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start postgres");
    spawn_watchdog(child.id(), dir);
    child
}

struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

fn run_as() -> Option<RunAs> {
    let id = |flag: &str, user: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if current_uid() != Some(0) {
        return None;
    }
    ["postgres", "nobody"].iter().find_map(|name| {
        Some(RunAs {
            name: (*name).to_owned(),
            uid: id("-u", name)?,
            gid: id("-g", name)?,
        })
    })
}

fn current_uid() -> Option<u32> {
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn command(user: &Option<RunAs>, program: &Path) -> Command {
    match user {
        None => Command::new(program),
        Some(u) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .arg("--clear-groups")
                .arg("--reset-env")
                .arg(program);
            cmd.env("USER", &u.name);
            cmd
        }
    }
}

fn server_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_server(dir)));
    let from_pg_config = || {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        has_server(&dir).then_some(dir)
    };
    let debian = || {
        let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, dir)| has_server(dir))
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, dir)| dir)
    };
    on_path.or_else(from_pg_config).or_else(debian)
}

fn temp_dir() -> PathBuf {
    static SEQ: AtomicI32 = AtomicI32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "alock-pg-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create cluster dir");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// Stops the server and removes its directory once this process is gone.
#[expect(
    clippy::zombie_processes,
    reason = "the watchdog must outlive this process"
)]
fn spawn_watchdog(server_pid: u32, dir: &Path) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; \
         kill -INT {server_pid} 2>/dev/null; \
         for _ in $(seq 1 100); do kill -0 {server_pid} 2>/dev/null || break; sleep 0.1; done; \
         kill -KILL {server_pid} 2>/dev/null; rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster watchdog");
}

fn wait_until_accepting(url: &str, dir: &Path) {
    // Callers are often inside an async runtime, which cannot block on
    // another one: probe from a thread of our own.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for the readiness probe");
                loop {
                    match runtime.block_on(PgConnection::connect(url)) {
                        Ok(conn) => {
                            let _ = runtime.block_on(conn.close());
                            return;
                        }
                        Err(e) if Instant::now() > deadline => {
                            let log =
                                fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                            panic!("the throwaway PostgreSQL did not start: {e}\n{log}");
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    });
}

/// Blocks until session `pid` is waiting for an advisory lock (an ungranted
/// row in `pg_locks`): the way tests know a blocking acquire has reached the
/// server, without guessing with a sleep.
///
/// # Panics
///
/// When the session is not seen waiting within a minute.
pub async fn until_waiting(observer: &mut PgConnection, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_locks
                             WHERE locktype = 'advisory' AND NOT granted AND pid = $1)",
        )
        .bind(pid)
        .fetch_one(&mut *observer)
        .await
        .expect("read pg_locks");
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "session {pid} never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes `id` exclusively on a new session of its own and keeps it until the
/// returned session is closed or unlocks it.
pub async fn hold_elsewhere(id: LockId) -> PgConnection {
    let mut holder = connect().await;
    lock_on(&mut holder, id).await;
    holder
}

/// Takes `id` exclusively on `conn` with hand-written SQL, waiting if need be.
pub async fn lock_on(conn: &mut PgConnection, id: LockId) {
    match id {
        LockId::Int8(k) => sqlx::query("SELECT pg_advisory_lock($1)").bind(k),
        LockId::Int4Pair(a, b) => sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(a)
            .bind(b),
    }
    .execute(conn)
    .await
    .expect("take a lock by hand");
}

/// Releases every session-level advisory lock `conn`'s session holds, behind
/// the back of any lock object or guard on it: what `DISCARD ALL` or a
/// pooler's reset does to them.
pub async fn unlock_all(conn: &mut PgConnection) {
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(conn)
        .await
        .expect("pg_advisory_unlock_all()");
}

/// Blocks until session `pid`'s backend has exited: closing a connection
/// only sends `Terminate`, and the server releases the session's locks
/// when the backend goes, a moment after `close()` returns.
///
/// # Panics
///
/// When the backend is still there after a minute.
pub async fn until_gone(observer: &mut PgConnection, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let there: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&mut *observer)
                .await
                .expect("read pg_stat_activity");
        if !there {
            return;
        }
        assert!(Instant::now() < deadline, "session {pid} never went away");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
