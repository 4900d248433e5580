//! Every SQL text this crate sends, and what each costs.
//!
//! Two shapes carry all the work:
//!
//! - **One id, not waiting**: a prepared statement per function
//!   (`pg_try_advisory_lock`, `pg_advisory_unlock`, ...). One round trip, the
//!   same as hand-written SQL. Outside a transaction, the statement that may
//!   wait for one id ([`lock_one`]) is the same try, which calls the
//!   session's short wait function ([`wait_one_body`]) only when the id is
//!   busy.
//! - **Several ids, or any wait**: a PL/pgSQL body ([`session_body`]),
//!   called as one of the session's functions in `pg_temp` with the ids
//!   bound as arrays outside a transaction (see `session.rs`), and run as an
//!   anonymous `DO` block followed by a `SELECT` of its outcome, in one
//!   simple-query message, inside one (and on sessions that cannot have the
//!   functions), with the ids written in as integer literals; no user text
//!   ever reaches it. Transaction-level locks without a deadline get the
//!   shortest block that does the work ([`xact_block`]). One round trip
//!   either way. Every body takes the ids in order, catches every error
//!   raised inside it (deadlock, `lock_timeout`, cancel, full lock table),
//!   gives back whatever it took before the error, and reports the outcome
//!   as data. So the call is all or nothing, an enclosing transaction is
//!   never aborted, and a response nobody reads (the caller's future was
//!   dropped) does not surface as an error on a later, unrelated query. The
//!   exceptions fail the statement as a whole: the first call on a session
//!   that lacks its functions (see `prepare_session`), and a cancel that
//!   PostgreSQL acts on outside the body's block (after it returns, or in
//!   the few statements around its give-back); the cleanup below releases
//!   what such a statement took, as its record shows.
//! - **Several free ids, outside a transaction**: up to
//!   [`FREE_FIRST_MAX`] ids of one form first go through a plain statement
//!   ([`free_first`]) that tries them at transaction level and, when all are
//!   free, takes them at session level in one expression; only a busy id
//!   reaches the body, in the same statement. It has no exception block: a
//!   full lock table while it tries fails it as a statement, with nothing
//!   taken, and like a single id's try, such an error is not turned into an
//!   outcome.
//!
//! Every statement that can take several ids records a per-call token when,
//! and only when, it takes its ids: in the session's sequence
//! [`ACQUIRED_SEQUENCE`] (the functions and [`free_first`]), or in the
//! setting `alock.acquired` (the anonymous block). PostgreSQL acts on a
//! cancel or `statement_timeout` only between expressions and statements,
//! so one can fail a statement after it took its ids; a sequence's value
//! survives that abort, a setting does not. A caller whose statement
//! failed, or whose future was dropped while it was in flight, queues
//! [`cleanup_if_acquired`], which releases the ids only if the token shows
//! the statement took them. A single id needs no token: whether
//! the session holds it afterwards says whether the statement took it
//! ([`cleanup_if_held`]). Releases record theirs in
//! `alock.released`, and a dropped release queues
//! [`cleanup_unless_released`], which releases only if the release itself
//! never ran.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use crate::LockId;

/// How long a multi-id acquire may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: `pg_try_advisory_lock`.
    No,
    /// As long as it takes (bounded only by the session's own settings).
    Forever,
    /// At most this long, through `lock_timeout`.
    Until(Duration),
}

const fn suffix(shared: bool) -> &'static str {
    if shared { "_shared" } else { "" }
}

/// Tries one id at session or transaction level; returns whether it was
/// taken. Bind: the key(s). 1 round trip, the same statement as
/// hand-written SQL. A single id needs no token: see [`cleanup_if_held`].
pub(crate) const fn try_one(id: LockId, shared: bool, level: Level) -> &'static str {
    match (level, id, shared) {
        (Level::Session, LockId::Int8(_), false) => "SELECT pg_try_advisory_lock($1)",
        (Level::Session, LockId::Int8(_), true) => "SELECT pg_try_advisory_lock_shared($1)",
        (Level::Session, LockId::Int4Pair(..), false) => "SELECT pg_try_advisory_lock($1, $2)",
        (Level::Session, LockId::Int4Pair(..), true) => {
            "SELECT pg_try_advisory_lock_shared($1, $2)"
        }
        (Level::Transaction, LockId::Int8(_), false) => "SELECT pg_try_advisory_xact_lock($1)",
        (Level::Transaction, LockId::Int8(_), true) => {
            "SELECT pg_try_advisory_xact_lock_shared($1)"
        }
        (Level::Transaction, LockId::Int4Pair(..), false) => {
            "SELECT pg_try_advisory_xact_lock($1, $2)"
        }
        (Level::Transaction, LockId::Int4Pair(..), true) => {
            "SELECT pg_try_advisory_xact_lock_shared($1, $2)"
        }
    }
}

/// Releases one id and records `token` in `alock.released`.
/// Bind: the key(s), then the token. 1 round trip.
pub(crate) const fn unlock_one(id: LockId, shared: bool) -> &'static str {
    match (id, shared) {
        (LockId::Int8(_), false) => {
            "SELECT pg_advisory_unlock($1), set_config('alock.released', $2, false)"
        }
        (LockId::Int8(_), true) => {
            "SELECT pg_advisory_unlock_shared($1), set_config('alock.released', $2, false)"
        }
        (LockId::Int4Pair(..), false) => {
            "SELECT pg_advisory_unlock($1, $2), set_config('alock.released', $3, false)"
        }
        (LockId::Int4Pair(..), true) => {
            "SELECT pg_advisory_unlock_shared($1, $2), set_config('alock.released', $3, false)"
        }
    }
}

