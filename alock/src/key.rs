//! Lock ids: the two key spaces of PostgreSQL advisory locks, and the traits
//! that turn domain values into them.

use std::fmt;

use sqlx::postgres::PgAdvisoryLockKey;

/// One advisory lock id, in one of the two key spaces PostgreSQL has.
///
/// The spaces never overlap: `Int8(0)` and `Int4Pair(0, 0)` are different
/// locks. An int8 id is shown by `pg_locks` as `classid` = high 32 bits,
/// `objid` = low 32 bits, `objsubid = 1`; a pair as `classid` = first,
/// `objid` = second, `objsubid = 2` (see [`LockId::pg_locks_row`]).
///
/// ```
/// use alock::LockId;
///
/// assert_eq!(LockId::from(42_i64), LockId::Int8(42));
/// assert_eq!(LockId::from((7, -1)), LockId::Int4Pair(7, -1));
/// assert_eq!(LockId::Int8(42).to_string(), "42");
/// assert_eq!(LockId::Int4Pair(7, -1).to_string(), "(7, -1)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockId {
    /// A single `bigint` key: `pg_advisory_lock(key bigint)`.
    Int8(i64),
    /// A pair of `integer` keys: `pg_advisory_lock(key1 int, key2 int)`.
    Int4Pair(i32, i32),
}

impl LockId {
    /// The `(classid, objid, objsubid)` of this id's rows in `pg_locks`.
    ///
    /// `classid` and `objid` are unsigned `oid` columns, so negative keys
    /// show up there as large numbers; compare against these values, not
    /// against the keys themselves.
    ///
    /// ```
    /// use alock::LockId;
    ///
    /// assert_eq!(LockId::Int8(-1).pg_locks_row(), (u32::MAX, u32::MAX, 1));
    /// assert_eq!(LockId::Int8(1 << 32 | 5).pg_locks_row(), (1, 5, 1));
    /// assert_eq!(LockId::Int4Pair(-2, 3).pg_locks_row(), (u32::MAX - 1, 3, 2));
    /// ```
    pub const fn pg_locks_row(self) -> (u32, u32, i16) {
        match self {
            LockId::Int8(key) => ((key >> 32) as u32, key as u32, 1),
            LockId::Int4Pair(key1, key2) => (key1 as u32, key2 as u32, 2),
        }
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockId::Int8(key) => write!(f, "{key}"),
            LockId::Int4Pair(key1, key2) => write!(f, "({key1}, {key2})"),
        }
    }
}

impl From<i64> for LockId {
    fn from(key: i64) -> Self {
        LockId::Int8(key)
    }
}

impl From<(i32, i32)> for LockId {
    fn from((key1, key2): (i32, i32)) -> Self {
        LockId::Int4Pair(key1, key2)
    }
}

impl From<LockId> for PgAdvisoryLockKey {
    fn from(id: LockId) -> Self {
        match id {
            LockId::Int8(key) => PgAdvisoryLockKey::BigInt(key),
            LockId::Int4Pair(key1, key2) => PgAdvisoryLockKey::IntPair(key1, key2),
        }
    }
}

/// sqlx's key enum is `#[non_exhaustive]`; a form this crate does not know is
/// handed back unchanged.
impl TryFrom<PgAdvisoryLockKey> for LockId {
    type Error = PgAdvisoryLockKey;

    fn try_from(key: PgAdvisoryLockKey) -> Result<Self, Self::Error> {
        match key {
            PgAdvisoryLockKey::BigInt(key) => Ok(LockId::Int8(key)),
            PgAdvisoryLockKey::IntPair(key1, key2) => Ok(LockId::Int4Pair(key1, key2)),
            other => Err(other),
        }
    }
}

/// Keys that name no lock this crate will take; see [`Error::InvalidKeys`](crate::Error::InvalidKeys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key was given. Locking nothing is refused rather than granted, since
    /// an empty key list is almost always a bug upstream (an empty query
    /// result, a filter that dropped everything).
    #[error("no advisory lock keys were given; a lock needs at least one")]
    Empty,
}

/// The ids of `keys`, in lock order, checked: at least one, each valid.
pub(crate) fn ids_of<K: AdvisoryKeys + ?Sized>(keys: &K) -> Result<Vec<LockId>, KeyError> {
    let ids = keys.lock_ids();
    if ids.is_empty() {
        tracing::debug!(error = %KeyError::Empty, "alock: call refused");
        return Err(KeyError::Empty);
    }
    Ok(ids)
}

/// A value that names one advisory lock.
///
/// Implemented for [`LockId`], `i64`, `(i32, i32)` and references to any
/// `AdvisoryKey`; derive it for domain types with
/// [`#[derive(AdvisoryKey)]`](derive@crate::AdvisoryKey).
pub trait AdvisoryKey {
    /// The lock id this value names.
    fn lock_id(&self) -> LockId;
}

impl AdvisoryKey for LockId {
    fn lock_id(&self) -> LockId {
        *self
    }
}

impl AdvisoryKey for i64 {
    fn lock_id(&self) -> LockId {
        LockId::Int8(*self)
    }
}

