//! Through a real PgBouncer (1.18 on Debian bookworm): transaction-level
//! locks in transaction mode, guards in session mode, and what statement
//! mode refuses. Each outcome is checked on the server from a direct
//! session, never through the pooler.
//!
//! Transaction mode runs a client's transactions on whichever server
//! session is free, and PgBouncer 1.18 keeps no prepared statements there:
//! a client runs its parameterised queries inside transactions as unnamed
//! statements (`.persistent(false)`), and plain SQL (`sqlx::raw_sql`)
//! outside them. alock's transaction-level locks prepare nothing.

use std::str::FromStr;
use std::time::{Duration, Instant};

use alock::prelude::*;
use alock_dev::{
    Held, PoolMode, assert_answers, backend_pid, connect, held, hold_elsewhere, holders, is_free,
    pgbouncer_url, unique_key, unique_keys, unlock_all, until_waiting,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The options a user connects through `mode` with; `None` skips the test
/// (no `pgbouncer`, and `CI` unset).
fn through(mode: PoolMode) -> Option<PgConnectOptions> {
    let options = PgConnectOptions::from_str(pgbouncer_url(mode)?).expect("pgbouncer URL");
    Some(match mode {
        PoolMode::Session => options,
        PoolMode::Transaction | PoolMode::Statement => options,
    })
}

async fn client(options: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(options)
        .await
        .expect("connect through pgbouncer")
}

/// Whether `pid` waits for or holds anything on `id`: a direct look at
/// `pg_locks`, granted or not.
async fn any_row(observer: &mut PgConnection, pid: i32, id: LockId) -> bool {
    let (classid, objid, objsubid) = id.pg_locks_row();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_locks
                         WHERE locktype = 'advisory' AND pid = $1
                           AND classid::int8 = $2 AND objid::int8 = $3 AND objsubid = $4)",
    )
    .bind(pid)
    .bind(i64::from(classid))
    .bind(i64::from(objid))
    .bind(objsubid)
    .fetch_one(observer)
    .await
    .expect("read pg_locks")
}

/// The server session a statement through the pooler runs on: plain SQL,
/// which needs no prepared statement.
async fn server_pid(conn: &mut PgConnection) -> i32 {
    use sqlx::Row;
    let row = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pid through the pooler");
    row.get(0)
}

/// A table of the test's own, named after one of its keys.
async fn own_table(direct: &mut PgConnection, key: LockId) -> String {
    let LockId::Int4Pair(a, b) = key else {
        unreachable!("unique_key gives pairs")
    };
    let table = format!("poolers_{a}_{b}");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table} (n int8 NOT NULL)"
    )))
    .execute(direct)
    .await
    .unwrap();
    table
}

/// Asserts that `conn` answers a query with its own result, through the
/// simple protocol: outside a transaction, transaction mode may run a
/// prepared statement's two round trips on two server sessions.
async fn answers_simple_queries(conn: &mut PgConnection, what: &str) {
    use sqlx::Row;
    let row = sqlx::raw_sql("SELECT 41 + 1")
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(row.get::<i32, _>(0), 42, "{what}");
}

