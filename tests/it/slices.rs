//! Waits run in slices of `deadlock_timeout` + 100 ms, 900 ms at most
//! (DESIGN.md): what that buys, an abandoned wait that ends on the server,
//! what it costs, a place in the server's lock queue at each slice
//! boundary, and the cycles the body notices when a slice ends before the
//! server's detector runs, which it then lets that detector decide.

use std::time::{Duration, Instant};

use alock::prelude::*;
use alock::{Error, ExclusiveLock, LockGuard, LockId};
use alock_dev::{
    Held, all_free, backend_pid, connect, held, hold_elsewhere, is_free, lock_on,
    session_with_deadlock_timeout, unique_key, unique_keys, until_waiting,
};
use sqlx::{AssertSqlSafe, PgConnection};

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

/// Two sessions at the default `deadlock_timeout`, longer than a slice, so
/// the server's detector never runs in a plain slice, each wait for the
/// other's lock: the body notices the cycle at the end of a slice and waits
/// one slice long enough for the detector, and a call fails with
/// `Error::Deadlock`, keeping its session's other hold. Without that check
/// they would wait in slices for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_between_sliced_waits_is_found_by_the_body() {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (first, first_pid) = session_with_deadlock_timeout("1s").await;
    let (second, second_pid) = session_with_deadlock_timeout("1s").await;
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
/// detector would not run for a minute: the sliced wait notices the cycle,
/// its own detector then finds the deadlock, and it fails; its other hold
/// stays, and once it is released the plain wait gets its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_with_a_plain_wait_is_found_by_the_body() {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (conn, pid) = session_with_deadlock_timeout("1s").await;
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

/// Statements for [`by_hand`].
const LOCK: &str = "SELECT pg_advisory_lock($1, $2)";
const LOCK_SHARED: &str = "SELECT pg_advisory_lock_shared($1, $2)";
const UNLOCK_ALL: &str = "SELECT pg_advisory_unlock_all()";

/// Runs `text` on `conn`, binding the halves of `id` when it has
/// parameters.
async fn by_hand(conn: &mut PgConnection, text: &'static str, id: LockId) {
    if let Err(code) = sqlstate_of(conn, text, id).await {
        panic!("{text} failed with {code}");
    }
}

/// Runs `text` on `conn` as [`by_hand`] does, answering its SQLSTATE if it
/// fails.
async fn sqlstate_of(
    conn: &mut PgConnection,
    text: &'static str,
    id: LockId,
) -> Result<(), String> {
    let LockId::Int4Pair(a, b) = id else {
        unreachable!("test keys are pairs")
    };
    let query = sqlx::query(text);
    let query = if text.contains('$') {
        query.bind(a).bind(b)
    } else {
        query
    };
    match query.execute(conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) => Err(e.code().unwrap_or_default().into_owned()),
        Err(e) => panic!("{e}"),
    }
}