/// Takes one id, waiting if another session holds it, in one statement:
/// tries it first and, only when it is busy, calls the session's function
/// that waits for one id and catches every error ([`wait_one_body`]).
/// Returns `acquired` when the try took the id (the function is not called
/// then, so a free id costs what [`try_one`] costs), and the function's
/// outcome otherwise. Outside a transaction only: the statement fails to
/// prepare when the session lacks its functions. Bind: the key(s), the wait
/// in microseconds. 1 round trip.
pub(crate) const fn lock_one(id: LockId, shared: bool) -> &'static str {
    match (id, shared) {
        (LockId::Int8(_), false) => {
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN 'acquired' \
                    ELSE pg_temp.alock_v3_wait_one($1, NULL, NULL, $2) END"
        }
        (LockId::Int8(_), true) => {
            "SELECT CASE WHEN pg_try_advisory_lock_shared($1) THEN 'acquired' \
                    ELSE pg_temp.alock_v3_wait_one_shared($1, NULL, NULL, $2) END"
        }
        (LockId::Int4Pair(..), false) => {
            "SELECT CASE WHEN pg_try_advisory_lock($1, $2) THEN 'acquired' \
                    ELSE pg_temp.alock_v3_wait_one(NULL, $1, $2, $3) END"
        }
        (LockId::Int4Pair(..), true) => {
            "SELECT CASE WHEN pg_try_advisory_lock_shared($1, $2) THEN 'acquired' \
                    ELSE pg_temp.alock_v3_wait_one_shared(NULL, $1, $2, $3) END"
        }
    }
}

/// Which forms a set of ids takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forms {
    /// Every id is an `int8`.
    Int8,
    /// Every id is a pair of `int4`.
    Pairs,
    /// Both forms.
    Mixed,
}

impl Forms {
    pub(crate) fn of(ids: &[LockId]) -> Forms {
        let pairs = ids
            .iter()
            .filter(|id| matches!(id, LockId::Int4Pair(..)))
            .count();
        match pairs {
            0 => Forms::Int8,
            n if n == ids.len() => Forms::Pairs,
            _ => Forms::Mixed,
        }
    }
}

/// Releases many ids in the order of the bound arrays (the caller passes
/// them reversed) and records the token in `alock.released`, once per id:
/// a plain projection over `unnest`, like hand-written SQL, with no
/// aggregate. 1 round trip. Bind: [`Forms::Int8`], `int8[]`;
/// [`Forms::Pairs`], `int4[]`, `int4[]`; [`Forms::Mixed`], `int8[]`,
/// `int4[]`, `int4[]` (NULL where an id is of the other form); then the
/// token.
pub(crate) const fn unlock_many(forms: Forms, shared: bool) -> &'static str {
    match (forms, shared) {
        (Forms::Int8, false) => {
            "SELECT pg_advisory_unlock(k), set_config('alock.released', $2, false) \
               FROM unnest($1::int8[]) AS k"
        }
        (Forms::Int8, true) => {
            "SELECT pg_advisory_unlock_shared(k), set_config('alock.released', $2, false) \
               FROM unnest($1::int8[]) AS k"
        }
        (Forms::Pairs, false) => {
            "SELECT pg_advisory_unlock(a, b), set_config('alock.released', $3, false) \
               FROM unnest($1::int4[], $2::int4[]) AS id(a, b)"
        }
        (Forms::Pairs, true) => {
            "SELECT pg_advisory_unlock_shared(a, b), set_config('alock.released', $3, false) \
               FROM unnest($1::int4[], $2::int4[]) AS id(a, b)"
        }
        (Forms::Mixed, false) => {
            "SELECT CASE WHEN a IS NULL THEN pg_advisory_unlock(k) \
                         ELSE pg_advisory_unlock(a, b) END, \
                    set_config('alock.released', $4, false) \
               FROM unnest($1::int8[], $2::int4[], $3::int4[]) AS id(k, a, b)"
        }
        (Forms::Mixed, true) => {
            "SELECT CASE WHEN a IS NULL THEN pg_advisory_unlock_shared(k) \
                         ELSE pg_advisory_unlock_shared(a, b) END, \
                    set_config('alock.released', $4, false) \
               FROM unnest($1::int8[], $2::int4[], $3::int4[]) AS id(k, a, b)"
        }
    }
}

/// How many of the given ids this session holds, granted, in the given
/// mode. Bind: `int8[]` classids, `int8[]` objids, `int2[]` objsubids, mode.
/// 1 round trip.
pub(crate) const HELD_BY_SESSION: &str = "\
    SELECT count(DISTINCT (l.classid, l.objid, l.objsubid)) \
      FROM pg_locks l \
      JOIN unnest($1::int8[], $2::int8[], $3::int2[]) AS id(c, o, s) \
        ON l.classid::int8 = id.c AND l.objid::int8 = id.o AND l.objsubid = id.s \
     WHERE l.locktype = 'advisory' AND l.granted AND l.mode = $4 \
       AND l.pid = pg_backend_pid()";