// Transaction mode.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_locks_lose_no_update_under_load_through_transaction_mode() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 25;
    let Some(options) = through(PoolMode::Transaction) else {
        return;
    };
    let key = unique_key();
    let mut direct = connect().await;
    let table = own_table(&mut direct, key).await;
    sqlx::raw_sql(AssertSqlSafe(format!("INSERT INTO {table} VALUES (0)")))
        .execute(&mut direct)
        .await
        .unwrap();

    let workers: Vec<_> = (0..TASKS)
        .map(|_| {
            let options = options.clone();
            let table = table.clone();
            tokio::spawn(async move {
                let mut conn = client(&options).await;
                let mut servers = std::collections::HashSet::new();
                for _ in 0..ROUNDS {
                    let mut tx = conn.begin_locked_exclusive(key).await.unwrap();
                    servers.insert(server_pid(&mut tx).await);
                    let n: i64 =
                        sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {table}")))
                            .persistent(false)
                            .fetch_one(&mut *tx)
                            .await
                            .unwrap();
                    // Another client that ignored the lock would write in this gap.
                    tokio::task::yield_now().await;
                    sqlx::query(AssertSqlSafe(format!("UPDATE {table} SET n = $1")))
                        .persistent(false)
                        .bind(n + 1)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
                servers.len()
            })
        })
        .collect();
    let mut most_servers = 0;
    for worker in workers {
        most_servers = most_servers.max(worker.await.unwrap());
    }

    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {table}")))
        .fetch_one(&mut direct)
        .await
        .unwrap();
    assert_eq!(n, (TASKS * ROUNDS) as i64, "an update was lost");
    assert!(
        most_servers > 1,
        "no client ran on more than one server session: not transaction pooling"
    );
    assert!(is_free(key).await);
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut direct)
        .await
        .unwrap();
}

#[tokio::test]
async fn several_ids_are_all_or_nothing_through_transaction_mode() {
    let Some(options) = through(PoolMode::Transaction) else {
        return;
    };
    let [a, b, c] = unique_keys(3).try_into().unwrap();
    let mut holder = hold_elsewhere(b).await;
    let mut conn = client(&options).await;

    let mut tx = conn.begin().await.unwrap();
    assert!(!tx.try_xact_lock_exclusive([a, b, c]).await.unwrap());
    // Checked while the transaction is still open: nothing was kept.
    assert!(is_free(a).await && is_free(c).await);
    answers_simple_queries(&mut tx, "the transaction after a busy try").await;
    tx.commit().await.unwrap();

    unlock_all(&mut holder).await;
    let mut tx = conn.begin().await.unwrap();
    assert!(tx.try_xact_lock_exclusive([a, b, c]).await.unwrap());
    let pid = server_pid(&mut tx).await;
    let mut observer = connect().await;
    for id in [a, b, c] {
        assert_eq!(held(&mut observer, pid, id).await, Held::Exclusive);
    }
    tx.commit().await.unwrap();
    assert!(is_free(a).await && is_free(b).await && is_free(c).await);
}

#[tokio::test]
async fn a_timed_out_acquire_leaves_the_transaction_usable_through_transaction_mode() {
    let Some(options) = through(PoolMode::Transaction) else {
        return;
    };
    let [busy, free] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut conn = client(&options).await;
    let mut observer = connect().await;

    let mut tx = conn.begin().await.unwrap();
    let started = Instant::now();
    assert!(
        !tx.xact_lock_exclusive_timeout(busy, Duration::from_millis(100))
            .await
            .unwrap()
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    answers_simple_queries(&mut tx, "the transaction after a timed-out acquire").await;
    assert!(
        tx.xact_lock_shared_timeout(free, Duration::from_millis(100))
            .await
            .unwrap()
    );
    let pid = server_pid(&mut tx).await;
    assert_eq!(held(&mut observer, pid, free).await, Held::Shared);
    assert!(!any_row(&mut observer, pid, busy).await);
    tx.commit().await.unwrap();
    assert!(is_free(free).await);
}

#[tokio::test]
async fn a_dropped_wait_rolls_back_and_keeps_nothing_through_transaction_mode() {
    let Some(options) = through(PoolMode::Transaction) else {
        return;
    };
    let id = unique_key();
    let mut holder = hold_elsewhere(id).await;
    let mut conn = client(&options).await;
    let mut observer = connect().await;

    let table = own_table(&mut observer, id).await;

    let mut tx = conn.begin().await.unwrap();
    let pid = server_pid(&mut tx).await;
    sqlx::raw_sql(AssertSqlSafe(format!("INSERT INTO {table} VALUES (1)")))
        .execute(&mut *tx)
        .await
        .unwrap();
    {
        let wait = tx.xact_lock_exclusive(id);
        tokio::select! {
            _ = wait => panic!("the lock was granted while another session held it"),
            _ = until_waiting(&mut observer, pid) => {}
        }
    }
    drop(tx);

    // The next use finishes the abandoned wait and rolls the transaction back.
    answers_simple_queries(&mut conn, "the pooled connection after a dropped wait").await;
    assert!(!any_row(&mut observer, pid, id).await);
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut observer)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the transaction was not rolled back");
    unlock_all(&mut holder).await;
    assert!(is_free(id).await);

    let mut tx = conn.begin_locked_shared(id).await.unwrap();
    let pid = server_pid(&mut tx).await;
    assert_eq!(held(&mut observer, pid, id).await, Held::Shared);
    tx.rollback().await.unwrap();
    assert!(is_free(id).await);
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut observer)
        .await
        .unwrap();
}

