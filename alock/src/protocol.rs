//! The operations every lock form is built from, on a bare `PgConnection`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::sql::{self, Forms, Level, Outcome, Wait};
use crate::{Error, LockId, pending, session};

/// How to wait for ids that another session holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience {
    /// Give up at once.
    None,
    /// Wait until granted.
    Forever,
    /// Wait at most this long, measured on the server.
    For(Duration),
}

/// Whether an acquire took its ids, and whether it had to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Some id was busy and the patience ran out; none is held.
    No,
    /// Every id was free.
    AtOnce,
    /// Every id is held, after waiting for at least one.
    AfterWaiting,
}

impl Taken {
    pub(crate) fn is_taken(self) -> bool {
        self != Taken::No
    }
}

impl Patience {
    /// At most `timeout`; a zero timeout never waits, and one beyond what
    /// `lock_timeout` can express (`i32::MAX` milliseconds, 24.8 days)
    /// waits as long as it takes.
    pub(crate) fn within(timeout: Duration) -> Patience {
        if timeout.is_zero() {
            Patience::None
        } else if timeout >= Duration::from_millis(i32::MAX as u64) {
            Patience::Forever
        } else {
            Patience::For(timeout)
        }
    }
}

/// Takes every id in order, all or nothing; `Ok(false)` when some id was
/// busy and `patience` ran out.
///
/// Round trips: 1, whether the ids are free or busy, outside a
/// transaction. Inside one (and on a session that cannot have its
/// functions), a single id that is busy costs 2: a try, then the wait in the
/// anonymous block, so that a free id costs no more than hand-written SQL.
/// If the future is dropped while a statement is in flight, a cleanup is
/// queued on the connection that releases the ids if, and only if, that
/// statement ends up taking them.
pub(crate) async fn acquire(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    patience: Patience,
) -> Result<Taken, Error> {
    if ids.is_empty() {
        return Ok(Taken::AtOnce);
    }
    let started = Instant::now();
    let mut flight = InFlight {
        conn,
        ids,
        shared,
        token: next_token(),
        cleanup: Some(match ids {
            [_] => Cleanup::IfHeld,
            _ => Cleanup::IfAcquired,
        }),
    };
    // What is left of the patience, as the wait a statement is given.
    let wait = |patience| match patience {
        Patience::None => Wait::No,
        Patience::Forever => Wait::Forever,
        Patience::For(limit) => Wait::Until(limit.saturating_sub(started.elapsed())),
    };
    let token = flight.token;
    let taken = match (ids, patience) {
        ([id], Patience::None) => try_one(flight.conn, *id, shared, Level::Session)
            .await
            .map(|taken| if taken { Taken::AtOnce } else { Taken::No })
            .map_err(Failure::Statement),
        ([id], _) => match lock_one(flight.conn, *id, shared, &|| wait(patience)).await {
            Some(taken) => taken,
            // No session functions: try, and wait in the anonymous block
            // only if the id is busy.
            None => match try_one(flight.conn, *id, shared, Level::Session).await {
                Ok(true) => Ok(Taken::AtOnce),
                Ok(false) => run_block(flight.conn, ids, shared, &|| wait(patience), token).await,
                Err(e) => Err(Failure::Statement(e)),
            },
        },
        _ => run_block(flight.conn, ids, shared, &|| wait(patience), token).await,
    };
    match taken {
        Ok(taken) => {
            flight.cleanup = None;
            Ok(taken)
        }
        Err(Failure::Reported(e)) => {
            flight.cleanup = None;
            Err(e)
        }
        // The statement failed as a whole, not with an outcome it reported:
        // it may have been interrupted after taking the ids. The cleanup
        // stays armed and releases them if they were taken (its token shows
        // it, or for one id, the session holding it).
        Err(Failure::Statement(e)) => Err(e),
    }
}

/// What is left of an acquire's patience, asked afresh before each
/// statement, so that the statements a first call on a session needs (the
/// failed call, creating the functions) come out of the timeout too.
type Remaining<'a> = &'a (dyn Fn() -> Wait + Sync);

/// How an acquire statement failed.
enum Failure {
    /// The block caught the error, gave back what it took, and reported it.
    Reported(Error),
    /// The statement itself failed; what it took is not known.
    Statement(Error),
}

