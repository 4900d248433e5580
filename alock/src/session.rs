//! The session's compiled copies of the acquire body.
//!
//! An anonymous `DO` block is compiled by the server on every call, which
//! costs more than the locks it takes. The same bodies, created once per
//! session as functions in `pg_temp` (private to the session, gone when it
//! ends), are compiled once and their plans cached.
//!
//! Outside a transaction the function is simply called; if the session does
//! not have it yet (or lost it to `DISCARD TEMP`), the call fails with
//! "function does not exist", which there aborts nothing, and the functions
//! are created and the call made again. Inside a transaction a failed call
//! would abort the caller's transaction, so there the same body always runs
//! as the anonymous block.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{AssertSqlSafe, Executor, PgConnection};

use crate::sql;

/// Set once the server has refused to create temporary functions for lack
/// of privilege (a role without `TEMP`): no session of this process asks
/// again, and every acquire runs the anonymous block.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether this process may try the session functions at all.
pub(crate) fn allowed() -> bool {
    !REFUSED.load(Ordering::Relaxed)
}

/// Whether `error` says the session lacks its functions.
pub(crate) fn missing(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("42883" | "3F000")))
}

/// Creates the session's functions: one simple query. `false` when the
/// server refuses, which is remembered if it is for lack of privilege.
pub(crate) async fn create(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let created = conn
        .execute(sqlx::raw_sql(
            AssertSqlSafe(sql::create_session_functions()),
        ))
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
            REFUSED.store(true, Ordering::Relaxed);
            Ok(false)
        }
        Err(sqlx::Error::Database(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
