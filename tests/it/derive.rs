//! `#[derive(AdvisoryKey)]`: the ids derived types produce, and a derived
//! key locked on a real server, as `pg_locks` shows it.

use std::marker::PhantomData;
use std::num::NonZero;

use alock::{
    AdvisoryKey, Int4Key, Int8Key, Int8Namespaced, KeyError, KeySpace, KeyType, LockId, Namespaced,
    namespace, namespace_tag,
};
use alock_dev::{Held, backend_pid, connect, held};

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct Order {
    #[advisory_key(id)]
    id: i32,
    #[allow(dead_code)]
    note: String,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 192842)]
struct Invoice {
    #[advisory_key(id)]
    number: u16,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "customers")]
struct CustomerId(i32);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct JobId(i64);

#[test]
fn the_examples_of_the_issue() {
    let order = Order {
        id: 7,
        note: String::new(),
    };
    assert_eq!(order.lock_id(), LockId::Int4Pair(namespace("orders"), 7));
    assert_eq!(order.lock_id(), LockId::Int4Pair(845_059_820, 7));
    assert_eq!(
        Invoice { number: 3 }.lock_id(),
        LockId::Int4Pair(192_842, 3)
    );
    assert_eq!(CustomerId(5).lock_id(), LockId::Int4Pair(-1_064_090_402, 5));
    assert_eq!(JobId(5).lock_id(), LockId::Int8(5));
}

#[test]
fn negative_and_extreme_ids_are_kept() {
    let ns = namespace("customers");
    for id in [i32::MIN, -1, 0, 1, i32::MAX] {
        assert_eq!(CustomerId(id).lock_id(), LockId::Int4Pair(ns, id));
    }
    assert_eq!(
        Invoice { number: u16::MAX }.lock_id(),
        LockId::Int4Pair(192_842, 65_535)
    );
    for id in [i64::MIN, -1, i64::MAX] {
        assert_eq!(JobId(id).lock_id(), LockId::Int8(id));
    }
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "accounts")]
struct AccountId(u32);

#[test]
fn u32_ids_are_bit_cast_into_the_int4() {
    let ns = namespace("accounts");
    assert_eq!(AccountId(0).lock_id(), LockId::Int4Pair(ns, 0));
    assert_eq!(
        AccountId(i32::MAX as u32).lock_id(),
        LockId::Int4Pair(ns, i32::MAX)
    );
    assert_eq!(AccountId(1 << 31).lock_id(), LockId::Int4Pair(ns, i32::MIN));
    assert_eq!(AccountId(u32::MAX).lock_id(), LockId::Int4Pair(ns, -1));
    // A bijection: neighbours across the sign boundary stay apart.
    assert_ne!(
        AccountId(i32::MAX as u32).lock_id(),
        AccountId(1 << 31).lock_id()
    );
}

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct WideAccountId(u32);

#[test]
fn u32_ids_keep_their_value_in_int8() {
    assert_eq!(
        WideAccountId(u32::MAX).lock_id(),
        LockId::Int8(4_294_967_295)
    );
    assert_ne!(WideAccountId(u32::MAX).lock_id(), LockId::Int8(-1));
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = -7)]
struct Negative(i8);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = -2147483648)]
struct Lowest(u8);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 2147483647i32)]
struct Highest(i16);

#[test]
fn integer_namespaces_are_used_as_written() {
    assert_eq!(Negative::NAMESPACE, -7);
    assert_eq!(Negative(i8::MIN).lock_id(), LockId::Int4Pair(-7, -128));
    assert_eq!(Lowest(u8::MAX).lock_id(), LockId::Int4Pair(i32::MIN, 255));
    assert_eq!(
        Highest(i16::MIN).lock_id(),
        LockId::Int4Pair(i32::MAX, -32_768)
    );
    assert_eq!(Invoice::NAMESPACE, 192_842);
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "nonzero")]
struct NonZeroId(NonZero<u32>);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct NonZeroJob(NonZero<i64>);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "borrowed")]
struct Borrowed<'a> {
    #[advisory_key(id)]
    id: &'a i16,
}