/// Binds one id's key(s), the first parameters of every single-id
/// statement; a macro, as the statements are of two types.
macro_rules! bind_id {
    ($query:expr, $id:expr) => {
        match $id {
            LockId::Int8(key) => $query.bind(key),
            LockId::Int4Pair(key1, key2) => $query.bind(key1).bind(key2),
        }
    };
}

/// Binds the arrays a statement for ids of these forms takes (see
/// [`sql::unlock_many`]); a macro, as the statements are of two types.
macro_rules! bind_forms {
    ($query:expr, $forms:expr, $arrays:expr) => {{
        let (int8, first, second) = $arrays;
        match $forms {
            Forms::Int8 => $query.bind(int8),
            Forms::Pairs => $query.bind(first).bind(second),
            Forms::Mixed => $query.bind(int8).bind(first).bind(second),
        }
    }};
}

async fn try_one(
    conn: &mut PgConnection,
    id: LockId,
    shared: bool,
    level: Level,
) -> Result<bool, Error> {
    bind_id!(sqlx::query_scalar(sql::try_one(id, shared, level)), id)
        .fetch_one(conn)
        .await
        .map_err(Error::from_sqlx)
}

/// Takes one id, waiting if it is busy, in one statement that calls the
/// session's function only when the id is busy ([`sql::lock_one`]). `None`
/// when that cannot be used: inside a transaction, or when the session
/// cannot have its functions.
async fn lock_one(
    conn: &mut PgConnection,
    id: LockId,
    shared: bool,
    wait: Remaining<'_>,
) -> Option<Result<Taken, Failure>> {
    let text = match call_session_function(conn, Call::One(id), shared, wait, "").await? {
        Ok(text) => text,
        Err(failure) => return Some(Err(failure)),
    };
    // No token: "acquired" is the try's own word.
    Some(outcome_of(&text, "acquired"))
}

/// A statement that calls one of the session's functions.
enum Call<'a> {
    /// [`sql::free_first`] where it applies, which calls the function only
    /// when an id is busy; [`sql::acquire_call`] over the ids' arrays
    /// otherwise.
    Many(&'a [LockId]),
    /// [`sql::lock_one`].
    One(LockId),
}

impl Call<'_> {
    async fn run(
        &self,
        conn: &mut PgConnection,
        shared: bool,
        wait: Wait,
        token: &str,
    ) -> Result<String, sqlx::Error> {
        match *self {
            Call::Many(ids) => {
                let forms = Forms::of(ids);
                if let Some(text) = sql::free_first(forms, ids.len(), shared) {
                    let mut query = sqlx::query_scalar(text).bind(wait.micros()).bind(token);
                    for &id in ids {
                        query = bind_id!(query, id);
                    }
                    return query.fetch_one(conn).await;
                }
                let arrays = bind_arrays(ids.iter());
                bind_forms!(
                    sqlx::query_scalar(sql::acquire_call(forms, shared)),
                    forms,
                    &arrays
                )
                .bind(wait.micros())
                .bind(token)
                .fetch_one(conn)
                .await
            }
            Call::One(id) => {
                bind_id!(sqlx::query_scalar(sql::lock_one(id, shared)), id)
                    .bind(wait.micros())
                    .fetch_one(conn)
                    .await
            }
        }
    }
}

/// Runs `call` outside a transaction; if the session does not have its
/// functions yet (or lost them to `DISCARD TEMP`), creates them and runs it
/// again. `None` when the functions cannot be used: inside a transaction,
/// where a failed call would abort it, or when the server refuses to create
/// them.
async fn call_session_function(
    conn: &mut PgConnection,
    call: Call<'_>,
    shared: bool,
    wait: Remaining<'_>,
    token: &str,
) -> Option<Result<String, Failure>> {
    if conn.is_in_transaction() || !session::allowed() {
        return None;
    }
    match call.run(conn, shared, wait(), token).await {
        Err(e) if session::missing(&e) => {}
        first => return Some(first.map_err(|e| Failure::Statement(Error::from_sqlx(e)))),
    }
    match session::create(conn).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => return Some(Err(Failure::Statement(Error::from_sqlx(e)))),
    }
    Some(match call.run(conn, shared, wait(), token).await {
        Ok(text) => Ok(text),
        // The function never ran: nothing was taken.
        Err(e) if session::missing(&e) => Err(Failure::Reported(Error::from_sqlx(e))),
        Err(e) => Err(Failure::Statement(Error::from_sqlx(e))),
    })
}

