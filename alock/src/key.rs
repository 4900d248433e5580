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
/// assert_eq!(LockId::pair(7, -1), LockId::Int4Pair(7, -1));
/// assert_eq!(LockId::from((7, -1)), LockId::pair(7, -1));
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
    /// The largest id a namespaced int8 key can hold: `2^48 - 1`
    /// (281,474,976,710,655), the low 48 bits of the int8.
    ///
    /// A `BIGSERIAL` counting a million rows a second takes almost nine years
    /// to get there.
    pub const MAX_TAGGED_ID: i64 = (1 << 48) - 1;

    /// One int4-pair key, `pg_advisory_lock(key1, key2)`.
    ///
    /// A pair is one lock, not two: PostgreSQL's second key space is made of
    /// pairs of `integer`s. The classic use is a table's oid and a row id,
    /// or `(table_oid, 0)` for the table as a whole. Two keys are written as
    /// a list instead: `[1_i64, 2]` or `(1_i64, 2_i64)`.
    ///
    /// ```
    /// use alock::{AdvisoryKeys, LockId};
    ///
    /// const ORDERS_TABLE: LockId = LockId::pair(16384, 0);
    /// assert_eq!(ORDERS_TABLE, LockId::Int4Pair(16384, 0));
    /// assert_eq!(ORDERS_TABLE.lock_ids(), Ok(vec![ORDERS_TABLE])); // one key
    /// assert_eq!((1_i64, 2_i64).lock_ids().unwrap().len(), 2); // two keys
    /// ```
    pub const fn pair(key1: i32, key2: i32) -> LockId {
        LockId::Int4Pair(key1, key2)
    }

    /// The int8 key of `id` under the 16-bit namespace tag `tag`: the tag in
    /// the high 16 bits, the id in the low 48. `None` when `id` is outside
    /// `0..=`[`MAX_TAGGED_ID`](Self::MAX_TAGGED_ID).
    ///
    /// This is the key `#[derive(AdvisoryKey)]` makes for a 64-bit id under
    /// a namespace, with the tag [`namespace_tag`](crate::namespace_tag)
    /// gives for a string namespace. The layout is fixed: it will not change
    /// in any release of this crate. Ids of two different tags never meet,
    /// and an id out of range is refused rather than folded onto another.
    ///
    /// ```
    /// use alock::LockId;
    ///
    /// assert_eq!(LockId::tagged(1, 5), Some(LockId::Int8(0x0001_0000_0000_0005)));
    /// assert_eq!(LockId::tagged(0xffff, 0), Some(LockId::Int8(-1 << 48)));
    /// assert_eq!(LockId::tagged(7, LockId::MAX_TAGGED_ID + 1), None);
    /// assert_eq!(LockId::tagged(7, -1), None);
    /// ```
    pub const fn tagged(tag: u16, id: i64) -> Option<LockId> {
        if id < 0 || id > Self::MAX_TAGGED_ID {
            return None;
        }
        Some(LockId::Int8((tag as i64) << 48 | id))
    }

    /// The `(tag, id)` an int8 key splits into under the layout of
    /// [`tagged`](Self::tagged): the high 16 bits and the low 48. `None` for
    /// an int4 pair.
    ///
    /// Every int8 splits; whether it was made by a namespaced key is up to
    /// the reader, who compares the tag with
    /// [`Int8Namespaced::NAMESPACE_TAG`](crate::Int8Namespaced::NAMESPACE_TAG).
    ///
    /// ```
    /// use alock::LockId;
    ///
    /// assert_eq!(LockId::tagged(0xabcd, 42).unwrap().tag_and_id(), Some((0xabcd, 42)));
    /// assert_eq!(LockId::Int8(-1).tag_and_id(), Some((0xffff, LockId::MAX_TAGGED_ID)));
    /// assert_eq!(LockId::pair(1, 2).tag_and_id(), None);
    /// ```
    pub const fn tag_and_id(self) -> Option<(u16, i64)> {
        match self {
            LockId::Int8(key) => Some(((key >> 48) as u16, key & Self::MAX_TAGGED_ID)),
            LockId::Int4Pair(..) => None,
        }
    }

    /// The int8 key sqlx's `PgAdvisoryLock::new(name)` locks for `name`.
    ///
    /// A program moving from sqlx's `PgAdvisoryLock` to this crate keeps what
    /// each name locks: the two interoperate, and a lock taken by name in an
    /// old process still excludes a new one. The function is sqlx's, fixed
    /// by sqlx: HKDF-SHA256 (RFC 5869) with no salt, `name`'s UTF-8 bytes as
    /// input key material and `SQLx (Rust) Postgres advisory lock` as info,
    /// expanded to 8 bytes read as a little-endian `i64`.
    ///
    /// A name is hashed at run time, once per call; keep the `LockId` to lock
    /// by it again. For names known at compile time, a derived key with a
    /// namespace costs nothing at run time.
    ///
    /// ```
    /// use alock::LockId;
    ///
    /// // The example of sqlx's own documentation.
    /// assert_eq!(
    ///     LockId::from_name("my first Postgres advisory lock!"),
    ///     LockId::Int8(-5560419505042474287),
    /// );
    /// ```
    pub fn from_name(name: &str) -> LockId {
        const INFO: &[u8] = b"SQLx (Rust) Postgres advisory lock";
        let mut key = [0; 8];
        hkdf::Hkdf::<sha2::Sha256>::new(None, name.as_bytes())
            .expand(INFO, &mut key)
            .expect("BUG: HKDF-SHA256 expands to 8 bytes");
        LockId::Int8(i64::from_le_bytes(key))
    }

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

    /// A key type with a namespace and a 64-bit id was given an id outside
    /// `0..=`[`LockId::MAX_TAGGED_ID`]: its int8 key has 48 bits for the id
    /// and 16 for the namespace, and an id that does not fit would land in
    /// another namespace.
    #[error(
        "`{key_type}` id {id} does not fit its namespaced int8 key; \
         ids under a namespace must be in 0..=281474976710655 (2^48 - 1)"
    )]
    IdOutOfRange {
        /// The key type, as written in its struct.
        key_type: &'static str,
        /// The id, as converted to an int8.
        id: i64,
    },
}

