//! Locking the sqlx way: guards, scoped locks, transaction and pool locks,
//! each promise checked on the server.

use std::time::Duration;

use alock::Error;
use alock::prelude::*;
use alock_dev::{
    Held, all_free, assert_answers, backend_pid, connect, database_url, held, hold_elsewhere,
    is_free, set_lock_timeout, unique_key, unique_keys, unlock_all, until_gone, until_waiting,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

async fn pool_of_one() -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url())
        .await
        .unwrap()
}

/// Waits until the pool has taken its connection back (returning runs in a
/// background task).
async fn until_idle(pool: &PgPool) {
    for _ in 0..6000 {
        if pool.num_idle() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection never went back to the pool");
}

#[tokio::test]
async fn a_guard_holds_until_released_and_runs_queries() {
    let ids = unique_keys(2);
    let mut conn = connect().await;
    let mut guard = conn.lock_exclusive(&ids).await.unwrap();
    assert_answers(&mut guard, "a later query got a stale answer").await;
    assert!(!is_free(ids[0]).await && !is_free(ids[1]).await);
    guard.release().await.unwrap();
    assert!(is_free(ids[0]).await && is_free(ids[1]).await);
}

#[tokio::test]
async fn a_guard_says_whether_it_had_to_wait() {
    let [one, two] = unique_keys(2).try_into().unwrap();
    let mut conn = connect().await;
    assert!(!conn.lock_exclusive(one).await.unwrap().waited());
    assert!(!conn.lock_exclusive([one, two]).await.unwrap().waited());

    let mut observer = connect().await;
    for ids in [vec![one], vec![two, one]] {
        let mut holder = hold_elsewhere(one).await;
        let mut conn = connect().await;
        let pid = backend_pid(&mut conn).await;
        let waiter = tokio::spawn(async move {
            let guard = conn.lock_exclusive(&ids).await.unwrap();
            guard.waited()
        });
        until_waiting(&mut observer, pid).await;
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut holder)
            .await
            .unwrap();
        assert!(waiter.await.unwrap());
    }
}

#[tokio::test]
async fn a_dropped_guard_is_released_before_the_connection_is_used_again() {
    let id = unique_key();
    let mut conn = connect().await;
    let guard = conn.lock_shared(id).await.unwrap();
    drop(guard);
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(is_free(id).await);
}

#[tokio::test]
async fn a_leaked_guard_keeps_the_lock_for_the_session() {
    let id = unique_key();
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    conn.lock_exclusive(id).await.unwrap().leak();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(!is_free(id).await);
    conn.close().await.unwrap();
    until_gone(&mut connect().await, pid).await;
    assert!(is_free(id).await);
}

#[tokio::test]
async fn a_pooled_connection_never_goes_back_holding_a_dropped_guard() {
    let id = unique_key();
    let pool = pool_of_one().await;
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let guard = conn.lock_exclusive(id).await.unwrap();
    drop(guard);
    drop(conn);
    until_idle(&pool).await;

    let mut again = pool.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut again).await, pid, "not the same session");
    let mut observer = connect().await;
    assert_eq!(held(&mut observer, pid, id).await, Held::Nothing);
}

#[tokio::test]
async fn a_dropped_pool_guard_is_released_before_the_pool_hands_the_connection_out() {
    let ids = unique_keys(3);
    let pool = pool_of_one().await;
    let guard = pool.lock_shared(&ids).await.unwrap();
    drop(guard);
    let mut conn = pool.acquire().await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    for id in &ids {
        assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing);
    }
}

#[tokio::test]
async fn a_pool_guard_moves_into_a_task_and_release_returns_the_connection() {
    let id = unique_key();
    let pool = pool_of_one().await;
    let mut guard = pool.lock_exclusive(id).await.unwrap();
    let task = tokio::spawn(async move {
        sqlx::query("SELECT 1").execute(&mut *guard).await.unwrap();
        guard.release().await
    });
    task.await.unwrap().unwrap();
    assert!(is_free(id).await);
    let again = pool.try_lock_exclusive(id).await;
    assert!(matches!(again, Ok(Some(_))), "{again:?}");
}

#[tokio::test]
async fn a_lock_future_dropped_mid_wait_leaves_nothing_once_the_connection_is_used() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let mut holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;

    tokio::select! {
        biased;
        _ = conn.lock_exclusive([free, busy]) => panic!("granted while busy"),
        () = until_waiting(&mut observer, pid) => {}
    }
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_answers(&mut conn, "a stale result reached an unrelated query").await;
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
    assert_eq!(held(&mut observer, pid, busy).await, Held::Nothing);
}

