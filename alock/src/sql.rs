//! Every SQL text this crate sends. `DESIGN.md` explains them on one page.
//!
//! - One PL/pgSQL body per level ([`body`]) does every acquire that may
//!   wait or takes several ids, and another ([`release_body`]) every
//!   release of several ids. Outside a transaction the session-level ones
//!   run as the session's functions in `pg_temp`; inside one, on sessions
//!   that cannot create functions, and from `Drop`, as anonymous `DO`
//!   blocks, as the transaction-level body always does.
//! - A single id that is free costs one plain statement ([`lock_one`],
//!   [`unlock_one`], [`try_xact_one`]), what hand-written SQL costs.
//! - At transaction level nothing is prepared: [`try_xact_one`] and the
//!   anonymous block are simple queries, which run whole on the session of
//!   their transaction, behind a transaction-mode pooler too.
//! - Every id of a session-level hold has a record: a shared lock on
//!   `(TOKEN_NAMESPACE + position, token)`, taken and released in the same
//!   statement as the id. Whether the session holds a record is the one
//!   record of whether a statement took that id; a session-level lock
//!   survives the abort of the statement that took it, so the record does
//!   too.
//!
//! Values never become SQL text except as integer literals written by Rust.

use std::fmt::Write as _;

use crate::LockId;

/// The first key of every record, less its position, in the int4-pair key
/// space: the bytes of "aloc".
pub(crate) const TOKEN_NAMESPACE: i32 = 1_634_496_355;

/// The first half of the record of a single id, [`TOKEN_NAMESPACE`] + 1, as
/// a literal for the statement texts written as constants.
macro_rules! first_record {
    () => {
        "1634496356"
    };
}

/// The session's functions; the version changes whenever a body does.
const ACQUIRE_FN: &str = "pg_temp.alock_v6_acquire";
const RELEASE_FN: &str = "pg_temp.alock_v6_release";

/// The statement `statement(call)` for id `j` of a body (a PL/pgSQL
/// expression), where `call` is `function` called on that id in the body's
/// mode (its `shared` argument) and the id's form (`k[j]`, or `a[j], b[j]`).
/// The four variants are chosen by PL/pgSQL `IF`s rather than inside one
/// expression, so that a call evaluates, and prepares once per transaction,
/// only the variant it runs.
fn per_id(function: &str, j: &str, statement: impl Fn(&str) -> String) -> String {
    let int8 = |suffix: &str| statement(&format!("{function}{suffix}(k[{j}])"));
    let pair = |suffix: &str| statement(&format!("{function}{suffix}(a[{j}], b[{j}])"));
    format!(
        "IF shared THEN \
           IF a[{j}] IS NULL THEN {} ELSE {} END IF; \
         ELSIF a[{j}] IS NULL THEN {} ELSE {} END IF;",
        int8("_shared"),
        pair("_shared"),
        int8(""),
        pair(""),
    )
}

/// Declarations of [`body`] beyond its arguments.
const BODY_DECLARATIONS: &str = "\
    n int := greatest(cardinality(k), cardinality(a)); \
    taken int := 0; waiting int := 0; free bool; outcome text; long bool := false; \
    saved text; slice int8; remaining int8; ignored text;";

/// Gives back the ids a body took (`taken` of them) with their records,
/// each id with its record in one statement, retried where an interrupt (a
/// cancel, `statement_timeout`, or the signal of a lock timeout that arrives
/// after another interrupt ended the wait) lands, so that it ends with none of them
/// held. Only interrupts are retried: any other error ends the call, and
/// the cleanup its caller queues finishes the work from the records.
///
/// The record goes first, and the id only if the record was held: PL/pgSQL
/// may evaluate a step through the executor, which checks for interrupts
/// after the unlocks and before `taken` is counted down, and the retry must
/// then not unlock the id again (that would give back an outer hold of the
/// same id). A retry that finds the record gone only counts down, with the
/// server's warning that it was not held.
fn give_back() -> String {
    let step = per_id("pg_advisory_unlock", "taken", |unlock| {
        format!(
            "taken := taken - 1 \
                      - (CASE WHEN pg_advisory_unlock_shared({TOKEN_NAMESPACE} + taken, token) \
                              THEN {unlock} ELSE true END IS NULL)::int;"
        )
    });
    format!(
        "LOOP \
           BEGIN \
             WHILE taken > 0 LOOP {step} END LOOP; \
             EXIT; \
           EXCEPTION WHEN query_canceled OR lock_not_available THEN NULL; \
           END; \
         END LOOP;"
    )
}

