//! Every way an acquire can fail part way leaves none of its ids held, keeps
//! the session's other holds, and says what happened.

use alock::{Error, ExclusiveLock, LockId, ShareLock};
use alock_dev::{
    Held, TestServer, assert_answers, backend_pid, connect, held, hold_elsewhere, is_free, lock_on,
    session_with_deadlock_timeout, set_lock_timeout, unique_int8_keys, unique_key, unique_keys,
    until_gone, until_waiting,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A session that holds `taken` through one object, then fails to take
/// `[taken, free, busy]` through another: after the failure it must still
/// hold `taken` exactly once and nothing else.
async fn assert_only_prior_hold_remains(
    observer: &mut PgConnection,
    pid: i32,
    prior: LockId,
    free: LockId,
) {
    assert_eq!(
        held(observer, pid, free).await,
        Held::Nothing,
        "partial hold leaked"
    );
    assert_eq!(
        held(observer, pid, prior).await,
        Held::Exclusive,
        "prior hold lost"
    );
}

#[tokio::test]
async fn deadlock_is_typed_and_leaves_nothing_of_the_call() {
    let [a, b, free] = unique_keys(3).try_into().unwrap();
    let mut observer = connect().await;

    let (first, first_pid) = session_with_deadlock_timeout("10s").await;
    let mut first_a = ExclusiveLock::new(first, a);
    first_a.acquire().await.unwrap();

    let (mut second, second_pid) = session_with_deadlock_timeout("50ms").await;
    let mut second_b = ExclusiveLock::new(&mut second, b);
    second_b.acquire().await.unwrap();

    let first_waits = tokio::spawn(async move {
        let mut first_b = ExclusiveLock::new(&mut first_a, b);
        first_b.acquire().await.unwrap();
        first_b.release().await.unwrap();
        drop(first_b);
        first_a
    });
    until_waiting(&mut observer, first_pid).await;

    let mut second_ab = ExclusiveLock::new(&mut second_b, [b, free, a]);
    let err = second_ab.acquire().await.unwrap_err();
    assert!(
        matches!(err, Error::Deadlock(ref e) if e.code() == "40P01"),
        "{err:?}"
    );
    assert!(!second_ab.is_locked());
    drop(second_ab);
    assert_only_prior_hold_remains(&mut observer, second_pid, b, free).await;
    assert_eq!(held(&mut observer, second_pid, a).await, Held::Nothing);

    assert_answers(second_b.as_mut(), "the deadlock left an error").await;
    second_b.release().await.unwrap();
    drop(second_b);
    let mut first_a = first_waits.await.unwrap();
    first_a.release().await.unwrap();
    assert!(is_free(a).await && is_free(b).await && is_free(free).await);
}

#[tokio::test]
async fn a_transaction_level_deadlock_is_typed_and_keeps_the_transaction() {
    use alock::prelude::*;
    let [a, b, free] = unique_keys(3).try_into().unwrap();
    let mut observer = connect().await;

    let (first, first_pid) = session_with_deadlock_timeout("10s").await;
    let mut first_a = ExclusiveLock::new(first, a);
    first_a.acquire().await.unwrap();

    let (mut second, second_pid) = session_with_deadlock_timeout("50ms").await;
    let mut tx = second.begin().await.unwrap();
    tx.xact_lock_exclusive(b).await.unwrap();

    let first_waits = tokio::spawn(async move {
        let mut first_b = ExclusiveLock::new(&mut first_a, b);
        first_b.acquire().await.unwrap();
        first_b.release().await.unwrap();
        drop(first_b);
        first_a.release().await.unwrap();
    });
    until_waiting(&mut observer, first_pid).await;

    let err = tx.xact_lock_exclusive([b, free, a]).await.unwrap_err();
    assert!(
        matches!(err, Error::Deadlock(ref e) if e.code() == "40P01"),
        "{err:?}"
    );
    assert_eq!(held(&mut observer, second_pid, free).await, Held::Nothing);
    assert_eq!(held(&mut observer, second_pid, a).await, Held::Nothing);
    assert_eq!(held(&mut observer, second_pid, b).await, Held::Exclusive);
    assert_answers(&mut tx, "the deadlock aborted the transaction").await;
    tx.commit().await.unwrap();
    first_waits.await.unwrap();
    assert!(is_free(a).await && is_free(b).await && is_free(free).await);
}

#[tokio::test]
async fn session_lock_timeout_is_typed_and_leaves_nothing_of_the_call() {
    let [prior, free, busy] = unique_keys(3).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    set_lock_timeout(&mut conn, "30ms").await;
    let mut prior_lock = ExclusiveLock::new(&mut conn, prior);
    prior_lock.acquire().await.unwrap();

    for ids in [vec![prior, free, busy], vec![busy]] {
        let mut lock = ExclusiveLock::new(&mut prior_lock, &ids);
        let err = lock.acquire().await.unwrap_err();
        assert!(
            matches!(err, Error::LockTimeout(ref e) if e.code() == "55P03"),
            "{err:?}"
        );
        drop(lock);
        assert_only_prior_hold_remains(&mut observer, pid, prior, free).await;
    }
    prior_lock.release().await.unwrap();
    assert!(is_free(prior).await);
}

#[tokio::test]
async fn statement_timeout_is_typed_and_leaves_nothing_of_the_call() {
    let [prior, free, busy] = unique_keys(3).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut prior_lock = ExclusiveLock::new(&mut conn, prior);
    prior_lock.acquire().await.unwrap();
    sqlx::query("SET statement_timeout = '50ms'")
        .execute(prior_lock.as_mut())
        .await
        .unwrap();

    for ids in [vec![prior, free, busy], vec![busy]] {
        let mut lock = ShareLock::new(&mut prior_lock, &ids);
        let err = lock.acquire().await.unwrap_err();
        assert!(
            matches!(err, Error::Canceled(ref e) if e.code() == "57014"),
            "{err:?}"
        );
        drop(lock);
        assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
        assert_eq!(held(&mut observer, pid, busy).await, Held::Nothing);
        assert_eq!(held(&mut observer, pid, prior).await, Held::Exclusive);
    }
}

#[tokio::test]
async fn cancel_request_is_typed_and_leaves_nothing_of_the_call() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    for ids in [vec![free, busy], vec![busy]] {
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        let cancel = async {
            until_waiting(&mut observer, pid).await;
            let cancelled: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .fetch_one(&mut observer)
                .await
                .unwrap();
            assert!(cancelled);
        };
        let (acquired, ()) = tokio::join!(lock.acquire(), cancel);
        let err = acquired.unwrap_err();
        assert!(matches!(err, Error::Canceled(_)), "{err:?}");
        assert!(!lock.is_locked());
        drop(lock);
        assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
        assert_eq!(held(&mut observer, pid, busy).await, Held::Nothing);
        assert_answers(&mut conn, "the cancel left an error behind").await;
    }
    assert!(is_free(free).await);
}