#[tokio::test]
async fn a_pool_lock_future_dropped_mid_wait_never_reaches_the_pool() {
    let busy = unique_key();
    let mut holder = hold_elsewhere(busy).await;
    let pool = pool_of_one().await;
    let mut observer = connect().await;
    let pid = {
        let mut conn = pool.acquire().await.unwrap();
        backend_pid(&mut conn).await
    };
    until_idle(&pool).await;

    tokio::select! {
        biased;
        _ = pool.lock_exclusive(busy) => panic!("granted while busy"),
        () = until_waiting(&mut observer, pid) => {}
    }
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let now = backend_pid(&mut conn).await;
    assert_ne!(now, pid, "the waiting connection went back to the pool");
    // Its backend may be granted the lock as the holder lets go, before it
    // finds its client gone; it ends then, and the lock with it.
    until_gone(&mut observer, pid).await;
    assert_eq!(held(&mut observer, pid, busy).await, Held::Nothing);
    assert!(is_free(busy).await);
}

#[tokio::test]
async fn try_and_timeout_guards_are_all_or_nothing() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut conn = connect().await;
    assert!(
        conn.try_lock_exclusive([free, busy])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        conn.lock_shared_timeout([free, busy], Duration::from_millis(30))
            .await
            .unwrap()
            .is_none()
    );
    assert!(is_free(free).await);
    let guard = conn.try_lock_shared(free).await.unwrap().unwrap();
    assert!(guard.is_shared());
    assert_eq!(guard.ids(), [free]);
}

#[tokio::test]
async fn shared_guards_of_two_sessions_overlap_and_an_exclusive_one_excludes_both() {
    let id = unique_key();
    let (mut a, mut b, mut c) = (connect().await, connect().await, connect().await);
    let ga = a.lock_shared(id).await.unwrap();
    let gb = b.try_lock_shared(id).await.unwrap();
    assert!(gb.is_some(), "shared guards did not overlap");
    assert!(c.try_lock_exclusive(id).await.unwrap().is_none());
    ga.release().await.unwrap();
    assert!(c.try_lock_exclusive(id).await.unwrap().is_none());
    gb.unwrap().release().await.unwrap();
    assert!(c.try_lock_exclusive(id).await.unwrap().is_some());
}

#[derive(Debug)]
enum AppError {
    Lock(Error),
    Db(#[allow(dead_code)] sqlx::Error),
    Refused,
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Lock(e)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Db(e)
    }
}

