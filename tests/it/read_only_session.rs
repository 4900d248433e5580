//! A read-only session cannot create the session's functions. Its locks
//! work all the same, through a try and the anonymous block, and once the
//! server has refused, this process stops asking. In a file of its own:
//! that memory is per process, and would change what the other tests see.

use alock::LockId;
use alock::prelude::*;
use alock_dev::{
    RoundTrips, all_free, assert_answers, backend_pid, connect, database_url, hold_elsewhere,
    unique_keys, until_waiting,
};
use sqlx::{Connection, PgConnection};

async fn read_only(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("SET default_transaction_read_only = on")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_read_only_session_locks_without_its_functions() {
    let ids = unique_keys(3);
    let proxy = RoundTrips::start(database_url()).await;
    let mut conn = read_only(proxy.url()).await;
    let mut observer = connect().await;
    let pid = backend_pid(&mut conn).await;

    // The first lock that may wait finds no functions, and the server
    // refuses to create them.
    let guard = conn.lock_exclusive(ids[0]).await.unwrap();
    assert!(!all_free(&ids[..1]).await);
    guard.release().await.unwrap();

    for id in [&ids[..1], &ids[..]] {
        let before = proxy.count();
        let guard = conn.lock_exclusive(id).await.unwrap();
        let trips = proxy.count() - before;
        assert!(!all_free(id).await);
        guard.release().await.unwrap();
        assert!(all_free(id).await);
        // The call fails to prepare, the functions are refused, and the
        // body runs as an anonymous block: asked again on every call, so
        // that nothing is remembered about a session.
        assert_eq!(trips, 3, "a lock on a read-only session");

        // Busy, then handed over: the wait runs in the anonymous block.
        let mut holder = hold_elsewhere(id[0]).await;
        let (guard, ()) = tokio::join!(conn.lock_shared(id), async {
            until_waiting(&mut observer, pid).await;
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut holder)
                .await
                .unwrap();
        });
        let guard = guard.unwrap();
        assert!(guard.waited());
        guard.release().await.unwrap();
        assert!(all_free(id).await);
    }
    assert_eq!(functions(&mut conn).await, 0);
    assert_answers(&mut conn, "an error was left behind").await;

    // Nothing of the refusal reaches another session of the process.
    let mut writable = connect().await;
    let id: LockId = unique_keys(1)[0];
    writable
        .lock_exclusive(id)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert!(all_free(&[id]).await);
    assert_eq!(functions(&mut writable).await, 2);
}

async fn functions(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema()")
        .fetch_one(conn)
        .await
        .unwrap()
}
