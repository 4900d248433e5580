//! A real PgBouncer in front of the shared server, for `tests/it/poolers.rs`.
//!
//! [`pgbouncer_url`] starts, once per process, one `pgbouncer` in front of
//! the server [`database_url`](crate::database_url) points at (the
//! throwaway cluster, or `DATABASE_URL`'s server), with one database entry
//! per pool mode: `alock_session`, `alock_transaction` and
//! `alock_statement`, each logging in to the server's database as the
//! server's user (`auth_type = any`: the client's user name and password are
//! ignored). The transaction and statement pools are smaller than the number
//! of clients the tests open, so that clients really share server sessions.
//! Its settings are PgBouncer's defaults otherwise: a session-mode server
//! session is reset with `DISCARD ALL` when its client leaves, and nothing
//! is reset between transactions in transaction mode, so what a client
//! leaves on a server session (a prepared statement, a session-level lock)
//! stays there for the next client.
//! The server's watchdog stops it when this process exits, however it exits.
//! Run as root, it runs as the same user as the server, since PgBouncer
//! refuses to run as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

/// A PgBouncer pool mode: when PgBouncer gives a client's server session
/// back to its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// When the client disconnects: the client keeps one server session.
    Session,
    /// After each transaction, and after each statement outside one.
    Transaction,
    /// After each statement; transactions of several statements are refused.
    Statement,
}

impl PoolMode {
    const ALL: [PoolMode; 3] = [
        PoolMode::Session,
        PoolMode::Transaction,
        PoolMode::Statement,
    ];

    /// The value of PgBouncer's `pool_mode` setting.
    fn setting(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }

    fn database(self) -> &'static str {
        match self {
            PoolMode::Session => "alock_session",
            PoolMode::Transaction => "alock_transaction",
            PoolMode::Statement => "alock_statement",
        }
    }

    /// Server sessions per pool: fewer than the clients a test opens in the
    /// modes that share them, as many as any test needs in session mode.
    fn pool_size(self) -> u32 {
        match self {
            PoolMode::Session => 60,
            PoolMode::Transaction => 3,
            PoolMode::Statement => 2,
        }
    }
}

/// The URL of a PgBouncer database in `mode`, in front of the shared server;
/// `None` when `pgbouncer` is not installed and the `CI` environment
/// variable is unset, after saying on stderr that the calling test is
/// skipped.
///
/// ```no_run
/// # async fn test() {
/// use alock_dev::{PoolMode, pgbouncer_url};
/// let Some(url) = pgbouncer_url(PoolMode::Transaction) else { return };
/// # }
/// ```
///
/// # Panics
///
/// When `pgbouncer` is not installed and `CI` is set (CI installs it, so a
/// missing one is a broken machine, not a reason to skip), or when it fails
/// to start.
pub fn pgbouncer_url(mode: PoolMode) -> Option<&'static str> {
    static PGBOUNCER: OnceLock<Option<PgBouncer>> = OnceLock::new();
    let bouncer = PGBOUNCER.get_or_init(|| {
        let Some(bin) = pgbouncer_binary() else {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            assert!(
                !ci,
                "pgbouncer was not found on PATH or at /usr/sbin/pgbouncer, and CI is set: \
                 install it (Debian/Ubuntu: `apt-get install pgbouncer`; .ci/run does)"
            );
            return None;
        };
        Some(PgBouncer::start(&bin, crate::database_url()))
    });
    match bouncer {
        Some(bouncer) => Some(bouncer.url(mode)),
        None => {
            eprintln!(
                "skipped {}: pgbouncer was not found on PATH or at /usr/sbin/pgbouncer \
                 (Debian/Ubuntu: `apt-get install pgbouncer`); with CI set this is a failure",
                std::thread::current().name().unwrap_or("this test"),
            );
            None
        }
    }
}

struct PgBouncer {
    session: String,
    transaction: String,
    statement: String,
}

impl PgBouncer {
    fn url(&self, mode: PoolMode) -> &str {
        match mode {
            PoolMode::Session => &self.session,
            PoolMode::Transaction => &self.transaction,
            PoolMode::Statement => &self.statement,
        }
    }

