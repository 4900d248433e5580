//! The lock object's semantics, each checked on the server.

use std::time::Duration;

use alock::prelude::*;
use alock::{AdvisoryLock, Error, ExclusiveLock, LockId, Mode, ShareLock};
use alock_dev::{
    Held, all_free, assert_answers, backend_pid, connect, held, hold_elsewhere, is_free, lock_on,
    set_lock_timeout, unique_int8_keys, unique_key, unique_keys, unlock_all, until_waiting,
};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn reentrant_acquire_and_release_touch_the_server_only_at_the_ends() {
    let id = unique_key();
    let mut lock = ExclusiveLock::new(connect().await, id);
    lock.acquire().await.unwrap();
    lock.acquire().await.unwrap();
    assert!(lock.try_acquire().await.unwrap());
    assert_eq!(lock.count(), 3);

    lock.release().await.unwrap();
    lock.release().await.unwrap();
    assert!(!is_free(id).await, "released too early");
    assert!(lock.is_locked());

    lock.release().await.unwrap();
    assert!(is_free(id).await, "a re-entrant acquire reached the server");
    assert!(!lock.is_locked());
}

#[tokio::test]
async fn ids_are_taken_in_the_order_given() {
    let [first, busy, last] = unique_keys(3).try_into().unwrap();
    let mut holder = hold_elsewhere(busy).await;
    let mut observer = connect().await;

    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let waiter = tokio::spawn(async move {
        let mut lock = ExclusiveLock::new(conn, [first, busy, last]);
        lock.acquire().await.unwrap();
        lock
    });
    until_waiting(&mut observer, pid).await;
    assert_eq!(held(&mut observer, pid, first).await, Held::Exclusive);
    assert_eq!(held(&mut observer, pid, last).await, Held::Nothing);

    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut lock = waiter.await.unwrap();
    for id in [first, busy, last] {
        assert_eq!(held(&mut observer, pid, id).await, Held::Exclusive);
    }
    lock.release().await.unwrap();
    for id in [first, busy, last] {
        assert!(is_free(id).await);
    }
}

#[tokio::test]
async fn mixed_and_duplicated_ids_are_fully_released() {
    let pair = unique_key();
    let int8 = LockId::Int8(-(i64::from(std::process::id()) << 20) - 7);
    let ids = [int8, pair, int8, int8, pair];
    let mut lock = ExclusiveLock::new(connect().await, ids);
    lock.acquire().await.unwrap();
    assert!(lock.held_on_server().await.unwrap());
    assert!(!is_free(int8).await && !is_free(pair).await);
    lock.release().await.unwrap();
    assert!(is_free(int8).await && is_free(pair).await);
}

#[tokio::test]
async fn release_of_an_unheld_object_changes_nothing() {
    let id = unique_key();
    let mut conn = connect().await;
    let mut held_lock = ExclusiveLock::new(&mut conn, id);
    held_lock.acquire().await.unwrap();
    let mut other = ExclusiveLock::new(&mut held_lock, id);
    assert!(matches!(other.release().await, Err(Error::NotHeld)));
    drop(other);
    assert!(held_lock.held_on_server().await.unwrap());
    assert!(!is_free(id).await);
}

#[tokio::test]
async fn nested_objects_on_one_connection_keep_their_own_holds() {
    let [a, b] = unique_keys(2).try_into().unwrap();
    let mut outer = ExclusiveLock::new(connect().await, [a, b]);
    outer.acquire().await.unwrap();
    {
        let mut inner = ExclusiveLock::new(&mut outer, [b]);
        inner.acquire().await.unwrap();
        inner.release().await.unwrap();
    }
    assert!(!is_free(b).await, "the inner release took the outer hold");
    outer.release().await.unwrap();
    assert!(is_free(a).await && is_free(b).await);
}

#[tokio::test]
async fn shared_locks_of_two_sessions_overlap_and_exclude_exclusive() {
    let ids = unique_keys(2);
    let mut one = ShareLock::new(connect().await, &ids);
    let mut two = ShareLock::new(connect().await, &ids);
    assert!(one.try_acquire().await.unwrap());
    assert!(two.try_acquire().await.unwrap());
    let mut excl = ExclusiveLock::new(connect().await, &ids);
    assert!(!excl.try_acquire().await.unwrap());
    one.release().await.unwrap();
    assert!(!excl.try_acquire().await.unwrap());
    two.release().await.unwrap();
    assert!(excl.try_acquire().await.unwrap());
}

