//! Round trips counted on the wire, for 1, 2 and 64 ids: the deterministic
//! guard against a regression that a stopwatch would miss.

use std::time::Duration;

use alock::{AdvisoryLock, ExclusiveLock, LockId, Mode, ShareLock};
use alock_dev::{
    RoundTrips, all_free, backend_pid, connect, database_url, hold_elsewhere, is_free, unique_keys,
    until_waiting,
};
use sqlx::{Connection, PgConnection};

async fn counted() -> (RoundTrips, PgConnection) {
    let proxy = RoundTrips::start(database_url()).await;
    let conn = PgConnection::connect(proxy.url()).await.unwrap();
    (proxy, conn)
}

/// Runs `op` and returns how many round trips it took.
async fn trips<T>(proxy: &RoundTrips, op: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = proxy.count();
    let out = op.await;
    (out, proxy.count() - before)
}

/// sqlx prepares a statement the first time a connection runs it (one
/// extra round trip, cached afterwards), and a session creates its compiled
/// acquire the first time it needs one outside a transaction (two more): run
/// every path once before counting. Several ids take a statement per count
/// up to 16, so the warm-up takes as many as the lock has (the same id
/// repeated).
async fn warm_up<M: Mode>(lock: &mut AdvisoryLock<&mut PgConnection, M>) {
    let id = lock.ids()[0];
    let mut once = AdvisoryLock::<_, M>::new(lock.connection(), id);
    assert!(once.try_acquire().await.unwrap());
    once.release().await.unwrap();
    once.acquire().await.unwrap();
    once.release().await.unwrap();
    drop(once);
    let count = lock.ids().len().max(2);
    let mut twice = AdvisoryLock::<_, M>::new(lock.connection(), vec![id; count]);
    assert!(twice.try_acquire().await.unwrap());
    twice.release().await.unwrap();
}

#[tokio::test]
async fn free_ids_cost_one_round_trip_each_way() {
    for n in [1, 2, 64] {
        let ids = unique_keys(n);
        let (proxy, mut conn) = counted().await;
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        warm_up(&mut lock).await;

        let (r, t) = trips(&proxy, lock.acquire()).await;
        r.unwrap();
        assert_eq!(t, 1, "acquire of {n} ids");
        let (r, t) = trips(&proxy, lock.release()).await;
        r.unwrap();
        assert_eq!(t, 1, "release of {n} ids");

        let (r, t) = trips(&proxy, lock.try_acquire()).await;
        assert!(r.unwrap());
        assert_eq!(t, 1, "try_acquire of {n} ids");
        lock.release().await.unwrap();

        let (r, t) = trips(&proxy, lock.acquire_timeout(Duration::from_secs(5))).await;
        assert!(r.unwrap());
        assert_eq!(t, 1, "acquire_timeout of {n} ids");
        lock.release().await.unwrap();
        drop(lock);
        assert!(all_free(&ids).await);
    }
}

#[tokio::test]
async fn reentrant_acquire_and_release_cost_nothing() {
    for n in [1, 2, 64] {
        let ids = unique_keys(n);
        let (proxy, mut conn) = counted().await;
        let mut lock = ShareLock::new(&mut conn, &ids);
        warm_up(&mut lock).await;
        lock.acquire().await.unwrap();
        let (r, t) = trips(&proxy, lock.acquire()).await;
        r.unwrap();
        assert_eq!(t, 0);
        let (r, t) = trips(&proxy, lock.try_acquire()).await;
        assert!(r.unwrap());
        assert_eq!(t, 0);
        let (r, t) = trips(&proxy, lock.acquire_timeout(Duration::from_secs(1))).await;
        assert!(r.unwrap());
        assert_eq!(t, 0);
        for _ in 0..3 {
            let (r, t) = trips(&proxy, lock.release()).await;
            r.unwrap();
            assert_eq!(t, 0);
        }
        let (r, t) = trips(&proxy, lock.release()).await;
        r.unwrap();
        assert_eq!(t, 1);
    }
}