/// The `pg_locks.mode` of a lock mode.
pub(crate) const fn pg_locks_mode(shared: bool) -> &'static str {
    if shared { "ShareLock" } else { "ExclusiveLock" }
}

/// Session-level or transaction-level locks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Session,
    Transaction,
}

/// What an acquire body reports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every id taken; `waited` when some id had to be waited for.
    Acquired {
        waited: bool,
    },
    Busy,
    Failed {
        code: String,
        message: String,
    },
}

impl Outcome {
    /// Reads what a body returned; `token` is the call's token, which the
    /// session-level body returns when every id was free.
    pub(crate) fn parse(text: &str, token: &str) -> Outcome {
        match text {
            _ if text == token => Outcome::Acquired { waited: false },
            "acquired" => Outcome::Acquired { waited: false },
            "waited" => Outcome::Acquired { waited: true },
            "busy" => Outcome::Busy,
            failed => {
                let (code, message) = failed.split_once(' ').unwrap_or((failed, ""));
                Outcome::Failed {
                    code: code.to_owned(),
                    message: message.to_owned(),
                }
            }
        }
    }
}

/// Writes `'{1,NULL,3}'`-style array literals of the ids' two forms.
fn id_arrays(ids: &[LockId]) -> (String, String, String) {
    let (mut k, mut a, mut b) = (String::from("'{"), String::from("'{"), String::from("'{"));
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            k.push(',');
            a.push(',');
            b.push(',');
        }
        match *id {
            LockId::Int8(key) => {
                let _ = write!(k, "{key}");
                a.push_str("NULL");
                b.push_str("NULL");
            }
            LockId::Int4Pair(key1, key2) => {
                k.push_str("NULL");
                let _ = write!(a, "{key1}");
                let _ = write!(b, "{key2}");
            }
        }
    }
    for s in [&mut k, &mut a, &mut b] {
        s.push_str("}'");
    }
    (k, a, b)
}

/// SQLSTATE a block raises to give back its transaction-level locks: they
/// cannot be unlocked by hand, but those taken inside a PL/pgSQL block are
/// released when the block's subtransaction rolls back.
pub(crate) const BUSY_SQLSTATE: &str = "AL000";

/// The session's record of the acquires that took their ids: a sequence in
/// `pg_temp`, created with the functions, whose value an acquire sets to
/// its token. A sequence's value is not transactional: an interrupt that
/// aborts the statement after it took the ids (PostgreSQL acts on a cancel
/// only between expressions, so possibly after the last one) cannot undo
/// the record, and the cleanup still finds it.
pub(crate) const ACQUIRED_SEQUENCE: &str = "pg_temp.alock_v3_acquired";

/// How the functions record a successful acquire: in [`ACQUIRED_SEQUENCE`].
const RECORD_IN_SEQUENCE: &str = "setval('pg_temp.alock_v3_acquired', token::int8)::text";

/// How the anonymous block records it, on sessions that may not have the
/// sequence: in the setting `alock.acquired`, which an abort after the
/// block returns does undo.
const RECORD_IN_SETTING: &str = "set_config('alock.acquired', token, false)";

/// Gives back ids `n` down to 1, each once, even if an interrupt (a cancel,
/// `statement_timeout`) lands part way: the loop runs inside a block that
/// catches it and is retried, a bounded number of times; `n` counts down in
/// the same statement as each unlock, so an interrupt lands before both or
/// after both. PL/pgSQL checks for interrupts before every statement, so
/// one that lands just before the block is entered is not caught: a
/// statement-sized window, on error paths only.
fn give_back(m: &str) -> String {
    format!(
        "WHILE n > 0 AND tries < 100 LOOP \
           BEGIN \
             WHILE n > 0 LOOP \
               n := n - 1 + 0 * (CASE WHEN a[n] IS NULL THEN pg_advisory_unlock{m}(k[n]) \
                                      ELSE pg_advisory_unlock{m}(a[n], b[n]) END)::int; \
             END LOOP; \
           EXCEPTION WHEN OTHERS OR query_canceled THEN tries := tries + 1; \
           END; \
         END LOOP;"
    )
}

/// Whether `pg_locks` shows the id (`k`, or `a` and `b`, as PL/pgSQL
/// expressions) granted to this session in this mode: after an error that
/// ended a wait, whether the grant came first.
fn granted_to_session(k: &str, a: &str, b: &str, shared: bool) -> String {
    let mode = pg_locks_mode(shared);
    format!(
        "EXISTS (SELECT FROM pg_locks l \
           WHERE l.locktype = 'advisory' AND l.granted AND l.mode = '{mode}' \
             AND l.pid = pg_backend_pid() \
             AND CASE WHEN {a} IS NULL \
                 THEN l.classid::int8 = ({k} >> 32) & 4294967295 \
                  AND l.objid::int8 = {k} & 4294967295 AND l.objsubid = 1 \
                 ELSE l.classid::int8 = {a}::int8 & 4294967295 \
                  AND l.objid::int8 = {b}::int8 & 4294967295 AND l.objsubid = 2 END)"
    )
}

