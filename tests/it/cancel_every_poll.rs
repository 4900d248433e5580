//! Every acquire and release dropped after each number of polls, from none
//! to completion, on fresh connections (where sqlx has not prepared the
//! statement yet) and on warm ones, nested under an outer hold of the same
//! id: afterwards the connection answers, the outer hold is intact, and the
//! dropped call left nothing.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use alock::{ExclusiveLock, LockId, ShareLock};
use alock_dev::{
    Held, assert_answers, backend_pid, connect, held, is_free, unique_int8_keys, unique_keys,
};
use sqlx::PgConnection;

/// Polls `future` up to `polls` times, a moment apart so that the server's
/// answers arrive in between, then drops it: at once after the last poll
/// when `at_once`, else a moment later. Whether it finished.
async fn poll_then_drop<F: Future>(future: F, polls: usize, at_once: bool) -> bool {
    let mut future = pin!(future);
    for i in 0..polls {
        if future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
        {
            return true;
        }
        if i + 1 < polls || !at_once {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    false
}

/// The ids a nested call takes: the outer id again, and a fresh one of
/// each form.
fn inner_ids(outer: LockId) -> Vec<LockId> {
    vec![outer, unique_keys(1)[0], unique_int8_keys(1)[0]]
}

async fn fresh_or_warm(warm: bool) -> PgConnection {
    let mut conn = connect().await;
    if warm {
        alock::prepare_session(&mut conn).await.unwrap();
        let id = unique_keys(1)[0];
        for ids in [vec![id], vec![id, id]] {
            let mut lock = ExclusiveLock::new(&mut conn, ids);
            lock.acquire().await.unwrap();
            lock.release().await.unwrap();
        }
    }
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_dropped_after_any_poll_leaves_nothing_and_keeps_the_outer_hold() {
    let mut observer = connect().await;
    for warm in [false, true] {
        for single in [true, false] {
            for polls in 0..8 {
                let outer_id = unique_keys(1)[0];
                let mut conn = fresh_or_warm(warm).await;
                let pid = backend_pid(&mut conn).await;
                let mut outer = ShareLock::new(&mut conn, outer_id);
                outer.acquire().await.unwrap();
                let ids = if single {
                    vec![outer_id]
                } else {
                    inner_ids(outer_id)
                };
                let finished = {
                    let mut inner = ShareLock::new(&mut outer, &ids);
                    // On a fresh connection the first call fails to prepare
                    // until the session has its functions; dropped before
                    // that answer arrives, sqlx hands it to the next query
                    // (DESIGN.md), so there the drop waits for it.
                    poll_then_drop(inner.acquire(), polls, warm).await
                    // `inner` is dropped here: if its acquire finished, the
                    // drop queues its release.
                };
                let what = format!("warm {warm}, single {single}, {polls} polls, {finished}");
                assert_answers(outer.connection(), &what).await;
                assert_eq!(
                    held(&mut observer, pid, outer_id).await,
                    Held::Shared,
                    "{what}"
                );
                for id in &ids[1..] {
                    assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing, "{what}");
                }
                outer.release().await.unwrap();
                drop(outer);
                assert_answers(&mut conn, &what).await;
                assert!(is_free(outer_id).await, "{what}: an extra hold was left");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_dropped_after_any_poll_still_releases_exactly_its_hold() {
    let mut observer = connect().await;
    for warm in [false, true] {
        for single in [true, false] {
            for polls in 0..8 {
                let outer_id = unique_keys(1)[0];
                let mut conn = fresh_or_warm(warm).await;
                let pid = backend_pid(&mut conn).await;
                let mut outer = ExclusiveLock::new(&mut conn, outer_id);
                outer.acquire().await.unwrap();
                let ids = if single {
                    vec![outer_id]
                } else {
                    inner_ids(outer_id)
                };
                {
                    let mut inner = ExclusiveLock::new(&mut outer, &ids);
                    inner.acquire().await.unwrap();
                    poll_then_drop(inner.release(), polls, true).await;
                }
                let what = format!("warm {warm}, single {single}, {polls} polls");
                assert_answers(outer.connection(), &what).await;
                assert_eq!(
                    held(&mut observer, pid, outer_id).await,
                    Held::Exclusive,
                    "{what}"
                );
                for id in &ids[1..] {
                    assert_eq!(held(&mut observer, pid, *id).await, Held::Nothing, "{what}");
                }
                outer.release().await.unwrap();
                drop(outer);
                assert!(is_free(outer_id).await, "{what}: an extra hold was left");
            }
        }
    }
}

/// The guard's own constructor, nested on a connection an outer lock object
/// holds, dropped after any poll: the outer hold stays, nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_constructor_dropped_after_any_poll_keeps_the_outer_hold() {
    let mut observer = connect().await;
    for warm in [false, true] {
        for polls in 0..8 {
            let outer_id = unique_keys(1)[0];
            let mut conn = fresh_or_warm(warm).await;
            let pid = backend_pid(&mut conn).await;
            let mut outer = ExclusiveLock::new(&mut conn, outer_id);
            outer.acquire().await.unwrap();
            let ids = inner_ids(outer_id);
            let take = alock::LockGuard::lock_shared(outer.connection(), ids.clone());
            if poll_then_drop(take, polls, polls % 2 == 0).await {
                continue; // finished: its guard was dropped, which is tested elsewhere
            }
            assert_answers(outer.connection(), "after a dropped guard constructor").await;
            assert_eq!(held(&mut observer, pid, outer_id).await, Held::Exclusive);
            for id in &ids[1..] {
                assert_eq!(
                    held(&mut observer, pid, *id).await,
                    Held::Nothing,
                    "polls {polls}"
                );
            }
            outer.release().await.unwrap();
            assert!(is_free(outer_id).await);
        }
    }
}

/// The pool's new calls dropped after any poll, each on a fresh connection:
/// once the pool has closed or reused it, no id is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_calls_dropped_after_any_poll_leave_nothing() {
    use alock::prelude::*;
    for polls in 0..8 {
        let ids = inner_ids(unique_keys(1)[0]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(alock_dev::database_url())
            .await
            .unwrap();
        let calls: [std::pin::Pin<Box<dyn Future<Output = ()> + Send>>; 3] = [
            Box::pin({
                let (pool, ids) = (pool.clone(), ids.clone());
                async move {
                    let _ = pool
                        .lock_exclusive_timeout(ids, Duration::from_secs(5))
                        .await;
                }
            }),
            Box::pin({
                let (pool, ids) = (pool.clone(), ids.clone());
                async move {
                    let _ = pool.lease_exclusive(ids).await;
                }
            }),
            Box::pin({
                let (pool, ids) = (pool.clone(), ids.clone());
                async move {
                    let _ = alock::Lease::options().try_exclusive(&pool, ids).await;
                }
            }),
        ];
        for call in calls {
            poll_then_drop(call, polls, polls % 2 == 0).await;
            for id in &ids {
                let started = std::time::Instant::now();
                while !is_free(*id).await {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "{id} stays held"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        assert_answers(
            &mut pool.acquire().await.unwrap(),
            "the pool after the drops",
        )
        .await;
    }
}
