//! What a lock costs: alock against hand-written SQL and sqlx's
//! `PgAdvisoryLock`, on one server, in one process.
//!
//! ```sh
//! cargo run --release --example bench
//! ```
//!
//! Every case runs against the same server, on the same session, interleaved:
//! each round runs every group (a case, with the guard form compared with
//! its sides), in an order shuffled afresh each round, and within a group
//! the sides that reach the server take turns, one operation each, in an
//! order shuffled for every turn, until each has run a batch; the sides that
//! never reach the server (a re-entrant acquire, `lock_id()`) run theirs as
//! one batch each, in a shuffled order, before the turns. The table reports,
//! per case and side, the median over rounds of the time per operation; a
//! ratio is the median of the per-round ratios of two sides. Statements are
//! prepared before the first round. A control side runs the 10-key raw SQL
//! against itself, on keys of its own: its ratio to raw SQL shows what the
//! run can tell apart for that work. The round trips column is counted on
//! the wire (through `alock_dev::RoundTrips`) in a separate pass, so the
//! proxy never slows the timed runs.
//!
//! The contended handoffs run on 8 sessions shared by all their sides:
//! alock, raw SQL, and a control that runs raw SQL again, taking turns one
//! run each in a shuffled order.
//!
//! The cases: acquire + release of 1 and 10 free keys, a re-entrant acquire +
//! release, a `try_acquire` of 10 keys that fails on the 10th, a timed acquire
//! that succeeds, transaction-level locks, `lock_id()` of a derived key (no
//! server), and contended handoffs: 8 sessions taking turns on one key.
//!
//! The raw SQL side is the least a careful hand-written equivalent sends (the
//! `raw` module holds every statement): one prepared statement each way, over
//! `unnest($1::int8[])` for many keys; for the failing `try_acquire`, one
//! statement that tries all ten and gives back what it took; for a timed
//! acquire, `set_config('lock_timeout', .., true)` in the locking statement's
//! own implicit transaction. The sqlx side holds several keys as nested
//! `PgAdvisoryLockGuard`s, the way sqlx's guards compose on one connection.
//!
//! With `DATABASE_URL` unset, a throwaway PostgreSQL is started (see
//! `alock_dev::database_url`). Every setting is an environment variable:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BENCH_CASES` | all | cases to run, by name, comma-separated (`one-key,handoff`; an unknown name lists them) |
//! | `BENCH_ROUNDS` | 101 | rounds of the interleaved cases |
//! | `BENCH_BATCH` | 60 | operations per side per round, taken in turns, for sides that talk to the server |
//! | `BENCH_CPU_BATCH` | 200000 | operations per side per round, in one batch, for sides that do not |
//! | `BENCH_SESSION` | `shared` | `per-side` gives every side of the interleaved cases a session of its own, to compare with |
//! | `BENCH_SEED` | fixed | seed of the shuffled orders |
//! | `BENCH_SESSIONS` | 8 | sessions taking turns in the handoff case |
//! | `BENCH_HANDOFFS` | 1600 | handoffs per handoff run (all sessions together) |
//! | `BENCH_HANDOFF_ROUNDS` | 21 | handoff runs per side, the sides taking turns |
//! | `BENCH_HANDOFF_LIMIT_SECS` | 60 | a handoff run taking longer is an error |
//!
//! Keys are int8 ids made of a fixed tag, this process's id and a counter, so
//! they collide with no test (the tests use int4 pairs) and no other run.

use std::error::Error as StdError;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::time::{Duration, Instant};

use alock::ExclusiveLock;
use alock::prelude::*;
use alock_dev::{RoundTrips, database_url};
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey};
use sqlx::{AssertSqlSafe, Connection, Either, PgConnection};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The hand-written SQL each case is compared with; all prepared by sqlx,
/// one round trip each.
mod raw {
    pub const LOCK: &str = "SELECT pg_advisory_lock($1)";
    pub const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";
    /// Acquire and release of a lock the session already holds: the server's
    /// own re-entrancy, in a single round trip.
    pub const RELOCK_UNLOCK: &str = "SELECT pg_advisory_lock($1), pg_advisory_unlock($1)";
    pub const LOCK_MANY: &str = "SELECT pg_advisory_lock(k) FROM unnest($1::int8[]) AS k";
    pub const UNLOCK_MANY: &str = "SELECT pg_advisory_unlock(k) FROM unnest($1::int8[]) AS k";
    /// Tries every key, and when not all were free gives back the ones it
    /// took: all or nothing in one statement. Returns (taken, given back).
    pub const TRY_MANY: &str = "\
        WITH tried AS MATERIALIZED ( \
               SELECT k, pg_try_advisory_lock(k) AS ok FROM unnest($1::int8[]) AS k), \
             outcome AS MATERIALIZED (SELECT bool_and(ok) AS taken FROM tried) \
        SELECT taken, \
               (SELECT count(*) FROM tried \
                 WHERE CASE WHEN NOT taken AND ok THEN pg_advisory_unlock(k) ELSE false END) \
          FROM outcome";
    /// A timed wait: `lock_timeout` set for this statement's own implicit
    /// transaction only (`is_local`), so it reverts by itself. Bind: key,
    /// timeout text. A timeout is an error (55P03), not `false`.
    pub const LOCK_TIMEOUT: &str = "SELECT pg_advisory_lock($1) \
        WHERE set_config('lock_timeout', $2, true) IS NOT NULL";
    /// As [`LOCK_TIMEOUT`], for many keys; the timeout applies to each key,
    /// not to the whole call.
    pub const LOCK_MANY_TIMEOUT: &str = "SELECT pg_advisory_lock(k) FROM unnest($1::int8[]) AS k \
        WHERE set_config('lock_timeout', $2, true) IS NOT NULL";
    pub const XACT_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
    pub const XACT_LOCK_MANY: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k";
}

/// A derived key, as an application would declare it.
#[derive(AdvisoryKey)]
#[advisory_key(namespace = "bench_orders")]
struct Order {
    #[advisory_key(id)]
    id: i32,
}