/// The wait for one id that a try just found busy, as the body of a
/// function of `k`, `a`, `b` (the id's two forms) and `wait_us` (-1
/// forever, or a limit in microseconds): much shorter than
/// [`session_body`], because the contended path runs on every handoff of a
/// busy lock, and nothing but the return stands between the grant and the
/// caller, who holds the lock from then on. Returns `waited`, `busy` when
/// the time ran out, or `SQLSTATE message`, having given the id back if an
/// error came after the grant. It records no token: see
/// [`cleanup_if_held`].
fn wait_one_body(shared: bool) -> String {
    let m = suffix(shared);
    let granted = granted_to_session("k", "a", "b", shared);
    format!(
        "IF wait_us > 0 THEN \
           saved := current_setting('lock_timeout'); \
           recorded := set_config('lock_timeout', ceil(wait_us / 1000.0) || 'ms', true); \
         END IF; \
         BEGIN \
           IF a IS NULL THEN PERFORM pg_advisory_lock{m}(k); \
           ELSE PERFORM pg_advisory_lock{m}(a, b); END IF; \
           IF wait_us > 0 THEN recorded := set_config('lock_timeout', saved, true); END IF; \
           RETURN 'waited'; \
         EXCEPTION WHEN OTHERS OR query_canceled THEN \
           code := SQLSTATE; message := SQLERRM; \
         END; \
         BEGIN \
           held := {granted}; \
         EXCEPTION WHEN OTHERS OR query_canceled THEN held := false; \
         END; \
         tries := 0; \
         WHILE held AND tries < 100 LOOP \
           BEGIN \
             held := (CASE WHEN a IS NULL THEN pg_advisory_unlock{m}(k) \
                           ELSE pg_advisory_unlock{m}(a, b) END) IS NULL; \
           EXCEPTION WHEN OTHERS OR query_canceled THEN tries := tries + 1; \
           END; \
         END LOOP; \
         IF wait_us > 0 THEN recorded := set_config('lock_timeout', saved, true); END IF; \
         RETURN CASE WHEN wait_us > 0 AND code = '55P03' THEN 'busy' \
                     ELSE code || ' ' || message END;"
    )
}

/// Takes `ids` at transaction level, in order, waiting, then `BEGIN`s, in
/// one simple query. The locks are taken in the query's implicit
/// transaction, which the `BEGIN` turns into the caller's transaction; if a
/// lock fails, the implicit transaction rolls back, giving back every id, and
/// the session is left outside any transaction. 1 round trip.
pub(crate) fn lock_then_begin(ids: &[LockId], shared: bool) -> String {
    let m = suffix(shared);
    let (k, a, b) = id_arrays(ids);
    format!(
        "SELECT count(CASE WHEN a IS NULL THEN pg_advisory_xact_lock{m}(k) \
                           ELSE pg_advisory_xact_lock{m}(a, b) END) \
           FROM unnest({k}::int8[], {a}::int4[], {b}::int4[]) AS id(k, a, b); \
         BEGIN"
    )
}

impl Wait {
    /// The wait as the bodies' `wait_us` argument: 0 never waits, -1 waits
    /// as long as it takes, a positive number is the limit in microseconds.
    /// A limit is at least 1 µs, so that a deadline already reached (what
    /// is left of a timeout, rounded down) is never taken for "no wait" or,
    /// by the single-id wait, for "no limit".
    pub(crate) fn micros(self) -> i64 {
        match self {
            Wait::No => 0,
            Wait::Forever => -1,
            Wait::Until(limit) => i64::try_from(limit.as_micros()).unwrap_or(i64::MAX).max(1),
        }
    }
}

/// Variables every acquire body declares besides its arguments, none with a
/// default.
///
/// What a body costs is mostly how many distinct expressions it evaluates:
/// PL/pgSQL prepares each expression again in every transaction that runs
/// it, and outside a transaction every call is a transaction of its own. So
/// the path that finds every id free evaluates as few as it can, the
/// variables start out NULL rather than with defaults, and functions whose
/// result is not needed are assigned (to `recorded`, `released`) rather than
/// run with `PERFORM`, which starts an executor; only the waits, whose cost
/// is the wait, use `PERFORM`.
const BODY_DECLARATIONS: &str = "\
    n int; w int; waited bool; code text; message text; tries int; \
    left_ms float8; saved text; deadline timestamptz; outcome text; \
    recorded text; released bool;";

