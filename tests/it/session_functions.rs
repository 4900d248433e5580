//! Several ids and every wait run one PL/pgSQL body: as the session's own
//! functions in `pg_temp` outside transactions, created on first need, and
//! as an anonymous block inside transactions, where a call that failed
//! would abort the caller's transaction.

use alock::ExclusiveLock;
use alock::prelude::*;
use alock_dev::{
    RoundTrips, all_free, assert_answers, connect, database_url, is_free, unique_keys,
};
use sqlx::{Connection, PgConnection};

/// The session's functions, by name, with the transaction id that created
/// each: a changed one means they were created again.
async fn functions(conn: &mut PgConnection) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT proname::text, xmin::text FROM pg_proc
          WHERE pronamespace = pg_my_temp_schema() AND proname LIKE 'alock_v6_%'
          ORDER BY proname",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_session_creates_its_functions_once_on_first_need_outside_a_transaction() {
    let ids = unique_keys(3);
    let mut conn = connect().await;
    assert!(functions(&mut conn).await.is_empty());
    assert!(
        ExclusiveLock::new(&mut conn, ids[0])
            .try_acquire()
            .await
            .unwrap()
    );
    // Taking one id calls a function when the id is busy, in the same
    // statement, so the statement needs them even when the id is free.
    let created = functions(&mut conn).await;
    assert_eq!(created.len(), 2);
    for _ in 0..3 {
        let guard = conn.lock_shared(&ids).await.unwrap();
        drop(guard);
        drop(conn.try_lock_exclusive(&ids).await.unwrap().unwrap());
        drop(conn.lock_exclusive(ids[1]).await.unwrap());
    }
    assert_eq!(functions(&mut conn).await, created, "created again");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn locks_inside_transactions_create_nothing_and_never_abort_them() {
    let ids = unique_keys(3);
    let mut conn = connect().await;
    let mut tx = conn.begin().await.unwrap();
    tx.xact_lock_exclusive(&ids).await.unwrap();
    assert!(matches!(
        tx.lock_shared(&ids).await,
        Err(alock::Error::InTransaction)
    ));
    assert!(functions(&mut tx).await.is_empty());
    assert_answers(&mut tx, "the transaction was aborted").await;
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn discarded_functions_are_recreated_outside_and_not_needed_inside_a_transaction() {
    let ids = unique_keys(3);
    let mut conn = connect().await;
    conn.lock_exclusive(&ids)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert_eq!(functions(&mut conn).await.len(), 2);

    sqlx::query("DISCARD TEMP")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.xact_lock_exclusive(&ids).await.unwrap();
    assert_answers(&mut tx, "the transaction was aborted").await;
    tx.commit().await.unwrap();
    assert!(all_free(&ids).await);

    sqlx::query("DISCARD TEMP")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut lock = ExclusiveLock::new(&mut conn, &ids);
    lock.acquire().await.unwrap();
    assert!(lock.held_on_server().await.unwrap());
    lock.release().await.unwrap();
    drop(lock);
    assert!(all_free(&ids).await);
    assert_eq!(functions(&mut conn).await.len(), 2, "not created again");

    // The same for one id, whose statement was prepared while the
    // functions existed.
    conn.lock_exclusive(ids[0])
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    sqlx::query("DISCARD TEMP")
        .execute(&mut conn)
        .await
        .unwrap();
    let guard = conn.lock_exclusive(ids[0]).await.unwrap();
    assert!(!is_free(ids[0]).await);
    guard.release().await.unwrap();
    assert!(is_free(ids[0]).await);
    assert_eq!(functions(&mut conn).await.len(), 2);
}

#[tokio::test]
async fn a_prepared_session_pays_nothing_on_its_first_lock() {
    let ids = unique_keys(2);
    let proxy = RoundTrips::start(database_url()).await;
    let mut conn = PgConnection::connect(proxy.url()).await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    assert!(!alock::prepare_session(&mut tx).await.unwrap());
    assert!(
        functions(&mut tx).await.is_empty(),
        "created inside a transaction"
    );
    tx.commit().await.unwrap();

    assert!(alock::prepare_session(&mut conn).await.unwrap());
    assert_eq!(functions(&mut conn).await.len(), 2);
    assert!(
        alock::prepare_session(&mut conn).await.unwrap(),
        "a second call"
    );

    // The first lock's statement no longer fails: abandoned after its first
    // poll, it leaves nothing for the next query but its own cleanup.
    {
        let mut lock = ExclusiveLock::new(&mut conn, ids[0]);
        tokio::select! {
            biased;
            _ = lock.acquire() => {}
            () = std::future::ready(()) => {}
        }
    }
    assert_answers(&mut conn, "the abandoned first lock left an error").await;
    assert!(is_free(ids[0]).await);

    // Once prepared (sqlx's own first-use Parse aside), a lock costs one
    // round trip.
    let mut lock = ExclusiveLock::new(&mut conn, &ids);
    let before = proxy.count();
    lock.acquire().await.unwrap();
    assert_eq!(proxy.count() - before, 2, "Parse, then the call");
    lock.release().await.unwrap();
    drop(lock);
    assert!(all_free(&ids).await);
}
