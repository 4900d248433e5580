//! The operations every lock form is built from, on a bare `PgConnection`.
//!
//! Every id of a session-level hold is taken and released together with
//! its record (see `sql.rs`). A statement that may take or release ids is
//! watched by an [`InFlight`] until its answer is read; if it is dropped
//! before, or the statement failed as a whole, it queues
//! [`sql::release_recorded`], which releases exactly the ids whose records
//! the session holds.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use tracing::Instrument;

use crate::error::{RELEASING, WAITING};
use crate::{Error, LockId, pending, session, sql, trace};

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

/// How to wait for ids that another session holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Patience {
    /// Give up at once.
    None,
    /// Wait until granted (or the session's own `lock_timeout`).
    Forever,
    /// Wait at most this long, measured on the server.
    For(Duration),
}

/// The longest timeout a call takes: what the server's `lock_timeout` can
/// express, `i32::MAX` milliseconds (24.8 days).
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// For a wait without a limit, which ends taken or with an error.
pub(crate) const GRANTED: &str = "BUG: a wait without a limit ends taken or with an error";

impl Patience {
    /// At most `timeout`; a zero timeout never waits, and one beyond
    /// [`MAX_TIMEOUT`] is refused.
    pub(crate) fn within(timeout: Duration) -> Result<Patience, Error> {
        if timeout.is_zero() {
            Ok(Patience::None)
        } else if timeout > MAX_TIMEOUT {
            Err(trace::refused(Error::TimeoutTooLong(timeout)))
        } else {
            Ok(Patience::For(timeout))
        }
    }

    /// The body's `wait_ms`: 0 never waits, -1 waits as long as the
    /// session's `lock_timeout` allows.
    fn wait_ms(self) -> i64 {
        match self {
            Patience::None => 0,
            Patience::Forever => -1,
            Patience::For(limit) => i64::try_from(limit.as_millis()).unwrap_or(i64::MAX).max(1),
        }
    }
}

/// A session-level hold that an acquire took: the token of its records,
/// the backend pid of the session that took it, and whether taking it had
/// to wait.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hold {
    pub(crate) token: i32,
    pub(crate) pid: i32,
    pub(crate) waited: bool,
}

/// A fresh token: random, so that neither a process nor a session handed
/// from process to process by a pooler repeats one that may still be held.
fn new_token() -> i32 {
    random() as i32
}

/// 64 random bits, from the standard library's per-map random keys.
pub(crate) fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

/// Takes every id at session level, in order, all or nothing; `None` when
/// some id was busy and `patience` ran out.
///
/// 1 round trip, whether the ids are free or waited for, plus one per
/// slice of a long wait (see `DESIGN.md`).
pub(crate) async fn acquire(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    patience: Patience,
) -> Result<Option<Hold>, Error> {
    let span = trace::acquire_span("session", shared, ids.len());
    let started = Instant::now();
    let taken = take_session(conn, ids, shared, patience)
        .instrument(span.clone())
        .await;
    trace::acquired(
        &span,
        started,
        taken.as_ref().map(|hold| hold.map(|h| h.waited)),
    );
    taken
}

async fn take_session(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    patience: Patience,
) -> Result<Option<Hold>, Error> {
    if conn.is_in_transaction() {
        return Err(trace::refused(Error::InTransaction));
    }
    let token = new_token();
    let mut flight = InFlight::new(conn, ids, shared, token);
    let started = Instant::now();
    let mut waited_ms = 0;
    loop {
        let outcome = run_acquire(
            flight.conn,
            ids,
            shared,
            patience.wait_ms(),
            waited_ms,
            token,
        )
        .await;
        // A statement that failed as a whole may have taken ids before it
        // failed: the flight releases what its token shows held.
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                flight.settle().await;
                // The body catches the lock timeout that ends its wait. One
                // that escapes it is a late signal of that same timer,
                // delivered after another interrupt had already ended the
                // wait: for a call with a limit, the time ran out.
                return match error {
                    Error::LockTimeout(_) if matches!(patience, Patience::For(_)) => Ok(None),
                    error => Err(error),
                };
            }
        };
        let (outcome, pid) = outcome;
        match Outcome::parse(&outcome) {
            Outcome::Acquired { waited } => {
                flight.disarm();
                return Ok(Some(Hold { token, pid, waited }));
            }
            Outcome::Busy => {
                flight.disarm();
                return Ok(None);
            }
            Outcome::Waiting => {
                waited_ms = waited_since(started);
            }
            Outcome::Failed(code, message) => {
                flight.disarm();
                return Err(Error::from_server(code, message, WAITING));
            }
        }
    }
}