#[tokio::test]
async fn try_acquire_that_finds_the_last_id_busy_gives_back_in_the_same_round_trip() {
    for n in [1, 2, 64] {
        let ids = unique_keys(n);
        let busy = *ids.last().unwrap();
        let (proxy, mut conn) = counted().await;
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        warm_up(&mut lock).await;
        let _holder = hold_elsewhere(busy).await;

        let (r, t) = trips(&proxy, lock.try_acquire()).await;
        assert!(!r.unwrap());
        assert_eq!(t, 1, "try_acquire of {n} ids, the last busy");
        let (r, t) = trips(&proxy, lock.acquire_timeout(Duration::from_millis(10))).await;
        assert!(!r.unwrap());
        assert_eq!(t, 1, "timed-out acquire of {n} ids");
        drop(lock);
        for id in &ids[..n - 1] {
            assert!(is_free(*id).await);
        }
    }
}

#[tokio::test]
async fn waiting_for_a_busy_id_costs_no_round_trip_more() {
    for n in [1, 2, 64] {
        let ids: Vec<LockId> = unique_keys(n);
        let busy = ids[0];
        let (proxy, mut conn) = counted().await;
        let pid = backend_pid(&mut conn).await;
        warm_up(&mut ExclusiveLock::new(&mut conn, &ids)).await;
        let mut holder = hold_elsewhere(busy).await;
        let mut observer = connect().await;

        let before = proxy.count();
        let waiter = tokio::spawn(async move {
            let mut lock = ExclusiveLock::new(&mut conn, &ids);
            lock.acquire().await.unwrap();
            lock.release().await.unwrap();
        });
        until_waiting(&mut observer, pid).await;
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut holder)
            .await
            .unwrap();
        waiter.await.unwrap();
        let acquire_and_release = proxy.count() - before;
        assert_eq!(acquire_and_release, 2, "{n} ids");
    }
}

#[tokio::test]
async fn a_session_pays_for_its_functions_once() {
    let id = unique_keys(1)[0];
    let (proxy, mut conn) = counted().await;
    let mut lock = ExclusiveLock::new(&mut conn, id);
    // The statement fails to prepare (no functions yet), the functions are
    // created, the statement is prepared again and runs.
    let (r, t) = trips(&proxy, lock.acquire()).await;
    r.unwrap();
    assert_eq!(t, 4, "first acquire on a session");
    lock.release().await.unwrap();
    let (r, t) = trips(&proxy, lock.acquire()).await;
    r.unwrap();
    assert_eq!(t, 1, "second acquire on a session");
    lock.release().await.unwrap();
    drop(lock);
    assert!(is_free(id).await);
}

#[tokio::test]
async fn inside_a_transaction_a_single_busy_id_costs_one_round_trip_more() {
    use alock::prelude::*;
    let ids = unique_keys(1);
    let (proxy, mut conn) = counted().await;
    let pid = backend_pid(&mut conn).await;
    let mut holder = hold_elsewhere(ids[0]).await;
    let mut observer = connect().await;
    let mut tx = conn.begin().await.unwrap();
    // Prepare the try.
    assert!(tx.try_xact_lock_exclusive(&unique_keys(1)).await.unwrap());

    let before = proxy.count();
    let handed_over = async {
        until_waiting(&mut observer, pid).await;
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut holder)
            .await
            .unwrap();
    };
    let (r, ()) = tokio::join!(tx.xact_lock_exclusive(&ids), handed_over);
    r.unwrap();
    assert_eq!(proxy.count() - before, 2, "a try, then the wait");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn guards_and_transaction_locks_cost_one_round_trip() {
    use alock::prelude::*;
    for n in [1, 2, 64] {
        let ids = unique_keys(n);
        let (proxy, mut conn) = counted().await;
        warm_up(&mut ExclusiveLock::new(&mut conn, &ids)).await;
        {
            let mut tx = conn.begin().await.unwrap();
            tx.xact_lock_shared(&ids).await.unwrap();
            assert!(tx.try_xact_lock_exclusive(&ids).await.unwrap());
            tx.commit().await.unwrap();
        }

        let (guard, t) = trips(&proxy, conn.lock_exclusive(&ids)).await;
        assert_eq!(t, 1, "guard of {n} ids");
        let (r, t) = trips(&proxy, guard.unwrap().release()).await;
        r.unwrap();
        assert_eq!(t, 1, "guard release of {n} ids");

        let mut tx = conn.begin().await.unwrap();
        let (r, t) = trips(&proxy, tx.xact_lock_shared(&ids)).await;
        r.unwrap();
        assert_eq!(t, 1, "transaction lock of {n} ids");
        let (r, t) = trips(&proxy, tx.try_xact_lock_exclusive(&ids)).await;
        assert!(r.unwrap());
        assert_eq!(t, 1, "transaction try-lock of {n} ids");
        tx.commit().await.unwrap();

        // BEGIN is read before the lock is sent: a future dropped during the
        // lock then drops a transaction sqlx knows of, which rolls back.
        let (tx, t) = trips(&proxy, conn.begin_locked_exclusive(&ids)).await;
        assert_eq!(t, 2, "BEGIN and lock of {n} ids");
        tx.unwrap().commit().await.unwrap();
        assert!(all_free(&ids).await);
    }
}