#[tokio::test]
async fn full_lock_table_is_typed_and_leaves_nothing_of_the_call() {
    let server = TestServer::start(&[
        ("max_locks_per_transaction", "10"),
        ("max_connections", "10"),
    ]);
    let mut filler = PgConnection::connect(server.url()).await.unwrap();
    let mut victim = PgConnection::connect(server.url()).await.unwrap();
    let mut observer = PgConnection::connect(server.url()).await.unwrap();
    let victim_pid = backend_pid(&mut victim).await;
    let mut prior = ExclusiveLock::new(&mut victim, LockId::Int8(-1));
    prior.acquire().await.unwrap();

    let ids = [
        LockId::Int8(-1),
        LockId::Int8(-2),
        LockId::Int8(-3),
        LockId::Int8(-4),
    ];

    fill_leaving_room_for_two(&mut filler).await;
    let mut lock = ExclusiveLock::new(&mut prior, ids);
    let err = lock.acquire().await.unwrap_err();
    assert!(
        matches!(err, Error::LockTableFull(ref e) if e.code() == "53200"),
        "{err:?}"
    );
    drop(lock);
    // Reading pg_locks needs room in the lock table too.
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut filler)
        .await
        .unwrap();
    for id in &ids[1..] {
        assert_eq!(held(&mut observer, victim_pid, *id).await, Held::Nothing);
    }
    assert_eq!(
        held(&mut observer, victim_pid, ids[0]).await,
        Held::Exclusive
    );

    // One id, when the table is full: the try fails as a statement, and the
    // cleanup it leaves armed must not fail in turn on the next query.
    fill_leaving_room_for_two(&mut filler).await;
    for key in [2_000_000_i64, 2_000_001] {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut filler)
            .await
            .unwrap();
    }
    let mut lone = ExclusiveLock::new(&mut prior, LockId::Int8(-5));
    let err = lone.acquire().await.unwrap_err();
    assert!(matches!(err, Error::LockTableFull(_)), "{err:?}");
    // The statement failed: the server's own error is there to downcast.
    let Error::LockTableFull(server) = &err else {
        unreachable!()
    };
    let source = std::error::Error::source(server).expect("the sqlx error");
    let pg = source
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
        .expect("a PgDatabaseError");
    assert_eq!(pg.code(), "53200");
    drop(lone);
    assert_answers(
        prior.as_mut(),
        "the single-id cleanup failed on a full table",
    )
    .await;
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut filler)
        .await
        .unwrap();
    assert_eq!(
        held(&mut observer, victim_pid, LockId::Int8(-5)).await,
        Held::Nothing
    );

    fill_leaving_room_for_two(&mut filler).await;
    let mut try_lock = ExclusiveLock::new(&mut prior, ids);
    let result = try_lock.try_acquire().await;
    assert!(matches!(result, Err(Error::LockTableFull(_))), "{result:?}");
    drop(try_lock);
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut filler)
        .await
        .unwrap();
    for id in &ids[1..] {
        assert_eq!(held(&mut observer, victim_pid, *id).await, Held::Nothing);
    }
}

