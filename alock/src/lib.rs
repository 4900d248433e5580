//! PostgreSQL advisory locks for [sqlx](https://docs.rs/sqlx).
//!
//! TODO(crate docs): written with the lock object.
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
mod sql;

pub use error::{Error, ServerError};
pub use ext::{AdvisoryLockExt, PoolAdvisoryLockExt};
pub use guard::{LockGuard, PoolLockGuard};
pub use key::{AdvisoryKey, AdvisoryKeys, LockId};
pub use lock::{AdvisoryLock, Exclusive, ExclusiveLock, Mode, ShareLock, Shared};
// BEGIN derive exports (owned by the derive work)
#[cfg(feature = "derive")]
#[doc(inline)]
#[doc = include_str!("derive_doc.md")]
pub use alock_derive::AdvisoryKey;
pub use namespace::{Int4Key, Int8Key, Namespaced, namespace};
// END derive exports

/// Everything needed to lock the sqlx way: `use alock::prelude::*;`.
pub mod prelude {
    pub use crate::{AdvisoryKey, AdvisoryKeys, AdvisoryLockExt, LockId, PoolAdvisoryLockExt};
}