/// Waits until session `pid` waits for a lock of any kind (a row, a
/// relation), not only an advisory one.
async fn until_waiting_for_any_lock(observer: &mut PgConnection, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND pid = $1)",
        )
        .bind(pid)
        .fetch_one(&mut *observer)
        .await
        .unwrap();
        if waiting {
            return;
        }
        assert!(Instant::now() < deadline, "session {pid} never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Has `conn`'s session (pid `pid`) run `lock` on `id` on a task of its
/// own, and once it has the lock, release everything it holds; returns once
/// the session waits for it.
async fn waits_by_hand(
    observer: &mut PgConnection,
    mut conn: PgConnection,
    pid: i32,
    lock: &'static str,
    id: LockId,
) -> tokio::task::JoinHandle<()> {
    let waits = tokio::spawn(async move {
        by_hand(&mut conn, lock, id).await;
        by_hand(&mut conn, UNLOCK_ALL, id).await;
    });
    until_waiting(observer, pid).await;
    waits
}

/// Waits (20 s at most) for the sessions that `waits_by_hand` or a task of
/// a test left waiting to get their locks and let go, then checks on the
/// server that `ids` are all free again.
async fn all_got_their_locks(waits: [tokio::task::JoinHandle<()>; 2], ids: [LockId; 2], who: &str) {
    tokio::time::timeout(Duration::from_secs(20), async {
        for waits in waits {
            waits.await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{who} never got their locks"));
    assert!(all_free(&ids).await);
}

/// S holds Y shared and waits for X shared; A holds X and waits for Y
/// shared, queued behind C, who waits for Y exclusive, which S blocks. The
/// cycle S, A, C runs through a place in a queue (A behind C), not a held
/// lock: the server's detector moves A ahead of C, and everyone gets their
/// lock, without an error. S waits through alock when `plain` is false,
/// with `pg_advisory_lock_shared` otherwise; all at the default
/// `deadlock_timeout`, so S's slices end before any detector runs.
async fn a_cycle_through_a_queue(plain: bool) -> Result<(), Error> {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (mut s, _) = session_with_deadlock_timeout("1s").await;
    let (mut a, a_pid) = session_with_deadlock_timeout("1s").await;
    let (c, c_pid) = session_with_deadlock_timeout("1s").await;
    by_hand(&mut s, LOCK_SHARED, y).await;
    by_hand(&mut a, LOCK, x).await;
    let c_waits = waits_by_hand(&mut observer, c, c_pid, LOCK, y).await;
    let a_waits = waits_by_hand(&mut observer, a, a_pid, LOCK_SHARED, y).await;
    let taken = if plain {
        by_hand(&mut s, LOCK_SHARED, x).await;
        Ok(())
    } else {
        tokio::time::timeout(Duration::from_secs(20), s.lock_shared(x))
            .await
            .expect("S never got X")
            .map(LockGuard::leak)
            .map(drop)
    };
    by_hand(&mut s, UNLOCK_ALL, y).await;
    all_got_their_locks([a_waits, c_waits], [x, y], "A or C").await;
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_queue_is_no_deadlock_for_plain_sql() {
    a_cycle_through_a_queue(true).await.unwrap();
}

/// Before the body followed only holders, it answered 40P01 here, where
/// the server resolves the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_queue_is_no_deadlock_for_a_sliced_wait() {
    let taken = a_cycle_through_a_queue(false).await;
    assert!(taken.is_ok(), "a deadlock where there is none: {taken:?}");
}

/// Three sessions at the default `deadlock_timeout`, each holding an id and
/// waiting for the next one's: the cycle is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_three_sliced_waits_is_found() {
    let ids: [LockId; 3] = unique_keys(3).try_into().unwrap();
    let mut observer = connect().await;
    let mut outers = Vec::new();
    for id in ids {
        let (conn, pid) = session_with_deadlock_timeout("1s").await;
        let mut outer = ExclusiveLock::new(conn, id);
        outer.acquire().await.unwrap();
        outers.push((outer, pid));
    }
    let mut waits = Vec::new();
    for (i, (mut outer, pid)) in outers.into_iter().enumerate() {
        let next = ids[(i + 1) % 3];
        waits.push(tokio::spawn(async move {
            let taken = ExclusiveLock::new(&mut outer, next).acquire().await;
            outer.release().await.unwrap();
            taken
        }));
        until_waiting(&mut observer, pid).await;
    }
    let taken = tokio::time::timeout(Duration::from_secs(30), async {
        let mut taken = Vec::new();
        for wait in waits {
            taken.push(wait.await.unwrap());
        }
        taken
    })
    .await
    .expect("the cycle was never broken");
    assert!(
        taken.iter().any(|t| matches!(t, Err(Error::Deadlock(_)))),
        "{taken:?}"
    );
    for id in ids {
        assert!(is_free(id).await);
    }
}

/// A sliced wait for Y, held by a session that waits for a row another
/// transaction has locked, which waits for X, held by the sliced wait's
/// session, both others at a `deadlock_timeout` of a minute: a cycle
/// through a row lock, found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_row_lock_is_found() {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let LockId::Int4Pair(_, row) = x else {
        unreachable!("test keys are pairs")
    };
    let mut observer = connect().await;
    let table = format!("alock_cycle_rows_{}", std::process::id());
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES ({row})"
    )))
    .execute(&mut observer)
    .await
    .unwrap();
    let lock_row = format!("SELECT FROM {table} WHERE id = {row} FOR UPDATE");
    let (conn, _) = session_with_deadlock_timeout("1s").await;
    let mut outer = ExclusiveLock::new(conn, x);
    outer.acquire().await.unwrap();
    let (mut p, p_pid) = session_with_deadlock_timeout("60s").await;
    let (mut q, q_pid) = session_with_deadlock_timeout("60s").await;
    by_hand(&mut p, LOCK, y).await;
    // Transactions by hand, so that a task can own the session.
    by_hand(&mut q, "BEGIN", x).await;
    sqlx::raw_sql(AssertSqlSafe(lock_row.clone()))
        .execute(&mut q)
        .await
        .unwrap();
    let q_waits = tokio::spawn(async move {
        by_hand(&mut q, LOCK, x).await;
        by_hand(&mut q, "COMMIT", x).await;
        by_hand(&mut q, UNLOCK_ALL, x).await;
    });
    until_waiting(&mut observer, q_pid).await;
    let p_waits = tokio::spawn(async move {
        by_hand(&mut p, "BEGIN", y).await;
        sqlx::raw_sql(AssertSqlSafe(lock_row))
            .execute(&mut p)
            .await
            .unwrap();
        by_hand(&mut p, "COMMIT", y).await;
        by_hand(&mut p, UNLOCK_ALL, y).await;
    });
    // p waits for q's transaction, not for an advisory lock.
    until_waiting_for_any_lock(&mut observer, p_pid).await;
    let taken = tokio::time::timeout(
        Duration::from_secs(30),
        ExclusiveLock::new(&mut outer, y).acquire(),
    )
    .await
    .expect("the cycle was never broken");
    assert!(matches!(taken, Err(Error::Deadlock(_))), "{taken:?}");
    outer.release().await.unwrap();
    q_waits.await.unwrap();
    p_waits.await.unwrap();
    assert!(is_free(x).await && is_free(y).await);
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut observer)
        .await
        .unwrap();
}

