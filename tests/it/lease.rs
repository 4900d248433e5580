//! Leases notice when they are lost, whatever the cause, within their
//! detection bound; leader election never lets two instances lead at once.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use alock::prelude::*;
use alock::{Error, Lease, LeaseOptions, LostCause};
use alock_dev::{RoundTrips, backend_pid, connect, database_url, is_free, unique_keys};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::sync::atomic::AtomicI32;

const EVERY: Duration = Duration::from_millis(200);

fn options() -> LeaseOptions {
    Lease::options().check_every(EVERY)
}

async fn pool_at(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .unwrap()
}

/// Whether `future` is ready at its first poll.
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Waits for the loss, and checks it came within the detection bound (and
/// a second of slack for a loaded machine).
async fn lost_within_bound(lease: &Lease, since: Instant) -> LostCause {
    let bound = lease.options_used().detection_bound() + Duration::from_secs(1);
    let cause = tokio::time::timeout(bound * 3, lease.lost())
        .await
        .expect("the loss is noticed");
    assert!(
        since.elapsed() <= bound,
        "noticed after {:?}",
        since.elapsed()
    );
    assert!(!lease.is_held());
    cause
}

async fn lease_pid(lease: &Lease) -> i32 {
    backend_pid(&mut lease.connection().await.unwrap()).await
}

#[tokio::test]
async fn a_released_lease_frees_its_keys_and_never_reports_a_loss() {
    let id = unique_keys(1)[0];
    let pool = pool_at(database_url()).await;
    let lease = options().exclusive(&pool, id).await.unwrap();
    assert!(lease.is_held());
    assert!(
        !is_free(id).await,
        "another session cannot take a leased key"
    );
    // A few checks pass.
    tokio::time::sleep(EVERY * 3).await;
    assert!(lease.is_held());
    let watch = lease.watch();
    lease.release().await.unwrap();
    assert!(is_free(id).await, "released: another session can take it");
    assert!(!watch.is_held());
    assert_eq!(ready_now(watch.lost()), None, "a release is not a loss");
}

#[tokio::test]
async fn a_terminated_backend_is_noticed_within_the_bound() {
    let id = unique_keys(1)[0];
    let pool = pool_at(database_url()).await;
    let lease = options().exclusive(&pool, id).await.unwrap();
    let pid = lease_pid(&lease).await;
    let watch = lease.watch();
    let mut observer = connect().await;
    let killed = Instant::now();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut observer)
        .await
        .unwrap();
    assert_eq!(
        lost_within_bound(&lease, killed).await,
        LostCause::SessionEnded
    );
    assert_eq!(
        watch.lost().await,
        LostCause::SessionEnded,
        "handles see it too"
    );
    assert!(matches!(
        lease.release().await,
        Err(Error::LeaseLost(LostCause::SessionEnded))
    ));
}

#[tokio::test]
async fn unlock_all_or_discard_all_on_the_leases_session_is_noticed() {
    for statement in ["SELECT pg_advisory_unlock_all()", "DISCARD ALL"] {
        let id = unique_keys(1)[0];
        let pool = pool_at(database_url()).await;
        let lease = options().shared(&pool, id).await.unwrap();
        let done = Instant::now();
        sqlx::raw_sql(statement)
            .execute(&mut *lease.connection().await.unwrap())
            .await
            .unwrap();
        assert_eq!(
            lost_within_bound(&lease, done).await,
            LostCause::NotHeld,
            "{statement}"
        );
        assert!(matches!(lease.connection().await, Err(Error::LeaseLost(_))));
    }
}

#[tokio::test]
async fn a_connection_cut_by_the_network_is_noticed_while_the_server_holds_on() {
    let id = unique_keys(1)[0];
    let proxy = RoundTrips::start(database_url()).await;
    let pool = pool_at(proxy.url()).await;
    let lease = options().exclusive(&pool, id).await.unwrap();
    let cut = Instant::now();
    proxy.cut();
    assert_eq!(
        lost_within_bound(&lease, cut).await,
        LostCause::Unresponsive
    );
    // The server has not noticed: the session still holds the key, so no
    // one else can believe they hold it.
    assert!(!is_free(id).await);
}

