//! A seeded, model-based fault test of alock.
//!
//! [`run`] opens three sessions and an observer, and drives the sessions
//! through random operations chosen by a seeded generator: lock objects
//! (long-lived ones that own the connection and nest on each other across
//! steps, and short-lived ones nested on them within a step), guards,
//! scoped locks, transaction-level locks and `begin_locked_*`, under faults
//! (a future dropped at a random poll, a client timeout, a tiny
//! `statement_timeout`, a `pg_cancel_backend` while the call is in flight, a
//! terminated backend). Beside them it keeps a model: what each session must
//! hold, by the crate's promises. After every step (and inside steps, while
//! guards, objects and transactions are held) it compares the model with
//! `pg_locks`, restricted to the model's own keys, and fails with the seed,
//! the step and the last operations when they differ.
//!
//! The model follows the promises, never a guess: a call that returned an
//! error, was dropped or timed out leaves nothing; a release removes its
//! holds whatever it returns (but `InFailedTransaction`); a
//! transaction-level acquire that was dropped may or may not hold its ids
//! until the transaction ends, and the model allows either.
//!
//! The crate's records of a hold's ids, `(1634496355 + i, t)` (`DESIGN.md`),
//! are checked too: each session must hold records of exactly as many
//! tokens as it has live session-level holds. That catches a leaked extra
//! count of an id that `pg_locks`, one row per id and mode, would hide.
//! `ALOCK_MODEL_CHECK_TOKENS=0` turns it off.
//!
//! A seed fixes every choice the run makes; where the outcome of a call
//! depends on timing (whether a dropped call's answer had arrived, whether a
//! cancel landed), a rerun of the seed may take another path from there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alock::prelude::*;
use alock::{Error, ExclusiveLock, LockGuard, LockId, ShareLock};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use crate::{backend_pid, connect, unique_int8_keys, unique_keys};

/// How many sessions the model drives (besides the observer).
const SESSIONS: usize = 3;
/// The first key of every token (`DESIGN.md`), as `pg_locks.classid`.
const TOKEN_NAMESPACE: i64 = 1_634_496_355;
/// Rows whose first key is at most this far above [`TOKEN_NAMESPACE`] are
/// records of a hold's token (one per hold, or one per id of it): the
/// second key is the token.
const RECORDS: i64 = 1 << 16;
/// How long one step may take before the run fails as hung.
const STEP_LIMIT: Duration = Duration::from_secs(15);
/// Operations below this roll may run back to back on one session, the
/// second first on the connection after the first.
const CHAINABLE: usize = 91;
/// How many operations a failure report shows.
const LOG_TAIL: usize = 30;

/// Runs `steps` random operations from `seed` against the shared server, on
/// a runtime of its own; `Err` says what differed from the model, with the
/// seed, the step and the last operations.
///
/// # Errors
///
/// When the server and the model differ, or a call breaks a promise.
///
/// # Panics
///
/// When the runtime cannot be built, or is called inside one.
pub fn run(seed: u64, steps: usize) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the model")
        .block_on(run_async(seed, steps))
}

/// [`run`], on the caller's runtime.
///
/// # Errors
///
/// As for [`run`].
pub async fn run_async(seed: u64, steps: usize) -> Result<(), String> {
    let mut world = World::open(seed).await?;
    for step in 1..=steps {
        world.p.step = step;
        world.p.log.step = step;
        match tokio::time::timeout(STEP_LIMIT, world.step()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(world.p.report(&e)),
            Err(_) => {
                return Err(world
                    .p
                    .report(&format!("the step did not finish within {STEP_LIMIT:?}")));
            }
        }
    }
    match tokio::time::timeout(STEP_LIMIT, world.finish()).await {
        Ok(finished) => finished.map_err(|e| world.p.report(&e))?,
        Err(_) => {
            return Err(world.p.report(&format!(
                "the final releases did not finish within {STEP_LIMIT:?}"
            )));
        }
    }
    eprintln!(
        "model: seed {seed}: {steps} steps passed; {}",
        world.p.stats.summary(world.p.log.stale)
    );
    Ok(())
}

/// A seed from the clock, different on each call.
pub fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng(nanos ^ u64::from(std::process::id()).rotate_left(32));
    rng.0 ^= CALLS
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    rng.next() >> 1
}

/// The seed in `ALOCK_MODEL_SEED`, if set: to rerun one sequence.
///
/// # Panics
///
/// When the variable is set but is not a number.
pub fn seed_from_env() -> Option<u64> {
    let text = std::env::var("ALOCK_MODEL_SEED").ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("ALOCK_MODEL_SEED={text:?} is not a u64")),
    )
}

// ---------------------------------------------------------------------------
// The generator.

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True `pct` times in a hundred.
    fn pct(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    fn mode(&mut self) -> Mode {
        if self.pct(50) { Mode::Sh } else { Mode::Ex }
    }
}

// ---------------------------------------------------------------------------
// The model's vocabulary.

/// A lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Ex,
    Sh,
}

impl Mode {
    fn conflicts(self, other: Mode) -> bool {
        self == Mode::Ex || other == Mode::Ex
    }

    fn from_pg(mode: &str) -> Option<Mode> {
        match mode {
            "ExclusiveLock" => Some(Mode::Ex),
            "ShareLock" => Some(Mode::Sh),
            _ => None,
        }
    }
}

/// One of the model's keys (an index into its key set) in one mode.
type Hold = (usize, Mode);
/// Holds, counted.
type Holds = BTreeMap<Hold, u32>;

/// How an acquire waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// `acquire`, `lock_*`, `xact_lock_*`: until granted.
    Block,
    /// `try_*`: never.
    Try,
    /// `*_timeout`: at most this many milliseconds, on the server.
    Within(u64),
}

impl Take {
    fn duration(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

/// What happens to a call while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Awaited to its end.
    None,
    /// Polled `polls` times with a no-op waker (`gap_ms` apart), then
    /// dropped unless it finished.
    DropAt { polls: u8, gap_ms: u8 },
    /// Wrapped in `tokio::time::timeout` of this many milliseconds.
    Timeout(u64),
    /// `statement_timeout` of this many milliseconds set on the session
    /// before the call, reset after it.
    StmtTimeout(u64),
    /// `pg_cancel_backend` from the observer this many milliseconds after the
    /// call started, and every 50 ms after that until it ends.
    Cancel(u64),
}

impl Fault {
    /// Whether the call may end in an error (or be dropped) because of the
    /// fault.
    fn is_some(self) -> bool {
        self != Fault::None
    }

    /// Whether the fault ends a call that would wait forever.
    fn ends_a_wait(self) -> bool {
        !matches!(self, Fault::None)
    }
}

/// What a call under a fault came to.
enum Ran<T> {
    Done(T),
    Dropped,
}

/// A lock object or guard of the model: its ids, mode and count (a guard
/// counts 1).
#[derive(Debug, Clone)]
struct Obj {
    ids: Vec<usize>,
    mode: Mode,
    count: usize,
}

impl Obj {
    fn add_to(&self, holds: &mut Holds) {
        if self.count > 0 {
            for &id in &self.ids {
                *holds.entry((id, self.mode)).or_default() += 1;
            }
        }
    }
}

/// What a session holds through its long-lived lock objects (bottom first).
#[derive(Debug, Default)]
struct Model {
    layers: Vec<Obj>,
}

/// What a session holds through the current step's short-lived things.
#[derive(Debug, Default)]
struct Extra {
    /// Lock objects and guards of the step, in nesting order.
    objs: Vec<Obj>,
    /// Transaction-level holds that are certain.
    xact: Holds,
    /// Transaction-level holds that may or may not be there (a dropped
    /// acquire): until the transaction ends.
    maybe: BTreeSet<Hold>,
    /// Transaction-level holds of a savepoint inside the transaction (from
    /// `begin_locked_*` on it): merged into `xact` when it is released,
    /// gone when it is rolled back.
    savepoint: Holds,
}

impl Extra {
    /// The transaction failed: its holds stay until it ends if a savepoint
    /// failed (sqlx's rollback to a savepoint leaves it established), or
    /// went with it if the whole transaction failed.
    fn fail_xact(&mut self) {
        let holds: Vec<Hold> = self
            .xact
            .keys()
            .chain(self.savepoint.keys())
            .copied()
            .collect();
        self.maybe.extend(holds);
        self.xact.clear();
        self.savepoint.clear();
    }

    fn clear_xact(&mut self) {
        self.xact.clear();
        self.maybe.clear();
        self.savepoint.clear();
    }
}

// ---------------------------------------------------------------------------
// Lock objects of either mode, and the long-lived stack of them.

/// A lock object of either mode.
enum AnyLock<C: AsMut<PgConnection>> {
    Ex(ExclusiveLock<C>),
    Sh(ShareLock<C>),
}

macro_rules! each {
    ($lock:expr, $l:ident => $e:expr) => {
        match $lock {
            AnyLock::Ex($l) => $e,
            AnyLock::Sh($l) => $e,
        }
    };
}

impl<C: AsMut<PgConnection>> AnyLock<C> {
    fn new(conn: C, ids: Vec<LockId>, mode: Mode) -> Self {
        match mode {
            Mode::Ex => AnyLock::Ex(ExclusiveLock::new(conn, ids)),
            Mode::Sh => AnyLock::Sh(ShareLock::new(conn, ids)),
        }
    }

    async fn take(&mut self, take: Take) -> Result<bool, Error> {
        each!(self, l => match take {
            Take::Block => l.acquire().await.map(|()| true),
            Take::Try => l.try_acquire().await,
            Take::Within(ms) => l.acquire_timeout(Take::duration(ms)).await,
        })
    }

    async fn release(&mut self) -> Result<(), Error> {
        each!(self, l => l.release().await)
    }

    async fn held_on_server(&mut self) -> Result<bool, Error> {
        each!(self, l => l.held_on_server().await)
    }

    fn count(&self) -> usize {
        each!(self, l => l.count())
    }

    fn inner_mut(&mut self) -> &mut C {
        each!(self, l => l.get_mut())
    }

    fn into_inner(self) -> C {
        each!(self, l => l.into_inner())
    }
}

impl<C: AsMut<PgConnection>> AsMut<PgConnection> for AnyLock<C> {
    fn as_mut(&mut self) -> &mut PgConnection {
        each!(self, l => l.as_mut())
    }
}

/// One level of a session's stack: the connection, or a lock object that
/// owns the level below.
trait Layer: Send {
    fn conn(&mut self) -> &mut PgConnection;
    fn lock(&mut self) -> Option<&mut AnyLock<Node>>;
    fn into_below(self: Box<Self>) -> Option<Node>;
}

/// The top of a session's stack.
struct Node(Box<dyn Layer>);

impl AsMut<PgConnection> for Node {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.0.conn()
    }
}

impl Layer for PgConnection {
    fn conn(&mut self) -> &mut PgConnection {
        self
    }

    fn lock(&mut self) -> Option<&mut AnyLock<Node>> {
        None
    }

    fn into_below(self: Box<Self>) -> Option<Node> {
        None
    }
}

impl Layer for AnyLock<Node> {
    fn conn(&mut self) -> &mut PgConnection {
        self.as_mut()
    }

    fn lock(&mut self) -> Option<&mut AnyLock<Node>> {
        Some(self)
    }

    fn into_below(self: Box<Self>) -> Option<Node> {
        Some(self.into_inner())
    }
}

/// The lock object `from_top` levels below the top of `node`.
fn lock_at(node: &mut Node, from_top: usize) -> &mut AnyLock<Node> {
    let mut lock = node.0.lock().expect("BUG: the model's stack is deeper");
    for _ in 0..from_top {
        lock = lock
            .inner_mut()
            .0
            .lock()
            .expect("BUG: the model's stack is deeper");
    }
    lock
}