/// Starts waiting, once per call: sets `lock_timeout` to one slice, or to
/// what is left of the call's budget if less, for the transaction. A
/// session-level acquire runs outside transactions, so the setting ends
/// with its statement; the transaction-level body keeps the old value in
/// `saved` and restores it. A slice is `deadlock_timeout` + 100 ms, so that
/// the server's deadlock detector runs in it, but at most 900 ms less a
/// random part of up to 150 ms, so that an abandoned wait ends within 900
/// ms and two waits do not end their slices in step; the body then looks
/// for a cycle itself at the end of a slice ([`deadlocked`]), and if it
/// finds one waits again in the same call, `long`: for `deadlock_timeout` +
/// 100 ms whatever that is, so that the server's detector runs.
/// `remaining` stays NULL when the call has no budget.
fn start_waiting(xact: bool) -> String {
    let save = if xact {
        "saved := current_setting('lock_timeout');"
    } else {
        ""
    };
    format!(
        "IF slice IS NULL THEN \
           {save} \
           slice := least((date_part('epoch', current_setting('deadlock_timeout')::interval) \
                           * 1000)::int8 + 100, \
                          CASE WHEN NOT long THEN 900 - (random() * 150)::int8 END); \
           IF wait_ms > 0 THEN \
             remaining := greatest(wait_ms - greatest(waited_ms, 0), 1); \
           ELSIF current_setting('lock_timeout') <> '0' THEN \
             remaining := greatest((date_part('epoch', current_setting('lock_timeout')::interval) \
                                    * 1000)::int8 - greatest(waited_ms, 0), 1); \
           END IF; \
           ignored := set_config('lock_timeout', least(remaining, slice) || 'ms', true); \
         END IF;"
    )
}

/// Whether, at the end of a slice spent waiting for id `i` (a PL/pgSQL
/// expression), the wait may be part of a cycle: whether a session that
/// holds that id, or waits for it in a conflicting mode ahead of this one,
/// waits, directly or through the sessions `pg_blocking_pids` names, for
/// this session. The slice, shorter than `deadlock_timeout`, ended the wait
/// before the server's deadlock detector ran, so the server never looked.
/// A chain found is a deadlock, or a cycle through a place in a queue that
/// the server resolves by reordering it; the body lets the server's
/// detector decide which, and which session is its victim. The session is
/// out of every wait queue then, so every edge into it is a lock it holds.
fn deadlocked(i: &str) -> String {
    format!(
        "EXISTS (WITH RECURSIVE blocker(pid) AS ( \
                   SELECT l.pid FROM pg_locks l \
                    WHERE l.locktype = 'advisory' AND l.pid <> pg_backend_pid() \
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                      AND (NOT shared OR l.mode = 'ExclusiveLock') \
                      AND {matches} \
                   UNION \
                   SELECT w.p FROM blocker, unnest(pg_blocking_pids(blocker.pid)) AS w(p)) \
                 SELECT FROM blocker WHERE pid = pg_backend_pid())",
        matches = is_id("l", i),
    )
}