/// One statement of a session-level acquire: the session's function (the
/// single-id statement calls it only when the id is busy), created first if
/// the session lacks it, or the anonymous block where it cannot be created.
async fn run_acquire(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    wait_ms: i64,
    waited_ms: i64,
    token: i32,
) -> Result<(String, i32), Error> {
    let call = async |conn: &mut PgConnection| match ids {
        [id] => {
            bind_id!(sqlx::query_as(sql::lock_one(*id, shared)), *id)
                .bind(token)
                .bind(wait_ms)
                .bind(waited_ms)
                .fetch_one(conn)
                .await
        }
        _ => {
            let (k, a, b) = arrays(ids.iter());
            sqlx::query_as(sql::ACQUIRE_MANY)
                .bind(k)
                .bind(a)
                .bind(b)
                .bind(shared)
                .bind(wait_ms)
                .bind(waited_ms)
                .bind(token)
                .fetch_one(conn)
                .await
        }
    };
    match call(&mut *conn).await {
        Err(e) if session::missing(&e) => {}
        answered => return answered.map_err(Error::from_sqlx),
    }
    let Some(created) = session::create(conn).await.map_err(Error::from_sqlx)? else {
        let fallback = block(conn, ids, shared, false, wait_ms, waited_ms, token).await;
        return fallback.map_err(Error::from_sqlx);
    };
    match call(&mut *conn).await {
        Err(e) if session::missing(&e) => Err(session::moved(conn, created).await),
        answered => answered.map_err(Error::from_sqlx),
    }
}

