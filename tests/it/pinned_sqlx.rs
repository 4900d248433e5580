//! The sqlx behaviours alock's drop-time release rests on, pinned so that an
//! sqlx upgrade that changes one of them fails here first.
//!
//! From `Drop` nothing can be awaited. alock queues its unlock through
//! `Connection::begin_with`, whose first poll writes the statement before
//! waiting for anything, outside transactions; inside one nothing can be
//! queued behind a pending response, which is why session-level locks are
//! refused there.

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
async fn inside_a_transaction_nothing_can_be_queued_behind_a_pending_response() {
    // Why session-level locks are refused inside a transaction begun through
    // sqlx: there begin_with refuses and rolls the caller's transaction
    // back, and an ordinary query waits for any pending response before it
    // writes, so a cleanup cannot be queued behind an abandoned statement.
    let id = unique_key();
    let alock::LockId::Int4Pair(a, b) = id else {
        unreachable!()
    };
    let sql = format!("SELECT pg_advisory_lock({a}, {b})");
    let mut conn = connect().await;

    let mut tx = conn.begin().await.unwrap();
    {
        let mut begin = pin!(tx.begin_with(sqlx::AssertSqlSafe(sql.clone())));
        let polled = begin.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(polled, Poll::Ready(Err(_))));
    }
    assert!(!tx.is_in_transaction(), "begin_with kept the transaction");
    drop(tx);

    let mut tx = conn.begin().await.unwrap();
    abandon(&mut tx, "SELECT pg_sleep(0.1)");
    {
        let mut query = pin!(tx.execute(sqlx::AssertSqlSafe(sql)));
        let polled = query.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    assert!(is_free(id).await, "a statement was queued after all");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_transaction_dropped_while_a_response_is_pending_still_rolls_back() {
    // begin_locked_* rests on this: its lock runs inside a Transaction, so a
    // future dropped mid-wait drops the Transaction, which queues ROLLBACK
    // behind the pending wait.
    let id = unique_key();
    let alock::LockId::Int4Pair(a, b) = id else {
        unreachable!()
    };
    let mut conn = connect().await;
    {
        let mut tx = conn.begin().await.unwrap();
        let sql = format!("SELECT pg_advisory_xact_lock({a}, {b}), pg_sleep(0.1)");
        let mut query = pin!(tx.execute(sqlx::AssertSqlSafe(sql)));
        let polled = query.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    assert!(!conn.is_in_transaction());
    // SAVEPOINT fails outside a transaction block.
    assert!(
        conn.execute("SAVEPOINT probe").await.is_err(),
        "the server kept the transaction open"
    );
    assert!(is_free(id).await);
}

#[tokio::test]
async fn a_query_dropped_before_its_statement_was_prepared_never_runs() {
    // The first use of a statement on a connection sends Parse alone and
    // waits for it: dropped then, the statement never executes. Parse is
    // held up by another session's lock on a table the statement reads, so
    // that the one poll surely ends before Parse is answered.
    let id = unique_key();
    let alock::LockId::Int4Pair(a, b) = id else {
        unreachable!()
    };
    let table = format!("alock_pinned_parse_{}_{}", a as u32, b as u32);
    let mut blocker = connect().await;
    blocker
        .execute(sqlx::AssertSqlSafe(format!("CREATE TABLE {table} ()")))
        .await
        .unwrap();
    let mut holding = blocker.begin().await.unwrap();
    holding
        .execute(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        )))
        .await
        .unwrap();
    let mut conn = connect().await;
    {
        let sql = format!("SELECT pg_advisory_lock($1, $2) FROM (SELECT FROM {table}) t");
        let mut query = pin!(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(a)
                .bind(b)
                .execute(&mut conn)
        );
        let polled = query.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    holding.rollback().await.unwrap();
    assert_answers(&mut conn, "the dropped prepare left an answer").await;
    assert!(
        is_free(id).await,
        "the statement ran although dropped at Parse"
    );
    blocker
        .execute(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_begin_dropped_during_its_own_round_trip_leaves_the_server_in_a_transaction() {
    // sqlx 0.9.0 raises its transaction depth only once BEGIN is answered,
    // so a `begin()` dropped before then queues no ROLLBACK (sqlx issue
    // 4393). `begin_locked_*` inherits this window and no other: its lock is
    // sent only after BEGIN is answered. When sqlx fixes it, this test fails
    // and the documentation can drop the caveat.
    let mut conn = connect().await;
    // A response still pending keeps BEGIN's answer from arriving within
    // the one poll.
    abandon(&mut conn, "SELECT pg_sleep(0.05)");
    {
        let mut begin = pin!(conn.begin());
        let polled = begin.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    assert!(!conn.is_in_transaction());
    assert!(
        conn.execute("SAVEPOINT probe").await.is_ok(),
        "the server is no longer left in a transaction: sqlx fixed begin()"
    );
}

#[tokio::test]
async fn a_savepoint_dropped_during_its_own_round_trip_rolls_the_transaction_back() {
    // The same window inside a transaction: sqlx 0.9.0 queues a ROLLBACK at
    // the enclosing depth. `begin_locked_*` on a transaction shares it.
    let id = unique_key();
    let alock::LockId::Int4Pair(a, b) = id else {
        unreachable!()
    };
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock({a}, {b})"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    abandon(&mut tx, "SELECT pg_sleep(0.05)");
    {
        let mut savepoint = pin!(Connection::begin(&mut *tx));
        let polled = savepoint
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    assert!(
        is_free(id).await,
        "the enclosing transaction survived: sqlx fixed nested begin()"
    );
}