/// S holds X shared and waits for A; T holds X shared and waits for X
/// exclusive, which S's share blocks; H holds A and waits for X shared,
/// queued behind T. The cycle S, H, T runs through T's place ahead of H in
/// X's queue: H holds nothing T waits for. The server moves H ahead of T,
/// and nobody gets an error. With `late`, S starts waiting only after H's
/// and T's own detectors have run, so only S's can resolve it. S waits
/// through alock unless `plain`.
async fn a_cycle_through_a_lock_upgrade(plain: bool, late: bool) -> Result<(), Error> {
    let [x, a] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (mut s, s_pid) = session_with_deadlock_timeout("1s").await;
    let (mut t, t_pid) = session_with_deadlock_timeout("60s").await;
    let (mut h, h_pid) = session_with_deadlock_timeout("1s").await;
    by_hand(&mut s, LOCK_SHARED, x).await;
    by_hand(&mut h, LOCK, a).await;
    by_hand(&mut t, LOCK_SHARED, x).await;
    let t_waits = waits_by_hand(&mut observer, t, t_pid, LOCK, x).await;
    let s_takes = async move {
        let taken = if plain {
            by_hand(&mut s, LOCK, a).await;
            Ok(())
        } else {
            tokio::time::timeout(Duration::from_secs(20), s.lock_exclusive(a))
                .await
                .expect("S never got A")
                .map(LockGuard::leak)
                .map(drop)
        };
        by_hand(&mut s, UNLOCK_ALL, a).await;
        taken
    };
    let (s_waits, s_later) = if late {
        (None, Some(s_takes))
    } else {
        (Some(tokio::spawn(s_takes)), None)
    };
    if !late {
        until_waiting(&mut observer, s_pid).await;
    }
    let h_waits = tokio::spawn(async move {
        by_hand(&mut h, LOCK_SHARED, x).await;
        tokio::time::sleep(Duration::from_millis(if late { 2000 } else { 300 })).await;
        by_hand(&mut h, UNLOCK_ALL, x).await;
    });
    until_waiting(&mut observer, h_pid).await;
    let taken = match (s_waits, s_later) {
        (Some(waits), _) => waits.await.unwrap(),
        (None, Some(later)) => {
            // H's and T's detectors run (and find no cycle) before S waits.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            later.await
        }
        (None, None) => unreachable!(),
    };
    all_got_their_locks([h_waits, t_waits], [x, a], "H or T").await;
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_lock_upgrade_is_no_deadlock_for_plain_sql() {
    for late in [false, true] {
        a_cycle_through_a_lock_upgrade(true, late).await.unwrap();
    }
}

/// Before the body told a cycle of held locks from one through a place in
/// a queue, it answered 40P01 here; counting only held locks, with `late`
/// it would wait for ever, since no detector runs again. It now lets the
/// server's detector decide, in one slice of `deadlock_timeout` + 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_lock_upgrade_is_no_deadlock_for_a_sliced_wait() {
    for late in [false, true] {
        let taken = a_cycle_through_a_lock_upgrade(false, late).await;
        assert!(
            taken.is_ok(),
            "late {late}: a deadlock where there is none: {taken:?}"
        );
    }
}

