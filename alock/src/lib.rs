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
//! | take ids when one is busy and must be waited for | 1, and 1 more per `deadlock_timeout` + 100 ms of waiting |
//! | release | 1 |
//! | re-entrant acquire or release of a lock object | 0 |
//! | `BEGIN` and a transaction-level lock | 2 |
//!
//! # What a dropped future leaves
//!
//! Nothing. A dropped guard, a dropped held lock object, and an acquire or
//! release dropped at any point release exactly what they hold before the
//! connection's next use, including the check a pool runs when a connection
//! comes back, and never another hold of the same session. A wait abandoned
//! on the server ends within a second or so. `DESIGN.md` in the repository
//! says how, statement by statement.
//!
//! # Where session-level locks are refused
//!
//! Inside a transaction begun through sqlx, session-level acquires return
//! [`Error::InTransaction`]: nothing could release what an abandoned call
//! took there. Take transaction-level locks (`xact_lock_*`) inside
//! transactions, or take the lock before `BEGIN`. A transaction begun with
//! raw SQL (`execute("BEGIN")`) is invisible to sqlx, and so to this crate:
//! begin transactions through sqlx. Behind PgBouncer in transaction mode,
//! only transaction-level locks work.
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
pub use key::{AdvisoryKey, AdvisoryKeys, KeyError, LockId};
pub use lock::{AdvisoryLock, Exclusive, ExclusiveLock, Mode, ShareLock, Shared};
pub use session::prepare_session;
// BEGIN derive exports (owned by the derive work)
#[cfg(feature = "derive")]
#[doc(inline)]
#[doc = include_str!("derive_doc.md")]
pub use alock_derive::AdvisoryKey;
#[doc(hidden)]
pub use namespace::__private;
pub use namespace::{
    Int4Key, Int8Key, Int8Namespaced, KeySpace, KeyType, Namespaced, namespace, namespace_tag,
};
// END derive exports

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Everything needed to lock the sqlx way: `use alock::prelude::*;`.
pub mod prelude {
    pub use crate::{AdvisoryKey, AdvisoryKeys, AdvisoryLockExt, LockId, PoolAdvisoryLockExt};
}