const ORDERS: i32 = alock::namespace("bench_orders");

/// Time for a timed acquire to wait at most; the keys are free, so it never
/// does.
const TIMEOUT: Duration = Duration::from_secs(5);
const TIMEOUT_TEXT: &str = "5000ms";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    OneKey,
    OneKeyGuard,
    TenKeys,
    TenKeysGuard,
    Reentrant,
    TryFailsOnTenth,
    TimeoutOneKey,
    TimeoutTenKeys,
    XactInTransaction,
    XactInTransactionTenKeys,
    BeginLockCommit,
    LockIdDerived,
}

impl Case {
    const ALL: [Case; 12] = [
        Case::OneKey,
        Case::OneKeyGuard,
        Case::TenKeys,
        Case::TenKeysGuard,
        Case::Reentrant,
        Case::TryFailsOnTenth,
        Case::TimeoutOneKey,
        Case::TimeoutTenKeys,
        Case::XactInTransaction,
        Case::XactInTransactionTenKeys,
        Case::BeginLockCommit,
        Case::LockIdDerived,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::OneKey => "1 key, acquire + release: lock object",
            Case::OneKeyGuard => "1 key, acquire + release: guard",
            Case::TenKeys => "10 keys, acquire + release: lock object",
            Case::TenKeysGuard => "10 keys, acquire + release: guard",
            Case::Reentrant => "re-entrant acquire + release",
            Case::TryFailsOnTenth => "try_acquire of 10 keys, 10th busy",
            Case::TimeoutOneKey => "acquire_timeout, 1 free key",
            Case::TimeoutTenKeys => "acquire_timeout, 10 free keys",
            Case::XactInTransaction => {
                "transaction-level lock in an open transaction + COMMIT, 1 key"
            }
            Case::XactInTransactionTenKeys => {
                "transaction-level lock in an open transaction + COMMIT, 10 keys"
            }
            Case::BeginLockCommit => "BEGIN + lock 1 key + COMMIT",
            Case::LockIdDerived => "lock_id() of a derived key (no server)",
        }
    }

    /// The name `BENCH_CASES` selects it by.
    fn id(self) -> &'static str {
        match self {
            Case::OneKey => "one-key",
            Case::OneKeyGuard => "one-key-guard",
            Case::TenKeys => "ten-keys",
            Case::TenKeysGuard => "ten-keys-guard",
            Case::Reentrant => "reentrant",
            Case::TryFailsOnTenth => "try-fails",
            Case::TimeoutOneKey => "timeout-one-key",
            Case::TimeoutTenKeys => "timeout-ten-keys",
            Case::XactInTransaction => "xact",
            Case::XactInTransactionTenKeys => "xact-ten-keys",
            Case::BeginLockCommit => "begin-locked",
            Case::LockIdDerived => "lock-id",
        }
    }

    /// The sides this case runs itself.
    fn sides(self) -> &'static [Side] {
        match self {
            Case::TenKeys => &[Side::Alock, Side::Raw, Side::Sqlx, Side::Control],
            Case::OneKey | Case::Reentrant | Case::TryFailsOnTenth => {
                &[Side::Alock, Side::Raw, Side::Sqlx]
            }
            Case::OneKeyGuard | Case::TenKeysGuard => &[Side::Alock],
            Case::TimeoutOneKey
            | Case::TimeoutTenKeys
            | Case::XactInTransaction
            | Case::XactInTransactionTenKeys
            | Case::BeginLockCommit
            | Case::LockIdDerived => &[Side::Alock, Side::Raw],
        }
    }

    /// The case whose raw SQL and sqlx sides this one is compared with: the
    /// guard forms send the same statements as the lock object.
    fn baseline(self) -> Case {
        match self {
            Case::OneKeyGuard => Case::OneKey,
            Case::TenKeysGuard => Case::TenKeys,
            other => other,
        }
    }

    /// Whether this side's timed operations never reach the server (the
    /// re-entrant case sends its untimed first hold and last release).
    fn local(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Case::LockIdDerived, _) | (Case::Reentrant, Side::Alock)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Alock,
    Raw,
    Sqlx,
    /// Raw SQL again, on keys of its own: what the benchmark reads when both
    /// sides do the same work (the 10-key case and the handoffs).
    Control,
}

/// Hands out int8 keys no other process and no test uses.
struct Keys {
    next: i64,
}

impl Keys {
    fn new() -> Keys {
        // "aloc" in the high half; the process id and a counter below.
        let pid = i64::from(std::process::id()) & 0x3f_ffff;
        Keys {
            next: (0x616c_6f63_i64 << 32) | (pid << 10),
        }
    }

    fn take(&mut self, n: usize) -> Vec<i64> {
        let keys: Vec<i64> = (self.next..).take(n).collect();
        self.next += n as i64;
        assert!(
            (self.next - 1) >> 10 == keys[0] >> 10,
            "BUG: more than 1024 keys in one run; widen the counter"
        );
        keys
    }
}

/// One side of one case: its own keys. Every side runs on the same session,
/// passed to [`Bench::run`].
struct Bench {
    case: Case,
    side: Side,
    keys: Vec<i64>,
    /// Another session, holding the last key, for the case that needs one.
    _holder: Option<PgConnection>,
}

impl Bench {
    async fn open(case: Case, side: Side, keys: &mut Keys) -> Result<Bench, BoxError> {
        let keys = keys.take(10);
        let holder = if case == Case::TryFailsOnTenth {
            let mut holder = PgConnection::connect(database_url()).await?;
            sqlx::query(raw::LOCK)
                .bind(keys[9])
                .execute(&mut holder)
                .await?;
            Some(holder)
        } else {
            None
        };
        Ok(Bench {
            case,
            side,
            keys,
            _holder: holder,
        })
    }