/// Milliseconds since `started`, at least 1: what earlier slices of a call
/// waited.
fn waited_since(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Runs the acquire body as an anonymous block: inside transactions, and on
/// sessions that cannot have the functions.
async fn block(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    xact: bool,
    wait_ms: i64,
    waited_ms: i64,
    token: i32,
) -> Result<(String, i32), sqlx::Error> {
    let text = sql::acquire_block(ids, shared, xact, wait_ms, waited_ms, token);
    let row = sqlx::raw_sql(AssertSqlSafe(text)).fetch_one(conn).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// What an acquire body answered.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Acquired { waited: bool },
    Busy,
    Waiting,
    Failed(String, String),
}

impl Outcome {
    fn parse(text: &str) -> Outcome {
        match text {
            "acquired" => Outcome::Acquired { waited: false },
            "waited" => Outcome::Acquired { waited: true },
            "busy" => Outcome::Busy,
            "waiting" => Outcome::Waiting,
            failed => {
                let (code, message) = failed.split_once(' ').unwrap_or((failed, ""));
                Outcome::Failed(code.to_owned(), message.to_owned())
            }
        }
    }
}

/// The ids as the three parallel arrays the functions take: `int8`, first
/// `int4`, second `int4`, NULL where an id is of the other form.
type IdArrays = (Vec<Option<i64>>, Vec<Option<i32>>, Vec<Option<i32>>);

fn arrays<'i>(ids: impl ExactSizeIterator<Item = &'i LockId>) -> IdArrays {
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
/// A single free id costs 1 round trip (a plain try); otherwise the body
/// runs as an anonymous block, 1 round trip more, plus one per slice of a
/// long wait. The locks last until the transaction ends. A call dropped
/// mid-flight leaves what its statement takes to the transaction's end,
/// like every lock of it.
pub(crate) async fn acquire_xact(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    patience: Patience,
) -> Result<bool, Error> {
    let span = trace::acquire_span("transaction", shared, ids.len());
    let started = Instant::now();
    let taken = take_xact(conn, ids, shared, patience)
        .instrument(span.clone())
        .await;
    // A transaction-level wait does not report whether it waited.
    trace::acquired(&span, started, taken.as_ref().map(|&t| t.then_some(false)));
    taken
}

async fn take_xact(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    patience: Patience,
) -> Result<bool, Error> {
    if !conn.is_in_transaction() {
        return Err(trace::refused(Error::NotInTransaction));
    }
    if let [id] = ids {
        let tried = sqlx::raw_sql(AssertSqlSafe(sql::try_xact_one(*id, shared)))
            .fetch_one(&mut *conn)
            .await?;
        let taken: bool = tried.try_get(0)?;
        if taken || matches!(patience, Patience::None) {
            return Ok(taken);
        }
    }
    if ids.is_empty() {
        return Ok(true);
    }
    let started = Instant::now();
    let mut waited_ms = 0;
    loop {
        let (outcome, _pid) =
            block(conn, ids, shared, true, patience.wait_ms(), waited_ms, 0).await?;
        match Outcome::parse(&outcome) {
            Outcome::Acquired { .. } => return Ok(true),
            Outcome::Busy => return Ok(false),
            Outcome::Waiting => {
                waited_ms = waited_since(started);
            }
            Outcome::Failed(code, message) => {
                return Err(Error::from_server(code, message, WAITING));
            }
        }
    }
}

/// Releases every id, in reverse order, and the hold's token. 1 round
/// trip. [`Error::Lost`] when the server answers that the session no longer
/// held some id.
pub(crate) async fn release(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    hold: Hold,
) -> Result<(), Error> {
    let span = trace::release_span(shared, ids.len());
    let released = unlock(conn, ids, shared, hold)
        .instrument(span.clone())
        .await;
    trace::released(&span, &released);
    released
}

async fn unlock(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    hold: Hold,
) -> Result<(), Error> {
    let mut flight = InFlight::new(conn, ids, shared, hold.token);
    let missing = match ids {
        [id] => bind_id!(sqlx::query_as(sql::unlock_one(*id, shared)), *id)
            .bind(hold.token)
            .bind(hold.pid)
            .fetch_one(&mut *flight.conn)
            .await
            .map(|(held, pid): (Option<bool>, i32)| (held.map(|held| usize::from(!held)), pid))
            .map_err(|e| Error::from_sqlx_during(e, RELEASING)),
        _ => release_many(flight.conn, ids, shared, hold).await,
    };
    let missing = match missing {
        Ok((Some(missing), _)) => missing,
        Ok((None, now)) => {
            // Another session answered, and was left alone: nothing ran
            // on the session that holds the ids.
            flight.disarm();
            return Err(Error::SessionChanged {
                took: hold.pid,
                now,
            });
        }
        Err(Error::Database(e)) if session::statements_mixed(&e) => {
            // The statement never ran: a pooler gave its parts to
            // different sessions.
            flight.disarm();
            return Err(session::moved(flight.conn, hold.pid).await);
        }
        Err(error) => {
            // In a failed transaction nothing can run until it ends; the
            // ids stay held, and the caller keeps them to release later.
            if matches!(
                error,
                Error::InFailedTransaction(_) | Error::SessionChanged { .. }
            ) || error.is_connection_lost()
            {
                flight.disarm();
            } else {
                flight.settle().await;
            }
            return Err(error);
        }
    };
    flight.disarm();
    match missing {
        0 => Ok(()),
        _ => Err(Error::Lost {
            missing,
            total: ids.len(),
        }),
    }
}

/// The release body for several ids, through the session's function, or an
/// anonymous block where it cannot be had.
async fn release_many(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    hold: Hold,
) -> Result<(Option<usize>, i32), Error> {
    let call = async |conn: &mut PgConnection| {
        let (k, a, b) = arrays(ids.iter());
        sqlx::query_as(sql::RELEASE_MANY)
            .bind(k)
            .bind(a)
            .bind(b)
            .bind(shared)
            .bind(hold.token)
            .bind(hold.pid)
            .fetch_one(conn)
            .await
            .map(|(missing, pid): (Option<i32>, i32)| {
                (missing.map(|m| usize::try_from(m).unwrap_or(0)), pid)
            })
    };
    let released = |e| Error::from_sqlx_during(e, RELEASING);
    match call(&mut *conn).await {
        Err(e) if !conn.is_in_transaction() && session::missing(&e) => {}
        answered => return answered.map_err(released),
    }
    if let Some(created) = session::create(conn).await.map_err(released)? {
        return match call(&mut *conn).await {
            Err(e) if session::missing(&e) => Err(session::moved(conn, created).await),
            answered => answered.map_err(released),
        };
    }
    let text = sql::release_block(ids, shared, hold.token, hold.pid);
    let answer = async {
        let row = sqlx::raw_sql(AssertSqlSafe(text)).fetch_one(conn).await?;
        Ok::<_, sqlx::Error>((row.try_get::<String, _>(0)?, row.try_get(1)?))
    };
    let (missing, pid) = answer.await.map_err(released)?;
    Ok((missing.parse().ok(), pid))
}

/// Whether this session holds every id, granted, in this mode, according to
/// `pg_locks`; [`Error::SessionChanged`] when the connection now runs on
/// another session than the one with pid `took`, if given. 1 round trip.
pub(crate) async fn held(
    conn: &mut PgConnection,
    ids: &[LockId],
    shared: bool,
    took: Option<i32>,
) -> Result<bool, Error> {
    let mut rows: Vec<(u32, u32, i16)> = ids.iter().map(|id| id.pg_locks_row()).collect();
    rows.sort_unstable();
    rows.dedup();
    let answer = sqlx::query_as::<_, (i64, i32)>(sql::HELD_BY_SESSION)
        .bind(rows.iter().map(|r| i64::from(r.0)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| i64::from(r.1)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(sql::pg_locks_mode(shared))
        .fetch_one(&mut *conn)
        .await;
    let answer = match (answer, took) {
        (Err(e), Some(took)) if session::statements_mixed(&e) => {
            return Err(session::moved(conn, took).await);
        }
        (answer, _) => answer.map_err(Error::from_sqlx),
    };
    match (answer?, took) {
        ((_, now), Some(took)) if now != took => Err(Error::SessionChanged { took, now }),
        ((count, _), _) => Ok(count == rows.len() as i64),
    }
}

/// Queues the release of a held hold, for `Drop`.
pub(crate) fn release_on_drop(conn: &mut PgConnection, ids: &[LockId], shared: bool, token: i32) {
    if !ids.is_empty() {
        tracing::debug!(ids = ids.len(), "alock: release queued on the connection");
        pending::queue(conn, sql::release_recorded(ids, shared, token));
    }
}

/// A statement that may take or release a hold, whose answer has not been
/// read yet. Dropped armed (the caller's future was dropped, or the
/// statement failed as a whole), it queues the release of whatever the
/// token shows is held.
struct InFlight<'c, 'i> {
    conn: &'c mut PgConnection,
    ids: &'i [LockId],
    shared: bool,
    token: i32,
    armed: bool,
}

impl<'c, 'i> InFlight<'c, 'i> {
    fn new(conn: &'c mut PgConnection, ids: &'i [LockId], shared: bool, token: i32) -> Self {
        InFlight {
            conn,
            ids,
            shared,
            token,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// After a statement that failed as a whole, with its answer read: runs
    /// the release of whatever the token shows held now, instead of leaving
    /// it queued for the connection's next use, where a cancel or a
    /// `statement_timeout` that lands as it starts would fail it unseen.
    /// Failing, it is tried again, a few times, and then left queued.
    async fn settle(mut self) {
        if self.conn.is_in_transaction() {
            return;
        }
        for _ in 0..SETTLE_TRIES {
            let text = sql::release_recorded(self.ids, self.shared, self.token);
            match sqlx::raw_sql(AssertSqlSafe(text))
                .execute(&mut *self.conn)
                .await
                .map_err(Error::from_sqlx)
            {
                Ok(_) => return self.disarm(),
                Err(e) if e.is_connection_lost() => return,
                Err(_) => {}
            }
        }
    }
}

/// How many times [`InFlight::settle`] runs its release before it leaves
/// it queued.
const SETTLE_TRIES: usize = 3;

impl Drop for InFlight<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            release_on_drop(self.conn, self.ids, self.shared, self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(
            Outcome::parse("acquired"),
            Outcome::Acquired { waited: false }
        );
        assert_eq!(Outcome::parse("waited"), Outcome::Acquired { waited: true });
        assert_eq!(Outcome::parse("busy"), Outcome::Busy);
        assert_eq!(Outcome::parse("waiting"), Outcome::Waiting);
        assert_eq!(
            Outcome::parse("40P01 deadlock detected"),
            Outcome::Failed("40P01".into(), "deadlock detected".into())
        );
    }

    #[test]
    fn tokens_differ_from_call_to_call() {
        let tokens: std::collections::HashSet<i32> = (0..1000).map(|_| new_token()).collect();
        assert!(tokens.len() > 990);
    }

    #[test]
    fn waits_are_in_milliseconds_and_never_zero_when_bounded() {
        assert_eq!(Patience::None.wait_ms(), 0);
        assert_eq!(Patience::Forever.wait_ms(), -1);
        assert_eq!(Patience::For(Duration::from_micros(10)).wait_ms(), 1);
        assert_eq!(Patience::For(Duration::from_secs(2)).wait_ms(), 2000);
    }
}