#[test]
fn nonzero_and_borrowed_ids() {
    let ns = namespace("nonzero");
    let max = NonZero::new(u32::MAX).unwrap();
    assert_eq!(NonZeroId(max).lock_id(), LockId::Int4Pair(ns, -1));
    let min = NonZero::new(i64::MIN).unwrap();
    assert_eq!(NonZeroJob(min).lock_id(), LockId::Int8(i64::MIN));
    let id = -300;
    assert_eq!(
        Borrowed { id: &id }.lock_id(),
        LockId::Int4Pair(namespace("borrowed"), -300)
    );
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "alock.tests.derive.generic")]
struct Generic<T> {
    #[advisory_key(id)]
    id: T,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "rows")]
struct Row<T, const N: usize> {
    #[advisory_key(id)]
    id: i32,
    #[allow(dead_code)]
    payload: [T; N],
}

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct Tagged<Tag>(#[advisory_key(id)] i64, PhantomData<Tag>);

#[test]
fn generic_structs() {
    let ns = namespace("alock.tests.derive.generic");
    assert_eq!(Generic { id: -5_i8 }.lock_id(), LockId::Int4Pair(ns, -5));
    assert_eq!(Generic { id: u32::MAX }.lock_id(), LockId::Int4Pair(ns, -1));
    assert_eq!(<Generic<u8>>::NAMESPACE, <Generic<i32>>::NAMESPACE);
    // Only the id field is bound by the key trait.
    let row = Row {
        id: 9,
        payload: [String::from("a"), String::from("b")],
    };
    assert_eq!(row.lock_id(), LockId::Int4Pair(namespace("rows"), 9));
    assert_eq!(
        Tagged::<String>(-9, PhantomData).lock_id(),
        LockId::Int8(-9)
    );
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "pairs")]
struct Pair(#[allow(dead_code)] String, #[advisory_key(id)] i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "keywords")]
struct Keyword {
    #[advisory_key(id)]
    r#type: u8,
    #[allow(dead_code)]
    r#ref: u8,
}

#[test]
fn tuple_structs_and_raw_identifiers() {
    assert_eq!(
        Pair(String::from("x"), -2).lock_id(),
        LockId::Int4Pair(namespace("pairs"), -2)
    );
    let keyword = Keyword {
        r#type: 4,
        r#ref: 5,
    };
    assert_eq!(
        keyword.lock_id(),
        LockId::Int4Pair(namespace("keywords"), 4)
    );
}

/// An id type of the user's own, opted in through the documented traits.
#[derive(Clone, Copy)]
struct Region {
    continent: u8,
    number: u16,
}

impl Int4Key for Region {
    fn to_int4(&self) -> i32 {
        i32::from(self.continent) << 16 | i32::from(self.number)
    }
}

impl Int8Key for Region {
    fn to_int8(&self) -> i64 {
        i64::from(self.to_int4())
    }
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "regions")]
struct RegionLock(Region);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct WideRegionLock(Region);

#[test]
fn user_id_types_opt_in() {
    let region = Region {
        continent: 2,
        number: 3,
    };
    assert_eq!(
        RegionLock(region).lock_id(),
        LockId::Int4Pair(-243_404_790, 0x0002_0003)
    );
    assert_eq!(WideRegionLock(region).lock_id(), LockId::Int8(0x0002_0003));
}

macro_rules! key_type {
    ($name:ident, $namespace:literal, $id:ty) => {
        #[derive(AdvisoryKey)]
        #[advisory_key(namespace = $namespace)]
        struct $name($id);
    };
}

key_type!(FromMacro, "macro", u16);
key_type!(FromMacroInt, 55, i32);

#[test]
fn keys_declared_by_a_macro() {
    assert_eq!(
        FromMacro(1).lock_id(),
        LockId::Int4Pair(namespace("macro"), 1)
    );
    assert_eq!(FromMacroInt(-1).lock_id(), LockId::Int4Pair(55, -1));
}

#[derive(AdvisoryKey, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[advisory_key(namespace = "serde")]
struct Serialized {
    #[serde(rename = "key")]
    #[advisory_key(id)]
    order_id: i32,
    #[serde(default)]
    display_name: String,
}

fn implements_serde<T: serde::Serialize + serde::de::DeserializeOwned>(_: &T) {}

