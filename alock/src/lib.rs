//! PostgreSQL advisory locks for [sqlx](https://docs.rs/sqlx): make sure
//! that several processes never work on the same order, job or tenant at
//! once.
//!
//! # Advisory locks
//!
//! An advisory lock is a lock on a number, held by a database session, that
//! PostgreSQL enforces between sessions and otherwise gives no meaning to: a
//! program decides that "order 7" is a certain [`LockId`], and every process
//! that works on order 7 takes that lock first.
//!
//! - **Session level or transaction level.** A session-level lock is held
//!   until released, or until the session ends, whatever happens to
//!   transactions in between. A transaction-level lock is held until its
//!   transaction commits or rolls back.
//! - **Exclusive or shared.** An exclusive lock conflicts with every other
//!   session's lock on the same key; a shared lock only with exclusive ones.
//!   A session never conflicts with itself.
//! - **Keys.** PostgreSQL has two key spaces, one `bigint` and one pair of
//!   `integer`s: [`LockId::Int8`] and [`LockId::pair`]. Domain types become
//!   keys through [`AdvisoryKey`], which `#[derive(AdvisoryKey)]` implements
//!   with a namespace per type, checked at compile time; runtime names
//!   through [`LockId::from_name`]. Every call takes [`AdvisoryKeys`]: one
//!   key, or an array, slice, `Vec` or tuple of keys, all or nothing.
//!
//! # Locking
//!
#![cfg_attr(feature = "derive", doc = "```no_run")]
#![cfg_attr(not(feature = "derive"), doc = "```ignore")]
//! use alock::prelude::*;
//!
//! #[derive(AdvisoryKey)]
//! #[advisory_key(namespace = "orders")]
//! struct Order {
//!     #[advisory_key(id)]
//!     id: i32,
//! }
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), alock::Error> {
//! let order = Order { id: 7 };
//! let mut conn = pool.acquire().await?;
//! let mut guard = conn.lock_exclusive(&order).await?;
//! sqlx::query("UPDATE orders SET state = 'paid' WHERE id = $1")
//!     .bind(order.id)
//!     .execute(&mut *guard)
//!     .await?;
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! - [`AdvisoryLockExt`] adds the methods to `PgConnection`, and
//!   [`PoolAdvisoryLockExt`] the session-level ones to `PgPool`:
//!   `lock_*`, `try_lock_*`, `lock_*_timeout` and `with_*`; on connections
//!   also `xact_lock_*` and `begin_locked_*` for transaction-level locks.
//!   `use alock::prelude::*;` brings them in.
//! - [`LockGuard`] holds session-level locks until released or dropped,
//!   through a borrowed, owned or pooled connection.
//! - [`ExclusiveLock`] and [`ShareLock`] are re-entrant lock objects over
//!   many keys, which nest on one connection: the design of the advisory
//!   locks of py-postgresql, where this crate began.
//! - [`Error`] says what went wrong, typed.
//!
//! # Cancellation
//!
//! Every future of this crate may be dropped at any poll: whatever the call
//! took is released before the connection's next use, and no other hold is
//! touched. A wait nobody reads any more stops on the server within 900 ms,
//! as a rule (`DESIGN.md`). Inside a transaction begun through sqlx,
//! session-level acquires are refused ([`Error::InTransaction`]); take
//! transaction-level locks there.
//!
//! # Tracing
//!
//! The crate reports to [`tracing`](https://docs.rs/tracing) subscribers,
//! under the target `alock`:
//!
//! | what | kind, level | fields |
//! |---|---|---|
//! | an acquire | span `alock.acquire`, `DEBUG` | `level` (`session`, `transaction`), `mode` (`exclusive`, `shared`), `ids`, `waited`, `wait_ms`, `outcome` (`acquired`, `busy`, or the error) |
//! | a release | span `alock.release`, `DEBUG` | `mode`, `ids`, `outcome` (`released`, or the error) |
//! | a release queued from `Drop` or a dropped call | event, `DEBUG` | `ids` |
//! | a call refused before it reached the server | event, `DEBUG` | `error` |
//! | ids found no longer held at release ([`Error::Lost`]) | event, `WARN` | `missing`, `total` |
//! | a session found gone ([`Error::ConnectionLost`]) | event, `WARN` | `error` |
//!
//! With no subscriber listening, a span costs one atomic load and its fields
//! are never computed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod ext;
mod guard;
mod key;
mod lease;
mod lock;
mod locks;
mod namespace;
mod pending;
mod protocol;
mod session;
mod sql;
mod trace;

pub use error::{Error, ServerError};
pub use ext::{AdvisoryLockExt, PoolAdvisoryLockExt};
pub use guard::{GuardConnection, LockGuard};
pub use key::{AdvisoryKey, AdvisoryKeys, KeyError, LockId};
pub use lease::{DEFAULT_CHECK_EVERY, Lease, LeaseOptions, LeaseWatch, LostCause};
pub use lock::{AdvisoryLock, Exclusive, ExclusiveLock, Mode, ShareLock, Shared};
pub use locks::{KeyDisplay, KeyNames, LockInfo, LockMode, LockQuery, locks};
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

/// The README's examples use the derive, a default feature.
#[cfg(all(doctest, feature = "derive"))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Everything needed to lock the sqlx way: `use alock::prelude::*;`.
pub mod prelude {
    pub use crate::{AdvisoryKey, AdvisoryKeys, AdvisoryLockExt, LockId, PoolAdvisoryLockExt};
}