/// Whether the `pg_locks` row `l` is the lock of id `i` (a PL/pgSQL
/// expression), in either form.
fn is_id(l: &str, i: &str) -> String {
    format!(
        "{l}.objsubid = CASE WHEN a[{i}] IS NULL THEN 1 ELSE 2 END \
         AND {l}.classid::int8 = CASE WHEN a[{i}] IS NULL THEN (k[{i}] >> 32) & 4294967295 \
                                      ELSE a[{i}]::int8 & 4294967295 END \
         AND {l}.objid::int8 = CASE WHEN a[{i}] IS NULL THEN k[{i}] & 4294967295 \
                                    ELSE b[{i}]::int8 & 4294967295 END"
    )
}

/// Whether `pg_locks` shows id `i` (a PL/pgSQL expression) granted to this
/// session in the body's mode.
fn granted_to_session(i: &str) -> String {
    format!(
        "EXISTS (SELECT FROM pg_locks \
                  WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() \
                    AND mode = CASE WHEN shared THEN 'ShareLock' ELSE 'ExclusiveLock' END \
                    AND {matches})",
        matches = is_id("pg_locks", i),
    )
}

/// The acquire body of a level: one text per level. Arguments: `k int8[]`,
/// `a int4[]`, `b int4[]` (one entry per id, NULL where the id is of the
/// other form), `shared bool`, `wait_ms int8` (0: never wait; -1: as long
/// as the session's `lock_timeout` allows; otherwise the caller's timeout),
/// `waited_ms int8` (waited by earlier slices of this call; -1 when the
/// caller just found the first id busy, so that it is waited for without
/// another try), `token int4`.
///
/// Returns `acquired`, `waited` (acquired after waiting), `busy`,
/// `waiting` (a slice ended; call again), or `SQLSTATE message`. All or
/// nothing: every error raised inside is caught, and what the call took is
/// given back before it returns.
///
/// How, at session level: each id is taken with its record, the lock
/// `(TOKEN_NAMESPACE + position, token)`, in one statement (the record
/// first, given back in the same statement if the id is busy), so that an
/// interrupt lands before both or after both, wherever it lands. A busy id
/// is waited for with its record already held: a record whose id is not
/// held means the session does not hold that id in this mode at all (the
/// try failed, and a session is always granted at once an id it already
/// holds in the mode), so releasing "its" id touches no other hold.
///
/// After an error the count `taken` is not trusted: PL/pgSQL evaluates an
/// expression it could not keep as a simple one (one whose planning an
/// interrupt cut short, after another session's catalog change had
/// invalidated the session's plans) through the executor, which checks for
/// interrupts after the expression took its id and record and before the
/// count is assigned. So the handler counts from `pg_locks` the records the
/// call holds (a prefix of its positions); the last of them is the id being
/// waited for when `pg_locks` does not show that id held in this mode, and
/// then only its record is given back (a grant that raced the error is
/// kept, and counted).
///
/// At transaction level every id is tried, then waited for if busy
/// (`waiting` says which), and the block's rollback gives back everything
/// on an error.
pub(crate) fn body(xact: bool) -> String {
    let start_waiting = start_waiting(xact);
    let take_all = if xact {
        let try_one = per_id("pg_try_advisory_xact_lock", "j", |call| {
            format!("free := {call};")
        });
        let wait_one = per_id("pg_advisory_xact_lock", "j", |call| {
            format!("PERFORM {call};")
        });
        format!(
            "{try_one} \
             IF NOT free THEN \
               IF wait_ms = 0 THEN RAISE SQLSTATE 'AL002'; END IF; \
               {start_waiting} \
               waiting := j; \
               {wait_one} \
             END IF;"
        )
    } else {
        let try_one = per_id("pg_try_advisory_lock", "j", |call| {
            format!(
                "taken := taken + (pg_try_advisory_lock_shared({TOKEN_NAMESPACE} + j, token) \
                                   AND ({call} \
                                        OR (pg_advisory_unlock_shared({TOKEN_NAMESPACE} + j, token) \
                                            IS NULL)))::int;"
            )
        });
        let wait_one = per_id("pg_advisory_lock", "j", |call| {
            format!("taken := j + ({call} IS NULL)::int;")
        });
        format!(
            "IF j > 1 OR waited_ms >= 0 THEN {try_one} END IF; \
             IF taken < j THEN \
               IF wait_ms = 0 THEN RAISE SQLSTATE 'AL002'; END IF; \
               {start_waiting} \
               IF NOT pg_try_advisory_lock_shared({TOKEN_NAMESPACE} + j, token) THEN \
                 RAISE SQLSTATE 'AL003' USING MESSAGE = 'another session holds this call''s record'; \
               END IF; \
               {wait_one} \
             END IF;"
        )
    };
    // What the session holds after an error, at session level; the
    // transaction-level block's rollback gave back everything.
    let (give_back_busy, count_held, give_back_rest, restore) = if xact {
        (
            String::new(),
            String::new(),
            String::new(),
            "IF slice IS NOT NULL THEN ignored := set_config('lock_timeout', saved, true); END IF;",
        )
    } else {
        (
            give_back(),
            format!(
                "taken := (SELECT coalesce(max(l.classid::int8 - {TOKEN_NAMESPACE}), 0) FROM pg_locks l \
                            WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid() \
                              AND l.mode = 'ShareLock' AND l.objsubid = 2 \
                              AND l.objid::int8 = token::int8 & 4294967295 \
                              AND l.classid::int8 BETWEEN {TOKEN_NAMESPACE} + 1 \
                                                      AND {TOKEN_NAMESPACE} + n)::int; \
                 waiting := CASE WHEN taken > 0 AND NOT {granted} THEN taken ELSE 0 END;",
                granted = granted_to_session("taken"),
            ),
            format!(
                "taken := taken - (waiting > 0 \
                                   AND pg_advisory_unlock_shared({TOKEN_NAMESPACE} + waiting, token))::int; \
                 {give_back}",
                give_back = give_back(),
            ),
            "",
        )
    };
    let deadlocked = deadlocked("waiting");
    format!(
        "LOOP \
         BEGIN \
           FOR j IN 1..n LOOP {take_all} END LOOP; \
           outcome := CASE WHEN slice IS NOT NULL OR waited_ms <> 0 THEN 'waited' ELSE 'acquired' END; \
         EXCEPTION \
           WHEN SQLSTATE 'AL002' THEN \
             outcome := 'busy'; \
             {give_back_busy} \
           WHEN OTHERS OR query_canceled THEN \
             outcome := CASE \
               WHEN SQLSTATE <> '55P03' OR slice IS NULL THEN SQLSTATE || ' ' || SQLERRM \
               WHEN remaining IS NULL OR remaining > slice THEN 'waiting' \
               WHEN wait_ms > 0 THEN 'busy' \
               ELSE SQLSTATE || ' ' || SQLERRM END; \
             {count_held} \
             IF outcome = 'waiting' AND waiting > 0 AND NOT long \
                AND slice < (date_part('epoch', current_setting('deadlock_timeout')::interval) \
                             * 1000)::int8 + 100 \
                AND {deadlocked} THEN \
               outcome := 'again'; \
             END IF; \
             {give_back_rest} \
         END; \
         EXIT WHEN outcome <> 'again'; \
         long := true; \
         waited_ms := greatest(waited_ms, 0) + slice; \
         slice := NULL; remaining := NULL; taken := 0; waiting := 0; \
         END LOOP; \
         {restore}"
    )
}