    /// Runs `n` operations, timing (and counting) only the operations
    /// themselves, not the setup some cases need around them.
    async fn run(
        &mut self,
        conn: &mut PgConnection,
        n: usize,
        meter: &mut Meter<'_>,
    ) -> Result<(), BoxError> {
        let key = self.keys[0];
        let keys = &self.keys;
        // What alock takes: the first key in the one-key cases, all ten
        // otherwise.
        let ids = match self.case {
            Case::OneKey | Case::OneKeyGuard | Case::TimeoutOneKey | Case::XactInTransaction => {
                &keys[..1]
            }
            _ => &keys[..],
        };
        match (self.case, self.side) {
            (Case::OneKey | Case::TenKeys, Side::Alock) => {
                meter.start();
                for _ in 0..n {
                    let mut lock = ExclusiveLock::new(&mut *conn, ids);
                    lock.acquire().await?;
                    lock.release().await?;
                }
                meter.stop();
            }
            (Case::OneKey, Side::Raw) => {
                meter.start();
                for _ in 0..n {
                    sqlx::query(raw::LOCK).bind(key).execute(&mut *conn).await?;
                    sqlx::query(raw::UNLOCK)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                }
                meter.stop();
            }
            (Case::OneKey, Side::Sqlx) => {
                meter.start();
                for _ in 0..n {
                    let lock = PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(key));
                    lock.acquire(&mut *conn).await?.release_now().await?;
                }
                meter.stop();
            }
            (Case::OneKeyGuard | Case::TenKeysGuard, Side::Alock) => {
                meter.start();
                for _ in 0..n {
                    conn.lock_exclusive(ids).await?.release().await?;
                }
                meter.stop();
            }
            (Case::TenKeys, Side::Raw | Side::Control) => {
                meter.start();
                for _ in 0..n {
                    sqlx::query(raw::LOCK_MANY)
                        .bind(keys)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(raw::UNLOCK_MANY)
                        .bind(keys)
                        .execute(&mut *conn)
                        .await?;
                }
                meter.stop();
            }
            (Case::TenKeys, Side::Sqlx) => {
                meter.start();
                for _ in 0..n {
                    let locks = sqlx_locks(keys);
                    sqlx_nested(&locks, &mut *conn).await?;
                }
                meter.stop();
            }
            (Case::Reentrant, Side::Alock) => {
                let mut lock = ExclusiveLock::new(&mut *conn, key);
                lock.acquire().await?;
                meter.start();
                for _ in 0..n {
                    lock.acquire().await?;
                    lock.release().await?;
                }
                meter.stop();
                lock.release().await?;
            }
            (Case::Reentrant, Side::Raw) => {
                sqlx::query(raw::LOCK).bind(key).execute(&mut *conn).await?;
                meter.start();
                for _ in 0..n {
                    sqlx::query(raw::RELOCK_UNLOCK)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                }
                meter.stop();
                sqlx::query(raw::UNLOCK)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
            }
            (Case::Reentrant, Side::Sqlx) => {
                sqlx::query(raw::LOCK).bind(key).execute(&mut *conn).await?;
                meter.start();
                for _ in 0..n {
                    let lock = PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(key));
                    lock.acquire(&mut *conn).await?.release_now().await?;
                }
                meter.stop();
                sqlx::query(raw::UNLOCK)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
            }
            (Case::TryFailsOnTenth, Side::Alock) => {
                meter.start();
                for _ in 0..n {
                    let mut lock = ExclusiveLock::new(&mut *conn, keys);
                    assert!(!lock.try_acquire().await?, "the 10th key is held elsewhere");
                }
                meter.stop();
            }
            (Case::TryFailsOnTenth, Side::Raw) => {
                meter.start();
                for _ in 0..n {
                    let (taken, given_back): (bool, i64) = sqlx::query_as(raw::TRY_MANY)
                        .bind(keys)
                        .fetch_one(&mut *conn)
                        .await?;
                    assert!(!taken && given_back == 9, "the 10th key is held elsewhere");
                }
                meter.stop();
            }
            (Case::TryFailsOnTenth, Side::Sqlx) => {
                meter.start();
                for _ in 0..n {
                    let locks = sqlx_locks(keys);
                    let taken = sqlx_try_nested(&locks, &mut *conn).await?;
                    assert!(!taken, "the 10th key is held elsewhere");
                }
                meter.stop();
            }
            (Case::TimeoutOneKey | Case::TimeoutTenKeys, Side::Alock) => {
                meter.start();
                for _ in 0..n {
                    let mut lock = ExclusiveLock::new(&mut *conn, ids);
                    assert!(lock.acquire_timeout(TIMEOUT).await?, "the keys are free");
                    lock.release().await?;
                }
                meter.stop();
            }
            (Case::TimeoutOneKey, Side::Raw) => {
                meter.start();
                for _ in 0..n {
                    sqlx::query(raw::LOCK_TIMEOUT)
                        .bind(key)
                        .bind(TIMEOUT_TEXT)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(raw::UNLOCK)
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                }
                meter.stop();
            }
            (Case::TimeoutTenKeys, Side::Raw) => {
                meter.start();
                for _ in 0..n {
                    sqlx::query(raw::LOCK_MANY_TIMEOUT)
                        .bind(keys)
                        .bind(TIMEOUT_TEXT)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(raw::UNLOCK_MANY)
                        .bind(keys)
                        .execute(&mut *conn)
                        .await?;
                }
                meter.stop();
            }
            (Case::XactInTransaction | Case::XactInTransactionTenKeys, Side::Alock) => {
                for _ in 0..n {
                    let mut tx = conn.begin().await?;
                    meter.start();
                    tx.xact_lock_exclusive(ids).await?;
                    tx.commit().await?;
                    meter.stop();
                }
            }
            (Case::XactInTransaction, Side::Raw) => {
                for _ in 0..n {
                    let mut tx = conn.begin().await?;
                    meter.start();
                    sqlx::query(raw::XACT_LOCK)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    meter.stop();
                }
            }
            (Case::XactInTransactionTenKeys, Side::Raw) => {
                for _ in 0..n {
                    let mut tx = conn.begin().await?;
                    meter.start();
                    sqlx::query(raw::XACT_LOCK_MANY)
                        .bind(keys)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    meter.stop();
                }
            }
            (Case::BeginLockCommit, Side::Alock) => {
                meter.start();
                for _ in 0..n {
                    conn.begin_locked_exclusive(key).await?.commit().await?;
                }
                meter.stop();
            }
            (Case::BeginLockCommit, Side::Raw) => {
                meter.start();
                for _ in 0..n {
                    let mut tx = conn.begin().await?;
                    sqlx::query(raw::XACT_LOCK)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
                meter.stop();
            }
            (Case::LockIdDerived, Side::Alock) => {
                meter.start();
                for i in 0..n {
                    let order = Order { id: i as i32 };
                    black_box(black_box(&order).lock_id());
                }
                meter.stop();
            }
            (Case::LockIdDerived, Side::Raw) => {
                meter.start();
                for i in 0..n {
                    let order = Order { id: i as i32 };
                    black_box(LockId::Int4Pair(ORDERS, black_box(&order).id));
                }
                meter.stop();
            }
            (case, side) => unreachable!("no {side:?} side for {case:?}"),
        }
        Ok(())
    }
}