#[tokio::test]
async fn a_scoped_lock_is_released_on_ok_and_on_err() {
    let id = unique_key();
    let mut conn = connect().await;
    let n = conn
        .with_exclusive(id, async |conn| {
            assert!(!is_free(id).await);
            let n: i32 = sqlx::query_scalar("SELECT 41 + 1").fetch_one(conn).await?;
            Ok::<_, AppError>(n)
        })
        .await
        .unwrap();
    assert_eq!(n, 42);
    assert!(is_free(id).await);

    let err = conn
        .with_shared(id, async |_conn| Err::<(), _>(AppError::Refused))
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::Refused));
    assert!(is_free(id).await);

    let _holder = hold_elsewhere(id).await;
    set_lock_timeout(&mut conn, "20ms").await;
    let err = conn
        .with_exclusive(id, async |_conn| Ok::<_, AppError>(()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppError::Lock(Error::LockTimeout(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_panic_inside_a_scoped_lock_releases_it() {
    let id = unique_key();
    let pool = pool_of_one().await;
    let task = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            conn.with_exclusive(id, async |_conn| -> Result<(), AppError> {
                assert!(!is_free(id).await);
                panic!("the job failed");
            })
            .await
        }
    });
    assert!(task.await.unwrap_err().is_panic());
    until_idle(&pool).await;
    assert!(is_free(id).await);
}

#[tokio::test]
async fn transaction_locks_need_a_transaction() {
    let id = unique_key();
    let mut conn = connect().await;
    assert!(matches!(
        conn.xact_lock_exclusive(id).await,
        Err(Error::NotInTransaction)
    ));
    assert!(matches!(
        conn.try_xact_lock_shared(id).await,
        Err(Error::NotInTransaction)
    ));
    assert!(is_free(id).await);
}

#[tokio::test]
async fn transaction_locks_end_with_commit_rollback_and_a_dropped_transaction() {
    let ids = unique_keys(2);
    let mut conn = connect().await;

    let mut tx = conn.begin().await.unwrap();
    tx.xact_lock_exclusive(&ids).await.unwrap();
    assert!(!is_free(ids[0]).await && !is_free(ids[1]).await);
    tx.commit().await.unwrap();
    assert!(is_free(ids[0]).await && is_free(ids[1]).await);

    let mut tx = conn.begin().await.unwrap();
    assert!(tx.try_xact_lock_shared(ids[0]).await.unwrap());
    assert!(!is_free(ids[0]).await);
    tx.rollback().await.unwrap();
    assert!(is_free(ids[0]).await);

    let mut tx = conn.begin().await.unwrap();
    assert!(
        tx.xact_lock_exclusive_timeout(&ids, Duration::from_secs(1))
            .await
            .unwrap()
    );
    drop(tx);
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(is_free(ids[0]).await && is_free(ids[1]).await);
}

#[tokio::test]
async fn a_busy_transaction_lock_gives_back_everything_and_keeps_the_transaction() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    let mut tx = conn.begin().await.unwrap();

    assert!(!tx.try_xact_lock_exclusive([free, busy]).await.unwrap());
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
    assert!(
        !tx.xact_lock_shared_timeout([free, busy], Duration::from_millis(30))
            .await
            .unwrap()
    );
    assert!(
        !tx.xact_lock_exclusive_timeout(busy, Duration::from_millis(30))
            .await
            .unwrap()
    );
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);

    // A wait without a deadline that fails (here on the session's own
    // lock_timeout) gives back what it took too.
    sqlx::query("SET LOCAL lock_timeout = '30ms'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx.xact_lock_exclusive([free, busy]).await.unwrap_err();
    assert!(matches!(err, Error::LockTimeout(_)), "{err:?}");
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
    assert_answers(&mut tx, "the transaction was aborted").await;
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn begin_locked_starts_a_transaction_that_holds_the_lock() {
    let ids = unique_keys(2);
    let mut conn = connect().await;
    let mut tx = conn.begin_locked_exclusive(&ids).await.unwrap();
    assert!(!is_free(ids[0]).await && !is_free(ids[1]).await);
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(is_free(ids[0]).await && is_free(ids[1]).await);
    assert!(!conn.is_in_transaction());

    let mut outer = conn.begin().await.unwrap();
    let savepoint = outer.begin_locked_shared(ids[0]).await.unwrap();
    assert!(!is_free(ids[0]).await);
    savepoint.rollback().await.unwrap();
    assert!(is_free(ids[0]).await);
    outer.commit().await.unwrap();
}

#[tokio::test]
async fn begin_locked_waits_for_a_busy_id_and_fails_without_a_transaction() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let mut holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;

    let waiter = tokio::spawn(async move {
        let tx = conn.begin_locked_exclusive([free, busy]).await.unwrap();
        tx.commit().await.unwrap();
        conn
    });
    until_waiting(&mut observer, pid).await;
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut conn = waiter.await.unwrap();

    set_lock_timeout(&mut conn, "20ms").await;
    let _holder = hold_elsewhere(busy).await;
    let err = conn.begin_locked_shared([free, busy]).await.unwrap_err();
    assert!(matches!(err, Error::LockTimeout(_)), "{err:?}");
    assert!(!conn.is_in_transaction());
    let status: String = sqlx::query_scalar("SELECT 'outside a failed transaction'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "outside a failed transaction");
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
}

#[tokio::test]
async fn guards_work_on_pool_connections_and_transactions_begin_through_them() {
    let id = unique_key();
    let pool = pool_of_one().await;
    let mut conn = pool.acquire().await.unwrap();
    conn.lock_exclusive(id)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let mut guard = conn.lock_exclusive(id).await.unwrap();
    let mut tx = guard.begin().await.unwrap();
    assert!(matches!(
        tx.lock_exclusive(id).await,
        Err(Error::InTransaction)
    ));
    tx.xact_lock_exclusive(id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!is_free(id).await);
    guard.release().await.unwrap();
    assert!(is_free(id).await);
}

#[tokio::test]
async fn lock_futures_are_send() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let id = unique_key();
    let task = tokio::spawn(async move {
        let mut conn = connect().await;
        let guard = assert_send(conn.lock_exclusive(id)).await.unwrap();
        assert_send(guard.release()).await.unwrap();
        let n = assert_send(conn.with_exclusive(id, async |c| {
            sqlx::query_scalar::<_, i32>("SELECT 3")
                .fetch_one(c)
                .await
                .map_err(Error::from)
        }))
        .await
        .unwrap();
        let mut tx = conn.begin().await.unwrap();
        assert_send(tx.xact_lock_exclusive(id)).await.unwrap();
        tx.commit().await.unwrap();
        drop(assert_send(conn.begin_locked_exclusive(id)).await.unwrap());
        n
    });
    assert_eq!(task.await.unwrap(), 3);
}