/// The session-level acquire, as PL/pgSQL statements over the variables `k`,
/// `a`, `b` (the ids' two forms), `wait_us` and `token`: takes the ids in
/// order, all or nothing, catching every error, and leaves in `outcome` the
/// token (every id was free), `waited`, `busy`, or `SQLSTATE message`.
/// When it ends holding the ids, records `token` with `record`, as the last
/// statement of the block that catches errors: an interrupt acted on after
/// it is not caught, fails the statement, and leaves the record to the
/// cleanup.
///
/// When every id is free it evaluates: the loop's bound, one try and one
/// assignment per id, the check that all were taken, the token, and two
/// tests of what it found.
fn session_body(shared: bool, record: &str) -> String {
    let m = suffix(shared);
    let granted = granted_to_session("k[w]", "a[w]", "b[w]", shared);
    let give_back = give_back(m);
    let next_timeout = next_lock_timeout("EXIT;");
    format!(
        "IF wait_us > 0 THEN {START_DEADLINE} END IF; \
         BEGIN \
           FOR i IN 1..greatest(cardinality(k), cardinality(a)) LOOP \
             n := CASE WHEN (CASE WHEN a[i] IS NULL THEN pg_try_advisory_lock{m}(k[i]) \
                                  ELSE pg_try_advisory_lock{m}(a[i], b[i]) END) \
                       THEN i ELSE n END; \
             IF n IS DISTINCT FROM i THEN \
               IF wait_us = 0 THEN EXIT; END IF; \
               IF wait_us > 0 THEN {next_timeout} END IF; \
               w := i; waited := true; \
               IF a[i] IS NULL THEN PERFORM pg_advisory_lock{m}(k[i]); \
               ELSE PERFORM pg_advisory_lock{m}(a[i], b[i]); END IF; \
               n := i; \
               w := NULL; \
             END IF; \
           END LOOP; \
           IF coalesce(n, 0) = greatest(cardinality(k), cardinality(a)) THEN \
             IF waited AND wait_us > 0 THEN \
               recorded := set_config('lock_timeout', saved, true); \
             END IF; \
             outcome := CASE WHEN waited THEN 'waited' ELSE token END; \
             recorded := {record}; \
           END IF; \
         EXCEPTION WHEN OTHERS OR query_canceled THEN \
           outcome := NULL; \
           code := SQLSTATE; message := SQLERRM; \
           IF w > 0 THEN \
             BEGIN \
               IF {granted} THEN n := w; END IF; \
             EXCEPTION WHEN OTHERS OR query_canceled THEN NULL; \
             END; \
           END IF; \
         END; \
         IF outcome IS NULL THEN \
           n := coalesce(n, 0); tries := 0; \
           {give_back} \
           IF wait_us > 0 THEN recorded := set_config('lock_timeout', saved, true); END IF; \
           outcome := CASE WHEN code IS NULL OR (wait_us > 0 AND code = '55P03') THEN 'busy' \
                           ELSE code || ' ' || message END; \
         END IF;"
    )
}

/// Starts a deadline `wait_us` microseconds from now, and saves the
/// session's `lock_timeout` to restore.
const START_DEADLINE: &str = "\
    saved := current_setting('lock_timeout'); \
    deadline := clock_timestamp() + make_interval(secs => wait_us::float8 / 1000000);";

/// Sets `lock_timeout`, for the rest of the statement's transaction, to
/// what is left before the deadline, and runs `when_spent` if nothing is.
fn next_lock_timeout(when_spent: &str) -> String {
    format!(
        "left_ms := ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000); \
         IF left_ms <= 0 THEN {when_spent} END IF; \
         recorded := set_config('lock_timeout', left_ms || 'ms', true);"
    )
}

/// The transaction-level acquire with a deadline (`wait_us` > 0), as
/// PL/pgSQL statements over `k`, `a`, `b` and `wait_us`: the locks are taken
/// inside a block whose subtransaction, rolled back on any error or when
/// time runs out, gives every one of them back, and the `lock_timeout` it
/// set with them. Leaves the outcome in `outcome`. Without a deadline,
/// [`xact_block`] does the same in one statement.
fn xact_timed_body(shared: bool) -> String {
    let m = suffix(shared);
    let next_timeout = next_lock_timeout(&format!(
        "RAISE EXCEPTION USING ERRCODE = '{BUSY_SQLSTATE}';"
    ));
    format!(
        "{START_DEADLINE} \
         BEGIN \
           FOR i IN 1..cardinality(k) LOOP \
             IF NOT (CASE WHEN a[i] IS NULL THEN pg_try_advisory_xact_lock{m}(k[i]) \
                          ELSE pg_try_advisory_xact_lock{m}(a[i], b[i]) END) \
             THEN \
               {next_timeout} \
               IF a[i] IS NULL THEN PERFORM pg_advisory_xact_lock{m}(k[i]); \
               ELSE PERFORM pg_advisory_xact_lock{m}(a[i], b[i]); END IF; \
             END IF; \
           END LOOP; \
           recorded := set_config('lock_timeout', saved, true); \
           outcome := 'acquired'; \
         EXCEPTION \
           WHEN SQLSTATE '{BUSY_SQLSTATE}' THEN outcome := 'busy'; \
           WHEN OTHERS OR query_canceled THEN \
             outcome := CASE WHEN SQLSTATE = '55P03' THEN 'busy' \
                             ELSE SQLSTATE || ' ' || SQLERRM END; \
         END;"
    )
}

/// The acquire of `ids` as an anonymous block with the ids written in as
/// literals, followed by the `SELECT` of its outcome, sent as one simple
/// query: 1 round trip. The server compiles the block on every call; see
/// [`acquire_call`] for the session-level acquire's compiled copy, and
/// [`xact_block`] for the short block of a transaction-level acquire without
/// a deadline.
pub(crate) fn acquire_block(
    level: Level,
    ids: &[LockId],
    shared: bool,
    wait: Wait,
    token: u64,
) -> String {
    let (k, a, b) = id_arrays(ids);
    let body = match (level, wait) {
        (Level::Session, _) => session_body(shared, RECORD_IN_SETTING),
        (Level::Transaction, Wait::Until(_)) => xact_timed_body(shared),
        (Level::Transaction, Wait::No | Wait::Forever) => {
            return xact_block(&k, &a, &b, shared, wait);
        }
    };
    let wait_us = wait.micros();
    format!(
        "DO $alock$ DECLARE \
           k int8[] := {k}; a int4[] := {a}; b int4[] := {b}; \
           wait_us int8 := {wait_us}; token text := '{token}'; \
           {BODY_DECLARATIONS} \
         BEGIN \
           {body} \
           recorded := set_config('alock.outcome', outcome, true); \
         END $alock$; \
         SELECT current_setting('alock.outcome')"
    )
}