/// Takes locks on `filler` until the server's lock table is full, then gives
/// two back.
async fn fill_leaving_room_for_two(filler: &mut PgConnection) {
    let mut taken = 0_i64;
    loop {
        let result = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(1_000_000 + taken)
            .execute(&mut *filler)
            .await;
        match result {
            Ok(_) => taken += 1,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("53200") => break,
            Err(e) => panic!("filling the lock table: {e}"),
        }
        assert!(taken < 1_000_000, "the lock table never filled");
    }
    for key in [taken - 1, taken - 2] {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(1_000_000 + key)
            .execute(&mut *filler)
            .await
            .unwrap();
    }
}

/// Drops `acquire` once its session is seen waiting on the server.
async fn abandon_once_waiting<F: std::future::Future>(
    acquire: F,
    observer: &mut PgConnection,
    pid: i32,
) {
    tokio::select! {
        biased;
        _ = acquire => panic!("the acquire finished instead of waiting"),
        () = until_waiting(observer, pid) => {}
    }
}

#[tokio::test]
async fn a_dropped_wait_leaves_no_lock_and_no_stale_error() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let mut holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;

    for ids in [vec![busy], vec![free, busy]] {
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        abandon_once_waiting(lock.acquire(), &mut observer, pid).await;
        assert!(!lock.is_locked());
        drop(lock);

        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut holder)
            .await
            .unwrap();
        assert_answers(&mut conn, "a later query got a stale answer").await;
        for id in &ids {
            assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing);
        }
        lock_on(&mut holder, busy).await;
    }
}

#[tokio::test]
async fn a_dropped_wait_that_fails_later_raises_no_stale_error() {
    let busy = unique_key();
    let _holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    set_lock_timeout(&mut conn, "300ms").await;

    let mut lock = ExclusiveLock::new(&mut conn, busy);
    abandon_once_waiting(lock.acquire(), &mut observer, pid).await;
    drop(lock);

    // The abandoned wait now fails on the server with lock_timeout; that
    // failure must not be reported by this unrelated query.
    assert_answers(&mut conn, "a later query got a stale answer").await;
    assert_eq!(held(&mut observer, pid, busy).await, Held::Nothing);
}

