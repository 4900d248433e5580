//! Namespaces of derived keys, the key spaces they make, and the traits
//! `#[derive(AdvisoryKey)]` asks of a key's id field.
//!
//! A derived key is one of three shapes ([`KeySpace`]):
//!
//! - `(namespace, id)`, an int4 pair whose first half names the type, for
//!   ids of 32 bits or fewer; the namespace is [`namespace`] of a string or
//!   an integer as written, exposed as [`Namespaced::NAMESPACE`];
//! - a namespaced int8 for 64-bit ids: a 16-bit tag naming the type in the
//!   high bits ([`namespace_tag`] of a string, or an integer up to 65535),
//!   exposed as [`Int8Namespaced::NAMESPACE_TAG`], and an id of up to 48
//!   bits in the low ones ([`LockId::tagged`](crate::LockId::tagged));
//! - a raw int8, the id alone, across the whole int8 key space.
//!
//! Every namespace is a constant computed at compile time. The id comes from
//! one field through [`Int4Key`] or [`Int8Key`], which are implemented only
//! for types that convert without loss.

use std::num::NonZero;

/// The int4 namespace a string names: the 32-bit FNV-1a hash of its UTF-8
/// bytes, bit-cast to `i32`.
///
/// This is what `#[advisory_key(namespace = "...")]` derives, evaluated at
/// compile time. The function is fixed: FNV-1a with the 32-bit offset basis
/// `0x811c9dc5` and prime `0x01000193` (16777619), over the bytes of `name`
/// with no terminator and no normalization, the resulting `u32` reinterpreted
/// as `i32` (values at or above `0x8000_0000` become negative). It will not
/// change in any release of this crate, since a changed namespace would let
/// two versions of one program take different locks for the same row.
///
/// # Collisions
///
/// Distinct names hash to the same value with probability `2^-32` per pair,
/// so among `n` names the chance that any two collide is about
/// `n^2 / 2^33`: one in 8.6 million for 100 names, about one in 8,600 for
/// 1,000. The same holds against integer namespaces such as table oids.
/// [`assert_distinct_namespaces!`](crate::assert_distinct_namespaces) turns a
/// collision between the key types of one program into a compile error.
///
/// # Examples
///
/// Test vectors (the first three are FNV-1a's own):
///
/// ```
/// use alock::namespace;
///
/// assert_eq!(namespace(""), 0x811c_9dc5_u32 as i32); // -2128831035
/// assert_eq!(namespace("a"), 0xe40c_292c_u32 as i32); // -468965076
/// assert_eq!(namespace("foobar"), 0xbf9c_f968_u32 as i32); // -1080231576
/// assert_eq!(namespace("orders"), 0x325e_96ec); // 845059820
/// assert_eq!(namespace("café"), 0xa82b_5049_u32 as i32); // UTF-8 bytes
///
/// // Usable in constants:
/// const ORDERS: i32 = namespace("orders");
/// assert_eq!(ORDERS, 845059820);
/// ```
pub const fn namespace(name: &str) -> i32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;

    let bytes = name.as_bytes();
    let mut hash = OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash.cast_signed()
}

/// The 16-bit int8 namespace tag a string names: its [`namespace`] folded to
/// 16 bits, the high half XOR the low half.
///
/// This is the tag `#[advisory_key(namespace = "...")]` derives for a key
/// whose id is 64-bit, evaluated at compile time: the high 16 bits of each
/// of its int8 keys (see [`LockId::tagged`](crate::LockId::tagged)). For the 32-bit hash `h` of
/// [`namespace`], read as `u32`, the tag is `(h >> 16) ^ (h & 0xffff)`. It
/// will not change in any release of this crate.
///
/// # Collisions
///
/// Sixteen bits leave little room: distinct names share a tag with
/// probability `2^-16` per pair, so among 20 names the chance that any two
/// collide is about one in 340, among 100 about one in 13. List every
/// namespaced key type of a program in
/// [`assert_distinct_namespaces!`](crate::assert_distinct_namespaces), which
/// turns a collision into a compile error; give one of two colliding types
/// an integer namespace, which is used as the tag as written.
///
/// # Examples
///
/// ```
/// use alock::{namespace, namespace_tag};
///
/// assert_eq!(namespace_tag(""), 0x811c ^ 0x9dc5); // 0x1cd9
/// assert_eq!(namespace_tag("jobs"), 0xf47a); // namespace("jobs") is 0xe407_107d
/// assert_eq!(namespace_tag("users"), 0x9b6f);
///
/// let h = namespace("jobs").cast_unsigned();
/// assert_eq!(namespace_tag("jobs"), ((h >> 16) ^ (h & 0xffff)) as u16);
///
/// // Usable in constants:
/// const JOBS: u16 = namespace_tag("jobs");
/// assert_eq!(JOBS, 62586);
/// ```
pub const fn namespace_tag(name: &str) -> u16 {
    let hash = namespace(name).cast_unsigned();
    ((hash >> 16) ^ (hash & 0xffff)) as u16
}