/// The release body. Arguments: `k`, `a`, `b` as for [`body`], in the
/// order they were taken, `shared bool`, `token int4`. Releases every id
/// with its record, last first, each pair in one statement, retried where
/// an interrupt lands; returns how many of the ids the session no longer
/// held (`missing`). The position and that count share one `int8` (the
/// position in the low 32 bits), so that a step is one statement.
///
/// As in [`give_back`], the record goes first and the id only if the
/// record was held, so that a step the executor interrupted after its
/// unlocks never unlocks its id twice when it is retried. A record found
/// gone counts its id as missing (the session lost both), except at the
/// position an interrupt was caught at (`retried`), where the step may
/// have run.
pub(crate) fn release_body() -> String {
    let step = per_id("pg_advisory_unlock", "i", |unlock| {
        format!(
            "p := p - 1 + 4294967296 * (CASE \
                   WHEN pg_advisory_unlock_shared({TOKEN_NAMESPACE} + i, token) \
                   THEN NOT {unlock} ELSE i <> retried END)::int::int8;"
        )
    });
    format!(
        "LOOP \
           BEGIN \
             WHILE (p & 4294967295) > 0 LOOP \
               i := (p & 4294967295)::int; \
               {step} \
             END LOOP; \
             EXIT; \
           EXCEPTION WHEN query_canceled OR lock_not_available THEN \
             retried := p & 4294967295; \
           END; \
         END LOOP; \
         missing := (p >> 32)::int;"
    )
}