fn sqlx_locks(keys: &[i64]) -> Vec<PgAdvisoryLock> {
    keys.iter()
        .map(|&k| PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(k)))
        .collect()
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Takes `locks` in order, each guard nested in the previous one (the way
/// sqlx's guards hold several locks on one connection), then releases them
/// in reverse: one round trip per lock each way.
fn sqlx_nested<'a>(
    locks: &'a [PgAdvisoryLock],
    conn: &'a mut PgConnection,
) -> BoxFuture<'a, sqlx::Result<()>> {
    Box::pin(async move {
        let Some((first, rest)) = locks.split_first() else {
            return Ok(());
        };
        let mut guard = first.acquire(conn).await?;
        sqlx_nested(rest, guard.as_mut()).await?;
        guard.release_now().await?;
        Ok(())
    })
}

/// Tries `locks` in order with sqlx's guards; stops at the first busy one and
/// releases what it took. Returns whether all were free. Everything taken is
/// released before returning, whatever the outcome.
fn sqlx_try_nested<'a>(
    locks: &'a [PgAdvisoryLock],
    conn: &'a mut PgConnection,
) -> BoxFuture<'a, sqlx::Result<bool>> {
    Box::pin(async move {
        let Some((first, rest)) = locks.split_first() else {
            return Ok(true);
        };
        match first.try_acquire(conn).await? {
            Either::Left(mut guard) => {
                let all = sqlx_try_nested(rest, guard.as_mut()).await?;
                guard.release_now().await?;
                Ok(all)
            }
            Either::Right(_) => Ok(false),
        }
    })
}

/// Accumulates the time, and optionally the round trips, of the measured
/// parts of a batch.
struct Meter<'p> {
    proxy: Option<&'p RoundTrips>,
    elapsed: Duration,
    trips: u64,
    since: Option<(Instant, u64)>,
}

impl<'p> Meter<'p> {
    fn new(proxy: Option<&'p RoundTrips>) -> Meter<'p> {
        Meter {
            proxy,
            elapsed: Duration::ZERO,
            trips: 0,
            since: None,
        }
    }

    fn trips_now(&self) -> u64 {
        self.proxy.map_or(0, RoundTrips::count)
    }

    fn start(&mut self) {
        self.since = Some((Instant::now(), self.trips_now()));
    }

    fn stop(&mut self) {
        let (at, trips) = self.since.take().expect("BUG: stop without start");
        self.elapsed += at.elapsed();
        self.trips += self.trips_now() - trips;
    }
}

struct Settings {
    cases: Vec<Case>,
    handoff: bool,
    rounds: usize,
    batch: usize,
    cpu_batch: usize,
    sessions: usize,
    handoffs: usize,
    handoff_rounds: usize,
    handoff_limit: Duration,
    session_per_side: bool,
    seed: u64,
}

impl Settings {
    fn from_env() -> Result<Settings, BoxError> {
        fn var(name: &str, default: usize) -> Result<usize, BoxError> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{name}={v}: expected a positive integer").into()),
                Err(_) => Ok(default),
            }
        }
        let (cases, handoff) = match std::env::var("BENCH_CASES") {
            Err(_) => (Case::ALL.to_vec(), true),
            Ok(list) => {
                let mut cases = Vec::new();
                let mut handoff = false;
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match Case::ALL.into_iter().find(|c| c.id() == name) {
                        Some(case) => cases.push(case),
                        None if name == "handoff" => handoff = true,
                        None => {
                            let known: Vec<&str> = Case::ALL.iter().map(|c| c.id()).collect();
                            return Err(format!(
                                "BENCH_CASES: unknown case {name:?}; known: {}, handoff",
                                known.join(", ")
                            )
                            .into());
                        }
                    }
                }
                // A guard case is compared with its lock object case's sides.
                for case in cases.clone() {
                    if !cases.contains(&case.baseline()) {
                        cases.push(case.baseline());
                    }
                }
                cases.sort_by_key(|c| Case::ALL.iter().position(|a| a == c));
                (cases, handoff)
            }
        };
        Ok(Settings {
            cases,
            handoff,
            rounds: var("BENCH_ROUNDS", 101)?,
            batch: var("BENCH_BATCH", 60)?,
            cpu_batch: var("BENCH_CPU_BATCH", 200_000)?,
            sessions: var("BENCH_SESSIONS", 8)?,
            handoffs: var("BENCH_HANDOFFS", 1600)?,
            handoff_rounds: var("BENCH_HANDOFF_ROUNDS", 21)?,
            handoff_limit: Duration::from_secs(var("BENCH_HANDOFF_LIMIT_SECS", 60)? as u64),
            session_per_side: match std::env::var("BENCH_SESSION").as_deref() {
                Err(_) | Ok("shared") => false,
                Ok("per-side") => true,
                Ok(other) => {
                    return Err(
                        format!("BENCH_SESSION={other}: expected shared or per-side").into(),
                    );
                }
            },
            seed: match std::env::var("BENCH_SEED") {
                Err(_) => 0x616c_6f63_6b00_0001,
                Ok(v) => v
                    .parse()
                    .map_err(|_| format!("BENCH_SEED={v}: expected an unsigned integer"))?,
            },
        })
    }

    fn ops(&self, case: Case, side: Side) -> usize {
        if case.local(side) {
            self.cpu_batch
        } else {
            self.batch
        }
    }
}