#[tokio::test]
async fn inside_a_transaction_several_ids_cost_one_round_trip_and_leave_nothing_behind() {
    use alock::prelude::*;
    let ids = unique_keys(3);
    let (proxy, mut conn) = counted().await;
    let statements = async |conn: &mut PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
            .fetch_one(conn)
            .await
            .unwrap()
    };
    let mut tx = conn.begin().await.unwrap();
    tx.xact_lock_shared(&ids).await.unwrap();
    let before = statements(&mut tx).await;
    for _ in 0..10 {
        let (r, t) = trips(&proxy, tx.xact_lock_exclusive(&ids)).await;
        r.unwrap();
        assert_eq!(t, 1, "transaction lock of several ids inside a transaction");
        let (guard, t) = trips(&proxy, tx.try_lock_exclusive(&ids)).await;
        assert_eq!(t, 0, "session lock refused inside a transaction");
        assert!(matches!(guard, Err(alock::Error::InTransaction)));
    }
    assert_eq!(
        statements(&mut tx).await,
        before,
        "prepared statements leaked"
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn every_path_prepares_at_most_sixteen_statements() {
    use alock::prelude::*;
    let mut conn = connect().await;
    let busy = unique_keys(1)[0];
    let _holder = hold_elsewhere(busy).await;
    let int8 = alock_dev::unique_int8_keys(3);
    let pairs = unique_keys(3);
    for shared in [false, true] {
        for ids in [
            &int8[..1],
            &pairs[..1],
            &int8[..],
            &pairs[..],
            &[int8[0], pairs[0]][..],
        ] {
            let mut lock = AdvisoryLock::<_, alock::Exclusive>::new(&mut conn, ids);
            if shared {
                let mut lock = ShareLock::new(lock.connection(), ids);
                lock.acquire().await.unwrap();
                assert!(lock.held_on_server().await.unwrap());
                lock.release().await.unwrap();
                assert!(lock.try_acquire().await.unwrap());
                lock.release().await.unwrap();
            } else {
                lock.acquire().await.unwrap();
                assert!(lock.held_on_server().await.unwrap());
                lock.release().await.unwrap();
                assert!(lock.try_acquire().await.unwrap());
                lock.release().await.unwrap();
            }
            drop(lock);
            let mut tx = conn.begin().await.unwrap();
            if shared {
                tx.xact_lock_shared(ids).await.unwrap();
                assert!(tx.try_xact_lock_shared(ids).await.unwrap());
            } else {
                tx.xact_lock_exclusive(ids).await.unwrap();
                assert!(tx.try_xact_lock_exclusive(ids).await.unwrap());
            }
            tx.commit().await.unwrap();
        }
        for id in [busy] {
            let guard = if shared {
                conn.lock_shared_timeout(id, Duration::from_millis(5)).await
            } else {
                conn.lock_exclusive_timeout(id, Duration::from_millis(5))
                    .await
            };
            assert!(guard.unwrap().is_none());
            let mut tx = conn.begin().await.unwrap();
            assert!(
                !tx.xact_lock_exclusive_timeout(id, Duration::from_millis(5))
                    .await
                    .unwrap()
            );
            tx.commit().await.unwrap();
        }
    }
    let prepared: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // The count includes this query's own statement.
    assert!(prepared - 1 <= 16, "{} statements prepared", prepared - 1);
}