    fn start(bin: &Path, server_url: &str) -> PgBouncer {
        let server = PgConnectOptions::from_str(server_url)
            .unwrap_or_else(|e| panic!("cannot read the server URL {server_url}: {e}"));
        let host = match server.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => server.get_host().to_owned(),
        };
        let mut target = format!(
            "host={host} port={port} user={user} dbname={dbname}",
            port = server.get_port(),
            user = server.get_username(),
            dbname = server.get_database().unwrap_or(server.get_username()),
        );
        if let Some(password) =
            url_password(server_url).or_else(|| std::env::var("PGPASSWORD").ok())
        {
            assert!(
                !password.contains(['\'', '\\']),
                "the server's password has a quote or backslash, which this harness \
                 does not write into pgbouncer.ini"
            );
            target.push_str(&format!(" password='{password}'"));
        }

        let user = crate::run_as();
        let dir = crate::temp_dir();
        let port = crate::free_port();
        let databases: String = PoolMode::ALL
            .iter()
            .map(|mode| {
                format!(
                    "{db} = {target} pool_mode={pool_mode} pool_size={size}\n",
                    db = mode.database(),
                    pool_mode = mode.setting(),
                    size = mode.pool_size(),
                )
            })
            .collect();
        let config = dir.join("pgbouncer.ini");
        fs::write(
            &config,
            format!(
                "[databases]\n{databases}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = any\n\
                 max_client_conn = 1000\n\
                 ; sqlx sends it in every startup packet; PgBouncer refuses what it does not track\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 ; a waiter must not sit silently in PgBouncer's queue longer than a test may run\n\
                 query_wait_timeout = 30\n\
                 ; PgBouncer's defaults otherwise: DISCARD ALL when a session-mode\n\
                 ; client leaves, no reset between transactions\n\
                 server_reset_query = DISCARD ALL\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n"
            ),
        )
        .expect("write pgbouncer.ini");
        let log_path = dir.join("pgbouncer.log");
        let log = fs::File::create(&log_path).expect("create pgbouncer log");
        if let Some(u) = &user {
            for path in [dir.as_path(), &config, &log_path] {
                std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                    .expect("chown pgbouncer files");
            }
        }

        let mut child = crate::command(&user, bin)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start pgbouncer");
        crate::spawn_watchdog(child.id(), &dir);

        let url = |mode: PoolMode| format!("postgres://alock@127.0.0.1:{port}/{}", mode.database());
        let bouncer = PgBouncer {
            session: url(PoolMode::Session),
            transaction: url(PoolMode::Transaction),
            statement: url(PoolMode::Statement),
        };
        wait_until_serving(&bouncer.transaction, &log_path, &mut child);
        bouncer
    }
}

fn pgbouncer_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|bin| bin.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/pgbouncer");
        debian.is_file().then_some(debian)
    })
}

/// The password of a `postgres://user:password@host/...` URL, percent-decoded.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let encoded = userinfo.split_once(':')?.1;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut iter = encoded.bytes();
    while let Some(b) = iter.next() {
        if b == b'%' {
            let hex: Vec<u8> = iter.by_ref().take(2).collect();
            let value = std::str::from_utf8(&hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            bytes.push(value);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// Waits until a query through PgBouncer reaches the server: PgBouncer
/// accepts clients before it has a server session, so a login alone proves
/// nothing.
fn wait_until_serving(url: &str, log: &Path, child: &mut std::process::Child) {
    let failed = |why: String| -> ! {
        let log = fs::read_to_string(log).unwrap_or_default();
        panic!("the test PgBouncer did not start: {why}\n{log}");
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for the readiness probe");
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        failed(format!("pgbouncer exited with {status}"));
                    }
                    let probe = runtime.block_on(async {
                        let mut conn = PgConnection::connect(url).await?;
                        conn.execute(sqlx::raw_sql("SELECT 1")).await?;
                        conn.close().await
                    });
                    match probe {
                        Ok(()) => return,
                        Err(e) if Instant::now() > deadline => failed(e.to_string()),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    });
}

#[cfg(test)]
mod tests {
    use super::url_password;

    #[test]
    fn a_url_password_is_percent_decoded() {
        assert_eq!(
            url_password("postgres://u:p%40ss@h:5/db"),
            Some("p@ss".into())
        );
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("postgres://h/db?user=u"), None);
    }
}