/// Declarations of [`release_body`] beyond its arguments.
const RELEASE_DECLARATIONS: &str = "\
    p int8 := greatest(cardinality(k), cardinality(a)); i int; retried int8 := 0; missing int;";

/// Creates the session's functions, private to the session and gone when
/// it ends. One simple query.
pub(crate) fn create_functions() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {ACQUIRE_FN}\
           (k int8[], a int4[], b int4[], shared bool, \
            wait_ms int8, waited_ms int8, token int4) \
         RETURNS text LANGUAGE plpgsql VOLATILE AS $alock$ \
         DECLARE {BODY_DECLARATIONS} \
         BEGIN {body} RETURN outcome; END $alock$; \
         CREATE OR REPLACE FUNCTION {RELEASE_FN}\
           (k int8[], a int4[], b int4[], shared bool, token int4) \
         RETURNS int LANGUAGE plpgsql VOLATILE AS $alock$ \
         DECLARE {RELEASE_DECLARATIONS} \
         BEGIN {release} RETURN missing; END $alock$;",
        body = body(false),
        release = release_body(),
    )
}

/// Takes one id at session level with its token, in one expression, if it
/// is free; otherwise answers `busy` (when it may not wait) or calls the
/// session's function, which waits. The token is reserved at transaction
/// level first: its session-level lock is then granted without the shared
/// lock table, so once the id is taken nothing can fail before the token
/// is. Answers the outcome and the session's backend pid. Bind: the key(s),
/// the token, wait_ms, waited_ms. 1 round trip.
pub(crate) const fn lock_one(id: LockId, shared: bool) -> &'static str {
    match (id, shared) {
        (LockId::Int8(_), false) => concat!(
            "SELECT CASE WHEN pg_try_advisory_xact_lock_shared(",
            first_record!(),
            ", $2) ",
            "AND pg_try_advisory_lock($1) ",
            "AND pg_try_advisory_lock_shared(",
            first_record!(),
            ", $2) THEN 'acquired' ",
            "WHEN $3 = 0 THEN 'busy' ",
            "ELSE pg_temp.alock_v6_acquire(ARRAY[$1], NULL, NULL, false, $3, CASE WHEN $4 = 0 THEN -1 ELSE $4 END, $2) END, pg_backend_pid()"
        ),
        (LockId::Int8(_), true) => concat!(
            "SELECT CASE WHEN pg_try_advisory_xact_lock_shared(",
            first_record!(),
            ", $2) ",
            "AND pg_try_advisory_lock_shared($1) ",
            "AND pg_try_advisory_lock_shared(",
            first_record!(),
            ", $2) THEN 'acquired' ",
            "WHEN $3 = 0 THEN 'busy' ",
            "ELSE pg_temp.alock_v6_acquire(ARRAY[$1], NULL, NULL, true, $3, CASE WHEN $4 = 0 THEN -1 ELSE $4 END, $2) END, pg_backend_pid()"
        ),
        (LockId::Int4Pair(..), false) => concat!(
            "SELECT CASE WHEN pg_try_advisory_xact_lock_shared(",
            first_record!(),
            ", $3) ",
            "AND pg_try_advisory_lock($1, $2) ",
            "AND pg_try_advisory_lock_shared(",
            first_record!(),
            ", $3) THEN 'acquired' ",
            "WHEN $4 = 0 THEN 'busy' ",
            "ELSE pg_temp.alock_v6_acquire(NULL, ARRAY[$1], ARRAY[$2], false, $4, CASE WHEN $5 = 0 THEN -1 ELSE $5 END, $3) END, pg_backend_pid()"
        ),
        (LockId::Int4Pair(..), true) => concat!(
            "SELECT CASE WHEN pg_try_advisory_xact_lock_shared(",
            first_record!(),
            ", $3) ",
            "AND pg_try_advisory_lock_shared($1, $2) ",
            "AND pg_try_advisory_lock_shared(",
            first_record!(),
            ", $3) THEN 'acquired' ",
            "WHEN $4 = 0 THEN 'busy' ",
            "ELSE pg_temp.alock_v6_acquire(NULL, ARRAY[$1], ARRAY[$2], true, $4, CASE WHEN $5 = 0 THEN -1 ELSE $5 END, $3) END, pg_backend_pid()"
        ),
    }
}