/// Runs the session-level acquire body: the session's compiled copy when it
/// has one, the anonymous block otherwise.
async fn run_block(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    wait: Remaining<'_>,
    token: u64,
) -> Result<Taken, Failure> {
    run_acquire(conn, Level::Session, ids, shared, wait, token).await
}

async fn run_acquire(
    conn: &mut PgConnection,
    level: Level,
    ids: &[LockId],
    shared: bool,
    wait: Remaining<'_>,
    token: u64,
) -> Result<Taken, Failure> {
    let token_text = token.to_string();
    if let Level::Session = level {
        match call_session_function(conn, Call::Many(ids), shared, wait, &token_text).await {
            Some(Ok(outcome)) => return outcome_of(&outcome, &token_text),
            Some(Err(failure)) => return Err(failure),
            // Inside a transaction, or without functions: the anonymous
            // block.
            None => {}
        }
    }
    let block = sql::acquire_block(level, ids, shared, wait(), token);
    let row = sqlx::raw_sql(AssertSqlSafe(block))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Failure::Statement(Error::from_sqlx(e)))?;
    let outcome: String = row
        .try_get(0)
        .map_err(|e| Failure::Statement(Error::Database(e)))?;
    outcome_of(&outcome, &token_text)
}

fn outcome_of(outcome: &str, token: &str) -> Result<Taken, Failure> {
    match Outcome::parse(outcome, token) {
        Outcome::Acquired { waited: false } => Ok(Taken::AtOnce),
        Outcome::Acquired { waited: true } => Ok(Taken::AfterWaiting),
        Outcome::Busy => Ok(Taken::No),
        Outcome::Failed { code, message } => {
            Err(Failure::Reported(Error::from_server(code, message)))
        }
    }
}

/// The ids as the three parallel arrays the statements bind: `int8`,
/// first `int4`, second `int4`, NULL where an id is of the other form.
type IdArrays = (Vec<Option<i64>>, Vec<Option<i32>>, Vec<Option<i32>>);

fn bind_arrays<'i>(ids: impl ExactSizeIterator<Item = &'i LockId>) -> IdArrays {
    let mut arrays: IdArrays = (
        Vec::with_capacity(ids.len()),
        Vec::with_capacity(ids.len()),
        Vec::with_capacity(ids.len()),
    );
    for id in ids {
        let (k, a, b) = match *id {
            LockId::Int8(key) => (Some(key), None, None),
            LockId::Int4Pair(key1, key2) => (None, Some(key1), Some(key2)),
        };
        arrays.0.push(k);
        arrays.1.push(a);
        arrays.2.push(b);
    }
    arrays
}

/// Takes every id at transaction level, in order, all or nothing;
/// `Ok(false)` when some id was busy and `patience` ran out.
///
/// Round trips as for [`acquire`]. The locks last until the transaction
/// ends; they cannot be given back earlier. If the future is dropped while a
/// wait is in flight, the wait goes on on the server and whatever it is
/// granted lasts until the transaction ends, like every lock of it.
pub(crate) async fn acquire_xact(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    patience: Patience,
) -> Result<bool, Error> {
    if !conn.is_in_transaction() {
        return Err(Error::NotInTransaction);
    }
    let started = Instant::now();
    let wait = |patience| match patience {
        Patience::None => Wait::No,
        Patience::Forever => Wait::Forever,
        Patience::For(limit) => Wait::Until(limit.saturating_sub(started.elapsed())),
    };
    match ids {
        [] => Ok(true),
        [id] => {
            let taken = try_one(conn, *id, shared, Level::Transaction).await?;
            if taken || matches!(patience, Patience::None) {
                return Ok(taken);
            }
            run_xact_block(conn, ids, shared, &|| wait(patience)).await
        }
        _ => run_xact_block(conn, ids, shared, &|| wait(patience)).await,
    }
}

/// Transaction-level locks are given back by the transaction itself, so how
/// an acquire failed does not matter.
async fn run_xact_block(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    wait: Remaining<'_>,
) -> Result<bool, Error> {
    match run_acquire(conn, Level::Transaction, ids, shared, wait, 0).await {
        Ok(taken) => Ok(taken.is_taken()),
        Err(Failure::Reported(e) | Failure::Statement(e)) => Err(e),
    }
}

