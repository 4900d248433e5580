//! The one error type of this crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::KeyError;

/// Everything that can go wrong while taking, releasing or inspecting a lock.
///
/// A lock that could not be had within a caller's timeout, or at once for the
/// `try_` forms, is not an error: those methods return `Ok(false)` or
/// `Ok(None)`. Whatever the error, the call that returns it leaves none of
/// its own ids held once the connection is used again, and holds the
/// session has through other lock objects are untouched. The errors the
/// server reports while a lock waits (deadlock, timeouts, cancel, a full
/// lock table) are caught on the server, so they do not abort an enclosing
/// transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `release` was called on a lock that is not held.
    #[error("advisory lock is not held")]
    NotHeld,

    /// The server no longer held some of the ids when they were released:
    /// something else on the session released them first
    /// (`pg_advisory_unlock_all()`, `DISCARD ALL` or a pooler's reset, an
    /// unlock by hand). For some time, then, the lock was not held although
    /// this object or guard was. The ids that were still held are released
    /// all the same, so afterwards none is held.
    ///
    /// The server counts holds per session and mode, not per object: when
    /// two objects on one session hold an id and one hold is lost, the
    /// object that releases last is the one told.
    #[error(
        "{missing} of {total} advisory lock ids were no longer held by the session when released"
    )]
    Lost {
        /// How many of the unlocks the server answered with `false`.
        missing: usize,
        /// How many ids were released.
        total: usize,
    },

    /// The server's deadlock detector chose this session's wait as the one to
    /// cancel (SQLSTATE 40P01).
    #[error("deadlock detected while waiting for an advisory lock")]
    Deadlock(#[source] ServerError),

    /// The server's shared lock table is full (SQLSTATE 53200): no lock of
    /// any kind can be granted until others are released, or the server is
    /// restarted with a larger `max_locks_per_transaction`.
    #[error("the server's lock table is full (raise max_locks_per_transaction)")]
    LockTableFull(#[source] ServerError),

    /// The session's own `lock_timeout` expired while a blocking acquire
    /// waited (SQLSTATE 55P03). The `_timeout` forms wait a bounded time and
    /// report `false` instead.
    #[error("lock_timeout expired while waiting for an advisory lock")]
    LockTimeout(#[source] ServerError),

    /// The call was cancelled on the server: `statement_timeout`, a cancel
    /// request or `pg_cancel_backend` (SQLSTATE 57014). The message names
    /// what was cancelled: a wait, or a release.
    #[error("{} was cancelled", .0.during)]
    Canceled(#[source] ServerError),

    /// The connection is in a transaction that has already failed
    /// (SQLSTATE 25P02): the server refuses every statement until the
    /// transaction ends, the unlock included. Session-level locks survive
    /// `ROLLBACK`, so ids that could not be released stay held by the
    /// session: release them after the rollback, or hold locks inside
    /// transactions at transaction level, which the transaction's end
    /// always releases.
    #[error("the transaction has failed; no lock can be taken or released until it ends")]
    InFailedTransaction(#[source] ServerError),

    /// Any other error the server reported while taking the ids.
    #[error("the server refused the advisory lock")]
    Server(#[source] ServerError),

    /// A transaction-level lock was requested on a connection that is not in
    /// a transaction, where it would be released at the end of its own
    /// statement.
    #[error("transaction-level advisory locks need an open transaction")]
    NotInTransaction,

    /// A session-level lock was requested on a connection inside a
    /// transaction begun through sqlx. Such a lock outlives the transaction,
    /// and a call abandoned there could leave it held with no owner; take a
    /// transaction-level lock (`xact_lock_*`) instead, or take the lock
    /// before the transaction begins.
    #[error(
        "session-level advisory locks are not taken inside a transaction; use xact_lock_* there"
    )]
    InTransaction,

    /// The connection is gone: the backend was terminated, the server
    /// restarted, or the network failed. The server frees every lock of a
    /// session that ends, so nothing this connection held is held any more.
    #[error("the connection to the server was lost")]
    ConnectionLost(#[source] sqlx::Error),

    /// The keys name no lock this crate will take: none were given, or one
    /// does not fit its key space. Nothing was sent to the server.
    #[error(transparent)]
    InvalidKeys(#[from] KeyError),

    /// A timeout longer than the server's `lock_timeout` can express:
    /// `i32::MAX` milliseconds, about 24.8 days. Nothing was sent to the
    /// server. To wait as long as it takes, use the forms without a timeout.
    #[error(
        "a lock timeout of {0:?} is longer than the longest the server takes (i32::MAX ms, about 24.8 days)"
    )]
    TimeoutTooLong(Duration),

    /// The connection now runs on another server session than the one that
    /// took the lock, as behind a pooler in transaction mode, which hands
    /// each transaction to any of its server sessions. Nothing was released
    /// or checked: the lock stays with the session that took it, until that
    /// session releases it or ends. Take transaction-level locks through
    /// such a pooler, or hold session-level locks on a session-mode pool.
    #[error(
        "the connection now runs on server session {now}, not on {took} that took the lock \
         (a transaction-mode pooler?); nothing was released"
    )]
    SessionChanged {
        /// The backend pid of the session that took the lock.
        took: i32,
        /// The backend pid of the session that answered now.
        now: i32,
    },

    /// Any other error from sqlx.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::from_sqlx(error)
    }
}

