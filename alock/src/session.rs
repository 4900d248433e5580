//! The session's functions: the compiled copies of the bodies in `sql.rs`.
//!
//! A session creates them the first time a call needs them, outside a
//! transaction: the call fails with "function does not exist", which there
//! aborts nothing, and is made again after they are created. A session that
//! may not create them (read-only, no `TEMP` privilege) runs the same body
//! as an anonymous block instead. Nothing is remembered between calls: the
//! server is asked each time.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, Row};

use crate::sql;

/// Whether `error` says the session lacks its functions.
pub(crate) fn missing(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("42883" | "3F000")))
}

/// Creates the session's functions: one simple query, which answers the
/// session's pid. `Ok(None)` when the server refuses (a read-only session, a
/// role without `TEMP`).
pub(crate) async fn create(conn: &mut PgConnection) -> Result<Option<i32>, sqlx::Error> {
    let create = format!("{} SELECT pg_backend_pid()", sql::create_functions());
    match conn.fetch_one(sqlx::raw_sql(AssertSqlSafe(create))).await {
        Ok(row) => Ok(Some(row.try_get(0)?)),
        Err(sqlx::Error::Database(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `error` says that a statement's parts ran on different server
/// sessions, or met another client's statement there, as behind a
/// transaction-mode pooler that keeps no prepared statements: its prepared
/// statement is missing (26000) or already exists (42P05).
pub(crate) fn statements_mixed(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("26000" | "42P05")))
}

/// The error for functions that vanished between their creation, on the
/// session with pid `took`, and the call that needed them: the statements
/// ran on different sessions, as behind a transaction-mode pooler.
pub(crate) async fn moved(conn: &mut PgConnection, took: i32) -> crate::Error {
    let now = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await;
    match now.and_then(|row| row.try_get(0)) {
        Ok(now) => crate::Error::SessionChanged { took, now },
        Err(e) => crate::Error::from_sqlx(e),
    }
}

/// Creates this session's functions now, ahead of its first lock.
///
/// Optional: a session creates them the first time a lock needs them,
/// which costs two round trips once. Calling this in a pool's
/// `after_connect` moves that cost to connection time. Calling it again
/// does no harm.
///
/// Returns whether the session has its functions: `false` inside a
/// transaction, where nothing is created, and when the server refuses (a
/// read-only session, a role without the `TEMP` privilege); locks work
/// either way.
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
/// [`Error::ConnectionLost`](crate::Error::ConnectionLost) or
/// [`Error::Database`](crate::Error::Database) when the connection fails.
///
/// # Cancel safety
///
/// Dropping the future leaves the session with its functions or without
/// them; locks work either way.
pub async fn prepare_session(conn: &mut PgConnection) -> Result<bool, crate::Error> {
    if conn.is_in_transaction() {
        return Ok(false);
    }
    let created = create(conn).await.map_err(crate::Error::from_sqlx)?;
    Ok(created.is_some())
}
