//! The session's compiled copies of the acquire bodies.
//!
//! An anonymous `DO` block is compiled by the server on every call, which
//! costs more than the locks it takes. The session-level acquire and the
//! wait for one id, created once per session as functions in `pg_temp`
//! (private to the session, gone when it ends), are compiled once and their
//! plans cached.
//!
//! Outside a transaction the function is simply called; if the session does
//! not have it yet (or lost it to `DISCARD TEMP`), the call fails with
//! "function does not exist" (or, for the free-first statement, "relation
//! does not exist" for the sequence), which there aborts nothing, and the
//! functions and the sequence are created and the call made again. Inside a transaction a failed call
//! would abort the caller's transaction, so there, and on sessions that
//! cannot have the functions, the locks are taken by a try and the
//! anonymous block.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::sql;

/// Set once the server has refused to create temporary functions for lack
/// of privilege (a role without `TEMP`) or because the session is read-only
/// (a standby, `default_transaction_read_only`): no session of this process
/// asks again, and every acquire that would call them takes the try and the
/// anonymous block instead. Without it, every such acquire on such a
/// session would first pay for a failed call and a failed `CREATE`.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether this process may try the session functions at all.
pub(crate) fn allowed() -> bool {
    !REFUSED.load(Ordering::Relaxed)
}

/// Whether `error` says the session lacks its functions or their sequence.
pub(crate) fn missing(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("42883" | "3F000" | "42P01")))
}

/// Creates the session's functions: one simple query. `false` when the
/// server refuses, which is remembered if it is for lack of privilege or a
/// read-only session (see [`REFUSED`]).
pub(crate) async fn create(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let created = conn
        .execute(sqlx::raw_sql(
            AssertSqlSafe(sql::create_session_functions()),
        ))
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42501" | "25006")) => {
            REFUSED.store(true, Ordering::Relaxed);
            Ok(false)
        }
        Err(sqlx::Error::Database(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates this session's functions now, ahead of its first lock.
///
/// A session creates the functions its locks call the first time one needs
/// them, outside a transaction: that first call fails with "function does
/// not exist" (which there aborts nothing), creates them, and calls again,
/// three round trips more, once. If the future of that first acquire is
/// dropped during its first round trip, sqlx hands the error nobody read to
/// the next query on the connection, once; nothing is held. Calling this on
/// a fresh connection, in a pool's `after_connect` for example, does the
/// creation before any lock and closes that window. Calling it again does
/// no harm: the functions are replaced by the same ones.
///
/// Returns whether the session has its functions: `false` inside a
/// transaction, where nothing is created (see the crate documentation), and
/// when the server refuses (a read-only session, a role without the `TEMP`
/// privilege), which this process remembers. Locks work either way.
///
/// ```no_run
/// use sqlx::postgres::PgPoolOptions;
///
/// # async fn run() -> Result<(), sqlx::Error> {
/// let pool = PgPoolOptions::new()
///     .after_connect(|conn, _meta| {
///         Box::pin(async move {
///             alock::prepare_session(conn)
///                 .await
///                 .map_err(|e| sqlx::Error::Configuration(e.into()))?;
///             Ok(())
///         })
///     })
///     .connect("postgres://localhost/app")
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Database`](crate::Error::Database) when the connection fails.
///
/// # Cancel safety
///
/// Dropping the future leaves the session with its functions or without
/// them, and locks work either way. On a session where the server refuses
/// to create them, the refusal, if nobody reads it, is handed to the next
/// query on the connection.
pub async fn prepare_session(conn: &mut PgConnection) -> Result<bool, crate::Error> {
    if conn.is_in_transaction() || !allowed() {
        return Ok(false);
    }
    create(conn).await.map_err(crate::Error::from_sqlx)
}
