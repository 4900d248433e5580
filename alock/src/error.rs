//! The one error type of this crate.

/// Everything that can go wrong while taking, releasing or inspecting a lock.
///
/// A lock that could not be had within a caller's timeout, or at once for the
/// `try_` forms, is not an error: those methods return `Ok(false)` or
/// `Ok(None)`. Whatever the error, the call that returns it leaves none of
/// its own ids held; holds the session has through other lock objects are
/// untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `release` was called on a lock that is not held.
    #[error("advisory lock is not held")]
    NotHeld,

    /// The server's deadlock detector chose this session's wait as the one to
    /// cancel (SQLSTATE 40P01). An enclosing transaction is not aborted.
    #[error("deadlock detected while waiting for an advisory lock")]
    Deadlock(#[source] sqlx::Error),

    /// The server's shared lock table is full (SQLSTATE 53200): no lock of
    /// any kind can be granted until others are released, or the server is
    /// restarted with a larger `max_locks_per_transaction`.
    #[error("the server's lock table is full (raise max_locks_per_transaction)")]
    LockTableFull(#[source] sqlx::Error),

    /// The session's own `lock_timeout` expired while a blocking acquire
    /// waited (SQLSTATE 55P03). Use `acquire_timeout` to wait a bounded time
    /// without an error.
    #[error("lock_timeout expired while waiting for an advisory lock")]
    LockTimeout(#[source] sqlx::Error),

    /// The wait was cancelled on the server: `statement_timeout`, a cancel
    /// request or `pg_cancel_backend` (SQLSTATE 57014).
    #[error("waiting for an advisory lock was cancelled")]
    Canceled(#[source] sqlx::Error),

    /// A transaction-level lock was requested on a connection that is not in
    /// a transaction, where it would be released at the end of its own
    /// statement.
    #[error("transaction-level advisory locks need an open transaction")]
    NotInTransaction,

    /// Any other error from sqlx or the server, including a lost connection.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// Builds the typed error for a SQLSTATE reported by the server.
    pub(crate) fn from_server(code: &str, error: sqlx::Error) -> Error {
        match code {
            "40P01" => Error::Deadlock(error),
            "53200" => Error::LockTableFull(error),
            "55P03" => Error::LockTimeout(error),
            "57014" => Error::Canceled(error),
            _ => Error::Database(error),
        }
    }

    /// Whether this error means the connection itself is gone.
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}