// Session mode.

#[tokio::test]
async fn guards_hold_and_release_through_session_mode() {
    let Some(options) = through(PoolMode::Session) else {
        return;
    };
    let [one, two, busy] = unique_keys(3).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut conn = client(&options).await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;

    let mut guard = conn.lock_exclusive([one, two]).await.unwrap();
    assert_answers(&mut guard, "a query under the guard").await;
    assert_eq!(held(&mut observer, pid, one).await, Held::Exclusive);
    assert_eq!(held(&mut observer, pid, two).await, Held::Exclusive);
    guard.release().await.unwrap();
    assert!(is_free(one).await && is_free(two).await);

    let guard = conn.lock_shared(one).await.unwrap();
    assert_eq!(held(&mut observer, pid, one).await, Held::Shared);
    drop(guard);
    assert_answers(&mut conn, "the connection after a dropped guard").await;
    assert!(is_free(one).await);

    assert!(
        conn.try_lock_exclusive([one, busy])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(held(&mut observer, pid, one).await, Held::Nothing);
    let guard = conn.try_lock_shared(one).await.unwrap().expect("free");
    assert_eq!(held(&mut observer, pid, one).await, Held::Shared);
    guard.release().await.unwrap();

    let started = Instant::now();
    let timed_out = conn
        .lock_exclusive_timeout(busy, Duration::from_millis(100))
        .await
        .unwrap()
        .is_none();
    assert!(timed_out && started.elapsed() >= Duration::from_millis(100));
    assert!(!any_row(&mut observer, pid, busy).await);
    let guard = conn
        .lock_shared_timeout(two, Duration::from_millis(100))
        .await
        .unwrap()
        .expect("free");
    assert_eq!(held(&mut observer, pid, two).await, Held::Shared);
    guard.release().await.unwrap();
    assert!(is_free(one).await && is_free(two).await);
}

#[tokio::test]
async fn a_pool_guard_moves_into_a_task_through_session_mode() {
    let Some(options) = through(PoolMode::Session) else {
        return;
    };
    let id = unique_key();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let mut observer = connect().await;

    let mut guard = pool.lock_exclusive(id).await.unwrap();
    let pid = backend_pid(&mut guard).await;
    assert_eq!(held(&mut observer, pid, id).await, Held::Exclusive);
    tokio::spawn(async move { guard.release().await.unwrap() })
        .await
        .unwrap();
    assert!(is_free(id).await);

    let guard = pool.lock_shared(id).await.unwrap();
    assert!(!is_free(id).await);
    drop(guard);
    let mut conn = pool.acquire().await.unwrap();
    assert_answers(&mut conn, "a pooled connection after a dropped guard").await;
    assert!(is_free(id).await);
}

#[tokio::test]
async fn a_client_that_leaves_holding_a_lock_frees_it_through_session_mode() {
    let Some(options) = through(PoolMode::Session) else {
        return;
    };
    let id = unique_key();
    let mut conn = client(&options).await;
    conn.lock_exclusive(id).await.unwrap().leak();
    assert!(!is_free(id).await);
    conn.close().await.unwrap();

    // PgBouncer keeps the server session and resets it with DISCARD ALL,
    // which releases its advisory locks; the reset runs just after the
    // client leaves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_free(id).await {
        assert!(Instant::now() < deadline, "the lock outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Statement mode.

#[tokio::test]
async fn transactions_are_refused_through_statement_mode() {
    let Some(options) = through(PoolMode::Statement) else {
        return;
    };
    let id = unique_key();
    let mut conn = client(&options).await;
    let error = conn
        .begin_locked_exclusive(id)
        .await
        .expect_err("statement mode refuses a transaction of several statements");
    // PgBouncer answers BEGIN with FATAL 08P01 and closes the connection.
    let server_said = std::error::Error::source(&error).map(ToString::to_string);
    assert!(
        matches!(error, alock::Error::ConnectionLost(_))
            && server_said.is_some_and(|s| s.contains("not allowed in statement pooling mode")),
        "unexpected error: {error:?}"
    );
    assert!(is_free(id).await);
}

/// Keeps the server session `pid` busy in a transaction through the pooler,
/// so that the client's next statement runs on another one; `None` when the
/// pooler handed this client another session first.
async fn occupy(options: &PgConnectOptions, pid: i32) -> Option<PgConnection> {
    for _ in 0..20 {
        let mut other = client(options).await;
        sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
        if server_pid(&mut other).await == pid {
            return Some(other);
        }
        sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    }
    None
}

/// A session-level lock through a transaction-mode pooler: its release and
/// its check land on another server session, say so with a typed error and
/// never report success; the lock stays with the session that took it.
#[tokio::test]
async fn session_locks_report_the_changed_session_through_transaction_mode() {
    let Some(options) = through(PoolMode::Transaction) else {
        return;
    };
    let id = unique_key();
    let mut observer = connect().await;
    let mut conn = client(&options).await;
    let guard = match conn.lock_exclusive(id).await {
        Ok(guard) => guard,
        // The pooler ran the call's parts on different sessions (a
        // function or a prepared statement it needed was on another):
        // refused, and nothing held.
        Err(e) => {
            eprintln!("the acquire was refused through the pooler: {e}");
            assert!(holders(&mut observer, id).await.is_empty());
            return;
        }
    };
    let [took] = holders(&mut observer, id).await[..] else {
        panic!("one session holds the lock")
    };
    let Some(mut other) = occupy(&options, took).await else {
        eprintln!("the pooler never handed out session {took}; nothing to check");
        return;
    };
    let mut guard = guard;
    let checked = guard.held_on_server().await;
    assert!(
        matches!(checked, Err(alock::Error::SessionChanged { took: t, .. }) if t == took),
        "{checked:?}"
    );
    let released = guard.release().await;
    assert!(
        matches!(released, Err(alock::Error::SessionChanged { took: t, .. }) if t == took),
        "{released:?}"
    );
    assert_eq!(
        holders(&mut observer, id).await,
        [took],
        "nothing was released elsewhere"
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
}

/// A lease through a transaction-mode pooler is lost as soon as a check
/// lands on another server session.
#[tokio::test]
async fn a_lease_check_reports_the_changed_session_through_transaction_mode() {
    let Some(options) = through(PoolMode::Transaction) else {
        return;
    };
    let id = unique_key();
    let mut observer = connect().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();
    // Long enough that a check waiting in the pooler's queue behind the
    // other tests' clients is not taken for a connection that hangs.
    let lease = match alock::Lease::options()
        .check_every(Duration::from_secs(1))
        .exclusive(&pool, id)
        .await
    {
        Ok(lease) => lease,
        Err(e) => {
            eprintln!("the lease was refused through the pooler: {e}");
            assert!(holders(&mut observer, id).await.is_empty());
            return;
        }
    };
    let [took] = holders(&mut observer, id).await[..] else {
        panic!("one session holds the lease")
    };
    let Some(mut other) = occupy(&options, took).await else {
        eprintln!("the pooler never handed out session {took}; nothing to check");
        return;
    };
    let cause = tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the check notices");
    assert_eq!(cause, alock::LostCause::SessionChanged);
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
}