/// The transaction-level acquire of ids that need no deadline, as the
/// shortest block that does it, since inside a transaction the server
/// compiles the block on every call: one statement takes the ids in order
/// (waiting, or trying until one is busy, which raises), inside a block
/// whose subtransaction, rolled back on any error, gives back every id it
/// took. `k`, `a`, `b` are the ids' array literals.
fn xact_block(k: &str, a: &str, b: &str, shared: bool, wait: Wait) -> String {
    let m = suffix(shared);
    let ids = format!("unnest({k}::int8[], {a}::int4[], {b}::int4[]) AS id(k, a, b)");
    let take = if let Wait::No = wait {
        format!(
            "IF EXISTS (SELECT FROM {ids} \
                 WHERE NOT CASE WHEN a IS NULL THEN pg_try_advisory_xact_lock{m}(k) \
                                ELSE pg_try_advisory_xact_lock{m}(a, b) END) \
             THEN RAISE EXCEPTION USING ERRCODE = '{BUSY_SQLSTATE}'; END IF;"
        )
    } else {
        format!(
            "PERFORM count(CASE WHEN a IS NULL THEN pg_advisory_xact_lock{m}(k) \
                                ELSE pg_advisory_xact_lock{m}(a, b) END) \
               FROM {ids};"
        )
    };
    format!(
        "DO $alock$ DECLARE outcome text := 'acquired'; BEGIN \
           BEGIN \
             {take} \
           EXCEPTION \
             WHEN SQLSTATE '{BUSY_SQLSTATE}' THEN outcome := 'busy'; \
             WHEN OTHERS OR query_canceled THEN outcome := SQLSTATE || ' ' || SQLERRM; \
           END; \
           PERFORM set_config('alock.outcome', outcome, true); \
         END $alock$; \
         SELECT current_setting('alock.outcome')"
    )
}

/// The session's functions: the session-level acquire, and the wait for one
/// id, in each mode. The version in the names changes whenever what a body
/// does or returns changes, so that a session that outlives one version of
/// this crate (a pooler handing it to another process) never runs another's
/// function. Transaction-level locks are taken inside transactions, where
/// the anonymous block always runs, so they have no function.
///
/// Creates them, as functions in `pg_temp`: private to the session, gone
/// when it ends. One simple query.
pub(crate) fn create_session_functions() -> String {
    // Granted to PUBLIC so that a session that changes role (`SET ROLE`)
    // can still record and read: a temporary object is reachable from its
    // own session only.
    let mut sql = format!(
        "CREATE SEQUENCE IF NOT EXISTS {ACQUIRED_SEQUENCE}; \
         GRANT SELECT, UPDATE ON SEQUENCE {ACQUIRED_SEQUENCE} TO PUBLIC; "
    );
    for shared in [false, true] {
        let m = suffix(shared);
        let body = session_body(shared, RECORD_IN_SEQUENCE);
        let wait_one = wait_one_body(shared);
        let _ = write!(
            sql,
            "CREATE OR REPLACE FUNCTION pg_temp.alock_v3_acquire{m}\
               (k int8[], a int4[], b int4[], wait_us int8, token text) \
             RETURNS text LANGUAGE plpgsql VOLATILE AS $alock$ DECLARE \
               {BODY_DECLARATIONS} \
             BEGIN \
               {body} \
               RETURN outcome; \
             END $alock$; \
             CREATE OR REPLACE FUNCTION pg_temp.alock_v3_wait_one{m}\
               (k int8, a int4, b int4, wait_us int8) \
             RETURNS text LANGUAGE plpgsql VOLATILE AS $alock$ DECLARE \
               saved text; recorded text; released bool; held bool; tries int; \
               code text; message text; \
             BEGIN \
               {wait_one} \
             END $alock$;"
        );
    }
    sql
}

/// Calls the session's compiled copy of the session-level acquire; returns
/// its outcome. The arrays of a form the ids do not take are passed as NULL
/// rather than bound, and the body counts the ids from whichever is not.
/// Bind: as for [`unlock_many`], then the wait in microseconds and the
/// token. 1 round trip.
pub(crate) const fn acquire_call(forms: Forms, shared: bool) -> &'static str {
    match (forms, shared) {
        (Forms::Int8, false) => "SELECT pg_temp.alock_v3_acquire($1, NULL, NULL, $2, $3)",
        (Forms::Int8, true) => "SELECT pg_temp.alock_v3_acquire_shared($1, NULL, NULL, $2, $3)",
        (Forms::Pairs, false) => "SELECT pg_temp.alock_v3_acquire(NULL, $1, $2, $3, $4)",
        (Forms::Pairs, true) => "SELECT pg_temp.alock_v3_acquire_shared(NULL, $1, $2, $3, $4)",
        (Forms::Mixed, false) => "SELECT pg_temp.alock_v3_acquire($1, $2, $3, $4, $5)",
        (Forms::Mixed, true) => "SELECT pg_temp.alock_v3_acquire_shared($1, $2, $3, $4, $5)",
    }
}