/// A key type with an int4 namespace: the first half of every
/// [`LockId::Int4Pair`](crate::LockId::Int4Pair) it makes.
///
/// `#[derive(AdvisoryKey)]` implements it for every type with
/// `#[advisory_key(namespace = ...)]`, so code can tell which type a lock id
/// seen in `pg_locks` or a log belongs to:
///
#[cfg_attr(feature = "derive", doc = "```")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use alock::{AdvisoryKey, LockId, Namespaced};
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "orders")]
/// struct OrderId(i32);
///
/// fn describe(id: LockId) -> String {
///     match id {
///         LockId::Int4Pair(ns, row) if ns == OrderId::NAMESPACE => format!("order {row}"),
///         other => format!("lock {other}"),
///     }
/// }
///
/// assert_eq!(OrderId::NAMESPACE, alock::namespace("orders"));
/// assert_eq!(describe(OrderId(7).lock_id()), "order 7");
/// assert_eq!(describe(LockId::Int8(7)), "lock 7");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no advisory-key namespace",
    label = "no namespace",
    note = "key types derived with #[advisory_key(namespace = ...)] and an id of 32 bits or \
            fewer have one; a namespaced 64-bit id has a 16-bit tag instead, \
            `alock::Int8Namespaced::NAMESPACE_TAG`"
)]
pub trait Namespaced {
    /// The namespace, computed at compile time.
    const NAMESPACE: i32;
}

/// A key type with a 16-bit int8 namespace tag: the high 16 bits of every
/// [`LockId::Int8`](crate::LockId::Int8) it makes, the id taking the low 48
/// ([`LockId::tagged`](crate::LockId::tagged)).
///
/// `#[derive(AdvisoryKey)]` implements it for every type with
/// `#[advisory_key(namespace = ...)]` whose id is 64-bit (`i64`,
/// `NonZero<i64>`), or which asks for an int8 key with
/// `#[advisory_key(namespace = ..., int8)]`. The tag is [`namespace_tag`] of
/// a string namespace, or an integer namespace as written (0 to 65535).
/// Code reading `pg_locks` or a log splits an int8 with
/// [`LockId::tag_and_id`](crate::LockId::tag_and_id) and compares the tag:
///
#[cfg_attr(feature = "derive", doc = "```")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use alock::{AdvisoryKey, Int8Namespaced, LockId};
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "jobs")]
/// struct JobId(i64); // a BIGSERIAL
///
/// fn describe(id: LockId) -> String {
///     match id.tag_and_id() {
///         Some((tag, job)) if tag == JobId::NAMESPACE_TAG => format!("job {job}"),
///         _ => format!("lock {id}"),
///     }
/// }
///
/// assert_eq!(JobId::NAMESPACE_TAG, alock::namespace_tag("jobs"));
/// assert_eq!(JobId(5).lock_id(), LockId::Int8(0xf47a_0000_0000_0005_u64 as i64));
/// assert_eq!(describe(JobId(5).lock_id()), "job 5");
/// ```
pub trait Int8Namespaced {
    /// The tag, computed at compile time.
    const NAMESPACE_TAG: u16;
}