/// Releases one id and its record, in one expression, if this is the
/// session that took them: the record first, and the id only if the record
/// was held, so that an id the session lost and took again by other means
/// is left alone. Answers whether the session still held the id (NULL on
/// another session, which is left alone) and the session's pid. Bind: the
/// key(s), the token, the pid that took them. 1 round trip.
pub(crate) const fn unlock_one(id: LockId, shared: bool) -> &'static str {
    match (id, shared) {
        (LockId::Int8(_), false) => concat!(
            "SELECT CASE WHEN pg_backend_pid() = $3 THEN CASE WHEN pg_advisory_unlock_shared(",
            first_record!(),
            ", $2) THEN pg_advisory_unlock($1) ELSE false END END, pg_backend_pid()"
        ),
        (LockId::Int8(_), true) => concat!(
            "SELECT CASE WHEN pg_backend_pid() = $3 THEN CASE WHEN pg_advisory_unlock_shared(",
            first_record!(),
            ", $2) THEN pg_advisory_unlock_shared($1) ELSE false END END, pg_backend_pid()"
        ),
        (LockId::Int4Pair(..), false) => concat!(
            "SELECT CASE WHEN pg_backend_pid() = $4 THEN CASE WHEN pg_advisory_unlock_shared(",
            first_record!(),
            ", $3) THEN pg_advisory_unlock($1, $2) ELSE false END END, pg_backend_pid()"
        ),
        (LockId::Int4Pair(..), true) => concat!(
            "SELECT CASE WHEN pg_backend_pid() = $4 THEN CASE WHEN pg_advisory_unlock_shared(",
            first_record!(),
            ", $3) THEN pg_advisory_unlock_shared($1, $2) ELSE false END END, pg_backend_pid()"
        ),
    }
}

/// Tries one id at transaction level: a simple query with the key(s)
/// written in, so that it prepares nothing and runs whole on the session of
/// its transaction, behind a pooler too. 1 round trip.
pub(crate) fn try_xact_one(id: LockId, shared: bool) -> String {
    let lock = if shared {
        "pg_try_advisory_xact_lock_shared"
    } else {
        "pg_try_advisory_xact_lock"
    };
    match id {
        LockId::Int8(key) => format!("SELECT {lock}('{key}'::int8)"),
        LockId::Int4Pair(key1, key2) => format!("SELECT {lock}('{key1}'::int4, '{key2}'::int4)"),
    }
}

/// Calls the session's acquire function at session level; answers the
/// outcome and the session's pid. Bind: `int8[]`, `int4[]`, `int4[]`,
/// shared, wait_ms, waited_ms, token. 1 round trip.
pub(crate) const ACQUIRE_MANY: &str =
    "SELECT pg_temp.alock_v6_acquire($1, $2, $3, $4, $5, $6, $7), pg_backend_pid()";

