//! The sqlx behaviours alock's drop-time release rests on, pinned so that an
//! sqlx upgrade that changes one of them fails here first.
//!
//! From `Drop` nothing can be awaited. alock queues its unlock through
//! `Connection::begin_with`, whose first poll writes the statement before
//! waiting for anything; inside a transaction it polls an ordinary query
//! once, which writes at once on an idle connection.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use alock::ExclusiveLock;
use alock_dev::{all_free, assert_answers, connect, is_free, unique_key, unique_keys};
use sqlx::{Connection, Executor, PgConnection};

/// Sends `sql` and abandons its response: the connection is left busy, as
/// after a query future dropped mid-flight.
fn abandon(conn: &mut PgConnection, sql: &'static str) {
    let mut future = pin!(conn.execute(sql));
    let polled = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "the abandoned query finished at once");
}

#[tokio::test]
async fn a_drop_releases_even_while_an_abandoned_query_is_in_flight() {
    let ids = unique_keys(2);
    let mut conn = connect().await;
    let mut lock = ExclusiveLock::new(&mut conn, &ids);
    lock.acquire().await.unwrap();
    abandon(lock.as_mut(), "SELECT pg_sleep(0.2)");
    drop(lock);

    assert_answers(&mut conn, "a later query got a stale answer").await;
    assert!(all_free(&ids).await);
}

#[tokio::test]
async fn a_drop_inside_a_transaction_releases_and_keeps_the_transaction() {
    let id = unique_key();
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '4s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut lock = ExclusiveLock::new(&mut *tx, id);
    lock.acquire().await.unwrap();
    drop(lock);

    let timeout: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(timeout, "4s", "the queued unlock ended the transaction");
    assert!(is_free(id).await);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn begin_with_writes_its_statement_before_waiting() {
    // The mechanism itself, without alock: queue a lock through begin_with
    // while the connection is busy, and see it taken by the next use.
    let id = unique_key();
    let alock::LockId::Int4Pair(a, b) = id else {
        unreachable!()
    };
    let mut conn = connect().await;
    abandon(&mut conn, "SELECT pg_sleep(0.1)");
    let sql = format!("SELECT pg_advisory_lock({a}, {b})");
    {
        let mut begin = pin!(conn.begin_with(sqlx::AssertSqlSafe(sql)));
        let polled = begin.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(polled, Poll::Pending));
    }
    assert!(!conn.is_in_transaction());
    conn.execute("SELECT 1").await.unwrap();
    assert!(
        !is_free(id).await,
        "the statement queued by begin_with did not run"
    );
    assert!(!conn.is_in_transaction());
}

#[tokio::test]
async fn inside_a_transaction_a_busy_connection_cannot_queue_the_unlock() {
    // The documented limit of releasing from Drop: inside a transaction,
    // with another response still pending, sqlx offers no public way to
    // queue a statement, and the session keeps the lock. If a future sqlx
    // lifts this, this test fails and the documentation can say so.
    let id = unique_key();
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    let mut lock = ExclusiveLock::new(&mut *tx, id);
    lock.acquire().await.unwrap();
    abandon(lock.as_mut(), "SELECT pg_sleep(0.1)");
    drop(lock);
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    assert!(!is_free(id).await);
    tx.commit().await.unwrap();
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(is_free(id).await);
}

#[tokio::test]
async fn inside_a_transaction_a_dropped_wait_keeps_what_it_is_granted() {
    // The same limit, for an acquire future dropped mid-wait: its cleanup
    // would have to be written while the wait's response is pending, which
    // sqlx allows only through begin_with, and begin_with is unusable inside
    // a transaction. Documented; pinned so a fix in sqlx shows up here.
    use alock::prelude::*;
    let busy = unique_key();
    let mut holder = alock_dev::hold_elsewhere(busy).await;
    let mut observer = connect().await;
    let mut conn = connect().await;
    let pid = alock_dev::backend_pid(&mut conn).await;
    let mut tx = conn.begin().await.unwrap();
    tokio::select! {
        biased;
        _ = tx.lock_exclusive(busy) => panic!("granted while busy"),
        () = alock_dev::until_waiting(&mut observer, pid) => {}
    }
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        alock_dev::held(&mut observer, pid, busy).await,
        alock_dev::Held::Exclusive
    );
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn inside_a_failed_transaction_no_session_lock_can_be_released() {
    // PostgreSQL refuses every statement in a failed transaction until it
    // ends, the unlock included, and session-level locks survive ROLLBACK:
    // the release reports the failure and the session keeps the lock.
    use alock::prelude::*;
    let id = unique_key();
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    let guard = tx.lock_exclusive(id).await.unwrap();
    let mut guard = guard;
    assert!(
        sqlx::query("SELECT 1/0")
            .execute(&mut *guard)
            .await
            .is_err()
    );
    let err = guard.release().await.unwrap_err();
    assert!(
        matches!(err, alock::Error::InFailedTransaction(_)),
        "{err:?}"
    );
    tx.rollback().await.unwrap();
    assert!(!is_free(id).await);
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(is_free(id).await);
}