/// The per-round results of one side of one case.
struct Series {
    case: Case,
    side: Side,
    /// Nanoseconds per operation, one per round.
    per_op: Vec<f64>,
    trips_per_op: f64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let settings = Settings::from_env()?;
    let url = database_url();
    let mut conn = PgConnection::connect(url).await?;
    let (version, date): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), \
                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"')",
    )
    .fetch_one(&mut conn)
    .await?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# alock benchmark");
    println!();
    println!("- server: PostgreSQL {version}");
    println!("- machine: {cpus} CPUs (available parallelism), client and server on it");
    println!("- date: {date}");
    println!(
        "- rounds: {}; batch: {} operations ({} for cases without the server); \
         handoffs: {} sessions, {} per run, {} runs per side",
        settings.rounds,
        settings.batch,
        settings.cpu_batch,
        settings.sessions,
        settings.handoffs,
        settings.handoff_rounds,
    );
    println!();

    let mut keys = Keys::new();
    let trips = count_round_trips(&settings.cases, url, &mut keys).await?;

    // Every side of every case runs on `conn` (`BENCH_SESSION=shared`):
    // identical statements on two sessions of this machine can differ by a
    // third in time, depending on where the scheduler places each backend,
    // which a comparison of two sessions would read as a difference between
    // the sides. `per-side` gives each side a session of its own, to compare.
    let mut benches = Vec::new();
    for &case in &settings.cases {
        for &side in case.sides() {
            benches.push(Bench::open(case, side, &mut keys).await?);
        }
    }
    let mut sessions = vec![conn];
    if settings.session_per_side {
        for _ in 1..benches.len() {
            sessions.push(PgConnection::connect(url).await?);
        }
    }
    let session_of = |i: usize| if settings.session_per_side { i } else { 0 };
    // Warm up: sqlx prepares each statement on first use.
    for (i, bench) in benches.iter_mut().enumerate() {
        let n = settings.ops(bench.case, bench.side).min(1000);
        bench
            .run(&mut sessions[session_of(i)], n, &mut Meter::new(None))
            .await?;
    }
    let mut series: Vec<Series> = benches
        .iter()
        .zip(&trips)
        .map(|(b, &t)| Series {
            case: b.case,
            side: b.side,
            per_op: Vec::with_capacity(settings.rounds),
            trips_per_op: t,
        })
        .collect();
    let started = Instant::now();
    // The sides a ratio compares run together: a group is a case with the
    // cases measured against its sides (the guard forms).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, bench) in benches.iter().enumerate() {
        let base = bench.case.baseline();
        match groups
            .iter_mut()
            .find(|g| benches[g[0]].case.baseline() == base)
        {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut seed = settings.seed;
    for _ in 0..settings.rounds {
        shuffle(&mut groups, &mut seed);
        for group in &groups {
            let mut meters: Vec<Meter> = group.iter().map(|_| Meter::new(None)).collect();
            // The sides that never reach the server run a batch each; those
            // that do take turns, one operation each, in an order shuffled
            // for every turn, so that both sides of a ratio meet the same
            // moments of the machine.
            let (mut local, mut turns): (Vec<usize>, Vec<usize>) = (0..group.len())
                .partition(|&j| benches[group[j]].case.local(benches[group[j]].side));
            shuffle(&mut local, &mut seed);
            for &j in &local {
                let i = group[j];
                benches[i]
                    .run(
                        &mut sessions[session_of(i)],
                        settings.cpu_batch,
                        &mut meters[j],
                    )
                    .await?;
            }
            if !turns.is_empty() {
                for _ in 0..settings.batch {
                    shuffle(&mut turns, &mut seed);
                    for &j in &turns {
                        let i = group[j];
                        benches[i]
                            .run(&mut sessions[session_of(i)], 1, &mut meters[j])
                            .await?;
                    }
                }
            }
            for (j, &i) in group.iter().enumerate() {
                let n = settings.ops(benches[i].case, benches[i].side);
                series[i]
                    .per_op
                    .push(meters[j].elapsed.as_nanos() as f64 / n as f64);
            }
        }
    }
    let interleaved = started.elapsed();
    drop(benches);

    let handoffs = if settings.handoff {
        Some(handoff_runs(&settings, url, &mut keys).await?)
    } else {
        None
    };

    if !series.is_empty() {
        print_table(&settings.cases, &series);
        println!();
    }
    if let Some(handoffs) = &handoffs {
        print_handoffs(&settings, handoffs);
        println!();
    }
    print_targets(&series, handoffs.as_ref());
    println!();
    println!(
        "Interleaved cases took {:.1} s; handoffs {:.1} s.",
        interleaved.as_secs_f64(),
        handoffs.map_or(0.0, |h| h.elapsed.as_secs_f64())
    );
    Ok(())
}

