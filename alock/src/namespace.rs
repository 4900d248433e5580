//! Namespaces for int4-pair keys, and the traits `#[derive(AdvisoryKey)]`
//! asks of a key's id field.
//!
//! A derived key is either `(namespace, id)`, an int4 pair whose first half
//! names the type, or a whole int8. The namespace is a constant computed at
//! compile time ([`namespace`] for a string, the literal itself for an
//! integer) and exposed as [`Namespaced::NAMESPACE`]; the id comes from one
//! field through [`Int4Key`] or [`Int8Key`], which are implemented only for
//! types that convert without loss.

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
    note = "only key types derived with #[advisory_key(namespace = ...)] have one; \
            #[advisory_key(int8)] keys use the whole int8 key space"
)]
pub trait Namespaced {
    /// The namespace, computed at compile time.
    const NAMESPACE: i32;
}

/// A type that converts to an int4 (`i32`) without loss, so it can be the id
/// field of a key derived with `#[advisory_key(namespace = ...)]`.
///
/// Implemented for `i8`, `i16`, `i32`, `u8`, `u16` (by value), for `u32` by a
/// bit cast (`u32::MAX` becomes `-1`, `1 << 31` becomes `i32::MIN`; no two
/// `u32` share an int4), for their [`NonZero`] forms, and for references to
/// any `Int4Key`. `i64`, `u64`, floats, strings and `Option` are not: they do
/// not fit one int4 without loss or ambiguity. For an `i64` id, use
/// `#[advisory_key(int8)]` instead of a namespace.
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
    note = "for a 64-bit id, replace #[advisory_key(namespace = ...)] with #[advisory_key(int8)]"
)]
pub trait Int4Key {
    /// The int4 this value is locked by.
    fn to_int4(&self) -> i32;
}

/// A type that converts to an int8 (`i64`) without loss, so it can be the id
/// field of a key derived with `#[advisory_key(int8)]`.
///
/// Implemented for `i8`, `i16`, `i32`, `i64`, `u8`, `u16`, `u32` (all by
/// value), for their [`NonZero`] forms, and for references to any `Int8Key`.
/// `u64` is not: half its values do not fit an int8. Implement it for an id
/// type of your own; distinct values must return distinct ints.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of an int8 advisory key",
    label = "an int8 id must fit in an i64 without loss",
    note = "use i8, i16, i32, i64, u8, u16, u32 or their NonZero forms, \
            or implement `alock::Int8Key` for a type of yours"
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

/// Fails to compile when two of the given key types have the same
/// [`Namespaced::NAMESPACE`].
///
/// Two names collide with probability `2^-32` (see [`namespace`]), and two
/// types can also be given the same name or integer by mistake. List every
/// namespaced key type of a program once, anywhere an item may go; the check
/// runs at compile time and costs nothing at run time.
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
/// alock::assert_distinct_namespaces!(OrderId, InvoiceId);
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
            ::core::assert!(
                <$first as $crate::Namespaced>::NAMESPACE
                    != <$rest as $crate::Namespaced>::NAMESPACE,
                ::core::concat!(
                    "`", ::core::stringify!($first), "` and `", ::core::stringify!($rest),
                    "` have the same advisory-key namespace; give one of them another namespace",
                ),
            );
        )*
        $crate::__assert_distinct_namespaces_pairwise!($($rest),*);
    };
    () => {};
}

#[cfg(test)]
mod tests {
    use super::*;

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