#[test]
fn derives_alongside_serde_clone_and_debug() {
    let value = Serialized {
        order_id: -1,
        display_name: String::from("x"),
    };
    implements_serde(&value);
    let copy = value.clone();
    assert_eq!(copy, value);
    assert!(format!("{copy:?}").contains("order_id: -1"));
    assert_eq!(copy.lock_id(), LockId::Int4Pair(namespace("serde"), -1));
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "jobs")]
struct Jobs(i64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "users")]
struct Users {
    #[advisory_key(id)]
    id: i64,
    #[allow(dead_code)]
    name: String,
}

#[test]
fn a_64_bit_id_under_a_namespace_is_an_int8_with_the_tag_in_the_high_16_bits() {
    assert_eq!(Jobs::NAMESPACE_TAG, namespace_tag("jobs"));
    assert_eq!(Jobs::NAMESPACE_TAG, 0xf47a);
    assert_eq!(Users::NAMESPACE_TAG, 0x9b6f);
    assert_eq!(
        Jobs(5).lock_id(),
        LockId::Int8(0xf47a_0000_0000_0005_u64 as i64)
    );
    assert_eq!(Jobs(5).lock_id(), LockId::tagged(0xf47a, 5).unwrap());
    let user = Users {
        id: 5,
        name: String::new(),
    };
    assert_eq!(
        user.lock_id(),
        LockId::Int8(0x9b6f_0000_0000_0005_u64 as i64)
    );
    // The same id under two namespaces: two locks, not one.
    assert_ne!(Jobs(5).lock_id(), user.lock_id());
    assert_eq!(
        Jobs(LockId::MAX_TAGGED_ID).lock_id().tag_and_id(),
        Some((0xf47a, LockId::MAX_TAGGED_ID))
    );
    assert_eq!(
        <Jobs as KeyType>::KEY_SPACE,
        KeySpace::TaggedInt8 { tag: 0xf47a }
    );
    assert_eq!(<JobId as KeyType>::KEY_SPACE, KeySpace::Int8);
    assert_eq!(
        <Order as KeyType>::KEY_SPACE,
        KeySpace::Int4Pair {
            namespace: Order::NAMESPACE
        }
    );
}

#[test]
fn an_id_out_of_48_bits_is_a_typed_error_not_another_namespace() {
    for id in [-1, i64::MIN, LockId::MAX_TAGGED_ID + 1, i64::MAX] {
        assert_eq!(
            Jobs(id).checked_lock_id(),
            Err(KeyError::IdOutOfRange {
                key_type: "Jobs",
                id
            })
        );
    }
    assert_eq!(Jobs(0).checked_lock_id(), Ok(LockId::Int8(0xf47a << 48)));
}

#[test]
#[should_panic = "`Jobs` id -1 does not fit its namespaced int8 key"]
fn lock_id_of_an_id_out_of_range_panics() {
    Jobs(-1).lock_id();
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "nonzero jobs")]
struct NonZeroJobs(NonZero<i64>);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "borrowed jobs")]
struct BorrowedJobs<'a>(&'a i64);

type JobPk = i64;

/// An id the derive cannot see is 64-bit asks for the int8 key.
#[derive(AdvisoryKey)]
#[advisory_key(namespace = "aliased jobs", int8)]
struct AliasedJobs(JobPk);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 65535)]
struct TaggedByInt(i64);

const JOB_TAG: u16 = 7;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = JOB_TAG)]
struct TaggedByConst(i64);

#[test]
fn namespaced_int8_ids_of_every_form() {
    let id = NonZero::new(9).unwrap();
    assert_eq!(
        NonZeroJobs(id).lock_id(),
        LockId::tagged(namespace_tag("nonzero jobs"), 9).unwrap()
    );
    assert_eq!(
        BorrowedJobs(&9).lock_id(),
        LockId::tagged(namespace_tag("borrowed jobs"), 9).unwrap()
    );
    assert_eq!(
        AliasedJobs(9).lock_id(),
        LockId::tagged(namespace_tag("aliased jobs"), 9).unwrap()
    );
    assert_eq!(TaggedByInt::NAMESPACE_TAG, u16::MAX);
    assert_eq!(TaggedByInt(1).lock_id(), LockId::Int8((-1 << 48) | 1));
    assert_eq!(TaggedByConst::NAMESPACE_TAG, 7);
    assert_eq!(TaggedByConst(1).lock_id(), LockId::Int8(7 << 48 | 1));
}

mod consts {
    pub const ORDERS_OID: u32 = 16_384;