/// The part of PostgreSQL's advisory key spaces a key type's ids fall in.
///
/// Two key types whose spaces [`overlap`](Self::overlap) can lock the same
/// id for different values; [`assert_distinct_namespaces!`] refuses to
/// compile them together.
///
/// [`assert_distinct_namespaces!`]: crate::assert_distinct_namespaces
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpace {
    /// [`LockId::Int4Pair`](crate::LockId::Int4Pair)`(namespace, id)`: the int4 pairs whose first
    /// half is `namespace`.
    Int4Pair {
        /// The first half of every pair; [`Namespaced::NAMESPACE`].
        namespace: i32,
    },
    /// [`LockId::tagged`](crate::LockId::tagged)`(tag, id)`: the int8s whose high 16 bits are `tag`.
    TaggedInt8 {
        /// The high 16 bits; [`Int8Namespaced::NAMESPACE_TAG`].
        tag: u16,
    },
    /// [`LockId::Int8`](crate::LockId::Int8)`(id)`: any int8. Keys of `#[advisory_key(int8)]`.
    Int8,
}

impl KeySpace {
    /// Whether some lock id is in both spaces.
    ///
    /// Int4 pairs and int8s never meet. Two namespaces overlap when they are
    /// equal, two tags likewise, and the raw int8 space overlaps every int8
    /// space, itself included.
    ///
    /// ```
    /// use alock::KeySpace;
    ///
    /// let jobs = KeySpace::TaggedInt8 { tag: alock::namespace_tag("jobs") };
    /// let orders = KeySpace::Int4Pair { namespace: alock::namespace("orders") };
    /// assert!(!jobs.overlap(orders));
    /// assert!(jobs.overlap(jobs));
    /// assert!(KeySpace::Int8.overlap(jobs));
    /// assert!(!KeySpace::Int8.overlap(orders));
    /// ```
    pub const fn overlap(self, other: KeySpace) -> bool {
        match (self, other) {
            (KeySpace::Int4Pair { namespace: a }, KeySpace::Int4Pair { namespace: b }) => a == b,
            (KeySpace::TaggedInt8 { tag: a }, KeySpace::TaggedInt8 { tag: b }) => a == b,
            (KeySpace::Int8, KeySpace::Int8 | KeySpace::TaggedInt8 { .. })
            | (KeySpace::TaggedInt8 { .. }, KeySpace::Int8) => true,
            (KeySpace::Int4Pair { .. }, _) | (_, KeySpace::Int4Pair { .. }) => false,
        }
    }
}

/// A key type whose every value locks in one [`KeySpace`], known at compile
/// time.
///
/// `#[derive(AdvisoryKey)]` implements it for every type it derives, so
/// [`assert_distinct_namespaces!`](crate::assert_distinct_namespaces) can
/// compare them. Implement it for a hand-written key type to list it there
/// too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no known advisory key space",
    label = "not a derived key type",
    note = "key types derived with #[derive(AdvisoryKey)] have one; \
            for a hand-written key type, implement `alock::KeyType`"
)]
pub trait KeyType {
    /// The key space, computed at compile time.
    const KEY_SPACE: KeySpace;
}

/// A type that converts to an int4 (`i32`) without loss, so it can be the id
/// field of a key derived with `#[advisory_key(namespace = ...)]`.
///
/// Implemented for `i8`, `i16`, `i32`, `u8`, `u16` (by value), for `u32` by a
/// bit cast (`u32::MAX` becomes `-1`, `1 << 31` becomes `i32::MIN`; no two
/// `u32` share an int4), for their [`NonZero`] forms, and for references to
/// any `Int4Key`. `i64`, `u64`, floats, strings and `Option` are not: they do
/// not fit one int4 without loss or ambiguity. A 64-bit id under a namespace
/// makes a namespaced int8 key instead (see [`Int8Namespaced`]): the derive
/// sees `i64` and `NonZero<i64>` as written, and
/// `#[advisory_key(namespace = ..., int8)]` asks for it with any other
/// [`Int8Key`] type, such as an alias of `i64`.
///
/// Implement it for an id type of your own; distinct values must return
/// distinct ints, or two rows would share one lock:
///
#[cfg_attr(feature = "derive", doc = "```")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use alock::{AdvisoryKey, Int4Key, LockId};
///
/// #[derive(Clone, Copy)]
/// struct Region(u8);
///
/// impl Int4Key for Region {
///     fn to_int4(&self) -> i32 {
///         i32::from(self.0)
///     }
/// }
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "regions")]
/// struct RegionLock(Region);
///
/// assert_eq!(
///     RegionLock(Region(3)).lock_id(),
///     LockId::Int4Pair(alock::namespace("regions"), 3),
/// );
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of a namespaced advisory key",
    label = "an id under a namespace must fit in an int4 without loss",
    note = "use i8, i16, i32, u8, u16, u32 (bit-cast) or their NonZero forms, \
            or implement `alock::Int4Key` for a type of yours",
    note = "for a 64-bit id the derive cannot see is one (an alias of i64, a type implementing \
            `alock::Int8Key`), write #[advisory_key(namespace = ..., int8)]"
)]
pub trait Int4Key {
    /// The int4 this value is locked by.
    fn to_int4(&self) -> i32;
}