/// Puts `items` in a new order (Fisher-Yates, drawing from SplitMix64 on
/// `seed`): each round runs the groups, each turn the sides, in an order of
/// its own, so no side always runs first or next to the same neighbours.
/// The seed is fixed unless `BENCH_SEED` is set, so runs repeat their
/// orders.
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Round trips per operation of every side of every case, in the order the
/// benches are opened, counted on fresh sessions through a proxy after one
/// warm-up operation (which prepares the statements).
async fn count_round_trips(
    cases: &[Case],
    url: &str,
    keys: &mut Keys,
) -> Result<Vec<f64>, BoxError> {
    let proxy = RoundTrips::start(url).await;
    let mut trips = Vec::new();
    for &case in cases {
        for &side in case.sides() {
            let mut conn = PgConnection::connect(proxy.url()).await?;
            let mut bench = Bench::open(case, side, keys).await?;
            bench.run(&mut conn, 1, &mut Meter::new(None)).await?;
            let mut meter = Meter::new(Some(&proxy));
            bench.run(&mut conn, 10, &mut meter).await?;
            trips.push(meter.trips as f64 / 10.0);
        }
    }
    Ok(trips)
}

struct Handoffs {
    /// Handoffs per second, one per run.
    alock: Vec<f64>,
    raw: Vec<f64>,
    /// Raw SQL again, taking turns with the other two: what the runs read
    /// when both sides do the same work.
    control: Vec<f64>,
    /// The share of alock's acquires that had to wait (`LockGuard::waited`),
    /// over all timed runs.
    alock_waited: f64,
    /// Round trips per handoff, lock + UPDATE + unlock, counted on the wire.
    alock_trips: f64,
    raw_trips: f64,
    /// CPU time per handoff, one per run, in µs: of the side's backends
    /// (when the server runs on this machine and they can be read) and of
    /// this process.
    alock_cpu: Vec<Cpu>,
    raw_cpu: Vec<Cpu>,
    elapsed: Duration,
}

/// CPU time per handoff of one run, in µs.
#[derive(Clone, Copy)]
struct Cpu {
    server: Option<f64>,
    client: Option<f64>,
}

/// CPU time a process has run so far, in nanoseconds: the sum over its
/// threads of the first field of `/proc/<pid>/task/<tid>/schedstat` (time
/// on the CPU, counted exactly, unlike the 10 ms ticks of
/// `/proc/<pid>/stat`); `None` where it cannot be read (another machine,
/// another PID namespace, a kernel without schedstats, not Linux). Threads
/// that have exited are not counted; the backends have one thread and the
/// benchmark's runtime keeps its workers.
fn cpu_ns(pid: &str) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The summed CPU time of the backends `pids` and of this process.
fn cpu_now(pids: &[i32]) -> (Option<u64>, Option<u64>) {
    let server = pids
        .iter()
        .map(|pid| cpu_ns(&pid.to_string()))
        .sum::<Option<u64>>();
    (server, cpu_ns("self"))
}

/// The backend pids of `conns`.
async fn backend_pids(conns: &mut [PgConnection]) -> Result<Vec<i32>, BoxError> {
    let mut pids = Vec::with_capacity(conns.len());
    for conn in conns {
        pids.push(
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(conn)
                .await?,
        );
    }
    Ok(pids)
}

/// Contended handoffs: `sessions` sessions each lock one key, increment a
/// counter row, unlock, a fixed number of times; alock's, raw SQL's and the
/// control's runs take turns, on the same sessions.
async fn handoff_runs(
    settings: &Settings,
    url: &str,
    keys: &mut Keys,
) -> Result<Handoffs, BoxError> {
    let key = keys.take(1)[0];
    let counter = Counter::create(url).await?;
    let per_session = settings.handoffs.div_ceil(settings.sessions);
    let total = per_session * settings.sessions;

    // Round trips, on sessions through the proxy, before the timed runs.
    let proxy = RoundTrips::start(url).await;
    let mut trips = [0.0; 2];
    for (side, trips) in [Side::Alock, Side::Raw].into_iter().zip(&mut trips) {
        let conns = connect_all(proxy.url(), settings.sessions).await?;
        let conns = handoff_run(side, conns, key, &counter, 2).await?.0;
        let before = proxy.count();
        handoff_run(side, conns, key, &counter, 10).await?;
        *trips = (proxy.count() - before) as f64 / (10 * settings.sessions) as f64;
    }

    // Both sides run on the same sessions, for the reason the interleaved
    // cases share one.
    let mut conns = connect_all(url, settings.sessions).await?;
    let pids = backend_pids(&mut conns).await?;
    let started = Instant::now();
    let mut result = Handoffs {
        alock: Vec::new(),
        raw: Vec::new(),
        control: Vec::new(),
        alock_waited: 0.0,
        alock_trips: trips[0],
        raw_trips: trips[1],
        alock_cpu: Vec::new(),
        raw_cpu: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let mut waited = 0;
    // One warm-up run per side (run 0), then the sides take turns, in an
    // order shuffled for every turn. The control side runs raw SQL again.
    let mut order = [Side::Alock, Side::Raw, Side::Control];
    let mut seed = settings.seed ^ 0x2;
    for run in 0..=settings.handoff_rounds {
        shuffle(&mut order, &mut seed);
        for side in order {
            let before = counter.read().await?;
            let cpu_before = cpu_now(&pids);
            let begun = Instant::now();
            let run_all = handoff_run(side, std::mem::take(&mut conns), key, &counter, per_session);
            let run_waited;
            (conns, run_waited) = tokio::time::timeout(settings.handoff_limit, run_all)
                .await
                .map_err(|_| {
                    format!(
                        "a handoff run took longer than {:?} (BENCH_HANDOFF_LIMIT_SECS)",
                        settings.handoff_limit
                    )
                })??;
            let rate = total as f64 / begun.elapsed().as_secs_f64();
            let cpu_after = cpu_now(&pids);
            let per_handoff = |before: u64, after: u64| {
                after.saturating_sub(before) as f64 / 1_000.0 / total as f64
            };
            let cpu = Cpu {
                server: cpu_before
                    .0
                    .zip(cpu_after.0)
                    .map(|(b, a)| per_handoff(b, a)),
                client: cpu_before
                    .1
                    .zip(cpu_after.1)
                    .map(|(b, a)| per_handoff(b, a)),
            };
            let after = counter.read().await?;
            assert_eq!(after - before, total as i64, "every handoff counted once");
            match side {
                Side::Alock => {
                    if run > 0 {
                        result.alock.push(rate);
                        result.alock_cpu.push(cpu);
                        waited += run_waited;
                    }
                }
                Side::Control => {
                    if run > 0 {
                        result.control.push(rate);
                    }
                }
                _ => {
                    if run > 0 {
                        result.raw.push(rate);
                        result.raw_cpu.push(cpu);
                    }
                }
            }
        }
    }
    result.elapsed = started.elapsed();
    result.alock_waited = waited as f64 / (total * settings.handoff_rounds) as f64;
    counter.drop_table().await?;
    Ok(result)
}

async fn connect_all(url: &str, n: usize) -> Result<Vec<PgConnection>, BoxError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(PgConnection::connect(url).await?);
    }
    Ok(conns)
}