    pub mod nested {
        pub const LEGACY: i64 = -5;
    }
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = consts::ORDERS_OID)]
struct ByConst(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = consts::nested::LEGACY)]
struct ByNestedConst(u16);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = consts::ORDERS_OID)]
struct GenericByConst<T>(#[advisory_key(id)] i32, PhantomData<T>);

#[test]
fn a_namespace_may_be_an_integer_constant_of_any_width_that_fits() {
    assert_eq!(ByConst::NAMESPACE, 16_384);
    assert_eq!(ByConst(3).lock_id(), LockId::pair(16_384, 3));
    assert_eq!(ByNestedConst::NAMESPACE, -5);
    assert_eq!(ByNestedConst(3).lock_id(), LockId::pair(-5, 3));
    assert_eq!(
        GenericByConst::<u8>(3, PhantomData).lock_id(),
        LockId::pair(16_384, 3)
    );
}

/// The derive names `alock` by the given path, as a crate that re-exports
/// it under another name would.
mod renamed {
    pub use alock as locks;
}

mod no_alock_in_scope {
    #[derive(alock::AdvisoryKey)]
    #[advisory_key(namespace = "renamed", crate = "crate::derive::renamed::locks")]
    pub struct Renamed(pub i64);

    #[derive(alock::AdvisoryKey)]
    #[advisory_key(int8, crate = "::alock")]
    pub struct Absolute(pub i32);
}

use no_alock_in_scope::{Absolute, Renamed};

#[test]
fn the_crate_path_is_used_for_every_generated_path() {
    assert_eq!(
        Renamed(1).lock_id(),
        LockId::tagged(namespace_tag("renamed"), 1).unwrap()
    );
    assert_eq!(Absolute(-1).lock_id(), LockId::Int8(-1));
}

alock::assert_distinct_namespaces!(
    Jobs,
    Users,
    NonZeroJobs,
    BorrowedJobs<'static>,
    AliasedJobs,
    TaggedByInt,
    TaggedByConst,
    Renamed,
    ByConst,
    ByNestedConst,
    Order,
    Invoice,
    CustomerId,
    AccountId,
    Negative,
    Lowest,
    Highest,
    NonZeroId,
    Borrowed<'static>,
    Generic<i32>,
    Row<u8, 1>,
    Pair,
    Keyword,
    RegionLock,
    FromMacro,
    FromMacroInt,
    Serialized,
    Shipment,
    NamespacedShipment,
);

// A raw int8 key type spans the int8 key space but no int4 pair: it may be
// listed with int4-pair types, as long as it is the only int8 type.
alock::assert_distinct_namespaces!(JobId, Order, Invoice, CustomerId);

/// Locked on the server below; its namespace hashes negative, so it cannot
/// meet the `(process id, counter)` keys of the other tests.
#[derive(AdvisoryKey, sqlx::FromRow, Debug)]
#[advisory_key(namespace = "alock.tests.derive.shipments")]
struct Shipment {
    #[advisory_key(id)]
    id: i32,
    #[allow(dead_code)]
    carrier: String,
}

#[derive(AdvisoryKey, sqlx::FromRow)]
#[advisory_key(int8)]
struct ShipmentBatch {
    batch: i64,
}

/// Every advisory lock row `pid` holds, as `(classid, objid, objsubid, mode)`.
async fn advisory_rows(
    observer: &mut sqlx::PgConnection,
    pid: i32,
) -> Vec<(u32, u32, i16, String)> {
    let rows: Vec<(i64, i64, i16, String)> = sqlx::query_as(
        "SELECT classid::int8, objid::int8, objsubid, mode FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND pid = $1
          ORDER BY classid, objid, objsubid",
    )
    .bind(pid)
    .fetch_all(observer)
    .await
    .expect("read pg_locks");
    rows.into_iter()
        .map(|(classid, objid, objsubid, mode)| {
            let oid = |value: i64| u32::try_from(value).expect("oids are u32");
            (oid(classid), oid(objid), objsubid, mode)
        })
        .collect()
}

#[tokio::test]
async fn a_row_fetched_with_from_row_locks_as_namespace_and_id_in_pg_locks() {
    let mut session = connect().await;
    let mut observer = connect().await;
    let pid = backend_pid(&mut session).await;

    let shipment: Shipment = sqlx::query_as("SELECT -42::int4 AS id, 'postal'::text AS carrier")
        .fetch_one(&mut session)
        .await
        .expect("fetch a shipment");
    let id = shipment.lock_id();
    assert_eq!(id, LockId::Int4Pair(-63_037_912, -42));
    let LockId::Int4Pair(key1, key2) = id else {
        unreachable!("a namespaced key is an int4 pair")
    };

    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(key1)
        .bind(key2)
        .fetch_one(&mut session)
        .await
        .expect("lock the shipment");
    assert!(taken, "{id} is held by another session");

    // classid is the namespace, objid the id, both read as unsigned oids.
    let expected = (0xfc3e_1e28, u32::MAX - 41, 2);
    assert_eq!(id.pg_locks_row(), expected);
    assert_eq!(
        advisory_rows(&mut observer, pid).await,
        [(
            expected.0,
            expected.1,
            expected.2,
            String::from("ExclusiveLock")
        )]
    );
    assert_eq!(held(&mut observer, pid, id).await, Held::Exclusive);

    let released: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
        .bind(key1)
        .bind(key2)
        .fetch_one(&mut session)
        .await
        .expect("unlock the shipment");
    assert!(released);
    assert!(advisory_rows(&mut observer, pid).await.is_empty());
}

#[tokio::test]
async fn an_int8_key_shows_its_high_and_low_halves_in_pg_locks() {
    let mut session = connect().await;
    let mut observer = connect().await;
    let pid = backend_pid(&mut session).await;

    let batch: ShipmentBatch =
        sqlx::query_as("SELECT (-9223372036854775808 + 4919)::int8 AS batch")
            .fetch_one(&mut session)
            .await
            .expect("fetch a batch");
    let id = batch.lock_id();
    assert_eq!(id, LockId::Int8(i64::MIN + 0x1337));
    let LockId::Int8(key) = id else {
        unreachable!("an int8 key is an int8")
    };

    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock_shared($1)")
        .bind(key)
        .fetch_one(&mut session)
        .await
        .expect("lock the batch");
    assert!(taken, "{id} is held by another session");

    let expected = (0x8000_0000, 0x1337, 1);
    assert_eq!(id.pg_locks_row(), expected);
    assert_eq!(
        advisory_rows(&mut observer, pid).await,
        [(
            expected.0,
            expected.1,
            expected.2,
            String::from("ShareLock")
        )]
    );
    assert_eq!(held(&mut observer, pid, id).await, Held::Shared);
}

/// Locked on the server below with alock's own calls.
#[derive(AdvisoryKey)]
#[advisory_key(namespace = "alock.tests.derive.shipments.int8")]
struct NamespacedShipment(i64);

#[tokio::test]
async fn a_namespaced_int8_key_shows_its_tag_in_pg_locks_and_refuses_ids_out_of_range() {
    use alock::prelude::*;

    let mut session = connect().await;
    let mut observer = connect().await;
    let pid = backend_pid(&mut session).await;

    let tag = NamespacedShipment::NAMESPACE_TAG;
    let shipment = NamespacedShipment(i64::from(std::process::id()));
    let id = shipment.lock_id();
    let guard = session
        .lock_exclusive(&shipment)
        .await
        .expect("lock the shipment");
    // classid holds the tag in its high half and the id's bits 32..48 in its
    // low half; objid the id's low 32 bits.
    let (classid, objid, objsubid) = id.pg_locks_row();
    assert_eq!(classid >> 16, u32::from(tag));
    assert_eq!(objid, std::process::id());
    assert_eq!(objsubid, 1);
    assert_eq!(held(&mut observer, pid, id).await, Held::Exclusive);
    guard.release().await.expect("release the shipment");
    assert!(advisory_rows(&mut observer, pid).await.is_empty());

    for bad in [-1, LockId::MAX_TAGGED_ID + 1] {
        let refused = session.lock_exclusive(NamespacedShipment(bad)).await;
        match refused {
            Err(alock::Error::InvalidKeys(KeyError::IdOutOfRange { key_type, id })) => {
                assert_eq!((key_type, id), ("NamespacedShipment", bad));
            }
            Err(other) => panic!("expected IdOutOfRange, got {other}"),
            Ok(_) => panic!("an id out of range was locked"),
        }
    }
    assert!(advisory_rows(&mut observer, pid).await.is_empty());
}
