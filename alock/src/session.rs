//! The session's compiled copies of the acquire block.
//!
//! An anonymous `DO` block is compiled by the server on every call, which
//! costs more than the locks it takes. The same bodies, created once per
//! session as functions in `pg_temp`, are compiled once and their plans
//! cached, so a call costs what hand-written SQL costs. Whether a session
//! has them must be known without asking the server (calling a function
//! that does not exist is an error, which would abort a transaction): right
//! after creating them, a harmless marker statement is prepared, and the
//! marker in sqlx's statement cache of the connection is the sign.
//!
//! They are created only outside a transaction, where nothing can undo
//! them. Without them (inside a transaction on a session that never locked
//! outside one, on a server that refuses temporary objects, or with sqlx's
//! statement cache turned off) the same body runs as an anonymous block:
//! the same behaviour, at the cost of compiling it.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, SqlSafeStr};

use crate::sql;

/// Set once the server has refused to create temporary functions for lack
/// of privilege or because it is read-only: then no session of this process
/// tries again.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether the session has the compiled copies, creating them first when it
/// can: outside a transaction, once per session (two round trips, the first
/// time only).
pub(crate) async fn compiled(conn: &mut PgConnection) -> bool {
    if REFUSED.load(Ordering::Relaxed) {
        return false;
    }
    let cached = conn.cached_statements_size();
    if cached > 0 {
        match peek(conn) {
            Peek::Cached => return true,
            Peek::Absent => {}
            Peek::PreparedNow => {
                // The peek itself prepared the marker, the server having
                // answered within the poll: the marker proves nothing now
                // and must not stay cached.
                forget(conn).await;
            }
        }
    }
    if conn.is_in_transaction() {
        return false;
    }
    match create(conn).await {
        Ok(()) => true,
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42501" | "25006")) => {
            REFUSED.store(true, Ordering::Relaxed);
            false
        }
        Err(_) => false,
    }
}

/// Forgets the marker after a call found the functions gone (`DISCARD
/// TEMP`, or a transaction sqlx did not know of rolled their creation
/// back), so that the next use outside a transaction creates them again.
pub(crate) async fn forget(conn: &mut PgConnection) {
    let _ = conn.clear_cached_statements().await;
}

/// What one poll of preparing the marker showed.
enum Peek {
    /// Cached before: returned on the first poll, without any I/O.
    Cached,
    /// Not cached: the harmless marker is being prepared, and the
    /// connection's next use reads and discards the response.
    Absent,
    /// Not cached, and prepared within the poll.
    PreparedNow,
}

fn peek(conn: &mut PgConnection) -> Peek {
    let before = conn.cached_statements_size();
    let polled = {
        let prepare = pin!(conn.prepare(sql::SESSION_MARKER.into_sql_str()));
        matches!(
            prepare.poll(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Ok(_))
        )
    };
    match (polled, conn.cached_statements_size() > before) {
        (true, false) => Peek::Cached,
        (true, true) => Peek::PreparedNow,
        (false, _) => Peek::Absent,
    }
}

pub(crate) async fn create(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(
        AssertSqlSafe(sql::create_session_functions()),
    ))
    .await?;
    conn.prepare(sql::SESSION_MARKER.into_sql_str()).await?;
    Ok(())
}
