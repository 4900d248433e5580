//! Sending a statement from `Drop`, where nothing can be awaited.
//!
//! sqlx's own advisory-lock guard queues its unlock with a crate-private
//! method. From outside sqlx, the one public path that writes a statement to
//! the connection before it awaits anything is `Connection::begin_with`: its
//! first poll writes the statement into the connection's buffer and counts
//! its response as pending, then waits. Polled once and dropped, it leaves
//! the statement queued: the next use of the connection (a query, or the
//! check a pool runs when a connection comes back) sends it, runs it, and
//! discards its response before doing its own work. Outside a transaction
//! sqlx's rollback-on-drop does nothing, so nothing else is sent.
//!
//! Inside a transaction begun through sqlx `begin_with` refuses before it
//! writes anything. There the statement is sent as an ordinary query polled
//! once, which writes it at once on an idle connection. Session-level locks
//! are never taken inside such a transaction, and a guard cannot be dropped
//! while a transaction borrows its connection, so this is reached only when
//! a `Transaction` was leaked with `mem::forget`. `tests/it/pinned_sqlx.rs` pins each of these behaviours.

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