#[tokio::test]
async fn a_lease_through_the_pool_ext_uses_the_default_interval() {
    let id = unique_keys(1)[0];
    let pool = pool_at(database_url()).await;
    let lease = pool.lease_exclusive(id).await.unwrap();
    assert_eq!(
        lease.options_used().detection_bound(),
        alock::DEFAULT_CHECK_EVERY * 2
    );
    assert!(lease.options_used().detection_bound() <= Duration::from_secs(5));
    drop(lease);
    let mut conn = connect().await;
    let guard = tokio::time::timeout(Duration::from_secs(10), conn.lock_exclusive(id))
        .await
        .expect("a dropped lease releases its key");
    guard.unwrap().release().await.unwrap();
}

/// The child half of the cross-process test: takes a lease on the key in
/// `ALOCK_LEASE_CHILD_KEY` and holds it until killed.
#[tokio::test]
#[ignore = "run by across_processes_a_killed_holder_frees_the_lease"]
async fn lease_child() {
    let Ok(key) = std::env::var("ALOCK_LEASE_CHILD_KEY") else {
        return;
    };
    let pool = pool_at(database_url()).await;
    let lease = options()
        .exclusive(&pool, key.parse::<i64>().unwrap())
        .await
        .unwrap();
    println!("leased");
    lease.lost().await;
}

#[tokio::test]
async fn across_processes_a_killed_holder_frees_the_lease() {
    let key = match unique_keys(1)[0] {
        alock::LockId::Int4Pair(a, b) => (i64::from(a) << 32) | i64::from(b as u32),
        alock::LockId::Int8(k) => k,
    };
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "lease::lease_child", "--nocapture"])
        .env("ALOCK_LEASE_CHILD_KEY", key.to_string())
        .env("DATABASE_URL", database_url())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pool = pool_at(database_url()).await;
    // Until the child holds the key.
    for _ in 0..600 {
        if !alock_dev::is_free(alock::LockId::Int8(key)).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { options().exclusive(&pool, key).await }
    });
    tokio::time::sleep(EVERY).await;
    assert!(!waiter.is_finished(), "the child holds it");
    child.start_kill().unwrap();
    let killed = Instant::now();
    child.wait().await.unwrap();
    let lease = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the parent gets the lease")
        .unwrap()
        .unwrap();
    assert!(killed.elapsed() < lease.options_used().detection_bound() + Duration::from_secs(2));
    assert!(lease.is_held());
}

/// Several instances campaign for one key while their backends are killed
/// at random. A flag each leader raises while it leads, and a counter that
/// only the leader increments by reading it and writing it back a moment
/// later (so that two leaders at once would lose increments), show that no
/// two ever led at once and that the lead kept moving on. The same update
/// counts its commits atomically: a kill can land after a commit and before
/// its answer, so the server, not the client, says how many writes there
/// were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_never_overlap_while_their_backends_are_killed() {
    let key = unique_keys(1)[0];
    let leading = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(AtomicUsize::new(0));
    let increments = Arc::new(AtomicUsize::new(0));
    let table = format!("alock_leader_counter_{}", std::process::id());
    let mut setup = connect().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (n int8 NOT NULL, commits int8 NOT NULL); \
         INSERT INTO {table} VALUES (0, 0)"
    )))
    .execute(&mut setup)
    .await
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut instances = Vec::new();
    for _ in 0..3 {
        let pool = pool_at(database_url()).await;
        let (leading, overlaps, terms) = (leading.clone(), overlaps.clone(), terms.clone());
        let (increments, table) = (increments.clone(), table.clone());
        let mut stop = stop_rx.clone();
        instances.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            options()
                .lead(&pool, key, stopped, |lease: Arc<Lease>| {
                    let (leading, overlaps, terms) =
                        (leading.clone(), overlaps.clone(), terms.clone());
                    let (increments, table) = (increments.clone(), table.clone());
                    async move {
                        // Raised for as long as this future lives.
                        struct Leading(Arc<AtomicBool>);
                        impl Drop for Leading {
                            fn drop(&mut self) {
                                self.0.store(false, Ordering::SeqCst);
                            }
                        }
                        if leading.swap(true, Ordering::SeqCst) {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        let _flag = Leading(leading.clone());
                        terms.fetch_add(1, Ordering::SeqCst);
                        loop {
                            let Ok(mut conn) = lease.connection().await else {
                                return std::future::pending::<()>().await;
                            };
                            let read = format!("SELECT n FROM {table}");
                            let Ok(n) = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(read))
                                .fetch_one(&mut *conn)
                                .await
                            else {
                                drop(conn);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            };
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let write =
                                format!("UPDATE {table} SET n = {}, commits = commits + 1", n + 1);
                            let wrote = sqlx::query(sqlx::AssertSqlSafe(write))
                                .execute(&mut *conn)
                                .await;
                            if wrote.is_ok() {
                                increments.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
                .await
        }));
    }
    let mut observer = connect().await;
    let started = Instant::now();
    while terms.load(Ordering::SeqCst) < 4 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(EVERY * 3).await;
        // Kill whoever holds the key now.
        let (c, o, s) = key.pg_locks_row();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
              WHERE locktype = 'advisory' AND granted \
                AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = $3",
        )
        .bind(i64::from(c))
        .bind(i64::from(o))
        .bind(s)
        .execute(&mut observer)
        .await
        .unwrap();
    }
    stop_tx.send(true).unwrap();
    for instance in instances {
        assert!(matches!(instance.await.unwrap(), Ok(None)));
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two instances led at once"
    );
    assert!(
        terms.load(Ordering::SeqCst) >= 4,
        "the lead moved after each kill"
    );
    // A campaign stopped mid-attempt closes that connection; its session
    // ends, with what it took, in the server's own time.
    let stopped = Instant::now();
    while !is_free(key).await {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "stopped: nobody holds the key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (counted, commits): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n, commits FROM {table}"
    )))
    .fetch_one(&mut setup)
    .await
    .unwrap();
    assert_eq!(counted, commits, "no increment was lost");
    let confirmed = increments.load(Ordering::SeqCst);
    assert!(
        confirmed as i64 <= commits,
        "every write the client saw succeed was committed: {confirmed} > {commits}"
    );
    assert!(counted > 0);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut setup)
        .await
        .unwrap();
}

