//! One guard for every connection, the same method set on a pool as on a
//! connection, closures with any common error type, and the edge cases of
//! keys and timeouts: each checked on the server.

use std::time::Duration;

use alock::prelude::*;
use alock::{Error, ExclusiveLock, KeyError, LockGuard};
use alock_dev::{
    RoundTrips, backend_pid, connect, database_url, hold_elsewhere, is_free, unique_keys,
};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn one_guard_type_for_borrowed_owned_and_pooled_connections() {
    let ids = unique_keys(3);
    let mut borrowed = connect().await;
    let owned = connect().await;
    let pool = pool().await;

    let mut by_ref: LockGuard<&mut PgConnection> = borrowed.lock_exclusive(ids[0]).await.unwrap();
    let mut by_value: LockGuard<PgConnection> =
        LockGuard::lock_exclusive(owned, ids[1]).await.unwrap();
    let mut pooled: LockGuard<PoolConnection<Postgres>> =
        pool.lock_exclusive(ids[2]).await.unwrap();

    for (guard_held, id) in [
        (by_ref.held_on_server().await.unwrap(), ids[0]),
        (by_value.held_on_server().await.unwrap(), ids[1]),
        (pooled.held_on_server().await.unwrap(), ids[2]),
    ] {
        assert!(guard_held, "the guard says it holds {id}");
        assert!(!is_free(id).await, "another session cannot take {id}");
    }
    assert_eq!(by_value.ids(), [ids[1]]);
    sqlx::query("SELECT 1")
        .execute(by_value.connection())
        .await
        .unwrap();

    by_ref.release().await.unwrap();
    by_value.release().await.unwrap();
    pooled.release().await.unwrap();
    for id in &ids {
        assert!(
            is_free(*id).await,
            "released: another session can take {id}"
        );
    }
}

#[tokio::test]
async fn a_pool_guard_moves_into_a_task() {
    let id = unique_keys(1)[0];
    let pool = pool().await;
    let mut guard = pool.lock_exclusive(id).await.unwrap();
    let task = tokio::spawn(async move {
        sqlx::query("SELECT 1").execute(&mut *guard).await?;
        guard.release().await
    });
    task.await.unwrap().unwrap();
    assert!(is_free(id).await);
}

#[tokio::test]
async fn a_pool_has_the_timed_and_scoped_methods_of_a_connection() {
    let id = unique_keys(1)[0];
    let pool = pool().await;
    let holder = hold_elsewhere(id).await;

    let timed = pool
        .lock_exclusive_timeout(id, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(timed.is_none(), "a busy id times out");
    let timed = pool
        .lock_shared_timeout(id, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(
        timed.is_none(),
        "an exclusive holder blocks shared mode too"
    );
    drop(holder);

    let pid = pool
        .with_exclusive(id, async |conn| {
            assert!(!is_free(id).await, "held while the closure runs");
            Ok::<_, Error>(backend_pid(conn).await)
        })
        .await
        .unwrap();
    assert!(pid > 0);
    assert!(is_free(id).await, "released after the closure");

    let shared = pool
        .with_shared(id, async |_| Ok::<_, Error>(is_free(id).await))
        .await
        .unwrap();
    assert!(!shared, "a shared hold keeps exclusive takers out");
    let guard = pool
        .lock_shared_timeout(id, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("free");
    assert!(guard.is_shared());
    guard.release().await.unwrap();
}

/// `?` on sqlx's and alock's errors inside the closure, for each error type
/// a program commonly uses.
#[tokio::test]
async fn closures_may_return_any_common_error_type() {
    let id = unique_keys(1)[0];
    let mut conn = connect().await;

    let n: Result<i32, sqlx::Error> = conn
        .with_exclusive(id, async |conn| {
            let n: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await?;
            conn.try_xact_lock_exclusive(unique_keys(1)).await?; // an alock::Error
            Ok(n)
        })
        .await;
    let refused = n.expect_err("outside a transaction the inner lock is refused");
    let inner = refused
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<Error>())
        .expect("the alock error is inside the sqlx error");
    assert!(matches!(inner, Error::NotInTransaction), "{inner:?}");

    let n: Result<i32, Error> = conn
        .with_exclusive(id, async |conn| {
            Ok(sqlx::query_scalar("SELECT 2").fetch_one(conn).await?)
        })
        .await;
    assert_eq!(n.unwrap(), 2);

    let n: Result<i32, Box<dyn std::error::Error + Send + Sync>> = conn
        .with_shared(id, async |conn| {
            Ok(sqlx::query_scalar("SELECT 3").fetch_one(conn).await?)
        })
        .await;
    assert_eq!(n.unwrap(), 3);

    let n: anyhow::Result<i32> = conn
        .with_exclusive(id, async |conn| {
            Ok(sqlx::query_scalar("SELECT 4").fetch_one(conn).await?)
        })
        .await;
    assert_eq!(n.unwrap(), 4);
    assert!(is_free(id).await);
}

/// Zero keys are refused with a typed error before anything reaches the
/// server, on every kind of call: locking nothing is almost always a bug.
#[tokio::test]
async fn zero_keys_are_refused_before_anything_is_sent() {
    let none: Vec<alock::LockId> = Vec::new();
    let proxy = RoundTrips::start(database_url()).await;
    let mut conn = PgConnection::connect(proxy.url()).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(proxy.url())
        .await
        .unwrap();
    let before = proxy.count();
    let empty = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::InvalidKeys(KeyError::Empty))),
            "{r:?}"
        )
    };

    empty(conn.lock_exclusive(&none).await.map(drop));
    empty(conn.try_lock_shared(&none).await.map(drop));
    empty(
        conn.lock_exclusive_timeout(&none, Duration::from_secs(1))
            .await
            .map(drop),
    );
    empty(
        conn.with_exclusive(&none, async |_| Ok::<_, Error>(()))
            .await,
    );
    empty(pool.lock_exclusive(&none).await.map(drop));
    empty(pool.try_lock_exclusive(&none).await.map(drop));
    let mut lock = ExclusiveLock::new(&mut conn, &none);
    empty(lock.acquire().await);
    assert!(!lock.is_locked());
    drop(lock);
    empty(conn.begin_locked_exclusive(&none).await.map(drop));
    assert_eq!(proxy.count(), before, "nothing reached the server");

    let mut tx = conn.begin().await.unwrap();
    empty(tx.xact_lock_exclusive(&none).await);
    empty(tx.try_xact_lock_shared(&none).await.map(drop));
    tx.rollback().await.unwrap();
}