/// Calls the session's release function if this is the session that took
/// the ids (NULL on another, which is left alone); answers how many were
/// missing and the session's pid. Bind: the arrays in release order,
/// shared, token, the pid that took them. 1 round trip.
pub(crate) const RELEASE_MANY: &str = "SELECT CASE WHEN pg_backend_pid() = $6 \
       THEN pg_temp.alock_v6_release($1, $2, $3, $4, $5) END, pg_backend_pid()";

/// How many of the given ids this session holds, granted, in the given
/// mode, and the session's pid. Bind: `int8[]` classids, `int8[]` objids,
/// `int2[]` objsubids, mode. 1 round trip.
pub(crate) const HELD_BY_SESSION: &str = "\
    SELECT count(DISTINCT (l.classid, l.objid, l.objsubid)), pg_backend_pid() \
      FROM pg_locks l \
      JOIN unnest($1::int8[], $2::int8[], $3::int2[]) AS id(c, o, s) \
        ON l.classid::int8 = id.c AND l.objid::int8 = id.o AND l.objsubid = id.s \
     WHERE l.locktype = 'advisory' AND l.granted AND l.mode = $4 \
       AND l.pid = pg_backend_pid()";

/// The `pg_locks.mode` of a lock mode.
pub(crate) const fn pg_locks_mode(shared: bool) -> &'static str {
    if shared { "ShareLock" } else { "ExclusiveLock" }
}

/// Writes the ids as the three array literals of a body's arguments.
fn arrays(ids: &[LockId]) -> String {
    let (mut k, mut a, mut b) = (String::new(), String::new(), String::new());
    for (i, id) in ids.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        match *id {
            LockId::Int8(key) => {
                let _ = write!(k, "{sep}{key}");
                let _ = write!(a, "{sep}NULL");
                let _ = write!(b, "{sep}NULL");
            }
            LockId::Int4Pair(key1, key2) => {
                let _ = write!(k, "{sep}NULL");
                let _ = write!(a, "{sep}{key1}");
                let _ = write!(b, "{sep}{key2}");
            }
        }
    }
    format!("k int8[] := '{{{k}}}'; a int4[] := '{{{a}}}'; b int4[] := '{{{b}}}';")
}

/// The acquire body as an anonymous block, followed by a `SELECT` of its
/// outcome: one simple query, 1 round trip.
pub(crate) fn acquire_block(
    ids: &[LockId],
    shared: bool,
    xact: bool,
    wait_ms: i64,
    waited_ms: i64,
    token: i32,
) -> String {
    format!(
        "DO $alock$ DECLARE {arrays} shared bool := {shared}; \
           wait_ms int8 := {wait_ms}; waited_ms int8 := {waited_ms}; token int4 := {token}; \
           {BODY_DECLARATIONS} \
         BEGIN {body} PERFORM set_config('alock.outcome', outcome, false); END $alock$; \
         SELECT current_setting('alock.outcome'), pg_backend_pid()",
        arrays = arrays(ids),
        body = body(xact),
    )
}

/// The release body as an anonymous block, run only on the session that
/// took the ids, followed by a `SELECT` of how many ids were missing (empty
/// on another session) and the session's pid: for sessions that cannot have
/// the functions. One simple query, 1 round trip.
pub(crate) fn release_block(ids: &[LockId], shared: bool, token: i32, pid: i32) -> String {
    format!(
        "DO $alock$ DECLARE {arrays} shared bool := {shared}; token int4 := {token}; \
           {RELEASE_DECLARATIONS} \
         BEGIN \
           IF pg_backend_pid() = {pid} THEN {release} END IF; \
           PERFORM set_config('alock.outcome', coalesce(missing::text, ''), false); \
         END $alock$; \
         SELECT current_setting('alock.outcome'), pg_backend_pid()",
        arrays = arrays(ids),
        release = release_body(),
    )
}