/// A server restart ends every session: the lease notices within its bound,
/// and a leader campaigns through the restart and leads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_noticed_and_the_leader_leads_again() {
    let mut server = alock_dev::TestServer::start(&[]);
    let id = unique_keys(1)[0];
    let pool = pool_at(server.url()).await;
    let lease = options().exclusive(&pool, id).await.unwrap();

    let leader_key = unique_keys(1)[0];
    let terms = Arc::new(AtomicUsize::new(0));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let leader = tokio::spawn({
        let (pool, terms) = (pool_at(server.url()).await, terms.clone());
        async move {
            let stop = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            options()
                .lead(&pool, leader_key, stop, |_lease: Arc<Lease>| {
                    let terms = terms.clone();
                    async move {
                        terms.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await
                    }
                })
                .await
        }
    });
    let until_terms = async |n: usize| {
        let started = Instant::now();
        while terms.load(Ordering::SeqCst) < n {
            assert!(started.elapsed() < Duration::from_secs(60), "no term {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    until_terms(1).await;

    let restarted = Instant::now();
    tokio::task::block_in_place(|| server.restart());
    let cause = lost_within_bound(&lease, restarted).await;
    assert_eq!(cause, LostCause::SessionEnded);
    until_terms(2).await;
    stop_tx.send(true).unwrap();
    assert!(matches!(leader.await.unwrap(), Ok(None)));
}

/// A lost leader's closure is cancelled: dropped within the detection bound
/// of the loss, so that it never passes another await point.
#[tokio::test]
async fn a_lost_leaders_closure_never_passes_another_await() {
    let key = unique_keys(1)[0];
    let pool = pool_at(database_url()).await;
    let ticks = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let leader = tokio::spawn({
        let (ticks, dropped) = (ticks.clone(), dropped.clone());
        async move {
            let stop = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            options()
                .lead(&pool, key, stop, move |_lease: Arc<Lease>| {
                    let (ticks, dropped) = (ticks.clone(), dropped.clone());
                    async move {
                        struct Dropped(Arc<AtomicBool>);
                        impl Drop for Dropped {
                            fn drop(&mut self) {
                                self.0.store(true, Ordering::SeqCst);
                            }
                        }
                        let _dropped = Dropped(dropped);
                        // Only the first term counts its awaits.
                        if ticks.load(Ordering::SeqCst) > 0 {
                            return std::future::pending().await;
                        }
                        loop {
                            ticks.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                })
                .await
        }
    });
    let mut observer = connect().await;
    while ticks.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [pid] = alock_dev::holders(&mut observer, key).await[..] else {
        panic!("the leader holds the key")
    };
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut observer)
        .await
        .unwrap();
    let killed = Instant::now();
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            killed.elapsed() < EVERY * 2 + Duration::from_secs(1),
            "the closure was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_drop = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(EVERY * 3).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        at_drop,
        "no await passed after the drop"
    );
    stop_tx.send(true).unwrap();
    assert!(matches!(leader.await.unwrap(), Ok(None)));
}

/// A user task that keeps `lease.connection()` borrowed, working between
/// queries, cannot hide a loss: a check that cannot be made in time counts
/// as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_is_noticed_while_the_user_borrows_the_connection() {
    let id = unique_keys(1)[0];
    let pool = pool_at(database_url()).await;
    let lease = Arc::new(
        Lease::options()
            .check_every(EVERY)
            .exclusive(&pool, id)
            .await
            .unwrap(),
    );
    let pid = backend_pid(&mut lease.connection().await.unwrap()).await;
    let l2 = lease.clone();
    let user = tokio::spawn(async move {
        let _conn = l2.connection().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await; // "work" while holding the connection
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut observer = connect().await;
    let killed = Instant::now();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut observer)
        .await
        .unwrap();
    // Another session can now take the key...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(is_free(id).await, "server freed the key");
    let r = tokio::time::timeout(EVERY * 2 + Duration::from_secs(1), lease.lost()).await;
    eprintln!(
        "lost() after {:?}: {:?}; is_held={}",
        killed.elapsed(),
        r,
        lease.is_held()
    );
    assert!(
        r.is_ok(),
        "lost() did not fire within the detection bound (+1s) while the connection was borrowed"
    );
    user.abort();
}

/// Two leaders whose work keeps its lease's connection borrowed: when the
/// first one's backend is killed, its work is dropped before the second's
/// starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_never_overlap_when_their_work_keeps_the_connection() {
    let key = unique_keys(1)[0];
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let pid_a = Arc::new(AtomicI32::new(0));
    let mut tasks = Vec::new();
    for i in 0..2 {
        let pool = pool_at(database_url()).await;
        let (running, max_running, pid_a) = (running.clone(), max_running.clone(), pid_a.clone());
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tasks.push(tokio::spawn(async move {
            Lease::options()
                .check_every(EVERY)
                .lead(
                    &pool,
                    key,
                    std::future::pending(),
                    move |lease: Arc<Lease>| {
                        let (running, max_running, pid_a) =
                            (running.clone(), max_running.clone(), pid_a.clone());
                        async move {
                            struct Dec(Arc<AtomicUsize>);
                            impl Drop for Dec {
                                fn drop(&mut self) {
                                    self.0.fetch_sub(1, Ordering::SeqCst);
                                }
                            }
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            max_running.fetch_max(now, Ordering::SeqCst);
                            let _d = Dec(running.clone());
                            // A leader that keeps its session's connection for its work.
                            let mut conn = lease.connection().await.unwrap();
                            let pid = backend_pid(&mut conn).await;
                            pid_a.store(pid, Ordering::SeqCst);
                            loop {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            } // the work
                        }
                    },
                )
                .await
        }));
    }
    // Wait for a leader, then kill its backend.
    let start = Instant::now();
    while pid_a.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = pid_a.load(Ordering::SeqCst);
    assert_ne!(first, 0);
    let mut observer = connect().await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&mut observer)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mx = max_running.load(Ordering::SeqCst);
    eprintln!(
        "max concurrently running f: {mx}, now {}",
        running.load(Ordering::SeqCst)
    );
    for t in tasks {
        t.abort();
    }
    assert_eq!(mx, 1, "two instances ran f at once");
}

/// The network is cut while the user's query on `lease.connection()` is in
/// flight: the query hangs, and the loss is noticed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_network_is_noticed_while_a_user_query_hangs_on_it() {
    let id = unique_keys(1)[0];
    let proxy = RoundTrips::start(database_url()).await;
    let pool = pool_at(proxy.url()).await;
    let lease = Arc::new(
        Lease::options()
            .check_every(EVERY)
            .exclusive(&pool, id)
            .await
            .unwrap(),
    );
    let l2 = lease.clone();
    let user = tokio::spawn(async move {
        loop {
            let mut conn = l2.connection().await.unwrap();
            let _ = sqlx::query("SELECT pg_sleep(0.05)")
                .execute(&mut *conn)
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = Instant::now();
    proxy.cut();
    let r = tokio::time::timeout(EVERY * 2 + Duration::from_secs(3), lease.lost()).await;
    eprintln!("after {:?}: {:?}", cut.elapsed(), r);
    user.abort();
    assert!(
        r.is_ok(),
        "lost() did not fire after a cut while a user query was in flight"
    );
}