/// A transaction-level wait for A, in a transaction that read a table,
/// while H holds A and waits to lock that table `ACCESS EXCLUSIVE`, its
/// `deadlock_timeout` at 60 s: a cycle through a relation lock, found by
/// the body at transaction level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_relation_lock_is_found_at_transaction_level() {
    use sqlx::Connection;
    let a = unique_key();
    let mut observer = connect().await;
    let table = format!("alock_cycle_table_{}", std::process::id());
    let run = async |conn: &mut PgConnection, text: String| {
        sqlx::raw_sql(AssertSqlSafe(text))
            .execute(conn)
            .await
            .unwrap();
    };
    run(&mut observer, format!("CREATE TABLE {table} (i int)")).await;
    let (mut s, _) = session_with_deadlock_timeout("1s").await;
    let (mut h, h_pid) = session_with_deadlock_timeout("60s").await;
    by_hand(&mut h, LOCK, a).await;
    let mut tx = s.begin().await.unwrap();
    run(&mut tx, format!("SELECT FROM {table}")).await;
    let locks_table = format!("BEGIN; LOCK {table} IN ACCESS EXCLUSIVE MODE; COMMIT");
    let h_waits = tokio::spawn(async move {
        run(&mut h, locks_table).await;
        by_hand(&mut h, UNLOCK_ALL, a).await;
    });
    until_waiting_for_any_lock(&mut observer, h_pid).await;
    let taken = tokio::time::timeout(Duration::from_secs(20), tx.xact_lock_exclusive(a))
        .await
        .expect("the cycle was never broken");
    assert!(matches!(taken, Err(Error::Deadlock(_))), "{taken:?}");
    tx.rollback().await.unwrap();
    h_waits.await.unwrap();
    run(&mut observer, format!("DROP TABLE {table}")).await;
    assert!(is_free(a).await);
}