/// The most ids [`free_first`] takes; more go to the function directly.
pub(crate) const FREE_FIRST_MAX: usize = 16;

/// What the free-first statement reports if a session-level try failed
/// after the transaction-level try of the same id succeeded, which the
/// server never does: the session already holds the id then.
const FREE_FIRST_BROKEN: &str =
    "XX000 a session-level try failed on an id the transaction already held";

/// Takes several ids of one form, when every one is free, without calling
/// the session's function: the statement tries each id at transaction
/// level, in order, and only if all were free records the token in
/// [`ACQUIRED_SEQUENCE`] and takes them all at session level, in one
/// expression. Otherwise, when it may
/// not wait, it reports `busy`; when it may, it calls the session's
/// function ([`acquire_call`]), which takes, waits or gives back as usual.
/// Outside a transaction only.
///
/// Why it is safe:
///
/// - The transaction-level tries end with the statement. If one is busy,
///   or one fails (a full lock table), they are given back with it, and no
///   session-level lock was taken.
/// - The record and the session-level tries cannot fail or be interrupted
///   part way. The session already holds each id, so each is granted at
///   once without touching the shared lock table, and PostgreSQL checks for
///   interrupts between rows and statements, not while it evaluates one
///   expression. So the ids are taken all together, with the record, or
///   not at all.
/// - A cancel that arrives meanwhile is acted on after the expression: it
///   fails the statement with the ids held and the record kept (a
///   sequence's value is not transactional), and the caller's cleanup
///   releases them.
///
/// A busy id costs the tries, then, if the call may wait, the function.
///
/// `None` for mixed forms, or fewer than 2 or more than [`FREE_FIRST_MAX`]
/// ids: one text per count, form and mode, at most 60, each prepared by
/// sqlx once per connection. Bind: the wait in microseconds, the token,
/// then each id's key(s).
pub(crate) fn free_first(forms: Forms, n: usize, shared: bool) -> Option<&'static str> {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    let form = match forms {
        Forms::Int8 => 0,
        Forms::Pairs => 1,
        Forms::Mixed => return None,
    };
    if !(2..=FREE_FIRST_MAX).contains(&n) {
        return None;
    }
    let texts = TEXTS.get_or_init(|| {
        let mut texts = Vec::new();
        for forms in [Forms::Int8, Forms::Pairs] {
            for shared in [false, true] {
                for n in 2..=FREE_FIRST_MAX {
                    texts.push(free_first_text(forms, n, shared));
                }
            }
        }
        texts
    });
    let per_mode = FREE_FIRST_MAX - 1;
    Some(&texts[(form * 2 + usize::from(shared)) * per_mode + n - 2])
}