/// The counter the handoff loops increment: the one row of a table named
/// after this process, unlogged so that commits never wait for a WAL flush,
/// dropped at the end.
struct Counter {
    conn: tokio::sync::Mutex<PgConnection>,
    table: String,
    increment: String,
}

impl Counter {
    async fn create(url: &str) -> Result<Counter, BoxError> {
        let table = format!("alock_bench_{}", std::process::id());
        let mut conn = PgConnection::connect(url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE UNLOGGED TABLE {table} (n int8 NOT NULL); INSERT INTO {table} VALUES (0)"
        )))
        .execute(&mut conn)
        .await?;
        Ok(Counter {
            conn: tokio::sync::Mutex::new(conn),
            increment: format!("UPDATE {table} SET n = n + 1"),
            table,
        })
    }

    async fn read(&self) -> Result<i64, BoxError> {
        let select = format!("SELECT n FROM {}", self.table);
        Ok(sqlx::query_scalar(AssertSqlSafe(select))
            .fetch_one(&mut *self.conn.lock().await)
            .await?)
    }

    async fn drop_table(self) -> Result<(), BoxError> {
        let drop = format!("DROP TABLE {}", self.table);
        sqlx::raw_sql(AssertSqlSafe(drop))
            .execute(&mut *self.conn.lock().await)
            .await?;
        Ok(())
    }
}

/// Runs `per_session` lock / increment / unlock loops on every session at
/// once; gives the sessions back, with how many of alock's acquires waited.
async fn handoff_run(
    side: Side,
    conns: Vec<PgConnection>,
    key: i64,
    counter: &Counter,
    per_session: usize,
) -> Result<(Vec<PgConnection>, usize), BoxError> {
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let increment = counter.increment.clone();
            tokio::spawn(async move {
                let mut waited = 0;
                for _ in 0..per_session {
                    let increment = sqlx::query(AssertSqlSafe(increment.clone()));
                    match side {
                        Side::Alock => {
                            let mut guard = conn.lock_exclusive(key).await?;
                            waited += usize::from(guard.waited());
                            increment.execute(&mut *guard).await?;
                            guard.release().await?;
                        }
                        _ => {
                            sqlx::query(raw::LOCK).bind(key).execute(&mut conn).await?;
                            increment.execute(&mut conn).await?;
                            sqlx::query(raw::UNLOCK)
                                .bind(key)
                                .execute(&mut conn)
                                .await?;
                        }
                    }
                }
                Ok::<_, BoxError>((conn, waited))
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    let mut waited = 0;
    for task in tasks {
        let (conn, w) = task.await??;
        conns.push(conn);
        waited += w;
    }
    Ok((conns, waited))
}

fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile, interpolated between the nearest ranks.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn find(series: &[Series], case: Case, side: Side) -> Option<&Series> {
    series.iter().find(|s| s.case == case && s.side == side)
}

fn show_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.2} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

/// Two decimals where that says something; whole numbers for large ratios,
/// scientific notation for tiny ones (re-entrant acquires against a round
/// trip).
fn show_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 0.01 {
        format!("{r:.2}")
    } else {
        format!("{r:.1e}")
    }
}

fn show_trips(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

/// The median over rounds of the per-round ratio `a / b`, with its
/// interquartile range: rounds are interleaved, so a ratio within a round
/// compares runs a few milliseconds apart.
fn ratio(a: &Series, b: &Series) -> (f64, f64, f64) {
    let ratios: Vec<f64> = a.per_op.iter().zip(&b.per_op).map(|(x, y)| x / y).collect();
    (
        median(&ratios),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75),
    )
}

fn print_table(cases: &[Case], series: &[Series]) {
    println!(
        "Median time per operation over rounds; ratios are the median of per-round ratios, with the interquartile range."
    );
    println!();
    println!(
        "| case | alock | raw SQL | sqlx `PgAdvisoryLock` | alock/raw | sqlx/alock | round trips alock / raw / sqlx |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for &case in cases {
        let alock = find(series, case, Side::Alock).expect("BUG: every case has an alock side");
        let raw = find(series, case.baseline(), Side::Raw);
        let sqlx = find(series, case.baseline(), Side::Sqlx);
        let time =
            |s: Option<&Series>| s.map_or("n/a".to_owned(), |s| show_time(median(&s.per_op)));
        let vs_raw = raw.map_or("n/a".to_owned(), |raw| {
            let (m, lo, hi) = ratio(alock, raw);
            format!("{} ({}–{})", show_ratio(m), show_ratio(lo), show_ratio(hi))
        });
        let vs_sqlx = sqlx.map_or("n/a".to_owned(), |sqlx| {
            let (m, lo, hi) = ratio(sqlx, alock);
            format!("{} ({}–{})", show_ratio(m), show_ratio(lo), show_ratio(hi))
        });
        let trips = [Some(alock), raw, sqlx]
            .iter()
            .map(|s| s.map_or("–".to_owned(), |s| show_trips(s.trips_per_op)))
            .collect::<Vec<_>>()
            .join(" / ");
        println!(
            "| {} | {} | {} | {} | {vs_raw} | {vs_sqlx} | {trips} |",
            case.name(),
            time(Some(alock)),
            time(raw),
            time(sqlx),
        );
    }
    if let (Some(control), Some(raw)) = (
        find(series, Case::TenKeys, Side::Control),
        find(series, Case::TenKeys, Side::Raw),
    ) {
        let (m, lo, hi) = ratio(control, raw);
        println!();
        println!(
            "Control: raw SQL against itself (the 10-key statements, on keys of their own, \
             taking turns with the other sides): {} ({}–{}). A ratio this close to 1 is \
             within what the run can tell apart.",
            show_ratio(m),
            show_ratio(lo),
            show_ratio(hi)
        );
    }
}