/// S holds Y and then asks for X shared. H holds X shared and waits for Y;
/// W waits for X exclusive (H's share blocks it), queued before S. The
/// cycle S, W, H runs through W's place ahead of S in X's queue: the
/// server's detector moves S ahead of W, and S gets X (its share is
/// compatible with H's). S starts waiting only after H's and W's own
/// detectors ran and found nothing, so only S's can resolve it. Answers
/// whether S got X before `patience` ran out.
async fn a_cycle_through_a_queue_ahead_of_a_shared_wait(plain: bool, patience: Duration) -> bool {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (mut s, _) = session_with_deadlock_timeout("1s").await;
    let (mut h, h_pid) = session_with_deadlock_timeout("200ms").await;
    let (w, w_pid) = session_with_deadlock_timeout("200ms").await;
    by_hand(&mut s, LOCK, y).await;
    by_hand(&mut h, LOCK_SHARED, x).await;
    let h_waits = waits_by_hand(&mut observer, h, h_pid, LOCK, y).await;
    let w_waits = waits_by_hand(&mut observer, w, w_pid, LOCK, x).await;
    // H's and W's detectors run, and find no cycle: S is not waiting yet.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let taken = if plain {
        alock_dev::set_lock_timeout(&mut s, &format!("{}ms", patience.as_millis())).await;
        let LockId::Int4Pair(a, b) = x else {
            unreachable!("test keys are pairs")
        };
        sqlx::query(LOCK_SHARED)
            .bind(a)
            .bind(b)
            .execute(&mut s)
            .await
            .is_ok()
    } else {
        s.lock_shared_timeout(x, patience)
            .await
            .unwrap()
            .map(LockGuard::leak)
            .is_some()
    };
    by_hand(&mut s, UNLOCK_ALL, y).await;
    all_got_their_locks([h_waits, w_waits], [x, y], "H or W").await;
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_queue_ahead_of_a_shared_wait_is_resolved_for_plain_sql() {
    assert!(a_cycle_through_a_queue_ahead_of_a_shared_wait(true, Duration::from_secs(10)).await);
}

/// Before the body's check started from the awaited id's waiters too, it
/// found no chain here (X has no exclusive holder), no detector ran, and the
/// three sessions waited until S's time ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_queue_ahead_of_a_shared_wait_is_resolved_for_a_sliced_wait() {
    assert!(
        a_cycle_through_a_queue_ahead_of_a_shared_wait(false, Duration::from_secs(10)).await,
        "S waited until its time ran out"
    );
}

/// S holds X, with a `deadlock_timeout` of 10 s; H holds Y and waits for
/// X, at 1 s; then S waits for Y. PostgreSQL's victim is the session whose
/// detector runs first, H, and S gets Y: a longer `deadlock_timeout` is how
/// a session asks not to be the victim. Answers what S's wait and H's wait
/// ended with.
async fn the_deadlock_victim(plain: bool) -> (Result<(), String>, Result<(), String>) {
    let [x, y] = unique_keys(2).try_into().unwrap();
    let mut observer = connect().await;
    let (mut s, _) = session_with_deadlock_timeout("10s").await;
    let (mut h, h_pid) = session_with_deadlock_timeout("1s").await;
    by_hand(&mut s, LOCK, x).await;
    by_hand(&mut h, LOCK, y).await;
    let h_waits = tokio::spawn(async move {
        let waited = sqlstate_of(&mut h, LOCK, x).await;
        by_hand(&mut h, UNLOCK_ALL, y).await;
        waited
    });
    until_waiting(&mut observer, h_pid).await;
    let waited = if plain {
        sqlstate_of(&mut s, LOCK, y).await
    } else {
        tokio::time::timeout(Duration::from_secs(20), s.lock_exclusive(y))
            .await
            .expect("S never got Y")
            .map(LockGuard::leak)
            .map(drop)
            .map_err(|e| match e {
                Error::Deadlock(e) => e.code().to_owned(),
                e => panic!("{e}"),
            })
    };
    by_hand(&mut s, UNLOCK_ALL, y).await;
    let h_waited = h_waits.await.unwrap();
    assert!(is_free(x).await && is_free(y).await);
    (waited, h_waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_picks_the_deadlock_victim_for_plain_sql() {
    assert_eq!(
        the_deadlock_victim(true).await,
        (Ok(()), Err("40P01".into()))
    );
}

/// Before the body let the server's detector decide, a sliced wait that
/// found the cycle first was the victim here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_picks_the_deadlock_victim_for_a_sliced_wait() {
    assert_eq!(
        the_deadlock_victim(false).await,
        (Ok(()), Err("40P01".into()))
    );
}