fn free_first_text(forms: Forms, n: usize, shared: bool) -> String {
    let m = suffix(shared);
    let param = |i: usize| format!("${}", i + 3);
    let (args, call): (Vec<String>, String) = match forms {
        Forms::Int8 => {
            let keys: Vec<String> = (0..n).map(param).collect();
            let call = format!("ARRAY[{}]::int8[], NULL, NULL", keys.join(", "));
            (keys, call)
        }
        _ => {
            let (a, b): (Vec<String>, Vec<String>) =
                (0..n).map(|i| (param(2 * i), param(2 * i + 1))).unzip();
            let args = a.iter().zip(&b).map(|(a, b)| format!("{a}, {b}")).collect();
            let call = format!(
                "NULL, ARRAY[{}]::int4[], ARRAY[{}]::int4[]",
                a.join(", "),
                b.join(", ")
            );
            (args, call)
        }
    };
    let tries = |function: &str| {
        args.iter()
            .map(|a| format!("{function}{m}({a})"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    format!(
        "SELECT CASE WHEN {xact} \
                THEN CASE WHEN setval('{ACQUIRED_SEQUENCE}', $2::int8) IS NOT NULL \
                               AND {session} THEN $2 \
                          ELSE '{FREE_FIRST_BROKEN}' END \
                WHEN $1 = 0 THEN 'busy' \
                ELSE pg_temp.alock_v3_acquire{m}({call}, $1, $2) END",
        xact = tries("pg_try_advisory_xact_lock"),
        session = tries("pg_try_advisory_lock"),
    )
}

/// Releases `ids`, in reverse order, when `condition` holds: one
/// `SELECT` over literal arrays, so any number of ids fits.
fn unlock_where(ids: &[LockId], shared: bool, condition: &str) -> String {
    let m = suffix(shared);
    let reversed: Vec<LockId> = ids.iter().rev().copied().collect();
    let (k, a, b) = id_arrays(&reversed);
    format!(
        "SELECT count(CASE WHEN a IS NULL THEN pg_advisory_unlock{m}(k) \
                           ELSE pg_advisory_unlock{m}(a, b) END) \
           FROM unnest({k}::int8[], {a}::int4[], {b}::int4[]) AS id(k, a, b) \
          WHERE {condition}"
    )
}

/// Releases held `ids`. Queued from `Drop`, so a simple query.
pub(crate) fn unlock_queued(ids: &[LockId], shared: bool) -> String {
    unlock_where(ids, shared, "true")
}

/// Releases one id if this session holds it, granted, in this mode, as
/// `pg_locks` shows it: what a dropped single-id acquire queues. For one id
/// that is exact, with no token: a session that already held the id in this
/// mode (through another object) is granted it again at once, so whenever
/// the id is held after the acquire's statement, that statement took it
/// (once more), and giving it back once undoes exactly that; when the
/// statement failed or found the id busy, the session does not hold it in
/// this mode.
pub(crate) fn cleanup_if_held(id: LockId, shared: bool) -> String {
    let m = suffix(shared);
    let mode = pg_locks_mode(shared);
    let (classid, objid, objsubid) = id.pg_locks_row();
    let args = match id {
        LockId::Int8(key) => format!("{key}::int8"),
        LockId::Int4Pair(key1, key2) => format!("{key1}, {key2}"),
    };
    format!(
        "SELECT pg_advisory_unlock{m}({args}) \
          WHERE EXISTS (SELECT FROM pg_locks \
                         WHERE locktype = 'advisory' AND granted AND mode = '{mode}' \
                           AND pid = pg_backend_pid() AND classid = {classid} \
                           AND objid = {objid} AND objsubid = {objsubid})"
    )
}

/// Releases `ids` only if the acquire that recorded `token` (in
/// [`ACQUIRED_SEQUENCE`], or in `alock.acquired` for the anonymous block)
/// took them. Queued from `Drop` when an acquire's response will never be
/// read, or its statement failed as a whole. Never fails: a session without
/// the sequence, or whose role may not read it, reads NULL.
pub(crate) fn cleanup_if_acquired(ids: &[LockId], shared: bool, token: u64) -> String {
    unlock_where(
        ids,
        shared,
        &format!(
            "(CASE WHEN has_sequence_privilege(to_regclass('{ACQUIRED_SEQUENCE}'), 'SELECT') \
                   THEN pg_sequence_last_value(to_regclass('{ACQUIRED_SEQUENCE}')) = {token} \
              END \
              OR current_setting('alock.acquired', true) = '{token}')"
        ),
    )
}

/// Releases `ids` unless the release that records `token` in
/// `alock.released` ran. Queued from `Drop` when a release's future is
/// dropped before its response is read: if its statement was sent, it ran
/// first and this does nothing; if not, this releases in its place.
pub(crate) fn cleanup_unless_released(ids: &[LockId], shared: bool, token: u64) -> String {
    unlock_where(
        ids,
        shared,
        &format!("current_setting('alock.released', true) IS DISTINCT FROM '{token}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_put_each_form_in_its_own_column() {
        let (k, a, b) = id_arrays(&[LockId::Int8(-5), LockId::Int4Pair(1, -2)]);
        assert_eq!(k, "'{-5,NULL}'");
        assert_eq!(a, "'{NULL,1}'");
        assert_eq!(b, "'{NULL,-2}'");
    }

    #[test]
    fn outcomes() {
        let parse = |text| Outcome::parse(text, "17");
        assert_eq!(parse("17"), Outcome::Acquired { waited: false });
        assert_eq!(parse("acquired"), Outcome::Acquired { waited: false });
        assert_eq!(parse("waited"), Outcome::Acquired { waited: true });
        assert_eq!(parse("busy"), Outcome::Busy);
        assert_eq!(
            parse("40P01 deadlock detected"),
            Outcome::Failed {
                code: "40P01".into(),
                message: "deadlock detected".into()
            }
        );
        // Another call's token is not this one's success.
        assert!(matches!(parse("16"), Outcome::Failed { .. }));
    }

    #[test]
    fn queued_unlocks_run_in_reverse() {
        let sql = unlock_queued(&[LockId::Int8(1), LockId::Int4Pair(2, 3)], true);
        assert!(sql.contains("unnest('{NULL,1}'::int8[], '{2,NULL}'::int4[], '{3,NULL}'::int4[])"));
        assert!(sql.contains("pg_advisory_unlock_shared(a, b)"));
    }

    #[test]
    fn free_first_texts_bind_each_id_once_in_order() {
        let text = free_first(Forms::Int8, 3, false).unwrap();
        assert!(text.contains(
            "pg_try_advisory_xact_lock($3) AND pg_try_advisory_xact_lock($4) \
             AND pg_try_advisory_xact_lock($5)"
        ));
        assert!(
            text.contains(
                "pg_temp.alock_v3_acquire(ARRAY[$3, $4, $5]::int8[], NULL, NULL, $1, $2)"
            )
        );
        let text = free_first(Forms::Pairs, 2, true).unwrap();
        assert!(text.contains(
            "pg_try_advisory_lock_shared($3, $4) AND pg_try_advisory_lock_shared($5, $6)"
        ));
        assert!(text.contains("(NULL, ARRAY[$3, $5]::int4[], ARRAY[$4, $6]::int4[], $1, $2)"));
        assert_eq!(
            free_first(Forms::Pairs, FREE_FIRST_MAX, true),
            Some(free_first_text(Forms::Pairs, FREE_FIRST_MAX, true).as_str())
        );
        assert_eq!(free_first(Forms::Int8, 1, false), None);
        assert_eq!(free_first(Forms::Int8, FREE_FIRST_MAX + 1, false), None);
        assert_eq!(free_first(Forms::Mixed, 2, false), None);
    }

    #[test]
    fn empty_arrays_are_valid_literals() {
        assert_eq!(
            id_arrays(&[]),
            ("'{}'".into(), "'{}'".into(), "'{}'".into())
        );
    }
}