/// A type that converts to an int8 (`i64`) without loss, so it can be the id
/// field of a key derived with `#[advisory_key(int8)]`, or of a namespaced
/// int8 key.
///
/// Implemented for `i8`, `i16`, `i32`, `i64`, `u8`, `u16`, `u32` (all by
/// value), for their [`NonZero`] forms, and for references to any `Int8Key`.
/// `u64` is not: half its values do not fit an int8. Implement it for an id
/// type of your own; distinct values must return distinct ints. Under a
/// namespace, an id outside `0..=`[`LockId::MAX_TAGGED_ID`](crate::LockId::MAX_TAGGED_ID) is refused when
/// locked, with [`KeyError::IdOutOfRange`](crate::KeyError::IdOutOfRange).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of an int8 advisory key",
    label = "an int8 id must fit in an i64 without loss",
    note = "use i8, i16, i32, i64, u8, u16, u32 or their NonZero forms, \
            or implement `alock::Int8Key` for a type of yours",
    note = "PostgreSQL has no unsigned integers: a bigint or BIGSERIAL column is an i64"
)]
pub trait Int8Key {
    /// The int8 this value is locked by.
    fn to_int8(&self) -> i64;
}

macro_rules! lossless {
    ($trait:ident :: $method:ident -> $int:ty: $($t:ty),+) => {$(
        impl $trait for $t {
            #[inline]
            fn $method(&self) -> $int {
                <$int>::from(*self)
            }
        }

        impl $trait for NonZero<$t> {
            #[inline]
            fn $method(&self) -> $int {
                <$int>::from(self.get())
            }
        }
    )+};
}

lossless!(Int4Key::to_int4 -> i32: i8, i16, i32, u8, u16);
lossless!(Int8Key::to_int8 -> i64: i8, i16, i32, i64, u8, u16, u32);

/// A bijection, not a conversion: ids above `i32::MAX` come out negative.
impl Int4Key for u32 {
    #[inline]
    fn to_int4(&self) -> i32 {
        self.cast_signed()
    }
}

impl Int4Key for NonZero<u32> {
    #[inline]
    fn to_int4(&self) -> i32 {
        self.get().cast_signed()
    }
}

macro_rules! by_reference {
    ($trait:ident :: $method:ident -> $int:ty) => {
        impl<T: $trait + ?Sized> $trait for &T {
            #[inline]
            fn $method(&self) -> $int {
                (**self).$method()
            }
        }

        impl<T: $trait + ?Sized> $trait for &mut T {
            #[inline]
            fn $method(&self) -> $int {
                (**self).$method()
            }
        }
    };
}

by_reference!(Int4Key::to_int4 -> i32);
by_reference!(Int8Key::to_int8 -> i64);

