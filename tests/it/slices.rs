//! Waits run in slices of `deadlock_timeout` + 100 ms (DESIGN.md): what
//! that buys, an abandoned wait that ends on the server, and what it costs,
//! a place in the server's lock queue at each slice boundary.

use std::time::{Duration, Instant};

use alock::prelude::*;
use alock_dev::{
    Held, backend_pid, connect, held, hold_elsewhere, is_free, unique_key, until_waiting,
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
