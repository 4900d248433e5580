//! Sending a statement from `Drop`, where nothing can be awaited.
//!
//! sqlx's own advisory-lock guard queues its unlock with a crate-private
//! method. From outside sqlx, the one public path that writes a statement to
//! the connection before it awaits anything is `Connection::begin_with`: its
//! first poll writes the given statement into the connection's buffer and
//! counts its response as pending, then waits for responses. Polling it once
//! and dropping it leaves the statement queued: the next use of the
//! connection (a query, or the health check a pool runs when a connection is
//! returned) flushes it, runs it, and discards its response before doing its
//! own work. Outside a transaction sqlx's rollback-on-drop is a no-op, so
//! nothing else is sent.
//!
//! Inside a transaction begun through sqlx (`Connection::is_in_transaction`),
//! `begin_with` would refuse, and, refusing, queue a rollback of the caller's
//! transaction; it is never called there. The statement is then sent as an
//! ordinary query polled once, which writes it at once when the connection is
//! idle, the normal case for a dropped guard. If a response is still pending
//! on that connection (a query future on it was itself dropped mid-flight),
//! sqlx will not write anything until that response is read, and the
//! statement cannot be queued: the session ends up keeping the lock until it
//! is released by hand or the session closes.
//!
//! `tests/pinned_sqlx.rs` pins every behaviour this relies on.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Queues `sql` on `conn` to run before anything sent on it later.
pub(crate) fn queue(conn: &mut PgConnection, sql: String) {
    if conn.is_in_transaction() {
        poll_once(conn.execute(sqlx::raw_sql(AssertSqlSafe(sql))));
    } else {
        poll_once(conn.begin_with(AssertSqlSafe(sql)));
    }
}

fn poll_once<F: Future>(future: F) {
    let future = pin!(future);
    let _ = future.poll(&mut Context::from_waker(Waker::noop()));
}