#[tokio::test]
async fn acquire_timeout_takes_free_ids_and_gives_up_on_busy_ones() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;

    let mut lock = ExclusiveLock::new(&mut conn, [free, busy]);
    assert!(
        !lock
            .acquire_timeout(Duration::from_millis(50))
            .await
            .unwrap()
    );
    assert!(!lock.is_locked());
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);
    drop(lock);

    let mut lone = ExclusiveLock::new(&mut conn, busy);
    assert!(
        !lone
            .acquire_timeout(Duration::from_millis(50))
            .await
            .unwrap()
    );
    assert!(!lone.acquire_timeout(Duration::ZERO).await.unwrap());
    drop(lone);
    // A timeout shorter than a microsecond, or one already spent by the time
    // the statement is sent, still gives up rather than waiting without
    // one. The client-side limit only keeps a failure from hanging the test.
    for ids in [vec![busy], vec![free, busy]] {
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        let tiny = lock.acquire_timeout(Duration::from_nanos(1));
        let taken = tokio::time::timeout(Duration::from_secs(30), tiny)
            .await
            .expect("a 1 ns timeout waited without a limit");
        assert!(!taken.unwrap());
    }
    assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);

    let mut ok = ExclusiveLock::new(&mut conn, [free]);
    assert!(ok.acquire_timeout(Duration::from_secs(5)).await.unwrap());
    assert_eq!(held(&mut observer, pid, free).await, Held::Exclusive);
}

#[tokio::test]
async fn acquire_timeout_waits_on_the_server_for_a_release() {
    let ids = unique_keys(2);
    let mut holder = hold_elsewhere(ids[1]).await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    let waiter = tokio::spawn(async move {
        let mut lock = ExclusiveLock::new(conn, ids);
        let taken = lock.acquire_timeout(Duration::from_secs(60)).await.unwrap();
        (taken, lock)
    });
    until_waiting(&mut observer, pid).await;
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let (taken, lock) = waiter.await.unwrap();
    assert!(taken && lock.is_locked());
}

async fn lock_timeout_of(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn acquire_timeout_leaves_lock_timeout_as_it_found_it() {
    let [free, busy] = unique_keys(2).try_into().unwrap();
    let _holder = hold_elsewhere(busy).await;
    let mut conn = connect().await;
    set_lock_timeout(&mut conn, "7s").await;

    for ids in [vec![free], vec![busy], vec![free, busy]] {
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        let _ = lock
            .acquire_timeout(Duration::from_millis(20))
            .await
            .unwrap();
        drop(lock);
        assert_eq!(lock_timeout_of(&mut conn).await, "7s");
    }

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '3s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    for ids in [vec![busy], vec![free, busy]] {
        assert!(
            !tx.xact_lock_exclusive_timeout(&ids, Duration::from_millis(20))
                .await
                .unwrap()
        );
        assert_eq!(lock_timeout_of(&mut tx).await, "3s");
    }
    assert!(
        tx.xact_lock_exclusive_timeout(free, Duration::from_millis(20))
            .await
            .unwrap()
    );
    assert_eq!(lock_timeout_of(&mut tx).await, "3s");
    assert_answers(&mut tx, "the timeout aborted the transaction").await;
    tx.commit().await.unwrap();
    assert_eq!(lock_timeout_of(&mut conn).await, "7s");
}

#[tokio::test]
async fn lock_futures_are_send() {
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let id = unique_key();
    let handle = tokio::spawn(async move {
        let mut lock = ExclusiveLock::new(connect().await, id);
        assert_send(lock.acquire()).await.unwrap();
        assert_send(lock.try_acquire()).await.unwrap();
        assert_send(lock.acquire_timeout(Duration::from_secs(1)))
            .await
            .unwrap();
        assert_send(lock.held_on_server()).await.unwrap();
        lock
    });
    let lock = handle.await.unwrap();
    assert_eq!(lock.count(), 3);
    assert!(!is_free(id).await);
}

