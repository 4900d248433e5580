//! PostgreSQL advisory locks for [sqlx](https://docs.rs/sqlx): shared or
//! exclusive, many ids taken all or nothing in one round trip, re-entrant,
//! with server-side timeouts, typed errors, and locks that never outlive
//! their scope by accident.
//!
//! # Advisory locks
//!
//! An advisory lock is a lock on a number, held by a database session, that
//! PostgreSQL enforces between sessions and otherwise gives no meaning to: an
//! application decides that "order 7" is `(namespace("orders"), 7)` and every
//! process that wants to work on order 7 takes that lock first. The server
//! has two key spaces, one `bigint` and one pair of `integer`s
//! ([`LockId`]), and two lifetimes:
//!
//! - **session-level** locks are held until released or until the session
//!   ends, whatever happens to transactions in between;
//! - **transaction-level** locks are held until the transaction commits or
//!   rolls back, and cannot be released earlier.
//!
//! Either can be **exclusive** (conflicts with every other session's lock on
//! the id) or **shared** (conflicts only with exclusive ones). A session
//! never conflicts with itself, and the server counts its session-level
//! holds: a lock taken twice is released by two unlocks.
//!
//! # Locking domain values
//!
//! ```no_run
//! use alock::prelude::*;
//!
//! #[derive(AdvisoryKey)]
//! #[advisory_key(namespace = "orders")]
//! struct Order {
//!     #[advisory_key(id)]
//!     id: i32,
//!     note: String,
//! }
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let order = Order { id: 7, note: String::new() };
//! let mut conn = pool.acquire().await?;
//! let mut guard = conn.lock_exclusive(&order).await?;      // 1 round trip
//! sqlx::query("UPDATE orders SET state = 'paid' WHERE id = $1")
//!     .bind(order.id)
//!     .execute(&mut *guard)
//!     .await?;
//! guard.release().await?;                                   // 1 round trip
//! # Ok(())
//! # }
//! ```
//!
//! # Where things live
//!
//! - Keys: [`LockId`], [`AdvisoryKey`] (one lock id; derive it with
//!   [`#[derive(AdvisoryKey)]`](derive@AdvisoryKey)), [`AdvisoryKeys`] (a
//!   sequence of them: every API takes one key, an array, a slice, a `Vec`
//!   or a tuple), [`namespace`](fn@namespace).
//! - The sqlx way: [`AdvisoryLockExt`] on `PgConnection` (guards, scoped
//!   locks, transaction-level locks, `BEGIN` with a lock), returning
//!   [`LockGuard`]; [`PoolAdvisoryLockExt`] on `PgPool`, returning
//!   [`PoolLockGuard`]. `use alock::prelude::*;` brings them in.
//! - The lock object of py-postgresql: [`ExclusiveLock`] and [`ShareLock`],
//!   re-entrant objects over many ids that nest on one connection.
//! - Errors: [`Error`].
//!
//! # Round trips
//!
//! | call | round trips |
//! |---|---|
//! | take free ids, any number of them, any form | 1 |
//! | try that finds an id busy and gives back what it took | 1 |
//! | take ids when one is busy and must be waited for | 1; inside a transaction, or once the server has refused the session's functions, 2 for a single id |
//! | release | 1 |
//! | re-entrant acquire or release of a lock object | 0 |
//! | `BEGIN` and a transaction-level lock | 1 |
//!
//! # Releasing from `Drop`
//!
//! A dropped guard, a dropped held lock object, and a dropped acquire future
//! all queue their unlock on the connection, where it runs before anything
//! sent on the connection afterwards, including the check a pool runs when a
//! connection is returned to it. sqlx's own guard does this with a
//! crate-private method; this crate uses the one public path that writes a
//! statement before awaiting anything: the first poll of
//! `Connection::begin_with`. The sqlx behaviours this rests on are pinned by
//! the test suite.
//!
//! **Session-level locks inside transactions.** Two things cannot be done
//! there, and both leave ids with the session until they are released by
//! hand or the session ends; inside transactions, prefer transaction-level
//! locks, which the transaction's end always releases.
//!
//! - Inside a transaction begun through sqlx, `begin_with` must not be used
//!   (sqlx would roll the transaction back), so a statement can be queued
//!   from `Drop` only when no response is pending: a dropped guard on an idle
//!   connection (the normal case) is released, but an acquire future dropped
//!   mid-wait cannot queue its cleanup, and what the wait is granted stays.
//! - In a transaction that has failed, PostgreSQL refuses every statement
//!   until it ends, the unlock included, and session-level locks survive the
//!   `ROLLBACK`: releases report [`Error::InFailedTransaction`].
//!
//! # Deployment notes
//!
//! Session-level locks need a real session: PgBouncer in transaction mode
//! can run the next statement on another server session (transaction-level
//! locks work there). A transaction begun with raw SQL (`execute("BEGIN")`)
//! is invisible to sqlx, and so to this crate: begin transactions through
//! sqlx. All locks
//! share one server-wide table of `max_locks_per_transaction *
//! (max_connections + max_prepared_transactions)` entries; when it is full,
//! acquires fail with [`Error::LockTableFull`] and give back what they took.
//! Outside a transaction, up to 16 free ids of one form are taken by one
//! plain statement that tries them at transaction level first and then
//! takes them all at session level, in one expression the server does not
//! interrupt. PostgreSQL acts on a cancel or `statement_timeout` between
//! expressions, so one that arrives while a statement takes ids may fail
//! it after it took them all: outside a transaction, every acquire of
//! several ids records that it took them in a sequence of the session,
//! which an abort does not undo, and the release queued for a failed
//! statement reads it. The anonymous block (inside a transaction, or on
//! sessions that cannot have the functions) records in a setting, which
//! the abort does undo: a cancel acted on in the moment after such a block
//! returns leaves its ids with the session. A statement that
//! fails as a whole (that, or a full lock table while it tries) is also the
//! one case where an abandoned acquire's error reaches the next query on
//! the connection, once, as for a single id's try.
//! Several ids and every wait run a PL/pgSQL body: outside a transaction as
//! functions the session creates in `pg_temp` on first need (three extra
//! round trips, once per session), inside a transaction as an anonymous
//! block, compiled on every call. That first call fails before it creates
//! them: if its future is dropped during that round trip, sqlx hands the
//! unread "does not exist" error to the next query on the connection, once;
//! [`prepare_session`] in a pool's `after_connect` creates them before any
//! lock. Once the server has refused to create them (a read-only session, a
//! role without the `TEMP` privilege), every session of the process takes
//! the same locks through a try and the anonymous block: one more round trip
//! when a single id has to wait. The crate records its per-call bookkeeping
//! in the sequence `pg_temp.alock_v3_acquired` and the session settings
//! `alock.acquired`, `alock.released` and `alock.outcome`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod ext;
mod guard;
mod key;
mod lock;
mod namespace;
mod pending;
mod protocol;
mod session;
mod sql;

pub use error::{Error, ServerError};
pub use ext::{AdvisoryLockExt, PoolAdvisoryLockExt};
pub use guard::{LockGuard, PoolLockGuard};
pub use key::{AdvisoryKey, AdvisoryKeys, LockId};
pub use lock::{AdvisoryLock, Exclusive, ExclusiveLock, Mode, ShareLock, Shared};
pub use session::prepare_session;
// BEGIN derive exports (owned by the derive work)
#[cfg(feature = "derive")]
#[doc(inline)]
#[doc = include_str!("derive_doc.md")]
pub use alock_derive::AdvisoryKey;
pub use namespace::{Int4Key, Int8Key, Namespaced, namespace};
// END derive exports

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Everything needed to lock the sqlx way: `use alock::prelude::*;`.
pub mod prelude {
    pub use crate::{AdvisoryKey, AdvisoryKeys, AdvisoryLockExt, LockId, PoolAdvisoryLockExt};
}
