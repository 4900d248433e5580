//! PostgreSQL advisory locks for [sqlx](https://docs.rs/sqlx).
//!
//! TODO(crate docs): written with the lock object.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod key;
mod lock;
mod pending;
mod protocol;
mod sql;
mod namespace;

pub use error::{Error, ServerError};
pub use lock::{AdvisoryLock, Exclusive, ExclusiveLock, Mode, ShareLock, Shared};
pub use key::{AdvisoryKey, AdvisoryKeys, LockId};
// BEGIN derive exports (owned by the derive work)
pub use namespace::namespace;
#[cfg(feature = "derive")]
pub use alock_derive::AdvisoryKey;
// END derive exports