#[tokio::test]
async fn dropping_a_held_object_releases_before_the_next_use_of_its_connection() {
    let ids = unique_keys(3);
    let mut conn = connect().await;
    let mut lock = ShareLock::new(&mut conn, &ids);
    lock.acquire().await.unwrap();
    lock.acquire().await.unwrap();
    drop(lock);
    assert_answers(&mut conn, "a later query got a stale answer").await;
    assert!(all_free(&ids).await);
}

#[tokio::test]
async fn leak_keeps_the_ids_for_the_session() {
    let id = unique_key();
    let mut lock = ExclusiveLock::new(connect().await, id);
    lock.acquire().await.unwrap();
    let mut conn = lock.leak();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(!is_free(id).await);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn into_inner_of_a_held_object_releases_it() {
    let id = unique_key();
    let mut lock = ExclusiveLock::new(connect().await, id);
    lock.acquire().await.unwrap();
    let mut conn = lock.into_inner();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(is_free(id).await);
}

/// Polls `future` once and drops it, as a `select!` or a timeout would.
fn poll_once_then_drop<F: std::future::Future>(future: F) {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = future.as_mut().poll(&mut cx);
}

#[tokio::test]
async fn a_release_dropped_mid_flight_still_releases() {
    for fresh in [true, false] {
        let ids = unique_keys(2);
        let mut conn = connect().await;
        if !fresh {
            // The unlock statement is prepared: the first poll writes it.
            let mut warm = ExclusiveLock::new(&mut conn, &ids);
            warm.acquire().await.unwrap();
            warm.release().await.unwrap();
        }
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        lock.acquire().await.unwrap();
        poll_once_then_drop(lock.release());
        assert!(!lock.is_locked());
        drop(lock);
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        for id in &ids {
            assert!(is_free(*id).await, "fresh connection: {fresh}");
        }
    }
}

#[tokio::test]
async fn thousands_of_ids_lock_and_release_in_every_form() {
    let ids = unique_keys(2000);
    let mut conn = connect().await;
    let mut lock = ShareLock::new(&mut conn, &ids);
    assert!(lock.try_acquire().await.unwrap());
    assert!(lock.held_on_server().await.unwrap());
    drop(lock);
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    assert!(is_free(ids[0]).await && is_free(ids[1999]).await);

    let mut lock = ExclusiveLock::new(&mut conn, &ids);
    lock.acquire().await.unwrap();
    lock.release().await.unwrap();
    assert!(is_free(ids[1000]).await);
}

#[tokio::test]
async fn int8_ids_wait_time_out_and_hand_over_like_pairs() {
    let [free, busy] = unique_int8_keys(2).try_into().unwrap();
    let mut holder = hold_elsewhere(busy).await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;

    for ids in [vec![busy], vec![free, busy]] {
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        assert!(
            !lock
                .acquire_timeout(Duration::from_millis(30))
                .await
                .unwrap()
        );
        drop(lock);
        assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);

        set_lock_timeout(&mut conn, "30ms").await;
        let err = ExclusiveLock::new(&mut conn, &ids)
            .acquire()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout(_)), "{err:?}");
        set_lock_timeout(&mut conn, "0").await;
        assert_eq!(held(&mut observer, pid, free).await, Held::Nothing);

        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        let (taken, ()) = tokio::join!(lock.acquire(), async {
            until_waiting(&mut observer, pid).await;
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut holder)
                .await
                .unwrap();
        });
        taken.unwrap();
        for id in &ids {
            assert_eq!(held(&mut observer, pid, *id).await, Held::Exclusive);
        }
        lock.release().await.unwrap();
        drop(lock);
        assert!(is_free(free).await && is_free(busy).await);
        lock_on(&mut holder, busy).await;
    }
}