// ---------------------------------------------------------------------------
// The calls, by mode and patience.

async fn guard_take(
    conn: &mut PgConnection,
    ids: Vec<LockId>,
    mode: Mode,
    take: Take,
) -> Result<Option<LockGuard<&'_ mut PgConnection>>, Error> {
    match (mode, take) {
        (Mode::Ex, Take::Block) => conn.lock_exclusive(ids).await.map(Some),
        (Mode::Sh, Take::Block) => conn.lock_shared(ids).await.map(Some),
        (Mode::Ex, Take::Try) => conn.try_lock_exclusive(ids).await,
        (Mode::Sh, Take::Try) => conn.try_lock_shared(ids).await,
        (Mode::Ex, Take::Within(ms)) => conn.lock_exclusive_timeout(ids, Take::duration(ms)).await,
        (Mode::Sh, Take::Within(ms)) => conn.lock_shared_timeout(ids, Take::duration(ms)).await,
    }
}

async fn xact_take(
    conn: &mut PgConnection,
    ids: Vec<LockId>,
    mode: Mode,
    take: Take,
) -> Result<bool, Error> {
    match (mode, take) {
        (Mode::Ex, Take::Block) => conn.xact_lock_exclusive(ids).await.map(|()| true),
        (Mode::Sh, Take::Block) => conn.xact_lock_shared(ids).await.map(|()| true),
        (Mode::Ex, Take::Try) => conn.try_xact_lock_exclusive(ids).await,
        (Mode::Sh, Take::Try) => conn.try_xact_lock_shared(ids).await,
        (Mode::Ex, Take::Within(ms)) => {
            conn.xact_lock_exclusive_timeout(ids, Take::duration(ms))
                .await
        }
        (Mode::Sh, Take::Within(ms)) => {
            conn.xact_lock_shared_timeout(ids, Take::duration(ms)).await
        }
    }
}

async fn begin_locked(
    conn: &mut PgConnection,
    ids: Vec<LockId>,
    mode: Mode,
) -> Result<Transaction<'_, Postgres>, Error> {
    match mode {
        Mode::Ex => conn.begin_locked_exclusive(ids).await,
        Mode::Sh => conn.begin_locked_shared(ids).await,
    }
}

/// A granted advisory row of a session, as `(classid, objid, objsubid, mode)`.
type Row = (i64, i64, i16, String);

/// The session's own granted advisory rows, read through its connection.
const OWN_ROWS: &str = "SELECT classid::int8, objid::int8, objsubid, mode FROM pg_locks \
     WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()";

async fn scoped(conn: &mut PgConnection, ids: Vec<LockId>, mode: Mode) -> Result<Vec<Row>, Error> {
    let inside = async |conn: &mut PgConnection| -> Result<Vec<Row>, Error> {
        Ok(sqlx::query_as(OWN_ROWS).fetch_all(conn).await?)
    };
    match mode {
        Mode::Ex => conn.with_exclusive(ids, inside).await,
        Mode::Sh => conn.with_shared(ids, inside).await,
    }
}

// ---------------------------------------------------------------------------
// Faults.

/// Runs `call` under `fault` (but `StmtTimeout`, which [`arm`] sets).
async fn drive<T>(
    fault: Fault,
    call: impl Future<Output = T>,
    observer: &mut PgConnection,
    pid: i32,
) -> Result<Ran<T>, String> {
    match fault {
        Fault::None | Fault::StmtTimeout(_) => Ok(Ran::Done(call.await)),
        Fault::DropAt { polls, gap_ms } => {
            let mut call = pin!(call);
            let mut cx = Context::from_waker(Waker::noop());
            for i in 0..polls {
                if i > 0 {
                    if gap_ms == 0 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(u64::from(gap_ms))).await;
                    }
                }
                if let Poll::Ready(out) = call.as_mut().poll(&mut cx) {
                    return Ok(Ran::Done(out));
                }
            }
            Ok(Ran::Dropped)
        }
        Fault::Timeout(ms) => Ok(
            match tokio::time::timeout(Duration::from_millis(ms), call).await {
                Ok(out) => Ran::Done(out),
                Err(_) => Ran::Dropped,
            },
        ),
        Fault::Cancel(ms) => {
            let mut call = pin!(call);
            let mut wait = Duration::from_millis(ms);
            let out = loop {
                tokio::select! {
                    biased;
                    out = &mut call => break out,
                    () = tokio::time::sleep(wait) => {
                        sqlx::query("SELECT pg_cancel_backend($1)")
                            .bind(pid)
                            .execute(&mut *observer)
                            .await
                            .map_err(|e| format!("observer: pg_cancel_backend: {e}"))?;
                        wait = Duration::from_millis(50);
                    }
                }
            };
            // A cancel that arrives after the call is dropped by an idle
            // session; leave it the time to arrive before the next use.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(Ran::Done(out))
        }
    }
}

/// Splits what a call came to into the value it gave, if any, and the rest.
fn split<T>(ran: Ran<Result<T, Error>>) -> (Option<T>, Ran<Result<(), Error>>) {
    match ran {
        Ran::Done(Ok(value)) => (Some(value), Ran::Done(Ok(()))),
        Ran::Done(Err(e)) => (None, Ran::Done(Err(e))),
        Ran::Dropped => (None, Ran::Dropped),
    }
}

/// Sets the fault's `statement_timeout` on `conn`; with `stale_ok`, the
/// first try may meet a dropped call's error.
async fn arm(
    conn: &mut PgConnection,
    fault: Fault,
    stale_ok: bool,
    log: &mut Log,
) -> Result<(), String> {
    // A release queued from `Drop` is a statement like any: a cancel aimed
    // at the session as it starts fails it, and its ids stay with the
    // session (DESIGN.md, "What is left"). Cancels here are aimed at the
    // call itself, so what the connection carries runs first.
    if let Fault::Cancel(_) = fault
        && let Err(e) = select_one(conn).await
    {
        // A stale error, or a failed transaction the step goes on with.
        log.note(format!("before a cancel: {e}"));
    }
    let _ = stale_ok;
    if let Fault::StmtTimeout(ms) = fault {
        let set = format!("SET statement_timeout = {ms}");
        for attempt in 0..2 {
            match sqlx::query(sqlx::AssertSqlSafe(set.clone()))
                .execute(&mut *conn)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && stale_ok => {
                    log.stale += 1;
                    log.note(format!(
                        "stale error tolerated by SET statement_timeout: {e}"
                    ));
                }
                Err(e) => return Err(format!("SET statement_timeout: {e}")),
            }
        }
    }
    Ok(())
}

/// `begin()`, with a dropped call's error tolerated once when `stale_ok`.
async fn begin_tx<'c>(
    conn: &'c mut PgConnection,
    stale_ok: bool,
    log: &mut Log,
) -> Result<Transaction<'c, Postgres>, String> {
    if stale_ok {
        match select_one(&mut *conn).await {
            Ok(()) => {}
            Err(e) => {
                log.stale += 1;
                log.note(format!("stale error tolerated before begin: {e}"));
            }
        }
    }
    conn.begin().await.map_err(|e| format!("begin: {e}"))
}

/// What resetting `statement_timeout` met.
#[derive(Debug, PartialEq, Eq)]
enum Disarmed {
    /// Nothing to reset, or reset.
    Done,
    /// The transaction had failed before the reset.
    Failed,
    /// The reset itself was cancelled (by its own timeout); inside a
    /// transaction, that aborted it.
    OwnTimeout,
}

/// Resets the fault's `statement_timeout` with a fresh query; outside a
/// transaction, retries until it works.
async fn disarm(conn: &mut PgConnection, fault: Fault, log: &mut Log) -> Result<Disarmed, String> {
    if !matches!(fault, Fault::StmtTimeout(_)) {
        return Ok(Disarmed::Done);
    }
    let in_tx = conn.is_in_transaction();
    let mut last = Disarmed::Done;
    for _ in 0..6 {
        match sqlx::query("SET statement_timeout = 0")
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(last),
            Err(e) => {
                let code = sqlstate(&e);
                log.note(format!("reset statement_timeout: {code:?} {e}"));
                last = match code.as_deref() {
                    Some("25P02") => Disarmed::Failed,
                    Some("57014") => Disarmed::OwnTimeout,
                    _ => last,
                };
                if in_tx && last != Disarmed::Done {
                    // A rollback undoes the SET.
                    return Ok(last);
                }
            }
        }
    }
    Err("statement_timeout could not be reset in 6 tries".into())
}

/// Ends session `pid` and waits until its backend is gone.
async fn terminate(observer: &mut PgConnection, pid: i32) -> Result<(), String> {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut *observer)
        .await
        .map_err(|e| format!("observer: pg_terminate_backend: {e}"))?;
    if !done {
        return Err(format!("pg_terminate_backend({pid}) found no backend"));
    }
    crate::until_gone(observer, pid).await;
    Ok(())
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether an error is one the fault explains.
fn explained(e: &Error, fault: Fault) -> bool {
    matches!(e, Error::Canceled(_)) && matches!(fault, Fault::StmtTimeout(_) | Fault::Cancel(_))
}

/// Whether an error can be a dropped call's, met by the next use: an error
/// the server sent, not one the crate makes up.
fn can_be_stale(e: &Error) -> bool {
    matches!(
        e,
        Error::Database(_) | Error::Canceled(_) | Error::Server(_) | Error::LockTimeout(_)
    )
}

/// `SELECT 1` on `conn`; when `dirty` (a call on it was faulted since its
/// last use) one stale error is tolerated, and the next must answer.
async fn settle(
    conn: &mut PgConnection,
    dirty: bool,
    log: &mut Log,
    who: &str,
) -> Result<(), String> {
    match select_one(conn).await {
        Ok(()) => Ok(()),
        Err(e) if dirty => {
            log.stale += 1;
            log.note(format!("{who}: stale error tolerated: {e}"));
            select_one(conn).await.map_err(|e2| {
                format!("{who}: SELECT 1 failed twice after a faulted call: {e}; then {e2}")
            })
        }
        Err(e) => Err(format!(
            "{who}: SELECT 1 failed with no faulted call before it: {e}"
        )),
    }
}

async fn select_one(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(conn).await?;
    if one == 1 {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(format!("SELECT 1 answered {one}")))
    }
}

// ---------------------------------------------------------------------------
// What a run covered.

/// Counts of what a run did and met, printed when it passes.
#[derive(Default)]
struct Stats {
    ops: BTreeMap<&'static str, usize>,
    faults: BTreeMap<&'static str, usize>,
    dropped: usize,
    errors: BTreeMap<String, usize>,
    /// Releases that returned an error other than `NotHeld`, or were
    /// dropped after their first poll.
    releases_cut: usize,
    tx_failed_by_cancel: usize,
}

impl Stats {
    fn fault(&mut self, fault: Fault) {
        let name = match fault {
            Fault::None => return,
            Fault::DropAt { .. } => "drop",
            Fault::Timeout(_) => "client timeout",
            Fault::StmtTimeout(_) => "statement_timeout",
            Fault::Cancel(_) => "cancel",
        };
        *self.faults.entry(name).or_default() += 1;
    }

    fn outcome<T>(&mut self, ran: &Ran<Result<T, Error>>) {
        match ran {
            Ran::Dropped => self.dropped += 1,
            Ran::Done(Err(e)) => {
                let text = format!("{e:?}");
                let name = text
                    .split(['(', ' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                *self.errors.entry(name).or_default() += 1;
            }
            Ran::Done(Ok(_)) => {}
        }
    }

    fn summary(&self, stale: usize) -> String {
        let list = |m: &BTreeMap<&'static str, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let errors = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "ops: {}; faults: {}; dropped {}; errors: {errors}; releases cut short {}; \
             stale errors {stale}; transactions failed by a cancel {}",
            list(&self.ops),
            list(&self.faults),
            self.dropped,
            self.releases_cut,
            self.tx_failed_by_cancel
        )
    }
}

// ---------------------------------------------------------------------------
// The log.

/// Every operation of a run, one line each.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    step: usize,
    /// Stale errors tolerated.
    stale: usize,
}