#[allow(dead_code)]
fn pool_guards_are_send_and_static(
    guard: alock::LockGuard<sqlx::pool::PoolConnection<sqlx::Postgres>>,
) -> impl Send + 'static {
    guard
}

#[allow(dead_code)]
async fn reads_naturally(conn: &mut PgConnection) -> Result<(), Error> {
    let guard = conn.lock_exclusive((1_i64, LockId::pair(2, 3))).await?;
    guard.release().await
}

#[tokio::test]
async fn a_pool_lock_that_fails_returns_its_connection_to_the_pool() {
    let busy = unique_key();
    let _holder = hold_elsewhere(busy).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET lock_timeout = '20ms'")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(database_url())
        .await
        .unwrap();
    let pid = {
        let mut conn = pool.acquire().await.unwrap();
        backend_pid(&mut conn).await
    };
    let err = pool.lock_exclusive(busy).await.unwrap_err();
    assert!(matches!(err, Error::LockTimeout(_)), "{err:?}");
    assert!(pool.try_lock_exclusive(busy).await.unwrap().is_none());
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        backend_pid(&mut conn).await,
        pid,
        "the connection was closed"
    );
}

#[tokio::test]
async fn a_timed_transaction_lock_waits_and_leaves_lock_timeout_as_it_was() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let mut holder = hold_elsewhere(busy).await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '3s'")
        .execute(&mut *tx)
        .await
        .unwrap();

    let (taken, ()) = tokio::join!(
        tx.xact_lock_exclusive_timeout([free, busy], Duration::from_secs(60)),
        async {
            until_waiting(&mut observer, pid).await;
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut holder)
                .await
                .unwrap();
        }
    );
    assert!(taken.unwrap());
    assert_eq!(held(&mut observer, pid, free).await, Held::Exclusive);
    assert_eq!(held(&mut observer, pid, busy).await, Held::Exclusive);
    let lock_timeout: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(lock_timeout, "3s");
    tx.commit().await.unwrap();
    assert!(is_free(free).await && is_free(busy).await);
}

#[tokio::test]
async fn a_guard_whose_ids_were_released_underneath_reports_it() {
    let ids = unique_keys(2);
    let mut conn = connect().await;
    let mut guard = conn.lock_exclusive(&ids).await.unwrap();
    unlock_all(&mut guard).await;
    assert!(lost(guard.release().await, 2, 2));
    assert_answers(&mut conn, "the connection works after a lost lock").await;
    assert!(all_free(&ids).await);
}

#[tokio::test]
async fn a_pool_guard_that_lost_its_lock_still_returns_the_connection() {
    let id = unique_key();
    let pool = pool_of_one().await;
    let mut guard = pool.lock_exclusive(id).await.unwrap();
    let pid = backend_pid(&mut guard).await;
    unlock_all(&mut guard).await;
    assert!(lost(guard.release().await, 1, 1));
    until_idle(&pool).await;
    let mut again = pool.acquire().await.unwrap();
    assert_eq!(
        backend_pid(&mut again).await,
        pid,
        "the connection was closed"
    );
    assert!(is_free(id).await);
}

#[tokio::test]
async fn with_exclusive_says_when_the_lock_was_lost_while_it_ran() {
    let id = unique_key();
    let mut conn = connect().await;
    let out: Result<(), Error> = conn
        .with_exclusive(id, async |conn| {
            unlock_all(conn).await;
            Ok(())
        })
        .await;
    assert!(lost(out, 1, 1));
    assert!(is_free(id).await);
}

/// Whether `result` is [`Error::Lost`] with these counts.
fn lost<T>(result: Result<T, Error>, missing: usize, total: usize) -> bool {
    matches!(result, Err(Error::Lost { missing: m, total: t }) if m == missing && t == total)
}