/// Releases every id, in reverse order. 1 round trip. [`Error::Lost`]
/// when the server answers an unlock with `false`: it no longer held that
/// id for this session.
pub(crate) async fn release(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let token = next_token();
    let mut flight = InFlight {
        conn,
        ids,
        shared,
        token,
        cleanup: Some(Cleanup::UnlessReleased),
    };
    let token = token.to_string();
    // How many unlocks the server answered `false`: ids the session no
    // longer held.
    let missing: sqlx::Result<usize> = match ids {
        [id] => bind_id!(sqlx::query_scalar(sql::unlock_one(*id, shared)), *id)
            .bind(token)
            .fetch_one(&mut *flight.conn)
            .await
            .map(|held: bool| usize::from(!held)),
        _ => {
            let forms = Forms::of(ids);
            let arrays = bind_arrays(ids.iter().rev());
            bind_forms!(
                sqlx::query_scalar(sql::unlock_many(forms, shared)),
                forms,
                &arrays
            )
            .bind(token)
            .fetch_all(&mut *flight.conn)
            .await
            .map(|answers: Vec<bool>| answers.into_iter().filter(|held| !held).count())
        }
    };
    flight.cleanup = None;
    let missing = missing.map_err(Error::from_sqlx)?;
    match missing {
        0 => Ok(()),
        _ => Err(Error::Lost {
            missing,
            total: ids.len(),
        }),
    }
}

/// Whether this session holds every id, granted, in this mode, according to
/// `pg_locks`. 1 round trip.
pub(crate) async fn held(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
) -> Result<bool, Error> {
    let mut rows: Vec<(u32, u32, i16)> = ids.iter().map(|id| id.pg_locks_row()).collect();
    rows.sort_unstable();
    rows.dedup();
    let count: i64 = sqlx::query_scalar(sql::HELD_BY_SESSION)
        .bind(rows.iter().map(|r| i64::from(r.0)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| i64::from(r.1)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(sql::pg_locks_mode(shared))
        .fetch_one(conn)
        .await?;
    Ok(count == rows.len() as i64)
}

/// Queues the release of held ids, for `Drop`.
pub(crate) fn release_on_drop(conn: &mut PgConnection, ids: &[LockId], shared: bool) {
    if !ids.is_empty() {
        pending::queue(conn, sql::unlock_queued(ids, shared));
    }
}

/// A token for one call: unique within the process, and, since a session
/// keeps the last recorded token for its whole life and a pooler may hand it
/// to another process, starting from a per-process value (the process id
/// and the time, mixed) rather than from 1. Between 1 and `i64::MAX`, as the
/// server stores it in a sequence.
fn next_token() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut z = nanos ^ (u64::from(std::process::id()) << 32);
        // SplitMix64's finaliser: neighbouring inputs, distant outputs.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Room for 2^40 calls before the top bit.
        AtomicU64::new((z >> 24).max(1))
    });
    next.fetch_add(1, Ordering::Relaxed)
}

/// What a statement whose response was never read leaves to clean up.
#[derive(Clone, Copy)]
enum Cleanup {
    /// An acquire of several ids: release them if its token shows it took
    /// them.
    IfAcquired,
    /// An acquire of one id: release it if the session holds it in this
    /// mode, which for one id means the acquire took it
    /// ([`sql::cleanup_if_held`]).
    IfHeld,
    /// A release: release the ids if it never ran.
    UnlessReleased,
}

/// A statement whose response has not been read yet. Dropped with a
/// cleanup (the caller's future was dropped, or the statement failed as a
/// whole), it queues that cleanup on the connection.
struct InFlight<'c, 'i> {
    conn: &'c mut PgConnection,
    ids: &'i [LockId],
    shared: bool,
    token: u64,
    cleanup: Option<Cleanup>,
}

impl Drop for InFlight<'_, '_> {
    fn drop(&mut self) {
        let sql = match self.cleanup {
            None => return,
            Some(Cleanup::IfAcquired) => {
                sql::cleanup_if_acquired(self.ids, self.shared, self.token)
            }
            Some(Cleanup::IfHeld) => match self.ids {
                [id] => sql::cleanup_if_held(*id, self.shared),
                _ => sql::cleanup_if_acquired(self.ids, self.shared, self.token),
            },
            Some(Cleanup::UnlessReleased) => {
                sql::cleanup_unless_released(self.ids, self.shared, self.token)
            }
        };
        pending::queue(self.conn, sql);
    }
}