/// The ids of `keys`, in lock order, checked: at least one, each valid.
pub(crate) fn ids_of<K: AdvisoryKeys + ?Sized>(keys: &K) -> Result<Vec<LockId>, KeyError> {
    let ids = keys.lock_ids()?;
    if ids.is_empty() {
        tracing::debug!(error = %KeyError::Empty, "alock: call refused");
        return Err(KeyError::Empty);
    }
    Ok(ids)
}

/// A value that names one advisory lock.
///
/// Implemented for [`LockId`], `i64` and references to any `AdvisoryKey`;
/// derive it for domain types with
#[cfg_attr(
    feature = "derive",
    doc = "[`#[derive(AdvisoryKey)]`](derive@crate::AdvisoryKey)."
)]
#[cfg_attr(
    not(feature = "derive"),
    doc = "`#[derive(AdvisoryKey)]` (the `derive` feature)."
)]
///
/// An int4 pair is one key, written [`LockId::pair`]; a tuple or an array of
/// keys is a list of keys ([`AdvisoryKeys`]), so `(1_i64, 2_i64)` is two
/// locks. `i32` is no key: `(table_oid, 0)` would read as two keys and be
/// one, so it does not compile.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an advisory lock key",
    label = "not an advisory lock key",
    note = "a key is a `LockId`, an `i64` or a #[derive(AdvisoryKey)] type; \
            tuples, arrays, slices and `Vec`s of keys are lists of keys",
    note = "for one int4-pair key write `LockId::pair(a, b)`, as in `LockId::pair(table_oid, 0)`; \
            for two int8 keys write `[1_i64, 2]` or `(1_i64, 2_i64)`"
)]
pub trait AdvisoryKey {
    /// The lock id this value names.
    ///
    /// # Panics
    ///
    /// Implementations may panic for a value that names no lock. A derived
    /// key with a namespace and a 64-bit id panics for an id outside
    /// `0..=`[`LockId::MAX_TAGGED_ID`]; lock calls never do, they return
    /// [`KeyError::IdOutOfRange`] through
    /// [`checked_lock_id`](Self::checked_lock_id).
    fn lock_id(&self) -> LockId;

    /// The lock id this value names, or why it names none.
    ///
    /// Every lock call goes through this method. The default is
    /// `Ok(self.lock_id())`; override it, together with `lock_id`, for a key
    /// type some of whose values name no lock.
    ///
    /// # Errors
    ///
    /// The implementation's: for a derived key with a namespace and a
    /// 64-bit id, [`KeyError::IdOutOfRange`].
    fn checked_lock_id(&self) -> Result<LockId, KeyError> {
        Ok(self.lock_id())
    }
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

impl<K: AdvisoryKey + ?Sized> AdvisoryKey for &K {
    fn lock_id(&self) -> LockId {
        (**self).lock_id()
    }