/// An error the server reported while taking or releasing advisory locks:
/// its SQLSTATE and message.
///
/// When the error failed a statement, the sqlx error is its
/// [`source`](std::error::Error::source), which downcasts to
/// `sqlx::postgres::PgDatabaseError` for the server's detail; an error that
/// the lock body caught on the server and reported as data has no source.
#[derive(Debug, Clone)]
pub struct ServerError {
    code: String,
    message: String,
    during: &'static str,
    source: Option<Arc<sqlx::Error>>,
}

impl PartialEq for ServerError {
    fn eq(&self, other: &Self) -> bool {
        (&self.code, &self.message, self.during) == (&other.code, &other.message, other.during)
    }
}

impl Eq for ServerError {}

impl ServerError {
    /// The five-character SQLSTATE, e.g. `40P01`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The server's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a call was doing, for the messages of its errors.
pub(crate) const WAITING: &str = "waiting for an advisory lock";
pub(crate) const RELEASING: &str = "releasing advisory locks";

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// The typed error for a SQLSTATE and message reported by the server.
    pub(crate) fn from_server(code: String, message: String, during: &'static str) -> Error {
        Error::typed(code, message, during, None)
    }

    fn typed(
        code: String,
        message: String,
        during: &'static str,
        source: Option<Arc<sqlx::Error>>,
    ) -> Error {
        let variant = match code.as_str() {
            "40P01" => Error::Deadlock,
            "53200" => Error::LockTableFull,
            "55P03" => Error::LockTimeout,
            "57014" => Error::Canceled,
            "25P02" => Error::InFailedTransaction,
            _ => Error::Server,
        };
        variant(ServerError {
            code,
            message,
            during,
            source,
        })
    }

    /// Types an sqlx error by its SQLSTATE where it has one of ours, and a
    /// lost connection as such.
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Error {
        Error::from_sqlx_during(error, WAITING)
    }

    pub(crate) fn from_sqlx_during(error: sqlx::Error, during: &'static str) -> Error {
        if connection_lost(&error) {
            return Error::ConnectionLost(error);
        }
        if let sqlx::Error::Database(db) = &error
            && let Some(code @ ("40P01" | "53200" | "55P03" | "57014" | "25P02")) =
                db.code().as_deref()
        {
            let (code, message) = (code.to_owned(), db.message().to_owned());
            return Error::typed(code, message, during, Some(Arc::new(error)));
        }
        Error::Database(error)
    }

    /// Whether this error means the connection itself is gone.
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, Error::ConnectionLost(_))
    }
}

/// Whether `error` means the connection itself is gone: an I/O or protocol
/// failure, or a server error that ends the session (a `FATAL` such as
/// `pg_terminate_backend`'s 57P01, or class 08).
fn connection_lost(error: &sqlx::Error) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let fatal = db
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
            let code = db.code();
            fatal
                || code
                    .as_deref()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
        }
        _ => false,
    }
}

/// So that `?` turns an [`Error`] into a `sqlx::Error`, through sqlx's own
/// `From<E: DatabaseError>`: a closure given to `with_exclusive` may return
/// `sqlx::Error`. The `sqlx::Error` is `Database`, and downcasts back:
/// `err.as_database_error()?.try_downcast_ref::<alock::Error>()`. Its
/// `code()` is the SQLSTATE where the server reported one.
impl sqlx::error::DatabaseError for Error {
    fn message(&self) -> &str {
        match self {
            Error::Deadlock(e)
            | Error::LockTableFull(e)
            | Error::LockTimeout(e)
            | Error::Canceled(e)
            | Error::InFailedTransaction(e)
            | Error::Server(e) => e.message(),
            Error::Database(sqlx::Error::Database(db))
            | Error::ConnectionLost(sqlx::Error::Database(db)) => db.message(),
            Error::NotHeld => "advisory lock is not held",
            Error::Lost { .. } => "advisory lock ids were no longer held when released",
            Error::NotInTransaction => "transaction-level advisory locks need a transaction",
            Error::InTransaction => "session-level advisory locks are refused in a transaction",
            Error::ConnectionLost(_) => "the connection to the server was lost",
            Error::InvalidKeys(_) => "the keys name no advisory lock",
            Error::TimeoutTooLong(_) => "the lock timeout is too long",
            Error::SessionChanged { .. } => "the connection now runs on another server session",
            Error::Database(_) => "the database call failed",
        }
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Error::Deadlock(e)
            | Error::LockTableFull(e)
            | Error::LockTimeout(e)
            | Error::Canceled(e)
            | Error::InFailedTransaction(e)
            | Error::Server(e) => Some(e.code().into()),
            Error::Database(sqlx::Error::Database(db))
            | Error::ConnectionLost(sqlx::Error::Database(db)) => db.code(),
            _ => None,
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}