impl AdvisoryKey for (i32, i32) {
    fn lock_id(&self) -> LockId {
        LockId::Int4Pair(self.0, self.1)
    }
}

impl<K: AdvisoryKey + ?Sized> AdvisoryKey for &K {
    fn lock_id(&self) -> LockId {
        (**self).lock_id()
    }
}

impl<K: AdvisoryKey + ?Sized> AdvisoryKey for &mut K {
    fn lock_id(&self) -> LockId {
        (**self).lock_id()
    }
}

/// A sequence of advisory lock ids, in the order they are to be taken.
///
/// Every API that locks takes `impl AdvisoryKeys`, so one key, an array, a
/// slice, a `Vec`, or a tuple of up to eight keys of different types all work:
///
/// ```
/// use alock::{AdvisoryKeys, LockId};
///
/// assert_eq!(7_i64.lock_ids(), [LockId::Int8(7)]);
/// assert_eq!([1_i64, 2].lock_ids(), [LockId::Int8(1), LockId::Int8(2)]);
/// assert_eq!(
///     (3_i64, (4, 5)).lock_ids(),
///     [LockId::Int8(3), LockId::Int4Pair(4, 5)],
/// );
/// ```
pub trait AdvisoryKeys {
    /// Appends the ids, in lock order, to `ids`.
    fn push_ids(&self, ids: &mut Vec<LockId>);

    /// The ids, in lock order.
    fn lock_ids(&self) -> Vec<LockId> {
        let mut ids = Vec::new();
        self.push_ids(&mut ids);
        ids
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for K {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        ids.push(self.lock_id());
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for [K] {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        ids.extend(self.iter().map(AdvisoryKey::lock_id));
    }
}

impl<K: AdvisoryKey, const N: usize> AdvisoryKeys for [K; N] {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        self.as_slice().push_ids(ids);
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for Vec<K> {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        self.as_slice().push_ids(ids);
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for &[K] {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        (**self).push_ids(ids);
    }
}

impl<K: AdvisoryKey, const N: usize> AdvisoryKeys for &[K; N] {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        self.as_slice().push_ids(ids);
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for &Vec<K> {
    fn push_ids(&self, ids: &mut Vec<LockId>) {
        self.as_slice().push_ids(ids);
    }
}

macro_rules! tuple_keys {
    ($($name:ident)+) => {
        impl<$($name: AdvisoryKey),+> AdvisoryKeys for ($($name,)+) {
            #[allow(non_snake_case)]
            fn push_ids(&self, ids: &mut Vec<LockId>) {
                let ($($name,)+) = self;
                $(ids.push($name.lock_id());)+
            }
        }
    };
}

tuple_keys!(A);
tuple_keys!(A B);
tuple_keys!(A B C);
tuple_keys!(A B C D);
tuple_keys!(A B C D E);
tuple_keys!(A B C D E F);
tuple_keys!(A B C D E F G);
tuple_keys!(A B C D E F G H);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_pair_is_one_key_not_a_tuple_of_two() {
        assert_eq!((1, 2).lock_ids(), [LockId::Int4Pair(1, 2)]);
        assert_eq!(((1, 2),).lock_ids(), [LockId::Int4Pair(1, 2)]);
    }

    #[test]
    fn mixed_tuples_keep_their_order() {
        let id = LockId::Int8(9);
        assert_eq!(
            (&id, (1, 2), 3_i64, [4_i64, 5].as_slice().len() as i64).lock_ids(),
            [
                LockId::Int8(9),
                LockId::Int4Pair(1, 2),
                LockId::Int8(3),
                LockId::Int8(2)
            ],
        );
    }

    #[test]
    fn collections_and_references() {
        let v = vec![1_i64, 2, 3];
        let by_ref: &Vec<i64> = &v;
        assert_eq!(v.lock_ids(), AdvisoryKeys::lock_ids(&by_ref));
        assert_eq!(v.as_slice().lock_ids(), [1_i64, 2, 3].lock_ids());
        let array_ref: &[(i32, i32); 1] = &[(1, 1)];
        assert_eq!(AdvisoryKeys::lock_ids(&array_ref), [LockId::Int4Pair(1, 1)]);
        assert!(Vec::<i64>::new().lock_ids().is_empty());
    }

    #[test]
    fn sqlx_key_round_trip() {
        for id in [LockId::Int8(i64::MIN), LockId::Int4Pair(i32::MIN, i32::MAX)] {
            let key = PgAdvisoryLockKey::from(id);
            assert_eq!(LockId::try_from(key), Ok(id));
        }
    }

    #[test]
    fn pg_locks_rows_of_extreme_keys() {
        assert_eq!(LockId::Int8(i64::MIN).pg_locks_row(), (1 << 31, 0, 1));
        assert_eq!(
            LockId::Int8(i64::MAX).pg_locks_row(),
            (i32::MAX as u32, u32::MAX, 1)
        );
        assert_eq!(
            LockId::Int4Pair(i32::MIN, -1).pg_locks_row(),
            (1 << 31, u32::MAX, 2)
        );
    }
}