#[tokio::test]
async fn a_dropped_wait_does_not_release_other_holds_of_the_session() {
    let [prior, busy] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    set_lock_timeout(&mut conn, "300ms").await;
    let mut prior_lock = ExclusiveLock::new(&mut conn, prior);
    prior_lock.acquire().await.unwrap();

    let mut lock = ExclusiveLock::new(&mut prior_lock, [prior, busy]);
    abandon_once_waiting(lock.acquire(), &mut observer, pid).await;
    drop(lock);
    sqlx::query("SELECT 1")
        .execute(prior_lock.as_mut())
        .await
        .unwrap();
    assert_eq!(held(&mut observer, pid, prior).await, Held::Exclusive);
    prior_lock.release().await.unwrap();
    assert!(is_free(prior).await);
}

/// One id takes no token: the cleanup of a dropped single-id wait gives back
/// what the session holds in that mode. The session here also holds the id
/// shared, through another object; the dropped exclusive wait must give
/// back its own grant, if any, and leave the shared hold alone.
#[tokio::test]
async fn a_dropped_single_wait_gives_back_only_its_own_grant() {
    let id = unique_key();
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    set_lock_timeout(&mut conn, "300ms").await;
    let mut shared = ShareLock::new(&mut conn, id);
    shared.acquire().await.unwrap();

    for granted in [true, false] {
        let mut other = ShareLock::new(connect().await, id);
        other.acquire().await.unwrap();
        let mut exclusive = ExclusiveLock::new(&mut shared, id);
        abandon_once_waiting(exclusive.acquire(), &mut observer, pid).await;
        drop(exclusive);
        if granted {
            // The other session lets go: the abandoned wait is granted,
            // and the queued cleanup gives that grant back.
            other.release().await.unwrap();
        }
        // Otherwise the wait runs into lock_timeout.
        assert_answers(shared.as_mut(), "a later query got a stale answer").await;
        assert_eq!(
            held(&mut observer, pid, id).await,
            Held::Shared,
            "granted: {granted}"
        );
        if !granted {
            // Released here rather than with its connection, whose session
            // the server ends in its own time.
            other.release().await.unwrap();
        }
    }
    shared.release().await.unwrap();
    drop(shared);
    assert!(is_free(id).await);
}

#[tokio::test]
async fn a_single_id_deadlock_is_typed_and_leaves_the_other_holds() {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (first, first_pid) = session_with_deadlock_timeout("10s").await;
    let (second, second_pid) = session_with_deadlock_timeout("50ms").await;
    let mut first_x = ExclusiveLock::new(first, x);
    first_x.acquire().await.unwrap();
    let mut second_y = ExclusiveLock::new(second, y);
    second_y.acquire().await.unwrap();

    let first_waits = tokio::spawn(async move {
        let mut first_y = ExclusiveLock::new(&mut first_x, y);
        first_y.acquire().await.unwrap();
        first_y.release().await.unwrap();
        drop(first_y);
        first_x
    });
    until_waiting(&mut observer, first_pid).await;

    let err = ExclusiveLock::new(&mut second_y, x)
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Deadlock(_)), "{err:?}");
    assert_eq!(held(&mut observer, second_pid, x).await, Held::Nothing);
    assert_eq!(held(&mut observer, second_pid, y).await, Held::Exclusive);
    assert_answers(second_y.as_mut(), "the deadlock left an error behind").await;

    second_y.release().await.unwrap();
    let mut first_x = first_waits.await.unwrap();
    first_x.release().await.unwrap();
    assert!(is_free(x).await && is_free(y).await);
}