/// Releases every id of a hold whose record the session holds, with the
/// record: what `Drop` queues for a held object, for an acquire whose
/// answer was not read, and for a release that did not finish. Exact
/// wherever the call it cleans up after stopped, since each id and its
/// record are taken and released together; an interrupt inside is retried
/// from what `pg_locks` then shows. An anonymous block, so that it needs
/// nothing of the session, with `statement_timeout` lifted for it.
pub(crate) fn release_recorded(ids: &[LockId], shared: bool, token: i32) -> String {
    let step = per_id("pg_advisory_unlock", "j", |unlock| {
        format!(
            "ignored := ({unlock} IS NULL)::text \
                     || (pg_advisory_unlock_shared({TOKEN_NAMESPACE} + j, token) IS NULL)::text;"
        )
    });
    format!(
        "SELECT set_config('statement_timeout', '0', true); \
         DO $alock$ DECLARE {arrays} shared bool := {shared}; token int4 := {token}; \
           n int := {n}; j int; ignored text; \
         BEGIN \
           LOOP \
             BEGIN \
               FOR j IN SELECT (l.classid::int8 - {TOKEN_NAMESPACE})::int FROM pg_locks l \
                         WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid() \
                           AND l.mode = 'ShareLock' AND l.objsubid = 2 AND l.objid::int8 = {objid} \
                           AND l.classid::int8 BETWEEN {TOKEN_NAMESPACE} + 1 AND {TOKEN_NAMESPACE} + n \
                         ORDER BY 1 DESC LOOP {step} END LOOP; \
               EXIT; \
             EXCEPTION WHEN query_canceled OR lock_not_available THEN NULL; \
             END; \
           END LOOP; \
         END $alock$",
        arrays = arrays(ids),
        n = ids.len(),
        objid = token as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_ids_are_written_inside_array_literals() {
        let ids = [
            LockId::Int8(i64::MIN),
            LockId::Int8(i64::MAX),
            LockId::Int4Pair(i32::MIN, i32::MAX),
        ];
        assert_eq!(
            arrays(&ids),
            "k int8[] := '{-9223372036854775808,9223372036854775807,NULL}'; \
             a int4[] := '{NULL,NULL,-2147483648}'; \
             b int4[] := '{NULL,NULL,2147483647}';"
                .replace("             ", "")
        );
        let cleanup = release_recorded(&ids, false, i32::MIN);
        assert!(cleanup.contains("token int4 := -2147483648;"));
        assert!(cleanup.contains("objid::int8 = 2147483648 "));
        assert!(cleanup.contains("'{-9223372036854775808,9223372036854775807,NULL}'"));
    }

    #[test]
    fn extreme_ids_are_quoted_in_a_transaction_try() {
        assert_eq!(
            try_xact_one(LockId::Int8(i64::MIN), false),
            "SELECT pg_try_advisory_xact_lock('-9223372036854775808'::int8)"
        );
        assert_eq!(
            try_xact_one(LockId::Int4Pair(i32::MIN, -1), true),
            "SELECT pg_try_advisory_xact_lock_shared('-2147483648'::int4, '-1'::int4)"
        );
    }

    #[test]
    fn the_token_namespace_literals_match_the_constant() {
        assert_eq!(first_record!(), (TOKEN_NAMESPACE + 1).to_string());
        assert_eq!(TOKEN_NAMESPACE.to_be_bytes(), *b"aloc");
    }

    #[test]
    fn each_level_has_a_body_of_its_own() {
        let (session, xact) = (body(false), body(true));
        assert!(!session.contains("xact"));
        for session_level in [
            "pg_advisory_lock",
            "pg_try_advisory_lock",
            "pg_advisory_unlock",
        ] {
            assert!(!xact.contains(session_level), "{session_level}");
        }
    }

    #[test]
    fn custom_sqlstates_are_not_categories() {
        // PL/pgSQL treats a SQLSTATE ending in 000 as a whole class.
        let body = body(false) + &body(true);
        assert!(!body.contains("'AL000'"));
        assert!(body.contains("'AL002'"));
    }
}