#[tokio::test]
async fn a_release_reports_ids_the_session_no_longer_held() {
    let ids = unique_keys(3);
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut lock = ExclusiveLock::new(&mut conn, &ids);
    lock.acquire().await.unwrap();
    // Something else on the session gives back one of the three ids, as
    // an unlock by hand would.
    let LockId::Int4Pair(key1, key2) = ids[1] else {
        unreachable!("test keys are pairs")
    };
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(key1)
        .bind(key2)
        .execute(lock.connection())
        .await
        .unwrap();

    match lock.release().await {
        Err(Error::Lost {
            missing: 1,
            total: 3,
        }) => {}
        other => panic!("expected Lost {{ missing: 1, total: 3 }}, got {other:?}"),
    }
    assert!(!lock.is_locked());
    let mut observer = connect().await;
    for id in &ids {
        assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing);
    }
    assert!(all_free(&ids).await);
}

#[tokio::test]
async fn a_release_after_the_session_was_reset_reports_every_id_lost() {
    let ids = unique_keys(2);
    let mut lock = ShareLock::new(connect().await, &ids);
    lock.acquire().await.unwrap();
    lock.acquire().await.unwrap();
    unlock_all(lock.connection()).await;

    // The re-entrant release only counts; the last one asks the server.
    lock.release().await.unwrap();
    assert!(matches!(
        lock.release().await,
        Err(Error::Lost {
            missing: 2,
            total: 2
        })
    ));
    assert!(matches!(lock.release().await, Err(Error::NotHeld)));
    // The session works on.
    lock.acquire().await.unwrap();
    assert!(!is_free(ids[0]).await && !is_free(ids[1]).await);
    lock.release().await.unwrap();
    assert!(all_free(&ids).await);
}

/// Up to 16 ids of one form, several ids take a statement of their own
/// count that tries them at transaction level first; past that, and for
/// mixed forms, the function. Every count on both sides of that line, in
/// both forms and both modes, is held whole and given back whole.
#[tokio::test]
async fn every_count_and_form_of_free_ids_is_taken_and_given_back_whole() {
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    for n in 2..=17 {
        let pairs = unique_keys(n);
        let int8s = unique_int8_keys(n);
        let mixed: Vec<LockId> = int8s[..n / 2]
            .iter()
            .chain(&pairs[n / 2..])
            .copied()
            .collect();
        for ids in [&pairs, &int8s, &mixed] {
            cycle::<alock::Exclusive>(&mut conn, &mut observer, pid, ids, Held::Exclusive).await;
            cycle::<alock::Shared>(&mut conn, &mut observer, pid, ids, Held::Shared).await;
        }
    }
}

async fn cycle<M: Mode>(
    conn: &mut PgConnection,
    observer: &mut PgConnection,
    pid: i32,
    ids: &[LockId],
    expected: Held,
) {
    let mut lock = AdvisoryLock::<_, M>::new(&mut *conn, ids);
    lock.acquire().await.unwrap();
    for id in ids {
        assert_eq!(
            held(observer, pid, *id).await,
            expected,
            "{} ids",
            ids.len()
        );
    }
    lock.release().await.unwrap();
    for id in ids {
        assert_eq!(
            held(observer, pid, *id).await,
            Held::Nothing,
            "{} ids",
            ids.len()
        );
    }
}

/// The session lost the object's ids behind its back
/// (`pg_advisory_unlock_all`), then took the first of them again by hand:
/// releasing the object says the ids were lost, and leaves the hand-taken
/// hold alone. Before a single id was released record first, the release
/// of one id gave that hold back and said `Ok`.
#[tokio::test]
async fn releasing_ids_lost_and_taken_again_by_hand_reports_lost_and_keeps_that_hold() {
    for n in [1, 2] {
        let ids = unique_keys(n);
        let mut observer = connect().await;
        let mut conn = connect().await;
        let pid = backend_pid(&mut conn).await;
        let mut lock = ExclusiveLock::new(&mut conn, &ids);
        lock.acquire().await.unwrap();
        unlock_all(lock.as_mut()).await;
        lock_on(lock.as_mut(), ids[0]).await;
        let released = lock.release().await;
        assert!(
            matches!(released, Err(Error::Lost { missing, total }) if missing == n && total == n),
            "{n} ids: {released:?}"
        );
        drop(lock);
        assert_eq!(
            held(&mut observer, pid, ids[0]).await,
            Held::Exclusive,
            "{n} ids: the hand-taken hold was given back"
        );
        unlock_all(&mut conn).await;
    }
}
