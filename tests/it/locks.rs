//! Introspection: `alock::locks` reports what `pg_locks` shows, decoded,
//! with the sessions behind each row. Each test reads only its own keys.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use alock::prelude::*;
use alock::{Error, LockInfo, LockMode, LockQuery};
use alock_dev::{
    backend_pid, connect, database_url, hold_elsewhere, unique_int8_keys, unique_key, until_waiting,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// A session that names itself in `pg_stat_activity`.
async fn connect_as(application_name: &str) -> (PgConnection, i32) {
    let options = PgConnectOptions::from_str(database_url())
        .unwrap()
        .application_name(application_name);
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    (conn, pid)
}

async fn locks_of(observer: &mut PgConnection, keys: &[LockId]) -> Vec<LockInfo> {
    alock::locks(observer, &LockQuery::keys(keys).unwrap())
        .await
        .unwrap()
}

/// A key no other test uses, with both halves negative: their `pg_locks`
/// columns are unsigned, so this is where a careless decoding goes wrong.
fn negative_pair() -> LockId {
    match unique_key() {
        LockId::Int4Pair(a, b) => LockId::pair(!a, !b),
        other => unreachable!("{other:?}"),
    }
}

#[tokio::test]
async fn holders_show_key_mode_session_and_client_for_both_key_forms() {
    let pair = negative_pair();
    let int8 = match unique_int8_keys(1)[0] {
        LockId::Int8(key) => LockId::Int8(key | i64::MIN),
        other => unreachable!("{other:?}"),
    };
    let (mut holder, pid) = connect_as("locks-test-holder").await;
    holder.lock_exclusive(pair).await.unwrap().leak();
    holder.lock_shared(int8).await.unwrap().leak();
    let mut observer = connect().await;

    let locks = locks_of(&mut observer, &[int8, pair]).await;

    // Ordered by key: int8s (objsubid 1) before pairs (objsubid 2).
    assert_eq!(
        locks.iter().map(|l| (l.key, l.mode)).collect::<Vec<_>>(),
        [(int8, LockMode::Shared), (pair, LockMode::Exclusive)],
    );
    for lock in &locks {
        assert!(lock.granted, "{lock:?}");
        assert_eq!(lock.pid, Some(pid));
        assert_eq!(lock.application_name.as_deref(), Some("locks-test-holder"));
        assert_eq!(lock.client_addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(lock.client_port.is_some_and(|p| p > 0), "{lock:?}");
        assert_eq!(lock.waited, None);
        assert!(lock.blocked_by.is_empty());
        assert!(!lock.internal);
    }
    holder.close().await.unwrap();
}

#[tokio::test]
async fn a_waiter_shows_whom_it_waits_behind_and_for_how_long() {
    let key = negative_pair();
    let mut holder = hold_elsewhere(key).await;
    let holder_pid = backend_pid(&mut holder).await;
    let (mut waiter, waiter_pid) = connect_as("locks-test-waiter").await;
    let waiting = tokio::spawn(async move {
        waiter
            .lock_shared(key)
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    });
    let mut observer = connect().await;
    until_waiting(&mut observer, waiter_pid).await;

    // `waitstart` is filled in a moment after the wait begins.
    let deadline = Instant::now() + Duration::from_secs(30);
    let locks = loop {
        let locks = locks_of(&mut observer, &[key]).await;
        if locks.iter().any(|l| !l.granted && l.waited.is_some()) || Instant::now() > deadline {
            break locks;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(locks.len(), 2, "{locks:#?}");
    let (held, waits) = (&locks[0], &locks[1]);
    assert_eq!(
        (held.pid, held.granted, held.mode),
        (Some(holder_pid), true, LockMode::Exclusive)
    );
    assert_eq!(
        (waits.pid, waits.granted, waits.mode),
        (Some(waiter_pid), false, LockMode::Shared)
    );
    assert_eq!(waits.key, key);
    assert_eq!(waits.blocked_by, [holder_pid]);
    assert_eq!(waits.application_name.as_deref(), Some("locks-test-waiter"));
    let waited = waits.waited.expect("PostgreSQL 14+ reports waitstart");
    assert!(waited < Duration::from_secs(60), "{waited:?}");

    holder.close().await.unwrap();
    waiting.await.unwrap();
}

#[tokio::test]
async fn the_crates_records_are_left_out_unless_asked_for() {
    let key = unique_key();
    let (mut conn, pid) = connect_as("locks-test-records").await;
    let guard = conn.lock_exclusive(key).await.unwrap();
    let mut observer = connect().await;
    let of_pid = |locks: Vec<LockInfo>| -> Vec<LockInfo> {
        locks.into_iter().filter(|l| l.pid == Some(pid)).collect()
    };

    let listed = of_pid(
        alock::locks(&mut observer, &LockQuery::all())
            .await
            .unwrap(),
    );
    assert_eq!(listed.iter().map(|l| l.key).collect::<Vec<_>>(), [key]);

    let all = LockQuery::all().internal(true);
    let with_records = of_pid(alock::locks(&mut observer, &all).await.unwrap());
    let records: Vec<&LockInfo> = with_records.iter().filter(|l| l.internal).collect();
    assert_eq!(records.len(), 1, "{with_records:#?}");
    assert_eq!(records[0].mode, LockMode::Shared);
    assert!(matches!(records[0].key, LockId::Int4Pair(1_634_496_356, _)));
    assert_eq!(with_records.len(), 2);

    guard.release().await.unwrap();
    let after = of_pid(alock::locks(&mut observer, &all).await.unwrap());
    assert!(after.is_empty(), "{after:#?}");
}

#[tokio::test]
async fn an_empty_key_list_is_refused_rather_than_read_as_every_key() {
    assert!(matches!(
        LockQuery::keys(Vec::<LockId>::new()),
        Err(Error::InvalidKeys(_))
    ));
}