    fn checked_lock_id(&self) -> Result<LockId, KeyError> {
        (**self).checked_lock_id()
    }
}

impl<K: AdvisoryKey + ?Sized> AdvisoryKey for &mut K {
    fn lock_id(&self) -> LockId {
        (**self).lock_id()
    }

    fn checked_lock_id(&self) -> Result<LockId, KeyError> {
        (**self).checked_lock_id()
    }
}

/// A sequence of advisory lock ids, in the order they are to be taken.
///
/// Every API that locks takes `impl AdvisoryKeys`, so one key, an array, a
/// slice, a `Vec`, or a tuple of up to eight keys of different types all work.
/// A tuple is always a list: `(a, b)` is two keys, and the one int4-pair key
/// is written [`LockId::pair`]:
///
/// ```
/// use alock::{AdvisoryKeys, LockId};
///
/// assert_eq!(7_i64.lock_ids(), Ok(vec![LockId::Int8(7)]));
/// assert_eq!([1_i64, 2].lock_ids(), Ok(vec![LockId::Int8(1), LockId::Int8(2)]));
/// assert_eq!(
///     (3_i64, LockId::pair(4, 5)).lock_ids(),
///     Ok(vec![LockId::Int8(3), LockId::Int4Pair(4, 5)]),
/// );
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an advisory lock key or a list of keys",
    label = "not advisory lock keys",
    note = "a key is a `LockId`, an `i64` or a #[derive(AdvisoryKey)] type; \
            tuples, arrays, slices and `Vec`s of keys are lists of keys",
    note = "for one int4-pair key write `LockId::pair(a, b)`, as in `LockId::pair(table_oid, 0)`; \
            for two int8 keys write `[1_i64, 2]` or `(1_i64, 2_i64)`"
)]
pub trait AdvisoryKeys {
    /// Appends the ids, in lock order, to `ids`.
    ///
    /// # Errors
    ///
    /// The first key that names no lock stops the walk with its
    /// [`checked_lock_id`](AdvisoryKey::checked_lock_id) error; `ids` then
    /// holds the ids before it.
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError>;