impl Log {
    fn op(&mut self, s: usize, line: String) {
        self.lines.push(format!("#{} s{s}: {line}", self.step));
    }

    /// Appends to the last line.
    fn result(&mut self, text: impl std::fmt::Display) {
        if let Some(last) = self.lines.last_mut() {
            let _ = write!(last, " -> {text}");
        }
    }

    fn note(&mut self, line: String) {
        self.lines.push(format!("#{}     {line}", self.step));
    }
}

// ---------------------------------------------------------------------------
// The checks.

/// The observer and what it needs to read `pg_locks`.
struct Checker {
    observer: PgConnection,
    keys: Vec<LockId>,
    pids: [i32; SESSIONS],
}

/// A row of `pg_locks` for one of the model's sessions.
type LockRow = (i32, i64, i64, i16, String, bool);

impl Checker {
    fn key_index(&self, classid: i64, objid: i64, objsubid: i16) -> Option<usize> {
        self.keys.iter().position(|k| {
            let (c, o, s) = k.pg_locks_row();
            i64::from(c) == classid && i64::from(o) == objid && s == objsubid
        })
    }

    fn name(&self, hold: Hold) -> String {
        format!("{}:{:?}", key_name(hold.0), hold.1)
    }

    fn names<'h>(&self, holds: impl IntoIterator<Item = &'h Hold>) -> String {
        let names: Vec<String> = holds.into_iter().map(|h| self.name(*h)).collect();
        format!("{{{}}}", names.join(" "))
    }

    /// Compares `pg_locks` with the model.
    async fn check(
        &mut self,
        models: &[Model],
        extras: &[Extra],
        what: &str,
    ) -> Result<(), String> {
        self.check_with(models, extras, what, false).await
    }

    /// As [`check`](Self::check); with `idle`, also that no session is
    /// inside a transaction (between steps, none may be).
    async fn check_with(
        &mut self,
        models: &[Model],
        extras: &[Extra],
        what: &str,
        idle: bool,
    ) -> Result<(), String> {
        let rows: Vec<LockRow> = sqlx::query_as(
            "SELECT pid, classid::int8, objid::int8, objsubid, mode, granted FROM pg_locks
              WHERE locktype = 'advisory' AND pid = ANY($1)
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(self.pids.to_vec())
        .fetch_all(&mut self.observer)
        .await
        .map_err(|e| format!("observer: read pg_locks: {e}"))?;

        let mut problems = Vec::new();
        // Token rows are the crate's own: compared only on request, or shown
        // beside a failure.
        let mut notes = Vec::new();
        if idle {
            let states: Vec<(i32, Option<String>)> =
                sqlx::query_as("SELECT pid, state FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(self.pids.to_vec())
                    .fetch_all(&mut self.observer)
                    .await
                    .map_err(|e| format!("observer: read pg_stat_activity: {e}"))?;
            for (pid, state) in states {
                if state.as_deref() != Some("idle") {
                    let s = self.pids.iter().position(|&p| p == pid).unwrap_or(SESSIONS);
                    problems.push(format!(
                        "session s{s} (pid {pid}) is {state:?} between steps, not idle: \
                         a transaction was left open"
                    ));
                }
            }
        }
        let mut holders: BTreeMap<usize, Vec<(usize, Mode)>> = BTreeMap::new();
        for s in 0..SESSIONS {
            let pid = self.pids[s];
            let mut actual = BTreeSet::new();
            let mut waiting = Vec::new();
            let mut tokens = BTreeSet::new();
            for (_, classid, objid, objsubid, mode, granted) in rows.iter().filter(|r| r.0 == pid) {
                let Some(mode) = Mode::from_pg(mode) else {
                    continue;
                };
                if (TOKEN_NAMESPACE..TOKEN_NAMESPACE + RECORDS).contains(classid) && *objsubid == 2
                {
                    if *granted && mode == Mode::Sh {
                        tokens.insert(*objid);
                    }
                    continue;
                }
                let Some(key) = self.key_index(*classid, *objid, *objsubid) else {
                    continue;
                };
                if *granted {
                    actual.insert((key, mode));
                } else {
                    waiting.push((key, mode));
                }
            }
            for &(key, mode) in &actual {
                holders.entry(key).or_default().push((s, mode));
            }
            let mut holds = Holds::new();
            let mut want_tokens = 0;
            for obj in models[s].layers.iter().chain(&extras[s].objs) {
                obj.add_to(&mut holds);
                want_tokens += usize::from(obj.count > 0 && !obj.ids.is_empty());
            }
            for (hold, n) in extras[s].xact.iter().chain(&extras[s].savepoint) {
                *holds.entry(*hold).or_default() += n;
            }
            let certain: BTreeSet<Hold> = holds.keys().copied().collect();
            let allowed: BTreeSet<Hold> = certain.union(&extras[s].maybe).copied().collect();
            if !certain.is_subset(&actual) || !actual.is_subset(&allowed) {
                let mut text = format!(
                    "session s{s} (pid {pid}): the server holds {} but the model expects {}",
                    self.names(&actual),
                    self.names(&certain)
                );
                if !extras[s].maybe.is_empty() {
                    let _ = write!(text, " (and maybe {})", self.names(&extras[s].maybe));
                }
                let missing: BTreeSet<_> = certain.difference(&actual).copied().collect();
                let extra: BTreeSet<_> = actual.difference(&allowed).copied().collect();
                let _ = write!(
                    text,
                    "; missing {}, unexpected {}",
                    self.names(&missing),
                    self.names(&extra)
                );
                problems.push(text);
            }
            if !waiting.is_empty() {
                problems.push(format!(
                    "session s{s} (pid {pid}) is still waiting on the server for {}",
                    self.names(&waiting)
                ));
            }
            if tokens.len() != want_tokens {
                notes.push(format!(
                    "session s{s} (pid {pid}) holds records of {} tokens, but has \
                     {want_tokens} live session-level holds (a token leaked or went missing)",
                    tokens.len()
                ));
            }
        }
        // Beside a failure found on the model's keys, the token rows are
        // context.
        if check_tokens() || !problems.is_empty() {
            problems.append(&mut notes);
        }
        for (key, holding) in &holders {
            for (i, a) in holding.iter().enumerate() {
                for b in &holding[i + 1..] {
                    if a.0 != b.0 && a.1.conflicts(b.1) {
                        problems.push(format!(
                            "sessions s{} and s{} hold {} in conflicting modes {:?} and {:?}",
                            a.0,
                            b.0,
                            key_name(*key),
                            a.1,
                            b.1
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: {}", problems.join("; ")))
        }
    }
}

/// Whether to fail on the records' tokens too: one per live session-level
/// hold (`DESIGN.md`). On unless `ALOCK_MODEL_CHECK_TOKENS=0`.
fn check_tokens() -> bool {
    std::env::var_os("ALOCK_MODEL_CHECK_TOKENS").is_none_or(|v| v != "0")
}

fn key_name(key: usize) -> String {
    if key < 3 {
        format!("i{key}")
    } else {
        format!("p{}", key - 3)
    }
}

fn ids_name(ids: &[usize], mode: Mode) -> String {
    let names: Vec<String> = ids.iter().map(|&k| key_name(k)).collect();
    format!("[{}]:{mode:?}", names.join(","))
}

// ---------------------------------------------------------------------------
// The world.

/// Everything but the sessions' connections, so that a step can borrow a
/// connection and the rest at once.
struct Parts {
    seed: u64,
    step: usize,
    rng: Rng,
    chk: Checker,
    log: Log,
    stats: Stats,
    models: Vec<Model>,
    extras: Vec<Extra>,
    /// Sessions that ran a faulted call since their last query.
    dirty: [bool; SESSIONS],
    /// Whether to give new sessions their functions ahead of time.
    prepared: [bool; SESSIONS],
}

struct World {
    conns: Vec<Option<Node>>,
    p: Parts,
}

/// Opens a model session: `deadlock_timeout` of 100 ms (slices of 200 ms),
/// and the session's functions made ahead of time or not.
async fn open_session(prepare: bool) -> Result<(PgConnection, i32), String> {
    let mut conn = connect().await;
    // Superuser only; on a server of one's own without it, waits are sliced
    // at up to 900 ms.
    let _ = sqlx::query("SET deadlock_timeout = '100ms'")
        .execute(&mut conn)
        .await;
    if prepare {
        alock::prepare_session(&mut conn)
            .await
            .map_err(|e| format!("prepare_session: {e}"))?;
    }
    let pid = backend_pid(&mut conn).await;
    Ok((conn, pid))
}

impl World {
    async fn open(seed: u64) -> Result<World, String> {
        let mut rng = Rng(seed);
        let mut keys = unique_int8_keys(3);
        keys.extend(unique_keys(3));
        let mut conns = Vec::new();
        let mut pids = [0; SESSIONS];
        let mut prepared = [false; SESSIONS];
        for s in 0..SESSIONS {
            prepared[s] = rng.pct(50);
            let (conn, pid) = open_session(prepared[s]).await?;
            conns.push(Some(Node(Box::new(conn))));
            pids[s] = pid;
        }
        let observer = connect().await;
        let mut log = Log::default();
        log.note(format!(
            "seed {seed}; keys {keys:?}; pids {pids:?}; functions made ahead: {prepared:?}"
        ));
        Ok(World {
            conns,
            p: Parts {
                seed,
                step: 0,
                rng,
                chk: Checker {
                    observer,
                    keys,
                    pids,
                },
                log,
                stats: Stats::default(),
                models: (0..SESSIONS).map(|_| Model::default()).collect(),
                extras: (0..SESSIONS).map(|_| Extra::default()).collect(),
                dirty: [false; SESSIONS],
                prepared,
            },
        })
    }

    fn node(&mut self, s: usize) -> &mut Node {
        self.conns[s]
            .as_mut()
            .expect("BUG: a session without a connection")
    }

    async fn step(&mut self) -> Result<(), String> {
        let s = self.p.rng.below(SESSIONS);
        let roll = self.p.rng.below(100);
        self.run_op(s, roll).await?;
        if roll < CHAINABLE && self.p.rng.pct(30) {
            // No query in between: the next call carries whatever the last
            // one left queued, under its own fault.
            let roll = self.p.rng.below(CHAINABLE);
            self.p
                .log
                .note("chained: the next call goes first on the connection".into());
            self.run_op(s, roll).await?;
        }
        self.settle_all().await?;
        let Parts {
            chk,
            models,
            extras,
            ..
        } = &mut self.p;
        chk.check_with(models, extras, "after the step", true).await
    }

    async fn run_op(&mut self, s: usize, roll: usize) -> Result<(), String> {
        let name = match roll {
            0..=34 => "object",
            35..=47 => "nested objects",
            48..=62 => "guard",
            63..=67 => "with_*",
            68..=82 => "transaction",
            83..=90 => "begin_locked",
            91..=94 => "race",
            95..=96 => "failed raw transaction",
            _ => "terminate",
        };
        *self.p.stats.ops.entry(name).or_default() += 1;
        match roll {
            0..=34 => self.op_layer(s).await,
            35..=47 => {
                let node = self.conns[s].as_mut().expect("BUG: no connection");
                op_nest(&mut self.p, s, node).await
            }
            48..=62 => {
                let node = self.conns[s].as_mut().expect("BUG: no connection");
                op_guard(&mut self.p, s, node.as_mut(), true).await
            }
            63..=67 => {
                let node = self.conns[s].as_mut().expect("BUG: no connection");
                op_scoped(&mut self.p, s, node.as_mut()).await
            }
            68..=82 => {
                let node = self.conns[s].as_mut().expect("BUG: no connection");
                op_tx(&mut self.p, s, node.as_mut()).await
            }
            83..=90 => {
                let node = self.conns[s].as_mut().expect("BUG: no connection");
                op_begin_locked(&mut self.p, s, node.as_mut()).await
            }
            91..=94 => self.op_race(s).await,
            95..=96 => self.op_raw_failed_tx(s).await,
            _ => self.op_terminate(s).await,
        }
    }

    /// `SELECT 1` on every session: queued cleanups run, abandoned waits
    /// are over.
    async fn settle_all(&mut self) -> Result<(), String> {
        for s in 0..SESSIONS {
            let dirty = std::mem::take(&mut self.p.dirty[s]);
            let node = self.conns[s].as_mut().expect("BUG: no connection");
            settle(node.as_mut(), dirty, &mut self.p.log, &format!("s{s}")).await?;
        }
        Ok(())
    }

    /// Releases every long-lived hold and checks that nothing is left.
    async fn finish(&mut self) -> Result<(), String> {
        self.p.step += 1;
        self.p.log.step = self.p.step;
        for s in 0..SESSIONS {
            while let Some(obj) = self.p.models[s].layers.last().cloned() {
                let node = self.node(s);
                if obj.count > 0 {
                    let lock = lock_at(node, 0);
                    while lock.count() > 0 {
                        lock.release()
                            .await
                            .map_err(|e| format!("s{s}: final release: {e:?}"))?;
                    }
                }
                let node = self.conns[s].take().expect("BUG: no connection");
                self.conns[s] = Some(node.0.into_below().expect("BUG: popped the connection"));
                self.p.models[s].layers.pop();
            }
        }
        self.p.log.note("released every long-lived hold".into());
        self.settle_all().await?;
        let Parts {
            chk,
            models,
            extras,
            ..
        } = &mut self.p;
        chk.check_with(models, extras, "at the end", true).await
    }

    // -- Long-lived lock objects -------------------------------------------

    async fn op_layer(&mut self, s: usize) -> Result<(), String> {
        let depth = self.p.models[s].layers.len();
        let roll = self.p.rng.below(100);
        if depth == 0 || (depth < 3 && roll < 25) {
            // A new object on top, then an acquire of it.
            let fault = self.p.fault_for_acquire();
            let mode = self.p.rng.mode();
            let ids = self.p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
            let lock_ids = self.p.lock_ids(&ids);
            let node = self.conns[s].take().expect("BUG: no connection");
            self.conns[s] = Some(Node(Box::new(AnyLock::new(node, lock_ids, mode))));
            self.p.models[s].layers.push(Obj {
                ids: ids.clone(),
                mode,
                count: 0,
            });
            self.p.log.op(
                s,
                format!("push object {} (level {depth})", ids_name(&ids, mode)),
            );
            return self.layer_acquire(s, depth, Some(fault)).await;
        }
        let level = self.p.rng.below(depth);
        match roll {
            25..=59 => self.layer_acquire(s, level, None).await,
            60..=89 => {
                // Mostly held levels; sometimes one that is not (NotHeld).
                let held: Vec<usize> = (0..depth)
                    .filter(|&l| self.p.models[s].layers[l].count > 0)
                    .collect();
                let level = if !held.is_empty() && self.p.rng.pct(90) {
                    held[self.p.rng.below(held.len())]
                } else {
                    level
                };
                self.layer_release(s, level).await
            }
            90..=96 => {
                // Pop the top object: dropped with its holds, if any.
                let obj = self.p.models[s].layers.pop().expect("BUG: depth > 0");
                self.p.log.op(
                    s,
                    format!(
                        "pop object {} (level {}, count {}) with into_inner",
                        ids_name(&obj.ids, obj.mode),
                        depth - 1,
                        obj.count
                    ),
                );
                let node = self.conns[s].take().expect("BUG: no connection");
                let below = node.0.into_below().expect("BUG: popped the connection");
                self.conns[s] = Some(below);
                if obj.count > 0 {
                    // The queued release runs before the next use.
                    self.p.dirty[s] = true;
                }
                Ok(())
            }
            _ => {
                let obj = self.p.models[s].layers[level].clone();
                // The server answers for the session: every id in the mode.
                let mut holds = Holds::new();
                for o in &self.p.models[s].layers {
                    o.add_to(&mut holds);
                }
                let want = obj.ids.iter().all(|&k| holds.contains_key(&(k, obj.mode)));
                self.p.log.op(
                    s,
                    format!(
                        "held_on_server of level {level} {}",
                        ids_name(&obj.ids, obj.mode)
                    ),
                );
                let node = self.conns[s].as_mut().expect("BUG: no connection");
                let lock = lock_at(node, depth - 1 - level);
                let mut got = lock.held_on_server().await;
                if got.is_err() && std::mem::take(&mut self.p.dirty[s]) {
                    self.p.log.result(format!("{got:?} (stale, tolerated)"));
                    self.p.log.stale += 1;
                    got = lock.held_on_server().await;
                }
                self.p.log.result(format!("{got:?}"));
                match got {
                    Ok(got) if got == want => Ok(()),
                    other => Err(format!("held_on_server: {other:?}, the model says {want}")),
                }
            }
        }
    }

    async fn layer_acquire(
        &mut self,
        s: usize,
        level: usize,
        fault: Option<Fault>,
    ) -> Result<(), String> {
        let depth = self.p.models[s].layers.len();
        let obj = self.p.models[s].layers[level].clone();
        let busy = self.p.busy(s, &obj.ids, obj.mode);
        let fault = fault.unwrap_or_else(|| self.p.fault_for_acquire());
        let take = self.p.take_for(busy && obj.count == 0, fault);
        self.p.log.op(
            s,
            format!(
                "level {level} {} (count {}) acquire {take:?} under {fault:?}{}",
                ids_name(&obj.ids, obj.mode),
                obj.count,
                if busy { " [busy]" } else { "" }
            ),
        );
        let node = self.conns[s].as_mut().expect("BUG: no connection");
        let lock = lock_at(node, depth - 1 - level);
        let count = obj_take(&mut self.p, s, lock, &obj, busy, take, fault).await?;
        self.p.models[s].layers[level].count = count;
        Ok(())
    }

    async fn layer_release(&mut self, s: usize, level: usize) -> Result<(), String> {
        let depth = self.p.models[s].layers.len();
        let obj = self.p.models[s].layers[level].clone();
        let fault = self.p.fault_for_release();
        self.p.log.op(
            s,
            format!(
                "level {level} {} (count {}) release under {fault:?}",
                ids_name(&obj.ids, obj.mode),
                obj.count
            ),
        );
        let node = self.conns[s].as_mut().expect("BUG: no connection");
        let lock = lock_at(node, depth - 1 - level);
        let count = obj_release(&mut self.p, s, lock, &obj, fault, false).await?;
        self.p.models[s].layers[level].count = count;
        Ok(())
    }

    // -- Two sessions at once ----------------------------------------------

    /// Two sessions take guards at the same time, with server-side timeouts
    /// long enough for the deadlock detector: the model follows what each
    /// call returns.
    async fn op_race(&mut self, a: usize) -> Result<(), String> {
        let b = (a + 1 + self.p.rng.below(SESSIONS - 1)) % SESSIONS;
        let (ma, mb) = (self.p.rng.mode(), self.p.rng.mode());
        let mut ids_a = self.p.pick_ids(a, ma, true);
        let mut ids_b = self.p.pick_ids(b, mb, true);
        if self.p.rng.pct(60) {
            // Each wants what the other holds: a deadlock when both do.
            self.p.aim(&mut ids_a, ma, b);
            self.p.aim(&mut ids_b, mb, a);
        }
        let (wa, wb) = (self.p.rng.range(50, 400), self.p.rng.range(50, 400));
        self.p.log.op(
            a,
            format!(
                "race: s{a} {} within {wa} ms, s{b} {} within {wb} ms",
                ids_name(&ids_a, ma),
                ids_name(&ids_b, mb)
            ),
        );
        let (la, lb) = (self.p.lock_ids(&ids_a), self.p.lock_ids(&ids_b));
        let (first, second) = self.conns.split_at_mut(a.max(b));
        let (ca, cb) = if a < b {
            (&mut first[a], &mut second[0])
        } else {
            (&mut second[0], &mut first[b])
        };
        let ca = ca.as_mut().expect("BUG: no connection").as_mut();
        let cb = cb.as_mut().expect("BUG: no connection").as_mut();
        let (ra, rb) = tokio::join!(
            guard_take(ca, la, ma, Take::Within(wa)),
            guard_take(cb, lb, mb, Take::Within(wb))
        );
        let describe = |r: &Result<Option<LockGuard<&'_ mut PgConnection>>, Error>| match r {
            Ok(Some(_)) => "acquired".to_owned(),
            Ok(None) => "timed out".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        self.p
            .log
            .result(format!("s{a} {}, s{b} {}", describe(&ra), describe(&rb)));
        for r in [&ra, &rb] {
            let outcome = match r {
                Ok(Some(_)) => "race: acquired",
                Ok(None) => "race: timed out",
                Err(Error::Deadlock(_)) => "race: deadlock",
                Err(_) => "race: other error",
            };
            *self.p.stats.ops.entry(outcome).or_default() += 1;
        }
        for (s, r) in [(a, &ra), (b, &rb)] {
            if let Err(e) = r
                && !matches!(e, Error::Deadlock(_))
            {
                return Err(format!("race: s{s} failed with {e:?}"));
            }
        }
        let mut guards = Vec::new();
        for (s, r, ids, mode) in [(a, ra, ids_a, ma), (b, rb, ids_b, mb)] {
            if let Ok(Some(g)) = r {
                self.p.extras[s].objs.push(Obj {
                    ids,
                    mode,
                    count: 1,
                });
                guards.push((s, g));
            }
        }
        for (s, g) in &mut guards {
            settle(g, false, &mut self.p.log, &format!("s{s}")).await?;
        }
        {
            let Parts {
                chk,
                models,
                extras,
                ..
            } = &mut self.p;
            chk.check(models, extras, "race: while both calls' guards live")
                .await?;
        }
        for (s, g) in guards {
            if self.p.rng.pct(50) {
                let r = g.release().await;
                if let Err(e) = r {
                    return Err(format!("race: s{s} guard release: {e:?}"));
                }
            } else {
                drop(g);
                self.p.dirty[s] = true;
            }
            self.p.extras[s].objs.pop();
        }
        Ok(())
    }

    // -- A failed transaction begun by hand --------------------------------

    /// `BEGIN` by hand, a failing statement, then a release of a held level:
    /// `InFailedTransaction`, and the object stays held.
    async fn op_raw_failed_tx(&mut self, s: usize) -> Result<(), String> {
        let Some(level) = (0..self.p.models[s].layers.len())
            .rev()
            .find(|&l| self.p.models[s].layers[l].count > 0)
        else {
            return self.op_layer(s).await;
        };
        let depth = self.p.models[s].layers.len();
        let obj = self.p.models[s].layers[level].clone();
        self.p.log.op(
            s,
            format!(
                "raw BEGIN; SELECT 1/0; release level {level} {} (count {}); ROLLBACK",
                ids_name(&obj.ids, obj.mode),
                obj.count
            ),
        );
        let node = self.conns[s].as_mut().expect("BUG: no connection");
        if std::mem::take(&mut self.p.dirty[s])
            && let Err(e) = select_one(node.as_mut()).await
        {
            self.p.log.stale += 1;
            self.p.log.note(format!("stale error tolerated: {e}"));
        }
        sqlx::raw_sql("BEGIN")
            .execute(node.as_mut())
            .await
            .map_err(|e| format!("raw BEGIN: {e}"))?;
        if sqlx::raw_sql("SELECT 1/0")
            .execute(node.as_mut())
            .await
            .is_ok()
        {
            return Err("SELECT 1/0 succeeded".into());
        }
        let lock = lock_at(node, depth - 1 - level);
        let count = obj_release(&mut self.p, s, lock, &obj, Fault::None, true).await?;
        self.p.models[s].layers[level].count = count;
        let node = self.conns[s].as_mut().expect("BUG: no connection");
        sqlx::raw_sql("ROLLBACK")
            .execute(node.as_mut())
            .await
            .map_err(|e| format!("raw ROLLBACK: {e}"))?;
        Ok(())
    }

    // -- A terminated backend ----------------------------------------------

    async fn op_terminate(&mut self, s: usize) -> Result<(), String> {
        let pid = self.p.chk.pids[s];
        if self.p.rng.pct(50) {
            // While a guard's acquire is in flight: it must end with the
            // guard or a typed ConnectionLost.
            let mode = self.p.rng.mode();
            let ids = self.p.pick_ids(s, mode, true);
            let busy = self.p.busy(s, &ids, mode);
            let take = if busy && self.p.rng.pct(50) {
                Take::Block
            } else {
                Take::Within(self.p.rng.range(1, 300))
            };
            let after = self.p.rng.range(0, 5);
            self.p.log.op(
                s,
                format!(
                    "guard {} {take:?}{} and pg_terminate_backend({pid}) after {after} ms",
                    ids_name(&ids, mode),
                    if busy { " [busy]" } else { "" }
                ),
            );
            let lock_ids = self.p.lock_ids(&ids);
            let node = self.conns[s].as_mut().expect("BUG: no connection");
            let observer = &mut self.p.chk.observer;
            let (taken, killed) =
                tokio::join!(guard_take(node.as_mut(), lock_ids, mode, take), async {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    terminate(observer, pid).await
                });
            let text = match &taken {
                Ok(Some(_)) => "Ok(Some(guard))".to_owned(),
                Ok(None) => "Ok(None)".to_owned(),
                Err(e) => format!("Err({e:?})"),
            };
            let typed = match &taken {
                Ok(Some(_)) => !busy,
                Ok(None) => busy && take != Take::Block,
                Err(e) => matches!(e, Error::ConnectionLost(_)),
            };
            drop(taken);
            self.p.log.result(&text);
            killed?;
            if !typed {
                return Err(format!(
                    "an acquire cut short by pg_terminate_backend answered {text}"
                ));
            }
        } else {
            self.p.log.op(s, format!("pg_terminate_backend({pid})"));
            terminate(&mut self.p.chk.observer, pid).await?;
        }
        // The session's locks went with it.
        for obj in &mut self.p.models[s].layers {
            obj.count = 0;
        }
        // One call on the dead connection: a typed ConnectionLost.
        let depth = self.p.models[s].layers.len();
        let node = self.conns[s].as_mut().expect("BUG: no connection");
        match self.p.rng.below(3) {
            0 if depth > 0 => {
                let lock = lock_at(node, 0);
                let held = lock.count();
                let r = lock.release().await;
                self.p
                    .log
                    .note(format!("release of the top object (count {held}): {r:?}"));
                match (held, &r) {
                    (0, Err(Error::NotHeld)) | (2.., Ok(())) => {}
                    (1, Err(Error::ConnectionLost(_))) => {}
                    _ => return Err(format!("release on a terminated session: {r:?}")),
                }
            }
            1 if depth > 0 => {
                let lock = lock_at(node, 0);
                let r = lock.held_on_server().await;
                self.p.log.note(format!("held_on_server: {r:?}"));
                if !matches!(r, Ok(false)) || lock.count() != 0 {
                    return Err(format!(
                        "held_on_server on a terminated session: {r:?}, count {}",
                        lock.count()
                    ));
                }
            }
            _ => {
                let ids = self.p.pick_ids(s, Mode::Sh, false);
                let lock_ids = self.p.lock_ids(&ids);
                let r = node.as_mut().try_lock_shared(lock_ids).await;
                let ok = matches!(r, Err(Error::ConnectionLost(_)));
                self.p.log.note(format!(
                    "try_lock_shared {}: {:?}",
                    ids_name(&ids, Mode::Sh),
                    r.as_ref().map(Option::is_some)
                ));
                if !ok {
                    return Err(format!(
                        "try_lock_shared on a terminated session: {:?}",
                        r.map(|g| g.is_some())
                    ));
                }
            }
        }
        // A new session in its place, with no objects.
        self.conns[s] = None;
        self.p.models[s].layers.clear();
        self.p.prepared[s] = self.p.rng.pct(50);
        let (conn, pid) = open_session(self.p.prepared[s]).await?;
        self.conns[s] = Some(Node(Box::new(conn)));
        self.p.chk.pids[s] = pid;
        self.p.dirty[s] = false;
        self.p.log.note(format!(
            "reconnected as pid {pid}; functions made ahead: {}",
            self.p.prepared[s]
        ));
        Ok(())
    }
}

impl Parts {
    fn report(&self, error: &str) -> String {
        let from = self.log.lines.len().saturating_sub(LOG_TAIL);
        let mut text = format!(
            "model failure: seed {} step {}: {error}\nlast operations:\n",
            self.seed, self.step
        );
        for line in &self.log.lines[from..] {
            let _ = writeln!(text, "  {line}");
        }
        let _ = write!(
            text,
            "rerun: ALOCK_MODEL_SEED={} cargo test --test it model::",
            self.seed
        );
        text
    }

    fn lock_ids(&self, ids: &[usize]) -> Vec<LockId> {
        ids.iter().map(|&k| self.chk.keys[k]).collect()
    }

    /// Every hold of session `o`, by the model (certain ones).
    fn holds_of(&self, o: usize) -> Holds {
        let mut holds = Holds::new();
        for obj in self.models[o].layers.iter().chain(&self.extras[o].objs) {
            obj.add_to(&mut holds);
        }
        for (h, n) in self.extras[o].xact.iter().chain(&self.extras[o].savepoint) {
            *holds.entry(*h).or_default() += n;
        }
        for h in &self.extras[o].maybe {
            *holds.entry(*h).or_default() += 1;
        }
        holds
    }

    /// Whether another session holds one of `ids` in a mode that conflicts.
    fn busy(&self, s: usize, ids: &[usize], mode: Mode) -> bool {
        (0..SESSIONS).filter(|&o| o != s).any(|o| {
            self.holds_of(o)
                .keys()
                .any(|&(k, m)| ids.contains(&k) && mode.conflicts(m))
        })
    }

    /// 1..=4 ids, duplicates allowed, both forms; with `want_busy`, one of
    /// them busy for `mode` if some key is.
    fn pick_ids(&mut self, s: usize, mode: Mode, want_busy: bool) -> Vec<usize> {
        let n = 1 + self.rng.below(4);
        let mut ids: Vec<usize> = (0..n)
            .map(|_| self.rng.below(self.chk.keys.len()))
            .collect();
        if want_busy {
            let busy: Vec<usize> = (0..self.chk.keys.len())
                .filter(|&k| self.busy(s, &[k], mode))
                .collect();
            if !busy.is_empty() {
                let at = self.rng.below(n);
                ids[at] = busy[self.rng.below(busy.len())];
            }
        }
        ids
    }

    /// Puts into `ids` one key that session `holder` holds in a mode that
    /// conflicts with `mode`, if there is one.
    fn aim(&mut self, ids: &mut [usize], mode: Mode, holder: usize) {
        let held: Vec<usize> = self
            .holds_of(holder)
            .keys()
            .filter(|&&(_, m)| mode.conflicts(m))
            .map(|&(k, _)| k)
            .collect();
        if !held.is_empty() {
            let at = self.rng.below(ids.len());
            ids[at] = held[self.rng.below(held.len())];
        }
    }

    fn fault_for_acquire(&mut self) -> Fault {
        let fault = self.pick_acquire_fault();
        self.stats.fault(fault);
        fault
    }

    fn fault_for_release(&mut self) -> Fault {
        let fault = self.pick_release_fault();
        self.stats.fault(fault);
        fault
    }

    fn pick_acquire_fault(&mut self) -> Fault {
        match self.rng.below(100) {
            0..=39 => Fault::None,
            40..=59 => Fault::DropAt {
                polls: self.rng.range(0, 3) as u8,
                gap_ms: self.rng.range(0, 2) as u8,
            },
            60..=69 => Fault::Timeout(self.rng.range(1, 19)),
            70..=84 => Fault::StmtTimeout(self.rng.range(1, 5)),
            _ => Fault::Cancel(if self.rng.pct(50) {
                0
            } else {
                self.rng.range(1, 4)
            }),
        }
    }

    fn pick_release_fault(&mut self) -> Fault {
        match self.rng.below(100) {
            0..=49 => Fault::None,
            50..=69 => Fault::DropAt {
                polls: self.rng.range(0, 3) as u8,
                gap_ms: self.rng.range(0, 2) as u8,
            },
            70..=74 => Fault::Timeout(self.rng.range(1, 19)),
            75..=84 => Fault::StmtTimeout(self.rng.range(1, 3)),
            // A release is short: a cancel sent at once may land inside it.
            _ => Fault::Cancel(u64::from(!self.rng.pct(70))),
        }
    }

    /// How to wait: never forever on busy ids unless the fault ends it.
    fn take_for(&mut self, busy: bool, fault: Fault) -> Take {
        let take = match self.rng.below(100) {
            0..=34 => Take::Block,
            35..=69 => Take::Try,
            _ => Take::Within(self.rng.range(1, 8)),
        };
        if take == Take::Block && busy && !fault.ends_a_wait() {
            if self.rng.pct(50) {
                Take::Try
            } else {
                Take::Within(self.rng.range(1, 8))
            }
        } else {
            take
        }
    }

    async fn check_now(&mut self, what: &str) -> Result<(), String> {
        self.chk.check(&self.models, &self.extras, what).await
    }

    /// `SELECT 1` on session `s` (through `conn`), then the check.
    async fn settle_now(
        &mut self,
        s: usize,
        conn: &mut PgConnection,
        what: &str,
    ) -> Result<(), String> {
        let dirty = std::mem::take(&mut self.dirty[s]);
        settle(conn, dirty, &mut self.log, &format!("s{s}")).await?;
        self.check_now(what).await
    }

    /// After a call that may leave work queued on `conn`: half the time
    /// [`settle_now`](Self::settle_now); otherwise the queued work is left
    /// for the next call to carry, under its own fault, and the step's end
    /// checks.
    async fn maybe_settle(
        &mut self,
        s: usize,
        conn: &mut PgConnection,
        what: &str,
    ) -> Result<(), String> {
        if self.rng.pct(50) {
            Ok(())
        } else {
            self.settle_now(s, conn, what).await
        }
    }
}

// ---------------------------------------------------------------------------
// Calls on lock objects, judged against the model.

/// Acquires `lock` (modelled by `obj`) under `fault`; returns its count
/// afterwards, by the model, after checking the call against it.
async fn obj_take<C: AsMut<PgConnection>>(
    p: &mut Parts,
    s: usize,
    lock: &mut AnyLock<C>,
    obj: &Obj,
    busy: bool,
    take: Take,
    fault: Fault,
) -> Result<usize, String> {
    if lock.count() != obj.count {
        return Err(format!(
            "the object's count is {}, the model's {}",
            lock.count(),
            obj.count
        ));
    }
    let stale_ok = p.dirty[s];
    arm(lock.as_mut(), fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(fault, lock.take(take), &mut p.chk.observer, pid).await?;
    p.stats.outcome(&ran);
    let disarmed = disarm(lock.as_mut(), fault, &mut p.log).await?;
    let _ = disarmed;
    p.dirty[s] |= fault.is_some();
    let count = match &ran {
        Ran::Dropped => {
            p.log.result("dropped");
            obj.count
        }
        Ran::Done(r) => {
            p.log.result(format!("{r:?}"));
            if obj.count > 0 {
                // Re-entrant: counts, whatever the session.
                match r {
                    Ok(true) => obj.count + 1,
                    other => return Err(format!("a re-entrant acquire returned {other:?}")),
                }
            } else {
                judge_take(r.as_ref().copied(), busy, take, fault, false, stale_ok)?;
                usize::from(matches!(r, Ok(true)))
            }
        }
    };
    if lock.count() != count {
        return Err(format!(
            "after the acquire the object's count is {}, the model's {count}",
            lock.count()
        ));
    }
    Ok(count)
}

/// Checks an acquire's answer against the prediction.
fn judge_take(
    r: Result<bool, &Error>,
    busy: bool,
    take: Take,
    fault: Fault,
    failed_tx: bool,
    stale_ok: bool,
) -> Result<(), String> {
    match r {
        Ok(_) if failed_tx => Err("an acquire succeeded in a failed transaction".into()),
        Ok(true) if busy => {
            Err("granted although another session holds a conflicting lock on an id".into())
        }
        Ok(true) => Ok(()),
        Ok(false) if take == Take::Block => Err("a blocking acquire answered false".into()),
        Ok(false) if !busy => Err("not acquired although every id was free for it".into()),
        Ok(false) => Ok(()),
        Err(Error::InFailedTransaction(_)) if failed_tx => Ok(()),
        Err(e) if explained(e, fault) => Ok(()),
        // The first use after a dropped call may meet that call's error.
        Err(e) if stale_ok && can_be_stale(e) => Ok(()),
        Err(e) => Err(format!("unexpected error {e:?} under {fault:?}")),
    }
}

/// Releases `lock` (modelled by `obj`) under `fault`; returns its count
/// afterwards, by the promise. `failed_tx`: in a failed transaction begun
/// by hand, where a last release must be refused and keep the object held.
async fn obj_release<C: AsMut<PgConnection>>(
    p: &mut Parts,
    s: usize,
    lock: &mut AnyLock<C>,
    obj: &Obj,
    fault: Fault,
    failed_tx: bool,
) -> Result<usize, String> {
    if lock.count() != obj.count {
        return Err(format!(
            "the object's count is {}, the model's {}",
            lock.count(),
            obj.count
        ));
    }
    let stale_ok = p.dirty[s];
    arm(lock.as_mut(), fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(fault, lock.release(), &mut p.chk.observer, pid).await?;
    p.stats.outcome(&ran);
    let cut = match &ran {
        Ran::Dropped => obj.count == 1 && !matches!(fault, Fault::DropAt { polls: 0, .. }),
        Ran::Done(r) => obj.count == 1 && r.is_err(),
    };
    p.stats.releases_cut += usize::from(cut);
    disarm(lock.as_mut(), fault, &mut p.log).await?;
    p.dirty[s] |= fault.is_some();
    let count = match ran {
        Ran::Dropped => {
            p.log.result("dropped");
            // Released once first polled; never polled, nothing happened.
            if obj.count == 0 || matches!(fault, Fault::DropAt { polls: 0, .. }) {
                obj.count
            } else {
                obj.count - 1
            }
        }
        Ran::Done(r) => {
            p.log.result(format!("{r:?}"));
            match (obj.count, r) {
                (0, Err(Error::NotHeld)) => 0,
                (0, other) => return Err(format!("release of an object not held: {other:?}")),
                (2.., Ok(())) => obj.count - 1,
                (1, Ok(())) if !failed_tx => 0,
                (1, Err(Error::InFailedTransaction(_))) if failed_tx => 1,
                (1, Err(e))
                    if !failed_tx && (explained(&e, fault) || (stale_ok && can_be_stale(&e))) =>
                {
                    0
                }
                (n, other) => {
                    return Err(format!(
                        "release at count {n} returned {other:?} under {fault:?}"
                    ));
                }
            }
        }
    };
    if lock.count() != count {
        return Err(format!(
            "after the release the object's count is {}, the model's {count}",
            lock.count()
        ));
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// Short-lived nested objects.

/// One or two objects nested on the session's stack for this step, then an
/// inner call under a fault on the innermost (a nested object or a guard),
/// checks, and the objects released or dropped in turn.
async fn op_nest(p: &mut Parts, s: usize, node: &mut Node) -> Result<(), String> {
    let m1 = p.rng.mode();
    let ids1 = p.pick_ids(s, m1, false);
    p.log.op(s, format!("nest: object {}", ids_name(&ids1, m1)));
    let mut t1 = AnyLock::new(&mut *node, p.lock_ids(&ids1), m1);
    outer_acquire(p, s, &mut t1, ids1, m1).await?;
    if p.rng.pct(50) {
        let m2 = p.rng.mode();
        let ids2 = p.pick_ids(s, m2, false);
        p.log
            .op(s, format!("nest: object {} inside", ids_name(&ids2, m2)));
        let mut t2 = AnyLock::new(&mut t1, p.lock_ids(&ids2), m2);
        outer_acquire(p, s, &mut t2, ids2, m2).await?;
        nest_inner(p, s, &mut t2).await?;
        end_transient(p, s, t2, "inner object").await?;
    } else {
        nest_inner(p, s, &mut t1).await?;
    }
    end_transient(p, s, t1, "outer object").await
}

/// Acquires a short-lived outer object without a fault: a try, or a
/// blocking acquire when its ids are free. The object joins the step's.
async fn outer_acquire<C: AsMut<PgConnection>>(
    p: &mut Parts,
    s: usize,
    lock: &mut AnyLock<C>,
    ids: Vec<usize>,
    mode: Mode,
) -> Result<(), String> {
    let busy = p.busy(s, &ids, mode);
    let take = if busy || p.rng.pct(30) {
        Take::Try
    } else {
        Take::Block
    };
    let mut obj = Obj {
        ids,
        mode,
        count: 0,
    };
    p.extras[s].objs.push(obj.clone());
    p.log.op(
        s,
        format!("  acquire {take:?}{}", if busy { " [busy]" } else { "" }),
    );
    obj.count = obj_take(p, s, lock, &obj, busy, take, Fault::None).await?;
    p.extras[s].objs.last_mut().expect("BUG: pushed").count = obj.count;
    if obj.count > 0 && p.rng.pct(25) {
        p.log.op(s, "  acquire again (re-entrant)".into());
        obj.count = obj_take(p, s, lock, &obj, busy, take, Fault::None).await?;
        p.extras[s].objs.last_mut().expect("BUG: pushed").count = obj.count;
    }
    p.settle_now(s, lock.as_mut(), "nest: after the outer acquire")
        .await
}

/// The inner call: a nested object acquired (maybe again) and released or
/// dropped under faults, or a guard on the outer object's connection.
async fn nest_inner<C: AsMut<PgConnection>>(
    p: &mut Parts,
    s: usize,
    outer: &mut AnyLock<C>,
) -> Result<(), String> {
    if p.rng.pct(30) {
        return op_guard(p, s, outer.as_mut(), false).await;
    }
    let fault = p.fault_for_acquire();
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
    let busy = p.busy(s, &ids, mode);
    let take = p.take_for(busy, fault);
    p.log.op(
        s,
        format!(
            "nest: inner object {} acquire {take:?} under {fault:?}{}",
            ids_name(&ids, mode),
            if busy { " [busy]" } else { "" }
        ),
    );
    let mut t3 = AnyLock::new(&mut *outer, p.lock_ids(&ids), mode);
    let mut obj = Obj {
        ids,
        mode,
        count: 0,
    };
    obj.count = obj_take(p, s, &mut t3, &obj, busy, take, fault).await?;
    p.extras[s].objs.push(obj.clone());
    p.maybe_settle(s, t3.as_mut(), "nest: after the inner call")
        .await?;
    if obj.count > 0 && p.rng.pct(60) {
        let fault = p.fault_for_release();
        p.log
            .op(s, format!("nest: inner object release under {fault:?}"));
        let count = obj_release(p, s, &mut t3, &obj, fault, false).await?;
        obj.count = count;
        p.extras[s].objs.last_mut().expect("BUG: pushed").count = count;
        p.maybe_settle(s, t3.as_mut(), "nest: after the inner release")
            .await?;
    }
    end_transient(p, s, t3, "innermost object").await
}

/// Releases (until not held) or drops a short-lived object, the last of the
/// step's, and checks.
async fn end_transient<C: AsMut<PgConnection>>(
    p: &mut Parts,
    s: usize,
    mut lock: AnyLock<C>,
    what: &str,
) -> Result<(), String> {
    let mut obj = p.extras[s].objs.last().cloned().expect("BUG: pushed");
    if obj.count > 0 && p.rng.pct(50) {
        while obj.count > 0 {
            let fault = p.fault_for_release();
            p.log.op(
                s,
                format!(
                    "{what} {} (count {}) release under {fault:?}",
                    ids_name(&obj.ids, obj.mode),
                    obj.count
                ),
            );
            obj.count = obj_release(p, s, &mut lock, &obj, fault, false).await?;
            p.extras[s].objs.last_mut().expect("BUG: pushed").count = obj.count;
        }
    } else {
        p.log.op(
            s,
            format!(
                "{what} {} (count {}) dropped",
                ids_name(&obj.ids, obj.mode),
                obj.count
            ),
        );
        p.dirty[s] |= obj.count > 0;
    }
    let mut conn = lock.into_inner();
    p.extras[s].objs.pop();
    p.maybe_settle(s, conn.as_mut(), &format!("after the {what} ended"))
        .await
}

// ---------------------------------------------------------------------------
// Guards and scoped locks.

/// A guard under a fault; if granted, checks, maybe a nested guard on it,
/// then released (under a fault) or dropped.
async fn op_guard(
    p: &mut Parts,
    s: usize,
    conn: &mut PgConnection,
    nested: bool,
) -> Result<(), String> {
    let fault = p.fault_for_acquire();
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
    let busy = p.busy(s, &ids, mode);
    let take = p.take_for(busy, fault);
    p.log.op(
        s,
        format!(
            "guard {} {take:?} under {fault:?}{}",
            ids_name(&ids, mode),
            if busy { " [busy]" } else { "" }
        ),
    );
    let stale_ok = p.dirty[s];
    arm(conn, fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(
        fault,
        guard_take(&mut *conn, p.lock_ids(&ids), mode, take),
        &mut p.chk.observer,
        pid,
    )
    .await?;
    p.stats.outcome(&ran);
    p.dirty[s] |= fault.is_some();
    // `ran` is consumed, so that only `guard` can still borrow `conn`.
    let (guard, rest) = split(ran);
    let guard = guard.flatten();
    match (&guard, &rest) {
        (Some(_), _) => {
            p.log.result("Ok(Some(guard))");
            judge_take(Ok(true), busy, take, fault, false, stale_ok)?;
        }
        (None, Ran::Done(Ok(()))) => {
            p.log.result("Ok(None)");
            judge_take(Ok(false), busy, take, fault, false, stale_ok)?;
        }
        (None, Ran::Done(Err(e))) => {
            p.log.result(format!("Err({e:?})"));
            judge_take(Err(e), busy, take, fault, false, stale_ok)?;
        }
        (None, Ran::Dropped) => p.log.result("dropped"),
    }
    if guard.is_none() {
        drop(guard);
        disarm(conn, fault, &mut p.log).await?;
        return p.maybe_settle(s, conn, "after the guard call").await;
    }
    let mut guard = guard.expect("BUG: checked");
    disarm(&mut guard, fault, &mut p.log).await?;
    p.extras[s].objs.push(Obj {
        ids: ids.clone(),
        mode,
        count: 1,
    });
    p.settle_now(s, &mut guard, "while the guard lives").await?;
    if nested && p.rng.pct(30) {
        Box::pin(op_guard(p, s, &mut guard, false)).await?;
    }
    if p.rng.pct(60) {
        let fault = p.fault_for_release();
        p.log.op(
            s,
            format!("guard {} release under {fault:?}", ids_name(&ids, mode)),
        );
        arm(&mut guard, fault, stale_ok, &mut p.log).await?;
        // The release consumes the guard; its connection is reborrowed
        // below through `conn`.
        let ran = drive(fault, guard.release(), &mut p.chk.observer, pid).await?;
        p.stats.outcome(&ran);
        p.stats.releases_cut += usize::from(!matches!(ran, Ran::Done(Ok(()))));
        p.dirty[s] |= fault.is_some();
        match ran {
            Ran::Dropped => p.log.result("dropped"),
            Ran::Done(r) => {
                p.log.result(format!("{r:?}"));
                match r {
                    Ok(()) => {}
                    Err(e) if explained(&e, fault) || (stale_ok && can_be_stale(&e)) => {}
                    Err(e) => return Err(format!("guard release: {e:?} under {fault:?}")),
                }
            }
        }
        disarm(conn, fault, &mut p.log).await?;
    } else {
        p.log
            .op(s, format!("guard {} dropped", ids_name(&ids, mode)));
        drop(guard);
        p.dirty[s] = true;
    }
    // Released or dropped, the guard's ids are gone before the next use.
    p.extras[s].objs.pop();
    p.maybe_settle(s, conn, "after the guard ended").await
}

/// `with_exclusive` / `with_shared` under a fault; inside, the session reads
/// its own locks, which must be the model's plus the call's ids.
async fn op_scoped(p: &mut Parts, s: usize, conn: &mut PgConnection) -> Result<(), String> {
    let mut fault = p.fault_for_acquire();
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
    let busy = p.busy(s, &ids, mode);
    if busy && !fault.ends_a_wait() {
        fault = Fault::StmtTimeout(p.rng.range(1, 5));
    }
    p.log.op(
        s,
        format!(
            "with_{} {} under {fault:?}{}",
            if mode == Mode::Ex {
                "exclusive"
            } else {
                "shared"
            },
            ids_name(&ids, mode),
            if busy { " [busy]" } else { "" }
        ),
    );
    let stale_ok = p.dirty[s];
    arm(conn, fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(
        fault,
        scoped(&mut *conn, p.lock_ids(&ids), mode),
        &mut p.chk.observer,
        pid,
    )
    .await?;
    p.stats.outcome(&ran);
    disarm(conn, fault, &mut p.log).await?;
    p.dirty[s] |= fault.is_some();
    match ran {
        Ran::Dropped => p.log.result("dropped"),
        Ran::Done(Err(e)) => {
            p.log.result(format!("Err({e:?})"));
            judge_take(Err(&e), busy, Take::Block, fault, false, stale_ok)?;
        }
        Ran::Done(Ok(rows)) => {
            p.log.result(format!("Ok({} rows)", rows.len()));
            judge_take(Ok(true), busy, Take::Block, fault, false, stale_ok)?;
            // What the session held inside: the model's holds and the ids.
            let mut want = BTreeSet::new();
            for (h, _) in p.holds_of(s) {
                want.insert(h);
            }
            for &k in &ids {
                want.insert((k, mode));
            }
            let mut got = BTreeSet::new();
            for (classid, objid, objsubid, m) in &rows {
                if let (Some(k), Some(m)) = (
                    p.chk.key_index(*classid, *objid, *objsubid),
                    Mode::from_pg(m),
                ) {
                    got.insert((k, m));
                }
            }
            if got != want {
                return Err(format!(
                    "inside with_*: the session held {} but the model expects {}",
                    p.chk.names(&got),
                    p.chk.names(&want)
                ));
            }
        }
    }
    p.maybe_settle(s, conn, "after with_*").await
}

// ---------------------------------------------------------------------------
// Transactions.

/// In-transaction `SELECT 1`: whether the transaction has failed. A
/// `57014` is a cancel that came late (from the fault), which fails it too.
async fn tx_probe(conn: &mut PgConnection, p: &mut Parts, s: usize) -> Result<TxState, String> {
    let mut stale = 0;
    loop {
        match select_one(&mut *conn).await {
            Ok(()) => break,
            Err(e) => match sqlstate(&e).as_deref() {
                Some("25P02") => return Ok(TxState::Failed),
                Some("57014") => {
                    p.log
                        .note(format!("late cancel inside the transaction: {e}"));
                    return Ok(TxState::FailedByHarness);
                }
                _ if stale == 0 => {
                    p.log.stale += 1;
                    p.log
                        .note(format!("stale error tolerated inside the transaction: {e}"));
                    stale += 1;
                }
                _ => return Err(format!("in the transaction, SELECT 1 failed twice: {e}")),
            },
        }
    }
    // Whether the server still has a transaction open: the session
    // reported its state before it answered.
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(p.chk.pids[s])
            .fetch_optional(&mut p.chk.observer)
            .await
            .map_err(|e| format!("observer: read pg_stat_activity: {e}"))?
            .flatten();
    match state.as_deref() {
        Some("idle in transaction") => Ok(TxState::Open),
        Some("idle") => Ok(TxState::Gone),
        other => Err(format!(
            "session s{s} is {other:?} after it answered in a transaction"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    Open,
    /// Failed by a call of the crate (or our `SELECT 1/0`).
    Failed,
    /// Failed by the harness: a late cancel, or the reset of
    /// `statement_timeout` cancelled by itself.
    FailedByHarness,
    /// No transaction is open on the server any more.
    Gone,
}

/// `begin()`, then one to three calls inside (transaction-level locks under
/// faults, a session-level acquire that must be refused, a failing
/// statement), then commit, rollback or drop.
async fn op_tx(p: &mut Parts, s: usize, conn: &mut PgConnection) -> Result<(), String> {
    p.log.op(s, "begin".into());
    let stale_ok = std::mem::take(&mut p.dirty[s]);
    let mut tx = begin_tx(conn, stale_ok, &mut p.log).await?;
    let mut failed = false;
    for _ in 0..p.rng.range(1, 3) {
        let roll = p.rng.below(100);
        if roll < 50 {
            tx_lock(p, s, &mut tx, &mut failed).await?;
        } else if roll < 72 {
            tx_session_level(p, s, &mut tx, failed).await?;
        } else if roll < 92 {
            if tx_savepoint(p, s, &mut tx, &mut failed).await? == TxState::Gone {
                p.check_now("after the transaction was rolled back").await?;
                break;
            }
        } else {
            p.log.op(s, "  SELECT 1/0".into());
            if sqlx::query("SELECT 1/0").execute(&mut *tx).await.is_ok() {
                return Err("SELECT 1/0 succeeded".into());
            }
            failed = true;
            p.extras[s].fail_xact();
            // The error comes before the server has aborted: wait for it.
            let state = tx_probe(&mut tx, p, s).await?;
            if state != TxState::Failed {
                return Err(format!(
                    "after SELECT 1/0 failed in it, the transaction is {state:?}"
                ));
            }
        }
        p.check_now("inside the transaction").await?;
    }
    end_tx(p, s, tx).await?;
    p.maybe_settle(s, conn, "after the transaction").await
}

/// Commits, rolls back or drops `tx`; its transaction-level holds end.
async fn end_tx(p: &mut Parts, s: usize, tx: Transaction<'_, Postgres>) -> Result<(), String> {
    match p.rng.below(3) {
        0 => {
            p.log.op(s, "commit".into());
            tx.commit().await.map_err(|e| format!("commit: {e}"))?;
        }
        1 => {
            p.log.op(s, "rollback".into());
            tx.rollback().await.map_err(|e| format!("rollback: {e}"))?;
        }
        _ => {
            p.log.op(s, "drop the transaction".into());
            drop(tx);
        }
    }
    p.extras[s].clear_xact();
    Ok(())
}

/// A transaction-level acquire under a fault.
async fn tx_lock(
    p: &mut Parts,
    s: usize,
    tx: &mut PgConnection,
    failed: &mut bool,
) -> Result<(), String> {
    let fault = p.fault_for_acquire();
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
    let busy = p.busy(s, &ids, mode);
    let take = p.take_for(busy, fault);
    p.log.op(
        s,
        format!(
            "  xact {} {take:?} under {fault:?}{}{}",
            ids_name(&ids, mode),
            if busy { " [busy]" } else { "" },
            if *failed { " [failed transaction]" } else { "" }
        ),
    );
    if *failed && matches!(fault, Fault::StmtTimeout(_)) {
        // No SET runs in a failed transaction.
        return Ok(());
    }
    let stale_ok = p.dirty[s];
    arm(tx, fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(
        fault,
        xact_take(&mut *tx, p.lock_ids(&ids), mode, take),
        &mut p.chk.observer,
        pid,
    )
    .await?;
    p.stats.outcome(&ran);
    let disarmed = disarm(tx, fault, &mut p.log).await?;
    p.dirty[s] |= fault.is_some();
    let mut returned_error = false;
    let mut cancelled = false;
    match &ran {
        Ran::Dropped => {
            p.log.result("dropped");
            // What it took lasts until the transaction ends, if anything.
            for &k in &ids {
                p.extras[s].maybe.insert((k, mode));
            }
        }
        Ran::Done(r) => {
            p.log.result(format!("{r:?}"));
            judge_take(r.as_ref().copied(), busy, take, fault, *failed, stale_ok)?;
            if let Ok(true) = r {
                for &k in &ids {
                    *p.extras[s].xact.entry((k, mode)).or_default() += 1;
                }
            }
            returned_error = r.is_err();
            cancelled = matches!(r, Err(Error::Canceled(_)));
        }
    }
    let state = match disarmed {
        Disarmed::Done => tx_probe(tx, p, s).await?,
        Disarmed::Failed => TxState::Failed,
        Disarmed::OwnTimeout => TxState::FailedByHarness,
    };
    p.dirty[s] = false;
    match state {
        TxState::Open => {}
        TxState::Gone => {
            return Err(format!(
                "after a transaction-level acquire ({take:?}, {fault:?}) no transaction is \
                 open any more"
            ));
        }
        TxState::FailedByHarness => {
            *failed = true;
            p.extras[s].fail_xact();
        }
        TxState::Failed if *failed => {}
        TxState::Failed if cancelled => {
            // The crate catches the errors raised while a lock waits; a
            // cancel or statement_timeout that lands outside the wait (the
            // block's compilation, its first statements, the SELECT after
            // it) fails the statement, and with it the transaction. The
            // call says Canceled either way.
            p.log
                .note("the transaction failed with the Canceled call".into());
            p.stats.tx_failed_by_cancel += 1;
            *failed = true;
            p.extras[s].fail_xact();
        }
        TxState::Failed => {
            // Only a cancel fails a statement of the crate's.
            return Err(format!(
                "the transaction failed after a transaction-level acquire that {} \
                 ({} ids, {take:?}, {fault:?}): only a cancel may abort it",
                if returned_error {
                    "returned an error other than Canceled"
                } else {
                    "did not return an error"
                },
                ids.len(),
            ));
        }
    }
    Ok(())
}

/// `begin_locked_*` on the transaction, under a fault: a savepoint that
/// holds the ids, then released, rolled back or dropped. Whatever the call
/// came to, the enclosing transaction stays open (a cancel may fail it).
/// Returns the enclosing transaction's state.
async fn tx_savepoint(
    p: &mut Parts,
    s: usize,
    tx: &mut PgConnection,
    failed: &mut bool,
) -> Result<TxState, String> {
    // sqlx 0.9.0's `begin()` on a transaction, dropped before SAVEPOINT
    // answers, rolls the whole transaction back (tests/it/pinned_sqlx.rs): the
    // savepoint is dropped only once it has surely answered.
    let mut fault = match p.fault_for_acquire() {
        Fault::DropAt { .. } => Fault::Cancel(0),
        Fault::Timeout(ms) => Fault::Timeout(ms.max(25)),
        fault => fault,
    };
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
    let busy = p.busy(s, &ids, mode);
    if busy && !fault.ends_a_wait() {
        fault = Fault::Cancel(p.rng.range(0, 4));
    }
    if *failed && matches!(fault, Fault::StmtTimeout(_)) {
        // No SET runs in a failed transaction.
        fault = Fault::None;
    }
    p.log.op(
        s,
        format!(
            "  begin_locked {} on the transaction (a savepoint) under {fault:?}{}{}",
            ids_name(&ids, mode),
            if busy { " [busy]" } else { "" },
            if *failed { " [failed transaction]" } else { "" }
        ),
    );
    let stale_ok = p.dirty[s];
    arm(tx, fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(
        fault,
        begin_locked(&mut *tx, p.lock_ids(&ids), mode),
        &mut p.chk.observer,
        pid,
    )
    .await?;
    p.stats.outcome(&ran);
    p.dirty[s] |= fault.is_some();
    let dropped = matches!(ran, Ran::Dropped);
    let (savepoint, rest) = split(ran);
    let cancelled = matches!(rest, Ran::Done(Err(Error::Canceled(_))));
    match (&savepoint, &rest) {
        (Some(_), _) => {
            p.log.result("Ok(savepoint)");
            judge_take(Ok(true), busy, Take::Block, fault, *failed, stale_ok)?;
        }
        (None, Ran::Done(Err(e))) => {
            p.log.result(format!("Err({e:?})"));
            judge_take(Err(e), busy, Take::Block, fault, *failed, stale_ok)?;
        }
        (None, _) => p.log.result("dropped"),
    }
    #[expect(
        clippy::unnecessary_unwrap,
        reason = "`if let` would leave `savepoint` borrowing `tx` in the else branch"
    )]
    let disarmed = if savepoint.is_some() {
        let mut savepoint = savepoint.expect("BUG: checked");
        for &k in &ids {
            *p.extras[s].savepoint.entry((k, mode)).or_default() += 1;
        }
        let usable = match disarm(&mut savepoint, fault, &mut p.log).await? {
            Disarmed::Done => match tx_probe(&mut savepoint, p, s).await? {
                TxState::Open => {
                    p.check_now("inside begin_locked's savepoint").await?;
                    true
                }
                // A late cancel failed the savepoint.
                TxState::FailedByHarness => false,
                other => {
                    return Err(format!(
                        "begin_locked returned a savepoint that is {other:?}"
                    ));
                }
            },
            // The reset timed out by itself and failed the savepoint.
            Disarmed::OwnTimeout => false,
            Disarmed::Failed => {
                return Err("begin_locked returned a savepoint that had failed".into());
            }
        };
        // A failed savepoint can only be rolled back.
        let how = if usable {
            p.rng.below(3)
        } else {
            1 + p.rng.below(2)
        };
        match how {
            0 => {
                p.log.op(s, "  release the savepoint".into());
                let r = savepoint.commit().await;
                p.log.result(format!("{:?}", r.as_ref().map(|_| ())));
                r.map_err(|e| format!("release of the savepoint: {e}"))?;
                let savepoint = std::mem::take(&mut p.extras[s].savepoint);
                for (hold, n) in savepoint {
                    *p.extras[s].xact.entry(hold).or_default() += n;
                }
            }
            1 => {
                p.log.op(s, "  roll the savepoint back".into());
                let r = savepoint.rollback().await;
                p.log.result(format!("{:?}", r.as_ref().map(|_| ())));
                r.map_err(|e| format!("rollback of the savepoint: {e}"))?;
                p.extras[s].savepoint.clear();
            }
            _ => {
                p.log.op(s, "  drop the savepoint".into());
                drop(savepoint);
                p.extras[s].savepoint.clear();
            }
        }
        // Rolled back, the savepoint undid the reset made inside it.
        disarm(tx, fault, &mut p.log).await?
    } else {
        drop(savepoint);
        disarm(tx, fault, &mut p.log).await?
    };
    let state = match disarmed {
        Disarmed::Done => tx_probe(tx, p, s).await?,
        Disarmed::Failed => TxState::Failed,
        Disarmed::OwnTimeout => TxState::FailedByHarness,
    };
    p.dirty[s] = false;
    match state {
        TxState::Open => {}
        TxState::Failed if *failed => {}
        TxState::Gone if *failed => {
            // The SAVEPOINT failed in the failed transaction, and sqlx
            // rolled all of it back: nothing of it was left to lose.
            p.log.note("the failed transaction was rolled back".into());
            p.extras[s].clear_xact();
        }
        TxState::Failed | TxState::Gone if cancelled => {
            // A cancel that fails the SAVEPOINT fails the transaction; sqlx
            // then rolls all of it back.
            p.log.note(format!(
                "the transaction is {state:?} after the Canceled call"
            ));
            p.stats.tx_failed_by_cancel += 1;
            *failed = true;
            if state == TxState::Gone {
                p.extras[s].clear_xact();
            } else {
                p.extras[s].fail_xact();
            }
        }
        TxState::FailedByHarness => {
            *failed = true;
            p.extras[s].fail_xact();
        }
        TxState::Gone => {
            return Err(format!(
                "begin_locked on a transaction ({}) rolled back the enclosing transaction: \
                 its transaction-level holds are gone and it is no longer open on the server",
                if dropped {
                    "its future dropped"
                } else {
                    "a call that did not fail with Canceled"
                }
            ));
        }
        TxState::Failed => {
            return Err(format!(
                "the transaction failed after begin_locked on it ({fault:?}) that was not \
                 Canceled"
            ));
        }
    }
    Ok(state)
}

/// A session-level acquire inside the transaction: refused with
/// `InTransaction`, nothing taken.
async fn tx_session_level(
    p: &mut Parts,
    s: usize,
    tx: &mut PgConnection,
    failed: bool,
) -> Result<(), String> {
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, false);
    let fault = if p.rng.pct(30) {
        Fault::DropAt {
            polls: p.rng.range(0, 2) as u8,
            gap_ms: 0,
        }
    } else {
        Fault::None
    };
    let take = match p.rng.below(3) {
        0 => Take::Block,
        1 => Take::Try,
        _ => Take::Within(p.rng.range(1, 8)),
    };
    let by_object = p.rng.pct(50);
    p.log.op(
        s,
        format!(
            "  session-level {} {} {take:?} under {fault:?} inside the transaction{}",
            if by_object { "object" } else { "guard" },
            ids_name(&ids, mode),
            if failed { " [failed transaction]" } else { "" }
        ),
    );
    let pid = p.chk.pids[s];
    // `None`: dropped; `Some(text)`: what it answered, and whether that is
    // the refusal.
    let answer: Option<(String, bool)> = if by_object {
        let mut lock = AnyLock::new(&mut *tx, p.lock_ids(&ids), mode);
        let ran = drive(fault, lock.take(take), &mut p.chk.observer, pid).await?;
        p.stats.outcome(&ran);
        let count = lock.count();
        match ran {
            Ran::Dropped => None,
            Ran::Done(r) => Some((
                format!("{r:?}, count {count}"),
                count == 0 && matches!(r, Err(Error::InTransaction)),
            )),
        }
    } else {
        let ran = drive(
            fault,
            guard_take(&mut *tx, p.lock_ids(&ids), mode, take),
            &mut p.chk.observer,
            pid,
        )
        .await?;
        p.stats.outcome(&ran);
        match ran {
            Ran::Dropped => None,
            Ran::Done(r) => Some((
                format!("{:?}", r.as_ref().map(Option::is_some)),
                matches!(r, Err(Error::InTransaction)),
            )),
        }
    };
    match answer {
        None => p.log.result("dropped"),
        Some((text, refused)) => {
            p.log.result(&text);
            if !refused {
                return Err(format!(
                    "a session-level acquire inside a transaction answered {text}, \
                     not InTransaction"
                ));
            }
        }
    }
    Ok(())
}

/// `begin_locked_*` under a fault; if it began, checks, then commit,
/// rollback or drop.
async fn op_begin_locked(p: &mut Parts, s: usize, conn: &mut PgConnection) -> Result<(), String> {
    // sqlx 0.9.0's `begin()` dropped during its own round trip, or handed a
    // stale error, leaves the server in a transaction sqlx does not know of
    // (tests/it/pinned_sqlx.rs); `begin_locked_*` shares that window and only
    // that one. So here it is dropped only once BEGIN has surely answered,
    // and never handed a stale error.
    if p.dirty[s] {
        p.settle_now(s, conn, "before begin_locked").await?;
    }
    let mut fault = match p.fault_for_acquire() {
        Fault::DropAt { .. } => Fault::Cancel(0),
        Fault::Timeout(ms) => Fault::Timeout(ms.max(25)),
        fault => fault,
    };
    let mode = p.rng.mode();
    let ids = p.pick_ids(s, mode, matches!(fault, Fault::Timeout(_)));
    let busy = p.busy(s, &ids, mode);
    if busy && !fault.ends_a_wait() {
        fault = Fault::Cancel(p.rng.range(0, 4));
    }
    p.log.op(
        s,
        format!(
            "begin_locked {} under {fault:?}{}",
            ids_name(&ids, mode),
            if busy { " [busy]" } else { "" }
        ),
    );
    let stale_ok = p.dirty[s];
    arm(conn, fault, stale_ok, &mut p.log).await?;
    let pid = p.chk.pids[s];
    let ran = drive(
        fault,
        begin_locked(&mut *conn, p.lock_ids(&ids), mode),
        &mut p.chk.observer,
        pid,
    )
    .await?;
    p.stats.outcome(&ran);
    p.dirty[s] |= fault.is_some();
    // `ran` is consumed, so that only `tx` can still borrow `conn`.
    let (tx, rest) = split(ran);
    match (&tx, &rest) {
        (Some(_), _) => {
            p.log.result("Ok(transaction)");
            judge_take(Ok(true), busy, Take::Block, fault, false, stale_ok)?;
        }
        (None, Ran::Done(Err(e))) => {
            p.log.result(format!("Err({e:?})"));
            judge_take(Err(e), busy, Take::Block, fault, false, stale_ok)?;
        }
        (None, _) => p.log.result("dropped"),
    }
    if tx.is_none() {
        drop(tx);
        disarm(conn, fault, &mut p.log).await?;
        return p.maybe_settle(s, conn, "after begin_locked failed").await;
    }
    let mut tx = tx.expect("BUG: checked");
    for &k in &ids {
        *p.extras[s].xact.entry((k, mode)).or_default() += 1;
    }
    let state = match disarm(&mut tx, fault, &mut p.log).await? {
        Disarmed::Done => tx_probe(&mut tx, p, s).await?,
        Disarmed::Failed => TxState::Failed,
        Disarmed::OwnTimeout => TxState::FailedByHarness,
    };
    p.dirty[s] = false;
    match state {
        TxState::Open => {}
        TxState::FailedByHarness => p.extras[s].fail_xact(),
        TxState::Failed | TxState::Gone => {
            return Err(format!(
                "begin_locked returned a transaction that is {state:?}"
            ));
        }
    }
    p.check_now("inside begin_locked's transaction").await?;
    end_tx(p, s, tx).await?;
    // The SET ran before BEGIN: a rollback keeps it.
    disarm(conn, fault, &mut p.log).await?;
    p.maybe_settle(s, conn, "after begin_locked's transaction")
        .await
}