fn print_handoffs(settings: &Settings, handoffs: &Handoffs) {
    let ratios = handoffs.ratios();
    println!(
        "Contended handoffs: {} sessions, one key, lock / UPDATE a counter row / unlock \
         (alock: `conn.lock_exclusive(key)`, `guard.release()`); median over {} runs of {} \
         handoffs each, the sides taking turns in a shuffled order. {:.0}% of alock's acquires waited.",
        settings.sessions,
        handoffs.alock.len(),
        settings.handoffs.div_ceil(settings.sessions) * settings.sessions,
        handoffs.alock_waited * 100.0,
    );
    println!();
    println!("| side | handoffs/s (median) | min – max | round trips per handoff |");
    println!("|---|---:|---:|---:|");
    for (name, rates, trips) in [
        ("alock", &handoffs.alock, handoffs.alock_trips),
        ("raw SQL", &handoffs.raw, handoffs.raw_trips),
    ] {
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {:.0} | {lo:.0} – {hi:.0} | {} |",
            median(rates),
            show_trips(trips)
        );
    }
    println!(
        "| alock/raw | {:.2} | {:.2} – {:.2} (interquartile) | |",
        median(&ratios),
        quantile(&ratios, 0.25),
        quantile(&ratios, 0.75)
    );
    let control = handoffs.control_ratios();
    println!(
        "| control (raw SQL again) / raw | {:.2} | {:.2} – {:.2} (interquartile) | |",
        median(&control),
        quantile(&control, 0.25),
        quantile(&control, 0.75)
    );
    println!();
    println!(
        "CPU time per handoff, median over the runs (the backends' and this process's time \
         on the CPU, from /proc/<pid>/task/*/schedstat, when the server runs on this machine):"
    );
    println!();
    println!("| side | server CPU per handoff | client CPU per handoff |");
    println!("|---|---:|---:|");
    for (name, cpu) in [
        ("alock", &handoffs.alock_cpu),
        ("raw SQL", &handoffs.raw_cpu),
    ] {
        let show = |values: Option<Vec<f64>>| {
            values.map_or("n/a".to_owned(), |v| format!("{:.0} µs", median(&v)))
        };
        let server = show(cpu.iter().map(|c| c.server).collect());
        let client = show(cpu.iter().map(|c| c.client).collect());
        println!("| {name} | {server} | {client} |");
    }
}

impl Handoffs {
    /// alock's rate over raw SQL's, per turn.
    fn ratios(&self) -> Vec<f64> {
        self.over_raw(&self.alock)
    }

    /// The control's rate over raw SQL's, per turn.
    fn control_ratios(&self) -> Vec<f64> {
        self.over_raw(&self.control)
    }

    fn over_raw(&self, rates: &[f64]) -> Vec<f64> {
        rates.iter().zip(&self.raw).map(|(x, r)| x / r).collect()
    }
}

fn print_targets(series: &[Series], handoffs: Option<&Handoffs>) {
    let get = |case, side| find(series, case, side);
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!("Targets (of the cases run):");
    println!();

    for (case, form) in [(Case::OneKey, "lock object"), (Case::OneKeyGuard, "guard")] {
        if let (Some(alock), Some(raw)) = (get(case, Side::Alock), get(Case::OneKey, Side::Raw)) {
            let (one, ..) = ratio(alock, raw);
            println!(
                "- 1 key, acquire + release within 10% of raw SQL ({form}): \
                 alock/raw = {one:.3}: {}",
                verdict(one <= 1.10)
            );
        }
    }
    for (case, form) in [
        (Case::TenKeys, "lock object"),
        (Case::TenKeysGuard, "guard"),
    ] {
        let (Some(alock), Some(raw), Some(sqlx)) = (
            get(case, Side::Alock),
            get(Case::TenKeys, Side::Raw),
            get(Case::TenKeys, Side::Sqlx),
        ) else {
            continue;
        };
        let (ten, ..) = ratio(alock, raw);
        let (ten_sqlx, ..) = ratio(sqlx, alock);
        println!(
            "- 10 keys within 30% of one-statement raw SQL ({form}): alock/raw = {ten:.3}: {}",
            verdict(ten <= 1.30)
        );
        println!(
            "- 10 keys at least 6x faster than ten sqlx PgAdvisoryLocks ({form}): \
             sqlx/alock = {ten_sqlx:.2}: {}",
            verdict(ten_sqlx >= 6.0)
        );
    }

    if let (Some(alock), Some(raw)) = (
        get(Case::Reentrant, Side::Alock),
        get(Case::Reentrant, Side::Raw),
    ) {
        let (reentrant, ..) = ratio(raw, alock);
        println!(
            "- re-entrant acquire + release at least 50x faster than one round trip: \
             raw/alock = {reentrant:.0}: {}",
            verdict(reentrant >= 50.0)
        );
    }

    if let Some(alock) = get(Case::LockIdDerived, Side::Alock) {
        let lock_id = median(&alock.per_op);
        println!(
            "- lock_id() of a derived key under 2 ns: {lock_id:.2} ns: {}",
            verdict(lock_id < 2.0)
        );
    }

    if let Some(handoffs) = handoffs {
        let handoff = median(&handoffs.ratios());
        println!(
            "- contended handoffs at least 85% of raw SQL: alock/raw = {handoff:.3}: {}",
            verdict(handoff >= 0.85)
        );
    }
}