/// Fails to compile when two of the given key types can lock the same id:
/// when their [`KeySpace`]s [`overlap`](KeySpace::overlap).
///
/// Two int4-pair key types collide when they share a
/// [`Namespaced::NAMESPACE`], two namespaced int8 key types when they share
/// an [`Int8Namespaced::NAMESPACE_TAG`]. A raw `#[advisory_key(int8)]` type
/// spans the whole int8 key space, so it is refused next to any other int8
/// key type; int4-pair and int8 types never meet. String names collide by
/// chance (`2^-32` per pair for int4 namespaces, `2^-16` for int8 tags; see
/// [`namespace`] and [`namespace_tag`]), and two types can also be given the
/// same name or integer by mistake. List every key type of a program once,
/// anywhere an item may go; the check runs at compile time and costs nothing
/// at run time.
///
#[cfg_attr(feature = "derive", doc = "```")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use alock::AdvisoryKey;
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "orders")]
/// struct OrderId(i32);
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = 192842)]
/// struct InvoiceId(u16);
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "jobs")]
/// struct JobId(i64);
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "users")]
/// struct UserId(i64);
///
/// alock::assert_distinct_namespaces!(OrderId, InvoiceId, JobId, UserId);
/// ```
///
/// A collision stops the build and names both types:
///
#[cfg_attr(feature = "derive", doc = "```compile_fail,E0080")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// # use alock::AdvisoryKey;
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "orders")]
/// struct OrderId(i32);
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = 845059820)] // namespace("orders")
/// struct LegacyOrderId(i32);
///
/// // error: `OrderId` and `LegacyOrderId` have the same advisory-key namespace
/// alock::assert_distinct_namespaces!(OrderId, LegacyOrderId);
/// ```
///
/// So does a raw int8 key type next to another int8 key type:
///
#[cfg_attr(feature = "derive", doc = "```compile_fail,E0080")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// # use alock::AdvisoryKey;
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "jobs")]
/// struct JobId(i64);
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(int8)]
/// struct BatchId(i64);
///
/// // error: `BatchId` is a raw #[advisory_key(int8)] key, which spans the whole
/// // int8 key space, so it can lock the same int8 as `JobId`
/// alock::assert_distinct_namespaces!(JobId, BatchId);
/// ```
#[macro_export]
macro_rules! assert_distinct_namespaces {
    ($($key:ty),+ $(,)?) => {
        const _: () = {
            $crate::__assert_distinct_namespaces_pairwise!($($key),+);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __assert_distinct_namespaces_pairwise {
    ($first:ty $(, $rest:ty)*) => {
        $(
            match $crate::__private::overlap(
                <$first as $crate::KeyType>::KEY_SPACE,
                <$rest as $crate::KeyType>::KEY_SPACE,
            ) {
                $crate::__private::Overlap::None => {}
                $crate::__private::Overlap::Namespace => ::core::panic!(::core::concat!(
                    "`", ::core::stringify!($first), "` and `", ::core::stringify!($rest),
                    "` have the same advisory-key namespace; give one of them another namespace",
                )),
                $crate::__private::Overlap::Tag => ::core::panic!(::core::concat!(
                    "`", ::core::stringify!($first), "` and `", ::core::stringify!($rest),
                    "` have the same 16-bit namespace tag for their int8 keys; give one of them \
                     another namespace, such as an integer from 0 to 65535",
                )),
                $crate::__private::Overlap::RawFirst => ::core::panic!(::core::concat!(
                    "`", ::core::stringify!($first), "` is a raw #[advisory_key(int8)] key, which \
                     spans the whole int8 key space, so it can lock the same int8 as `",
                    ::core::stringify!($rest),
                    "`; give it a namespace: #[advisory_key(namespace = ...)]",
                )),
                $crate::__private::Overlap::RawSecond => ::core::panic!(::core::concat!(
                    "`", ::core::stringify!($rest), "` is a raw #[advisory_key(int8)] key, which \
                     spans the whole int8 key space, so it can lock the same int8 as `",
                    ::core::stringify!($first),
                    "`; give it a namespace: #[advisory_key(namespace = ...)]",
                )),
            }
        )*
        $crate::__assert_distinct_namespaces_pairwise!($($rest),*);
    };
    () => {};
}

/// What the code `#[derive(AdvisoryKey)]` and
/// [`assert_distinct_namespaces!`](crate::assert_distinct_namespaces)
/// generate calls. Not public API.
#[doc(hidden)]
pub mod __private {
    use crate::{KeyError, KeySpace, LockId};

    /// The key of a namespaced int8 key type, or why its id has none.
    #[inline]
    pub fn tagged(tag: u16, id: i64, key_type: &'static str) -> Result<LockId, KeyError> {
        LockId::tagged(tag, id).ok_or(KeyError::IdOutOfRange { key_type, id })
    }

    /// The key of a namespaced int8 key type; `AdvisoryKey::lock_id`
    /// documents the panic.
    #[inline]
    #[track_caller]
    pub fn tagged_or_panic(tag: u16, id: i64, key_type: &'static str) -> LockId {
        match tagged(tag, id, key_type) {
            Ok(id) => id,
            Err(error) => panic!("{error}"),
        }
    }

    /// An integer type a namespace constant may have: every primitive one
    /// that widens to `i128` without loss.
    #[diagnostic::on_unimplemented(
        message = "a namespace constant must be an integer, not `{Self}`",
        label = "not an integer constant",
        note = "name a constant of an integer type, as in `const ORDERS_OID: u32 = 16384;`"
    )]
    pub trait NamespaceInteger {}

    macro_rules! namespace_integers {
        ($($t:ty),+) => {$(impl NamespaceInteger for $t {})+};
    }

    namespace_integers!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, usize);

    /// A namespace constant's value as an int4 namespace, if it fits.
    pub const fn int4_namespace(value: i128) -> Option<i32> {
        if value < i32::MIN as i128 || value > i32::MAX as i128 {
            return None;
        }
        Some(value as i32)
    }

    /// A namespace constant's value as an int8 namespace tag, if it fits.
    pub const fn namespace_tag_of(value: i128) -> Option<u16> {
        if value < 0 || value > u16::MAX as i128 {
            return None;
        }
        Some(value as u16)
    }

    /// How two key spaces overlap, for the message that says so.
    pub enum Overlap {
        None,
        Namespace,
        Tag,
        RawFirst,
        RawSecond,
    }

    pub const fn overlap(first: KeySpace, second: KeySpace) -> Overlap {
        if !first.overlap(second) {
            return Overlap::None;
        }
        match (first, second) {
            (KeySpace::Int8, _) => Overlap::RawFirst,
            (_, KeySpace::Int8) => Overlap::RawSecond,
            (KeySpace::TaggedInt8 { .. }, _) => Overlap::Tag,
            _ => Overlap::Namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyError, LockId};

    #[test]
    fn namespace_matches_the_fnv1a_32_test_vectors() {
        let vectors: [(&str, u32); 6] = [
            ("", 0x811c_9dc5),
            ("a", 0xe40c_292c),
            ("foobar", 0xbf9c_f968),
            ("orders", 0x325e_96ec),
            ("customers", 0xc093_44de),
            ("café", 0xa82b_5049),
        ];
        for (name, hash) in vectors {
            assert_eq!(namespace(name), hash as i32, "namespace({name:?})");
        }
    }

    /// These vectors fix the int8 namespace tags forever.
    #[test]
    fn namespace_tag_folds_the_fnv1a_32_hash_to_16_bits() {
        let vectors: [(&str, u16); 8] = [
            ("", 0x1cd9),
            ("a", 0xcd20),
            ("foobar", 0x46f4),
            ("jobs", 0xf47a),
            ("users", 0x9b6f),
            ("orders", 0xa4b2),
            ("events", 0xf15c),
            ("café", 0xf862),
        ];
        for (name, tag) in vectors {
            assert_eq!(namespace_tag(name), tag, "namespace_tag({name:?})");
        }
        const JOBS: u16 = namespace_tag("jobs");
        assert_eq!(JOBS, 62_586);
    }

    /// A namespaced 64-bit id's key, end to end, fixed forever.
    #[test]
    fn tagged_key_vectors() {
        let jobs = namespace_tag("jobs");
        let vectors: [(u16, i64, i64); 4] = [
            (jobs, 0, 0xf47a_0000_0000_0000_u64 as i64),
            (jobs, 5, 0xf47a_0000_0000_0005_u64 as i64),
            (
                jobs,
                LockId::MAX_TAGGED_ID,
                0xf47a_ffff_ffff_ffff_u64 as i64,
            ),
            (192, 77, 0x00c0_0000_0000_004d),
        ];
        for (tag, id, key) in vectors {
            assert_eq!(__private::tagged(tag, id, "T"), Ok(LockId::Int8(key)));
            assert_eq!(__private::tagged_or_panic(tag, id, "T"), LockId::Int8(key));
        }
        for id in [-1, LockId::MAX_TAGGED_ID + 1] {
            assert_eq!(
                __private::tagged(jobs, id, "JobId"),
                Err(KeyError::IdOutOfRange {
                    key_type: "JobId",
                    id
                })
            );
        }
    }

    #[test]
    #[should_panic = "`JobId` id -1 does not fit its namespaced int8 key"]
    fn lock_id_of_an_id_out_of_range_panics_with_the_error() {
        __private::tagged_or_panic(1, -1, "JobId");
    }

    #[test]
    fn namespace_constants_are_narrowed_only_when_they_fit() {
        use __private::{int4_namespace, namespace_tag_of};
        assert_eq!(int4_namespace(i128::from(i32::MIN)), Some(i32::MIN));
        assert_eq!(int4_namespace(i128::from(i32::MAX)), Some(i32::MAX));
        assert_eq!(int4_namespace(i128::from(i32::MAX) + 1), None);
        assert_eq!(int4_namespace(i128::from(i32::MIN) - 1), None);
        assert_eq!(int4_namespace(i128::from(u32::MAX)), None);
        assert_eq!(namespace_tag_of(0), Some(0));
        assert_eq!(namespace_tag_of(65_535), Some(u16::MAX));
        assert_eq!(namespace_tag_of(65_536), None);
        assert_eq!(namespace_tag_of(-1), None);
    }

    #[test]
    fn key_spaces_overlap_within_one_key_space_only() {
        use KeySpace::{Int4Pair, Int8, TaggedInt8};
        let cases = [
            (Int4Pair { namespace: 1 }, Int4Pair { namespace: 1 }, true),
            (Int4Pair { namespace: 1 }, Int4Pair { namespace: 2 }, false),
            (TaggedInt8 { tag: 1 }, TaggedInt8 { tag: 1 }, true),
            (TaggedInt8 { tag: 1 }, TaggedInt8 { tag: 2 }, false),
            (Int4Pair { namespace: 1 }, TaggedInt8 { tag: 1 }, false),
            (Int8, TaggedInt8 { tag: 1 }, true),
            (Int8, Int8, true),
            (Int8, Int4Pair { namespace: 0 }, false),
        ];
        for (a, b, overlap) in cases {
            assert_eq!(a.overlap(b), overlap, "{a:?} {b:?}");
            assert_eq!(b.overlap(a), overlap, "{b:?} {a:?}");
        }
    }

    #[test]
    fn namespace_is_a_constant() {
        const ORDERS: i32 = namespace("orders");
        assert_eq!(ORDERS, 845_059_820);
        assert_eq!(namespace("invoices"), -196_522_279);
    }

    #[test]
    fn small_integers_convert_by_value() {
        assert_eq!(i8::MIN.to_int4(), -128);
        assert_eq!(u8::MAX.to_int4(), 255);
        assert_eq!(i16::MIN.to_int4(), -32768);
        assert_eq!(u16::MAX.to_int4(), 65535);
        assert_eq!(i32::MIN.to_int4(), i32::MIN);
        assert_eq!((-1_i32).to_int4(), -1);
    }

    #[test]
    fn u32_bit_casts_into_int4() {
        assert_eq!(0_u32.to_int4(), 0);
        assert_eq!((i32::MAX as u32).to_int4(), i32::MAX);
        assert_eq!((1_u32 << 31).to_int4(), i32::MIN);
        assert_eq!(u32::MAX.to_int4(), -1);
        assert_eq!(NonZero::new(u32::MAX).unwrap().to_int4(), -1);
    }

    #[test]
    fn int8_ids_keep_their_value() {
        assert_eq!(u32::MAX.to_int8(), 4_294_967_295);
        assert_eq!(i64::MIN.to_int8(), i64::MIN);
        assert_eq!((-1_i8).to_int8(), -1);
        assert_eq!(NonZero::new(-5_i64).unwrap().to_int8(), -5);
    }

    #[test]
    fn references_forward() {
        let mut id = u16::MAX;
        assert_eq!(<&u16 as Int4Key>::to_int4(&&id), 65535);
        assert_eq!(<&&u16 as Int8Key>::to_int8(&&&id), 65535);
        assert_eq!(<&mut u16 as Int4Key>::to_int4(&&mut id), 65535);
        let nonzero = NonZero::new(-3_i16).unwrap();
        assert_eq!(<&NonZero<i16> as Int4Key>::to_int4(&&nonzero), -3);
    }
}
