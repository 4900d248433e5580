//! Waits run in slices of `deadlock_timeout` + 100 ms, 900 ms at most
//! (DESIGN.md): what that buys, an abandoned wait that ends on the server,
//! what it costs, a place in the server's lock queue at each slice
//! boundary, and the deadlocks the body finds itself when a slice ends
//! before the server's detector runs.

use std::time::{Duration, Instant};

use alock::prelude::*;
use alock::{Error, ExclusiveLock};
use alock_dev::{
    Held, backend_pid, connect, held, hold_elsewhere, is_free, lock_on,
    session_with_deadlock_timeout, unique_key, unique_keys, until_waiting,
};
use sqlx::PgConnection;

/// A session whose slices are 200 ms: `deadlock_timeout` is 100 ms.
async fn short_slices() -> (PgConnection, i32) {
    let mut conn = connect().await;
    sqlx::query("SET deadlock_timeout = '100ms'")
        .execute(&mut conn)
        .await
        .unwrap();
    let pid = backend_pid(&mut conn).await;
    (conn, pid)
}

/// When `pid`'s current wait began, as `pg_locks.waitstart` shows it.
async fn wait_start(observer: &mut PgConnection, pid: i32) -> Option<f64> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM waitstart)::float8 FROM pg_locks
          WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
    )
    .bind(pid)
    .fetch_optional(observer)
    .await
    .unwrap()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_wait_ends_on_the_server_within_a_slice() {
    let id = unique_key();
    let _holder = hold_elsewhere(id).await;
    let mut observer = connect().await;
    let (mut conn, pid) = short_slices().await;
    tokio::select! {
        biased;
        _ = conn.lock_exclusive(id) => panic!("granted while held"),
        () = until_waiting(&mut observer, pid) => {}
    }
    let abandoned = Instant::now();
    while wait_start(&mut observer, pid).await.is_some() {
        assert!(
            abandoned.elapsed() < Duration::from_secs(10),
            "the abandoned wait goes on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection is usable at once, and holds nothing of the call.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert_eq!(held(&mut observer, pid, id).await, Held::Nothing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_rejoins_the_queue_at_each_slice_so_a_later_waiter_can_pass() {
    let id = unique_key();
    let mut holder = hold_elsewhere(id).await;
    let mut observer = connect().await;

    let (mut sliced, sliced_pid) = short_slices().await;
    let first = tokio::spawn(async move {
        let guard = sliced.lock_exclusive(id).await.unwrap();
        guard.release().await.unwrap();
        sliced
    });
    until_waiting(&mut observer, sliced_pid).await;
    let first_start = wait_start(&mut observer, sliced_pid).await.unwrap();

    // A plain wait joins the queue behind it...
    let mut plain = connect().await;
    let plain_pid = backend_pid(&mut plain).await;
    let second = tokio::spawn(async move {
        alock_dev::lock_on(&mut plain, id).await;
        plain
    });
    until_waiting(&mut observer, plain_pid).await;
    let plain_start = wait_start(&mut observer, plain_pid).await.unwrap();
    assert!(first_start < plain_start);

    // ...and is ahead of it once a slice has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(start) = wait_start(&mut observer, sliced_pid).await
            && start > plain_start
        {
            break;
        }
        assert!(Instant::now() < deadline, "no slice ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alock_dev::unlock_all(&mut holder).await;
    let mut plain = second.await.unwrap();
    assert!(
        wait_start(&mut observer, sliced_pid).await.is_some(),
        "the sliced wait was served first"
    );
    alock_dev::unlock_all(&mut plain).await;
    drop(first.await.unwrap());
    assert!(is_free(id).await);
}

/// At the server's default `deadlock_timeout` (1 s), an abandoned wait ends
/// on the server within a second of its start: the slice is 900 ms at most.
/// Measured on the server's clock, from `pg_locks.waitstart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_deadlock_timeout_an_abandoned_wait_ends_within_a_second() {
    let id = unique_key();
    let _holder = hold_elsewhere(id).await;
    let mut observer = connect().await;
    let (mut conn, pid) = session_with_deadlock_timeout("1s").await;
    tokio::select! {
        biased;
        _ = conn.lock_exclusive(id) => panic!("granted while held"),
        () = until_waiting(&mut observer, pid) => {}
    }
    let started = wait_start(&mut observer, pid).await.expect("waiting");
    let ended = loop {
        let (waiting, now): (bool, f64) = sqlx::query_as(
            "SELECT EXISTS (SELECT FROM pg_locks
                             WHERE locktype = 'advisory' AND NOT granted AND pid = $1),
                    extract(epoch FROM clock_timestamp())::float8",
        )
        .bind(pid)
        .fetch_one(&mut observer)
        .await
        .unwrap();
        if !waiting {
            break now;
        }
        assert!(now - started < 10.0, "the abandoned wait goes on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        ended - started < 1.0,
        "the abandoned wait went on for {:.3} s on the server",
        ended - started
    );
    assert_eq!(held(&mut observer, pid, id).await, Held::Nothing);
}

/// Two sessions whose `deadlock_timeout` is longer than a slice, so the
/// server's detector never runs in their waits, each wait for the other's
/// lock: the body finds the deadlock at the end of a slice, and the call
/// that finds it fails with `Error::Deadlock`, keeping its session's other
/// hold. Without that check they would wait in slices for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_between_sliced_waits_is_found_by_the_body() {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (first, first_pid) = session_with_deadlock_timeout("60s").await;
    let (second, second_pid) = session_with_deadlock_timeout("60s").await;
    let mut first_x = ExclusiveLock::new(first, x);
    first_x.acquire().await.unwrap();
    let mut second_y = ExclusiveLock::new(second, y);
    second_y.acquire().await.unwrap();

    // Each waits for the other's id; whoever fails lets go of its own.
    let cross = |mut outer: ExclusiveLock<PgConnection>, other| {
        tokio::spawn(async move {
            let taken = ExclusiveLock::new(&mut outer, other).acquire().await;
            let still_held = held(
                &mut connect().await,
                backend_pid(outer.as_mut()).await,
                other,
            )
            .await;
            outer.release().await.unwrap();
            (taken, still_held)
        })
    };
    let first = cross(first_x, y);
    until_waiting(&mut observer, first_pid).await;
    let second = cross(second_y, x);
    until_waiting(&mut observer, second_pid).await;

    let limit = Duration::from_secs(30);
    let (first, second) = tokio::time::timeout(limit, async {
        (first.await.unwrap(), second.await.unwrap())
    })
    .await
    .expect("the deadlock was never found");
    let deadlocks = [&first, &second]
        .iter()
        .filter(|(taken, _)| matches!(taken, Err(Error::Deadlock(e)) if e.code() == "40P01"))
        .count();
    assert!(deadlocks >= 1, "{first:?} {second:?}");
    for (taken, held_after) in [first, second] {
        match taken {
            Ok(()) => {}
            Err(Error::Deadlock(_)) => assert_eq!(held_after, Held::Nothing),
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert!(is_free(x).await && is_free(y).await);
}

/// The same with a plain `pg_advisory_lock` on the other side, whose own
/// detector would not run for a minute: the sliced wait finds the deadlock
/// at the end of its slice and fails; its other hold stays, and once it is
/// released the plain wait gets its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_with_a_plain_wait_is_found_by_the_body() {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (conn, pid) = session_with_deadlock_timeout("60s").await;
    let mut outer = ExclusiveLock::new(conn, x);
    outer.acquire().await.unwrap();
    let (mut plain, plain_pid) = session_with_deadlock_timeout("60s").await;
    lock_on(&mut plain, y).await;
    let plain_waits = tokio::spawn(async move {
        lock_on(&mut plain, x).await;
        plain
    });
    until_waiting(&mut observer, plain_pid).await;

    let err = tokio::time::timeout(
        Duration::from_secs(30),
        ExclusiveLock::new(&mut outer, y).acquire(),
    )
    .await
    .expect("the deadlock was never found")
    .unwrap_err();
    assert!(
        matches!(err, Error::Deadlock(ref e) if e.code() == "40P01"),
        "{err:?}"
    );
    assert_eq!(held(&mut observer, pid, y).await, Held::Nothing);
    assert_eq!(held(&mut observer, pid, x).await, Held::Exclusive);
    outer.release().await.unwrap();
    let mut plain = plain_waits.await.unwrap();
    alock_dev::unlock_all(&mut plain).await;
    assert!(is_free(x).await && is_free(y).await);
}