    /// The ids, in lock order.
    ///
    /// # Errors
    ///
    /// As [`push_ids`](Self::push_ids).
    fn lock_ids(&self) -> Result<Vec<LockId>, KeyError> {
        let mut ids = Vec::new();
        self.push_ids(&mut ids)?;
        Ok(ids)
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for K {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        ids.push(self.checked_lock_id()?);
        Ok(())
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for [K] {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        ids.reserve(self.len());
        self.iter().try_for_each(|key| key.push_ids(ids))
    }
}

impl<K: AdvisoryKey, const N: usize> AdvisoryKeys for [K; N] {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        self.as_slice().push_ids(ids)
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for Vec<K> {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        self.as_slice().push_ids(ids)
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for &[K] {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        (**self).push_ids(ids)
    }
}

impl<K: AdvisoryKey, const N: usize> AdvisoryKeys for &[K; N] {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        self.as_slice().push_ids(ids)
    }
}

impl<K: AdvisoryKey> AdvisoryKeys for &Vec<K> {
    fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
        self.as_slice().push_ids(ids)
    }
}

macro_rules! tuple_keys {
    ($($name:ident)+) => {
        impl<$($name: AdvisoryKey),+> AdvisoryKeys for ($($name,)+) {
            #[allow(non_snake_case)]
            fn push_ids(&self, ids: &mut Vec<LockId>) -> Result<(), KeyError> {
                let ($($name,)+) = self;
                $(ids.push($name.checked_lock_id()?);)+
                Ok(())
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
    fn a_tuple_of_keys_is_as_many_keys() {
        assert_eq!(
            (1_i64, 2_i64).lock_ids(),
            Ok(vec![LockId::Int8(1), LockId::Int8(2)])
        );
        // Untyped literals can only be int8 keys: two of them, as read.
        assert_eq!(
            (1, 2).lock_ids(),
            Ok(vec![LockId::Int8(1), LockId::Int8(2)])
        );
        assert_eq!([1, 2].lock_ids(), (1_i64, 2_i64).lock_ids());
    }

    #[test]
    fn an_int4_pair_is_one_key_written_pair() {
        const TABLE: LockId = LockId::pair(16_384, 0);
        assert_eq!(TABLE, LockId::Int4Pair(16_384, 0));
        assert_eq!(TABLE.lock_ids(), Ok(vec![TABLE]));
        assert_eq!((TABLE,).lock_ids(), Ok(vec![TABLE]));
        assert_eq!(LockId::from((7, -1)), LockId::pair(7, -1));
    }

    #[test]
    fn mixed_tuples_keep_their_order() {
        let id = LockId::Int8(9);
        assert_eq!(
            (
                &id,
                LockId::pair(1, 2),
                3_i64,
                [4_i64, 5].as_slice().len() as i64
            )
                .lock_ids(),
            Ok(vec![
                LockId::Int8(9),
                LockId::Int4Pair(1, 2),
                LockId::Int8(3),
                LockId::Int8(2)
            ]),
        );
    }

    #[test]
    fn collections_and_references() {
        let v = vec![1_i64, 2, 3];
        let by_ref: &Vec<i64> = &v;
        assert_eq!(v.lock_ids(), AdvisoryKeys::lock_ids(&by_ref));
        assert_eq!(v.as_slice().lock_ids(), [1_i64, 2, 3].lock_ids());
        let array_ref: &[LockId; 1] = &[LockId::pair(1, 1)];
        assert_eq!(
            AdvisoryKeys::lock_ids(&array_ref),
            Ok(vec![LockId::Int4Pair(1, 1)])
        );
        assert_eq!(Vec::<i64>::new().lock_ids(), Ok(vec![]));
        assert_eq!(ids_of(&Vec::<i64>::new()), Err(KeyError::Empty));
    }

    /// A key some of whose values name no lock, as a derived namespaced
    /// int8 key is.
    struct Even(i64);

    impl AdvisoryKey for Even {
        fn lock_id(&self) -> LockId {
            self.checked_lock_id().expect("an even id")
        }

        fn checked_lock_id(&self) -> Result<LockId, KeyError> {
            match self.0 % 2 {
                0 => Ok(LockId::Int8(self.0)),
                _ => Err(KeyError::IdOutOfRange {
                    key_type: "Even",
                    id: self.0,
                }),
            }
        }
    }

    #[test]
    fn every_form_of_key_list_reports_a_key_that_names_no_lock() {
        let error = Err(KeyError::IdOutOfRange {
            key_type: "Even",
            id: 3,
        });
        assert_eq!(ids_of(&Even(3)), error);
        assert_eq!(ids_of(&&Even(3)), error);
        assert_eq!(ids_of(&(Even(2), Even(3))), error);
        assert_eq!(ids_of(&[Even(2), Even(3)]), error);
        assert_eq!(ids_of(&vec![Even(2), Even(3)]), error);
        assert_eq!(ids_of(&[Even(2), Even(3)].as_slice()), error);
        assert_eq!(
            ids_of(&(Even(2), &Even(4))),
            Ok(vec![LockId::Int8(2), LockId::Int8(4)])
        );
    }

    #[test]
    fn id_out_of_range_says_the_type_the_id_and_the_range() {
        let error = KeyError::IdOutOfRange {
            key_type: "JobId",
            id: -1,
        };
        assert_eq!(
            error.to_string(),
            "`JobId` id -1 does not fit its namespaced int8 key; \
             ids under a namespace must be in 0..=281474976710655 (2^48 - 1)"
        );
        assert_eq!(LockId::MAX_TAGGED_ID, 281_474_976_710_655);
    }

    /// These vectors fix the int8 layout of namespaced keys forever.
    #[test]
    fn tagged_int8_layout_vectors() {
        let vectors: [(u16, i64, i64); 6] = [
            (0, 0, 0),
            (0, LockId::MAX_TAGGED_ID, 0x0000_ffff_ffff_ffff),
            (1, 5, 0x0001_0000_0000_0005),
            (0x7fff, 1, 0x7fff_0000_0000_0001),
            (0x8000, 0, i64::MIN),
            (0xffff, LockId::MAX_TAGGED_ID, -1),
        ];
        for (tag, id, key) in vectors {
            assert_eq!(
                LockId::tagged(tag, id),
                Some(LockId::Int8(key)),
                "{tag} {id}"
            );
            assert_eq!(LockId::Int8(key).tag_and_id(), Some((tag, id)));
        }
        for id in [-1, i64::MIN, LockId::MAX_TAGGED_ID + 1, i64::MAX] {
            assert_eq!(LockId::tagged(3, id), None, "{id}");
        }
    }

    /// sqlx's own documented example, and vectors computed once from
    /// `PgAdvisoryLock::new`; `tests/it/from_name.rs` compares many more live.
    #[test]
    fn from_name_is_sqlx_hkdf_sha256() {
        assert_eq!(
            LockId::from_name("my first Postgres advisory lock!"),
            LockId::Int8(-5_560_419_505_042_474_287)
        );
        let key = sqlx::postgres::PgAdvisoryLock::new("").key().clone();
        assert_eq!(LockId::try_from(key), Ok(LockId::from_name("")));
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