/// Cancels sent at random moments while a session takes free ids, over and
/// over: whenever an acquire reports an error, the session holds none of
/// its ids once its connection has been used again (the queued cleanup has
/// run then). PostgreSQL acts on a cancel between expressions, so one that
/// arrives while a statement takes the ids can abort it after it took them
/// all; the record of the acquire must survive that abort. Covers the
/// free-first statement (4 and 12 pairs, 2 int8 ids).
#[tokio::test]
async fn cancels_at_random_moments_never_leave_ids_held() {
    cancels_at_random_moments(false).await;
}

/// The same, while another session changes the catalog over and over (as
/// the rest of the suite does, creating sessions' temporary schemas): each
/// change invalidates the session's cached plans, and a cancel that lands
/// while PL/pgSQL plans an expression again leaves it evaluated through the
/// executor from then on, which checks for interrupts after the expression
/// ran and before its value is assigned. Before the body counted what it
/// took from its records, this left an id and its record held after a
/// cancel the body reported as caught, within a second.
#[tokio::test]
async fn cancels_while_plans_are_invalidated_never_leave_ids_held() {
    cancels_at_random_moments(true).await;
}

/// Cancels for one session, one per armed call, sent from a thread of their
/// own at a random moment, and, with `churn`, another session changing the
/// catalog over and over: each change invalidates every cached plan of
/// every session.
struct Disturbance {
    armed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    idle: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Disturbance {
    fn start(pid: i32, churn: bool) -> Disturbance {
        let armed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let on_a_thread = |work: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(work);
            })
        };
        let mut threads = Vec::new();
        let (a, st, i, se) = (armed.clone(), stop.clone(), idle.clone(), sent.clone());
        threads.push(on_a_thread(Box::pin(async move {
            let mut canceller = connect().await;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !st.load(Ordering::SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let spin = Duration::from_micros(x % 60);
                let began = Instant::now();
                while began.elapsed() < spin {
                    std::hint::spin_loop();
                }
                // One cancel per armed call, as a statement_timeout or one
                // pg_cancel_backend would send.
                if a.swap(false, Ordering::SeqCst) {
                    sqlx::query("SELECT pg_cancel_backend($1)")
                        .bind(pid)
                        .execute(&mut canceller)
                        .await
                        .unwrap();
                    se.fetch_add(1, Ordering::SeqCst);
                } else {
                    i.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        })));
        if churn {
            let st = stop.clone();
            threads.push(on_a_thread(Box::pin(async move {
                let mut churner = connect().await;
                let schema = format!("alock_churn_{}_{pid}", std::process::id());
                while !st.load(Ordering::SeqCst) {
                    for verb in ["CREATE SCHEMA IF NOT EXISTS", "DROP SCHEMA IF EXISTS"] {
                        sqlx::raw_sql(AssertSqlSafe(format!("{verb} {schema}")))
                            .execute(&mut churner)
                            .await
                            .unwrap();
                    }
                }
            })));
        }
        Disturbance {
            armed,
            stop,
            idle,
            sent,
            threads,
        }
    }

    /// Arms one cancel for the call about to run; answers the count of
    /// cancels sent so far, for [`Disturbance::disarm`].
    fn arm(&self) -> u64 {
        let sent = self.sent.load(Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
        sent
    }

    /// Disarms, waits until no cancel is on its way, then, if one was sent
    /// since [`Disturbance::arm`], long enough for the session to take it
    /// while idle, where it is dropped. A cancel that lands later would
    /// cancel the next statement: not what these tests are about.
    fn disarm(&self, sent_before: u64) {
        self.armed.store(false, Ordering::SeqCst);
        let seen = self.idle.load(Ordering::SeqCst);
        while self.idle.load(Ordering::SeqCst) < seen + 2 {
            std::thread::yield_now();
        }
        if self.sent.load(Ordering::SeqCst) > sent_before {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops both threads; answers how many cancels were sent.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Disturbance {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The rows of the session's advisory locks, for a failure's message.
async fn rows(conn: &mut PgConnection) -> Vec<(i64, i64, i16, String, bool)> {
    sqlx::query_as(
        "SELECT classid::int8, objid::int8, objsubid, mode, granted FROM pg_locks \
          WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// How many advisory locks the session holds, as `pg_locks` rows.
async fn session_rows(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks \
          WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .fetch_one(conn)
    .await
}

/// Releases everything after a cancel that came late, however often the
/// cancel hits.
async fn unlock_all_despite_cancels(conn: &mut PgConnection) {
    while sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *conn)
        .await
        .is_err()
    {}
}

async fn cancels_at_random_moments(churn: bool) {
    let mut conn = connect().await;
    alock::prepare_session(&mut conn).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let disturbance = Disturbance::start(pid, churn);

    let pairs = unique_keys(16);
    let int8s = unique_int8_keys(2);
    // Several ids, through the body, in both forms. Under the whole suite
    // this failed about once in fifteen runs, an id and its record left
    // after a cancel the body reported as caught: the suite's catalog
    // changes are what `churn` makes constant (see the test that sets it).
    // The failure prints the session's rows.
    let sets = [pairs[..4].to_vec(), pairs[4..16].to_vec(), int8s.clone()];
    let (mut cancelled, mut late) = (0, 0);
    for ids in &sets {
        for _ in 0..250 {
            let mut lock = ExclusiveLock::new(&mut conn, ids);
            let sent_before = disturbance.arm();
            let result = lock.acquire().await;
            disturbance.disarm(sent_before);
            let released = match result {
                Ok(()) => lock.release().await,
                Err(Error::Canceled(_)) => {
                    cancelled += 1;
                    Ok(())
                }
                Err(e) => panic!("unexpected error: {e:?}"),
            };
            drop(lock);
            // The next use of the connection runs anything a failed call
            // queued, then counts.
            let held = match (released, session_rows(&mut conn).await) {
                (Ok(()), Ok(held)) => held,
                // A cancel came late and hit the release or the cleanup.
                _ => {
                    late += 1;
                    unlock_all_despite_cancels(&mut conn).await;
                    continue;
                }
            };
            if held != 0 {
                let rows = rows(&mut conn).await;
                let wanted: Vec<_> = ids.iter().map(|id| id.pg_locks_row()).collect();
                panic!(
                    "ids left held after {result:?} on {} ids: the session's rows {rows:?}, \
                     the ids {wanted:?}",
                    ids.len()
                );
            }
        }
    }
    let sent = disturbance.finish();
    // The free-first statement is short: most cancels land after it, and a
    // few (a handful in these 750 acquires) inside it. With the record in a
    // setting, the function's path failed this within a few hundred
    // acquires; the statement's own window is narrower.
    assert!(
        sent > 0 && late < 250,
        "{sent} cancels sent, {cancelled} acquires cancelled, {late} of 750 iterations \
         hit by a late cancel: the test proved nothing"
    );
}

/// A lock object nested in another over the same ids is released while
/// cancels arrive at random moments and another session invalidates cached
/// plans: the outer object's hold survives every release of the inner one,
/// so no other session can take its ids. Before the release body gave an
/// id back only with its record, a step the executor interrupted after its
/// unlocks unlocked the id again when it was retried, giving back the outer
/// hold.
#[tokio::test]
async fn cancels_during_nested_releases_never_release_the_outer_hold() {
    let mut conn = connect().await;
    alock::prepare_session(&mut conn).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let mut other = connect().await;
    let disturbance = Disturbance::start(pid, true);
    let pairs = unique_keys(12);
    let sets = [pairs[..4].to_vec(), pairs[4..12].to_vec()];
    let mut late = 0;
    for ids in &sets {
        let mut outer = ExclusiveLock::new(&mut conn, ids);
        outer.acquire().await.unwrap();
        for _ in 0..250 {
            let mut inner = ExclusiveLock::new(&mut outer, ids);
            inner.acquire().await.unwrap();
            let sent_before = disturbance.arm();
            let released = inner.release().await;
            disturbance.disarm(sent_before);
            drop(inner);
            // The outer hold and its records, nothing else.
            match (released, session_rows(outer.as_mut()).await) {
                (Ok(()), Ok(rows)) if rows == 2 * ids.len() as i64 => {}
                (Ok(()), Ok(_)) => panic!(
                    "after a release that said it released: the session's rows {:?}",
                    rows(outer.as_mut()).await
                ),
                _ => late += 1,
            }
            for id in ids {
                let (a, b) = match *id {
                    LockId::Int4Pair(a, b) => (a, b),
                    LockId::Int8(_) => unreachable!("test keys are pairs"),
                };
                let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(a)
                    .bind(b)
                    .fetch_one(&mut other)
                    .await
                    .unwrap();
                if taken {
                    alock_dev::unlock_all(&mut other).await;
                    panic!("another session took {id:?}, which the outer object holds");
                }
            }
        }
        outer.release().await.unwrap();
    }
    let sent = disturbance.finish();
    assert!(
        sent > 0 && late < 250,
        "{sent} cancels sent, {late} of 500 iterations hit by a late cancel: \
         the test proved nothing"
    );
}

/// The lock is handed to a waiting session at the moment its wait is
/// cancelled (the holder unlocks and cancels in one statement): whatever
/// the acquire then returns, the waiting session holds the id exactly when
/// it says it took it, once its connection has been used again.
#[tokio::test]
async fn a_single_wait_cancelled_as_it_is_granted_holds_the_id_only_if_it_says_so() {
    let id = unique_key();
    let LockId::Int4Pair(key1, key2) = id else {
        unreachable!("test keys are pairs")
    };
    let mut observer = connect().await;
    let mut conn = connect().await;
    alock::prepare_session(&mut conn).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    for _ in 0..20 {
        let mut holder = hold_elsewhere(id).await;
        let waiter = tokio::spawn(async move {
            let mut lock = ExclusiveLock::new(conn, id);
            let taken = lock.acquire().await;
            (taken, lock)
        });
        until_waiting(&mut observer, pid).await;
        sqlx::query("SELECT pg_advisory_unlock($1, $2), pg_cancel_backend($3)")
            .bind(key1)
            .bind(key2)
            .bind(pid)
            .execute(&mut holder)
            .await
            .unwrap();
        let (taken, mut lock) = waiter.await.unwrap();
        match taken {
            Ok(()) => {
                assert_eq!(held(&mut observer, pid, id).await, Held::Exclusive);
                lock.release().await.unwrap();
            }
            Err(Error::Canceled(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
        conn = lock.into_inner();
        assert_answers(&mut conn, "the wait left an error behind").await;
        assert_eq!(held(&mut observer, pid, id).await, Held::Nothing);
    }
}

/// A session that changes role after it made its functions and their
/// sequence (`SET ROLE`) still takes and gives back several ids, and the
/// cleanup of an acquire abandoned mid-flight neither fails nor leaves
/// them held.
#[tokio::test]
async fn a_session_that_changed_role_still_records_and_cleans_up() {
    let role = format!("alock_test_role_{}", std::process::id());
    let mut admin = connect().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut conn = connect().await;
    alock::prepare_session(&mut conn).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET ROLE {role}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    for ids in [unique_keys(3), unique_keys(20)] {
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        lock.acquire().await.unwrap();
        lock.release().await.unwrap();
        drop(lock);
        // Abandoned after its statement is sent: the cleanup it queues
        // reads the sequence as the changed role.
        {
            let mut lock = ExclusiveLock::new(&mut conn, &ids);
            let acquire = std::pin::pin!(lock.acquire());
            let _ = futures_poll_once(acquire);
        }
        assert_answers(&mut conn, "the cleanup failed under SET ROLE").await;
        for id in &ids {
            assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing);
        }
    }
    conn.close().await.unwrap();
    until_gone(&mut observer, pid).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Polls `future` once, as a caller that gives up on it at once would.
fn futures_poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
    let waker = std::task::Waker::noop();
    future
        .poll(&mut std::task::Context::from_waker(waker))
        .is_ready()
}
