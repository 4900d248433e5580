//! py-postgresql's own alock test suite, ported: every case checks the
//! server, counting only this test's sessions in `pg_locks`.

use alock::{Error, ExclusiveLock, LockId, ShareLock};
use alock_dev::{
    Held, backend_pid, connect, held, is_free, unique_key, unique_keys, until_waiting,
};

#[tokio::test]
async fn blocking_acquire_waits_for_the_holder_then_takes_over() {
    let id = unique_key();
    let mut observer = connect().await;
    let mut first = ExclusiveLock::new(connect().await, id);
    first.acquire().await.unwrap();

    let mut second_conn = connect().await;
    let second_pid = backend_pid(&mut second_conn).await;
    let waiter = tokio::spawn(async move {
        let mut second = ExclusiveLock::new(second_conn, id);
        second.acquire().await.unwrap();
        second
    });
    until_waiting(&mut observer, second_pid).await;
    assert_eq!(held(&mut observer, second_pid, id).await, Held::Nothing);

    first.release().await.unwrap();
    let second = waiter.await.unwrap();
    assert!(second.is_locked());
    assert_eq!(held(&mut observer, second_pid, id).await, Held::Exclusive);
}

#[tokio::test]
async fn try_acquire_does_not_wait_and_reports_busy() {
    let id = unique_key();
    let mut first = ExclusiveLock::new(connect().await, id);
    first.acquire().await.unwrap();

    let mut second = ExclusiveLock::new(connect().await, id);
    assert!(!second.try_acquire().await.unwrap());
    assert!(!second.is_locked());

    first.release().await.unwrap();
    assert!(second.try_acquire().await.unwrap());
    assert!(!is_free(id).await);
}

#[tokio::test]
async fn mixed_and_duplicate_ids_share_then_exclude() {
    let pair = unique_key();
    let LockId::Int4Pair(a, b) = unique_key() else {
        unreachable!()
    };
    let int8 = LockId::Int8(i64::from(a) << 32 | i64::from(b as u32));
    let ids = [pair, int8, int8, pair];
    let mut observer = connect().await;

    let mut one = ShareLock::new(connect().await, ids);
    let mut two = ShareLock::new(connect().await, ids);
    one.acquire().await.unwrap();
    two.acquire().await.unwrap();
    for conn in [one.get_mut(), two.get_mut()] {
        let pid = backend_pid(conn).await;
        assert_eq!(held(&mut observer, pid, pair).await, Held::Shared);
        assert_eq!(held(&mut observer, pid, int8).await, Held::Shared);
    }
    let mut excl_one = ExclusiveLock::new(connect().await, ids);
    assert!(!excl_one.try_acquire().await.unwrap());

    one.release().await.unwrap();
    two.release().await.unwrap();
    assert!(is_free(pair).await && is_free(int8).await);

    let mut excl_two = ExclusiveLock::new(connect().await, ids);
    assert!(excl_one.try_acquire().await.unwrap());
    assert!(!excl_two.try_acquire().await.unwrap());
    excl_one.release().await.unwrap();
    assert!(excl_two.try_acquire().await.unwrap());
    excl_two.release().await.unwrap();
    assert!(
        is_free(pair).await && is_free(int8).await,
        "duplicates fully released"
    );
}

#[tokio::test]
async fn partial_try_acquire_releases_what_it_took() {
    let ids = unique_keys(3);
    let mut blocker = ExclusiveLock::new(connect().await, ids[2]);
    blocker.acquire().await.unwrap();

    let mut lock = ExclusiveLock::new(connect().await, &ids);
    assert!(!lock.try_acquire().await.unwrap());
    let pid = backend_pid(lock.get_mut()).await;
    let mut observer = connect().await;
    for id in &ids[..2] {
        assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing);
        assert!(is_free(*id).await);
    }
}

#[tokio::test]
async fn release_without_acquire_is_not_held() {
    let id = unique_key();
    let mut lock = ExclusiveLock::new(connect().await, id);
    assert!(matches!(lock.release().await, Err(Error::NotHeld)));
    assert!(is_free(id).await);
}

#[tokio::test]
async fn lock_on_a_closed_connection_reports_unlocked_and_exits_cleanly() {
    let id = unique_key();
    let mut lock = ExclusiveLock::new(connect().await, id);
    lock.acquire().await.unwrap();
    let pid = backend_pid(lock.get_mut()).await;

    let mut observer = connect().await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(&mut observer)
        .await
        .unwrap();
    assert!(killed);

    assert!(!lock.held_on_server().await.unwrap());
    assert!(!lock.is_locked());
    assert!(matches!(lock.release().await, Err(Error::NotHeld)));
    drop(lock);
    assert!(is_free(id).await);
}

#[tokio::test]
async fn releasing_through_a_dead_connection_frees_the_object() {
    let id = unique_key();
    let mut lock = ExclusiveLock::new(connect().await, id);
    lock.acquire().await.unwrap();
    let pid = backend_pid(lock.get_mut()).await;
    let mut observer = connect().await;
    sqlx::query("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .execute(&mut observer)
        .await
        .unwrap();

    assert!(matches!(
        lock.release().await,
        Err(Error::ConnectionLost(_))
    ));
    assert!(!lock.is_locked());
    assert!(is_free(id).await);
}