/// A timeout beyond what the server's `lock_timeout` can express is refused,
/// not silently turned into "forever"; the longest one accepted works.
#[tokio::test]
async fn a_timeout_too_long_for_the_server_is_refused() {
    let id = unique_keys(1)[0];
    let mut conn = connect().await;
    let longest = Duration::from_millis(i32::MAX as u64);
    for timeout in [Duration::MAX, longest + Duration::from_millis(1)] {
        let r = conn.lock_exclusive_timeout(id, timeout).await.map(drop);
        assert!(
            matches!(r, Err(Error::TimeoutTooLong(t)) if t == timeout),
            "{r:?}"
        );
        let mut lock = ExclusiveLock::new(&mut conn, id);
        let r = lock.acquire_timeout(timeout).await;
        assert!(matches!(r, Err(Error::TimeoutTooLong(_))), "{r:?}");
        drop(lock);
        let mut tx = conn.begin().await.unwrap();
        let r = tx.xact_lock_exclusive_timeout(id, timeout).await;
        assert!(matches!(r, Err(Error::TimeoutTooLong(_))), "{r:?}");
        tx.rollback().await.unwrap();
    }
    assert!(is_free(id).await);
    let guard = conn.lock_exclusive_timeout(id, longest).await.unwrap();
    let guard = guard.expect("a free id is taken");
    assert!(!is_free(id).await);
    guard.release().await.unwrap();
}

/// A connection that a pooler moved to another server session: two real
/// sessions behind one `&mut PgConnection`, switched between calls.
struct Switching {
    sessions: [PgConnection; 2],
    current: usize,
}

impl AsMut<PgConnection> for Switching {
    fn as_mut(&mut self) -> &mut PgConnection {
        &mut self.sessions[self.current]
    }
}

/// A release or a check that lands on another server session than the one
/// that took the lock says so, and touches nothing: the other session keeps
/// its own hold of the same id, and the first keeps the lock.
#[tokio::test]
async fn a_release_on_another_session_is_refused_and_touches_nothing() {
    for ids in [unique_keys(1), unique_keys(3)] {
        let mut conn = Switching {
            sessions: [connect().await, connect().await],
            current: 0,
        };
        let pids = [
            backend_pid(&mut conn.sessions[0]).await,
            backend_pid(&mut conn.sessions[1]).await,
        ];
        // The second session holds the first id of its own, shared.
        conn.sessions[1].lock_shared(ids[0]).await.unwrap().leak();

        let mut lock = alock::ShareLock::new(&mut conn, &ids);
        lock.acquire().await.unwrap();
        lock.get_mut().current = 1;
        let checked = lock.held_on_server().await;
        assert!(
            matches!(checked, Err(Error::SessionChanged { took, now }) if took == pids[0] && now == pids[1]),
            "{checked:?}"
        );
        let released = lock.release().await;
        assert!(
            matches!(released, Err(Error::SessionChanged { .. })),
            "{released:?}"
        );
        drop(lock);

        let mut observer = connect().await;
        for id in &ids {
            let holders = alock_dev::holders(&mut observer, *id).await;
            let mut expected = if *id == ids[0] {
                pids.to_vec()
            } else {
                vec![pids[0]]
            };
            expected.sort_unstable();
            assert_eq!(
                holders, expected,
                "{id}: nothing was released on either session"
            );
        }
    }
}
