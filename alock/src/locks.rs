//! Introspection: which sessions hold or wait for which advisory locks, read
//! from `pg_locks` and `pg_stat_activity` in one statement.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sqlx::{PgConnection, Row};

use crate::sql::TOKEN_NAMESPACE;
use crate::{AdvisoryKeys, Error, KeySpace, KeyType, LockId};

/// The advisory locks of the current database, as the server sees them now:
/// who holds each key, who waits for it, for how long, and behind whom.
///
/// One statement, whatever the number of locks: `pg_locks` joined with
/// `pg_stat_activity`, with `pg_blocking_pids` for each waiter. 1 round trip.
/// Advisory locks belong to a database: a key taken in another database of
/// the same server is another lock, and is not listed. Rows come ordered by
/// key, holders before waiters.
///
/// By default the list leaves out the crate's own bookkeeping: every id a
/// session holds through this crate at session level comes with a shared
/// lock on an int4 pair of its own (its *record*, see
/// [`LockInfo::internal`]), which never conflicts with anything.
/// [`LockQuery::internal`] brings them in.
///
/// # Errors
///
/// [`Error::InvalidKeys`] when the query's keys name no lock (nothing is
/// sent), [`Error::ConnectionLost`], or [`Error::Database`] when the server
/// refuses the query.
///
/// # Cancel safety
///
/// A read: dropping the future changes nothing, on the server or on the
/// connection.
///
/// # Examples
///
/// ```no_run
/// use alock::{KeyNames, LockQuery, LockId};
///
/// # async fn example(conn: &mut sqlx::PgConnection) -> Result<(), alock::Error> {
/// let names = KeyNames::new().named("orders");
/// for lock in alock::locks(conn, &LockQuery::all()).await? {
///     if !lock.granted {
///         println!(
///             "{} waits {:?} for {}, blocked by {:?}",
///             lock.pid.unwrap_or(0),
///             lock.waited,
///             names.display(lock.key),
///             lock.blocked_by,
///         );
///     }
/// }
///
/// // Only some keys:
/// let nightly = LockId::from_name("nightly-report");
/// let busy = !alock::locks(conn, &LockQuery::keys(nightly)?).await?.is_empty();
/// # Ok(())
/// # }
/// ```
pub async fn locks(conn: &mut PgConnection, query: &LockQuery) -> Result<Vec<LockInfo>, Error> {
    // `waitstart` came with PostgreSQL 14; an unknown version is read as
    // an old one, which costs only the waiting times.
    let sql = match conn.server_version_num() {
        Some(version) if version >= 140_000 => LOCKS_14,
        _ => LOCKS_BEFORE_14,
    };
    // Three NULL arrays ask for every key.
    let (mut classids, mut objids, mut objsubids) = (None, None, None);
    if let Some(ids) = &query.keys {
        let rows = ids.iter().map(|id| id.pg_locks_row());
        classids = Some(rows.clone().map(|r| i64::from(r.0)).collect::<Vec<_>>());
        objids = Some(rows.clone().map(|r| i64::from(r.1)).collect::<Vec<_>>());
        objsubids = Some(rows.map(|r| r.2).collect::<Vec<_>>());
    }
    let rows = sqlx::query(sql)
        .bind(classids)
        .bind(objids)
        .bind(objsubids)
        .fetch_all(conn)
        .await
        .map_err(Error::from_sqlx)?;
    let mut locks = Vec::with_capacity(rows.len());
    for row in rows {
        let lock = LockInfo::from_row(&row)?;
        if query.internal || !lock.internal {
            locks.push(lock);
        }
    }
    Ok(locks)
}

/// The statement of [`locks`], with the waiting time an expression in
/// microseconds. Bind: the `classid`s, `objid`s and `objsubid`s of the keys
/// asked for, or three `NULL`s for every key.
macro_rules! locks_statement {
    ($waited_us:literal) => {
        concat!(
            "SELECT l.classid::int8 AS classid, l.objid::int8 AS objid, l.objsubid, \
                    l.mode, l.granted, l.pid, \
                    a.application_name, host(a.client_addr) AS client_addr, a.client_port, ",
            $waited_us,
            " AS waited_us, \
                    CASE WHEN l.granted THEN '{}'::int4[] \
                         ELSE pg_blocking_pids(l.pid) END AS blocked_by \
               FROM pg_locks l \
               LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
              WHERE l.locktype = 'advisory' \
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                AND ($1::int8[] IS NULL \
                     OR (l.classid::int8, l.objid::int8, l.objsubid) IN \
                        (SELECT * FROM unnest($1::int8[], $2::int8[], $3::int2[]))) \
              ORDER BY l.objsubid, l.classid, l.objid, NOT l.granted, l.pid"
        )
    };
}

const LOCKS_14: &str =
    locks_statement!("(extract(epoch FROM clock_timestamp() - l.waitstart) * 1000000)::int8");
const LOCKS_BEFORE_14: &str = locks_statement!("NULL::int8");

/// Which advisory locks [`locks`] lists: every key, or some; the crate's
/// internal records left out, or not.
///
/// ```
/// use alock::{LockId, LockQuery};
///
/// let everything = LockQuery::all();
/// let two = LockQuery::keys([LockId::Int8(7), LockId::pair(1, 2)]).unwrap();
/// let with_records = LockQuery::all().internal(true);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockQuery {
    keys: Option<Vec<LockId>>,
    internal: bool,
}

impl LockQuery {
    /// Every advisory lock of the current database.
    pub fn all() -> LockQuery {
        LockQuery::default()
    }

    /// The locks on these keys only: one key, or a list of them, as every
    /// locking method takes them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKeys`] when a key names no lock, or none is given: an
    /// empty list is refused rather than read as "every key".
    pub fn keys(keys: impl AdvisoryKeys) -> Result<LockQuery, Error> {
        Ok(LockQuery {
            keys: Some(crate::key::ids_of(&keys)?),
            internal: false,
        })
    }

    /// Whether the crate's internal records ([`LockInfo::internal`]) are
    /// listed too; `false` unless asked.
    pub fn internal(mut self, internal: bool) -> LockQuery {
        self.internal = internal;
        self
    }
}

/// How a session holds or asks for an advisory lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Conflicts with every other session's lock on the key
    /// (`pg_advisory_lock`; `ExclusiveLock` in `pg_locks`).
    Exclusive,
    /// Conflicts only with exclusive locks (`pg_advisory_lock_shared`;
    /// `ShareLock` in `pg_locks`).
    Shared,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        })
    }
}

/// One session's hold on, or wait for, one advisory lock: a row of
/// `pg_locks` with what `pg_stat_activity` says about its session.
///
/// A session holding a key in both modes has two entries, and a session
/// that took a key several times still has one per mode: the server counts
/// re-entrant holds without listing them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The key, decoded from `pg_locks`' unsigned `classid`, `objid` and
    /// `objsubid` (the inverse of [`LockId::pg_locks_row`]).
    pub key: LockId,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// `true` when the session holds the lock, `false` while it waits.
    pub granted: bool,
    /// The session's backend process id (`pg_backend_pid()`); `None` for a
    /// transaction-level lock held by a prepared transaction, which has no
    /// session.
    pub pid: Option<i32>,
    /// The session's `application_name`; `None` when the session could not
    /// be seen (another user's session, without `pg_read_all_stats`) or is
    /// gone.
    pub application_name: Option<String>,
    /// The client's IP address; `None` for a Unix-socket connection, a
    /// session that could not be seen, or one that is gone.
    pub client_addr: Option<IpAddr>,
    /// The client's TCP port; `None` as for `client_addr`.
    pub client_port: Option<u16>,
    /// For a waiter, how long it has waited so far (`pg_locks.waitstart`);
    /// `None` for a holder, on servers before PostgreSQL 14, and in the
    /// first moment of a wait, before the server has recorded its start.
    ///
    /// The server counts from the start of the current statement's wait. A
    /// blocking acquire of this crate waits in slices of under a second, one
    /// statement each, so for its sessions this is the time since the
    /// current slice began.
    pub waited: Option<Duration>,
    /// For a waiter, the sessions it waits behind (`pg_blocking_pids`):
    /// those holding the key in a conflicting mode, and those queued ahead
    /// of it for a conflicting mode. Empty for a holder. A prepared
    /// transaction shows as pid 0.
    pub blocked_by: Vec<i32>,
    /// Whether this row is the crate's own bookkeeping rather than a key a
    /// program asked for: a shared lock on an int4 pair `(n, t)` with `n`
    /// in `1634496355 ..= 1634496355 + 65536`, which this crate takes next
    /// to every id held at session level to know exactly what a call cut
    /// short had taken. Records never conflict with anything; [`locks`]
    /// leaves them out unless [`LockQuery::internal`] asks for them.
    pub internal: bool,
}

/// How many record namespaces past [`TOKEN_NAMESPACE`] count as internal:
/// one per position of an id in a call, and no call locks 65536 ids.
const RECORD_POSITIONS: i64 = 1 << 16;

impl LockInfo {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<LockInfo, Error> {
        let classid: i64 = row.try_get("classid")?;
        let objid: i64 = row.try_get("objid")?;
        let objsubid: i16 = row.try_get("objsubid")?;
        let key = decode_key(classid, objid, objsubid).ok_or_else(|| {
            Error::Database(sqlx::Error::Decode(
                format!(
                    "pg_locks row (classid {classid}, objid {objid}, objsubid {objsubid}) \
                     is no advisory key"
                )
                .into(),
            ))
        })?;
        let mode = match row.try_get::<&str, _>("mode")? {
            "ShareLock" => LockMode::Shared,
            _ => LockMode::Exclusive,
        };
        let client_addr: Option<String> = row.try_get("client_addr")?;
        let client_port: Option<i32> = row.try_get("client_port")?;
        let waited_us: Option<i64> = row.try_get("waited_us")?;
        Ok(LockInfo {
            key,
            mode,
            granted: row.try_get("granted")?,
            pid: row.try_get("pid")?,
            application_name: row.try_get("application_name")?,
            client_addr: client_addr.and_then(|a| a.parse().ok()),
            // -1 is how the server says "Unix socket".
            client_port: client_port.and_then(|p| u16::try_from(p).ok()),
            waited: waited_us.map(|us| Duration::from_micros(us.max(0).cast_unsigned())),
            blocked_by: row.try_get("blocked_by")?,
            internal: mode == LockMode::Shared && is_record(key),
        })
    }
}

/// The key of a `pg_locks` advisory row: `objsubid` 1 is an int8 split into
/// `classid` (high 32 bits) and `objid` (low 32), 2 an int4 pair. Both
/// columns are unsigned `oid`s, read as `int8` to keep their sign out.
fn decode_key(classid: i64, objid: i64, objsubid: i16) -> Option<LockId> {
    let high = u32::try_from(classid).ok()?;
    let low = u32::try_from(objid).ok()?;
    match objsubid {
        1 => Some(LockId::Int8(
            (u64::from(high) << 32 | u64::from(low)).cast_signed(),
        )),
        2 => Some(LockId::Int4Pair(high.cast_signed(), low.cast_signed())),
        _ => None,
    }
}

fn is_record(key: LockId) -> bool {
    match key {
        LockId::Int4Pair(first, _) => {
            (0..=RECORD_POSITIONS).contains(&(i64::from(first) - i64::from(TOKEN_NAMESPACE)))
        }
        LockId::Int8(_) => false,
    }
}

/// Readable names for keys: a namespace's name instead of its number, so
/// that `(845059820, 42)` shows as `orders:42`.
///
/// The server knows keys only as numbers. A program knows its namespaces:
/// those of its derived key types ([`key_type`](Self::key_type)), the
/// strings it gave `#[advisory_key(namespace = ...)]`
/// ([`named`](Self::named)), and the names it hashed with
/// [`LockId::from_name`] ([`key`](Self::key)). [`display`](Self::display)
/// shows a key with the most precise name known: the whole key's name, then
/// its namespace's name and the id, then the bare key.
///
/// ```
/// use alock::{KeyNames, LockId};
///
/// let names = KeyNames::new()
///     .named("orders")
///     .key(LockId::from_name("nightly-report"), "nightly-report");
///
/// let order = LockId::pair(alock::namespace("orders"), 42);
/// assert_eq!(names.display(order).to_string(), "orders:42");
/// assert_eq!(names.display(LockId::from_name("nightly-report")).to_string(), "nightly-report");
/// assert_eq!(names.display(LockId::pair(7, 1)).to_string(), "(7, 1)");
/// assert_eq!(names.display(LockId::Int8(5)).to_string(), "5");
/// ```
///
/// An int8 key's high 16 bits are a namespace tag only by convention: a
/// raw int8 key, such as a hashed name, shows as `name:id` when its top 16
/// bits happen to equal a registered tag (one chance in 65536 per tag).
/// Register only the tags of the key types the program uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyNames {
    keys: BTreeMap<LockId, String>,
    namespaces: BTreeMap<i32, String>,
    tags: BTreeMap<u16, String>,
}

impl KeyNames {
    /// No names: every key shows as a number.
    pub fn new() -> KeyNames {
        KeyNames::default()
    }

    /// Names the int4 pairs `(namespace, id)`: they show as `name:id`.
    pub fn namespace(mut self, namespace: i32, name: impl Into<String>) -> KeyNames {
        self.namespaces.insert(namespace, name.into());
        self
    }

    /// Names the int8 keys whose high 16 bits are `tag`
    /// ([`LockId::tagged`]): they show as `name:id`, the id being the low 48
    /// bits.
    pub fn tag(mut self, tag: u16, name: impl Into<String>) -> KeyNames {
        self.tags.insert(tag, name.into());
        self
    }

    /// Names the keys of a key type, derived or hand-written, by the
    /// namespace or tag its [`KeySpace`] has; a type over the whole int8
    /// space has neither, and is left as numbers.
    ///
    #[cfg_attr(feature = "derive", doc = "```")]
    #[cfg_attr(not(feature = "derive"), doc = "```ignore")]
    /// use alock::{AdvisoryKey, KeyNames};
    ///
    /// #[derive(AdvisoryKey)]
    /// #[advisory_key(namespace = 845059820)]
    /// struct OrderId(i32);
    ///
    /// let names = KeyNames::new().key_type::<OrderId>("orders");
    /// assert_eq!(names.display(OrderId(3).lock_id()).to_string(), "orders:3");
    /// ```
    pub fn key_type<K: KeyType>(self, name: impl Into<String>) -> KeyNames {
        match K::KEY_SPACE {
            KeySpace::Int4Pair { namespace } => self.namespace(namespace, name),
            KeySpace::TaggedInt8 { tag } => self.tag(tag, name),
            KeySpace::Int8 => self,
        }
    }

    /// Names the keys a string namespace makes, at either width: the int4
    /// pairs of [`namespace`](crate::namespace)`(name)` and the int8 keys of
    /// [`namespace_tag`](crate::namespace_tag)`(name)`, what
    /// `#[advisory_key(namespace = "name")]` derives for a 32-bit and a
    /// 64-bit id.
    pub fn named(self, name: &str) -> KeyNames {
        self.namespace(crate::namespace(name), name)
            .tag(crate::namespace_tag(name), name)
    }

    /// Names one whole key, e.g. one made by [`LockId::from_name`]: it shows
    /// as `name`.
    pub fn key(mut self, key: LockId, name: impl Into<String>) -> KeyNames {
        self.keys.insert(key, name.into());
        self
    }

    /// `key`, shown with the most precise name known: the key's own name,
    /// then `namespace:id`, then the key as [`LockId`] shows it.
    pub fn display(&self, key: LockId) -> KeyDisplay<'_> {
        KeyDisplay { names: self, key }
    }
}

/// A key with its name, from [`KeyNames::display`].
#[derive(Debug, Clone, Copy)]
pub struct KeyDisplay<'a> {
    names: &'a KeyNames,
    key: LockId,
}

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names;
        if let Some(name) = names.keys.get(&self.key) {
            return f.write_str(name);
        }
        match self.key {
            LockId::Int4Pair(namespace, id) => match names.namespaces.get(&namespace) {
                Some(name) => write!(f, "{name}:{id}"),
                None => write!(f, "{}", self.key),
            },
            LockId::Int8(_) => {
                let (tag, id) = self.key.tag_and_id().expect("BUG: an int8 key splits");
                match names.tags.get(&tag) {
                    Some(name) => write!(f, "{name}:{id}"),
                    None => write!(f, "{}", self.key),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_locks_rows_decode_to_their_keys() {
        let keys = [
            LockId::Int8(0),
            LockId::Int8(-1),
            LockId::Int8(i64::MIN),
            LockId::Int8(i64::MAX),
            LockId::Int8(1 << 32 | 5),
            LockId::pair(0, 0),
            LockId::pair(-2, 3),
            LockId::pair(i32::MIN, i32::MAX),
            LockId::pair(i32::MAX, -1),
        ];
        for key in keys {
            let (classid, objid, objsubid) = key.pg_locks_row();
            assert_eq!(
                decode_key(classid.into(), objid.into(), objsubid),
                Some(key),
                "{key:?}"
            );
        }
    }

    #[test]
    fn rows_that_are_no_advisory_key_are_refused() {
        assert_eq!(decode_key(1, 2, 0), None);
        assert_eq!(decode_key(1, 2, 3), None);
        assert_eq!(decode_key(-1, 2, 1), None);
        assert_eq!(decode_key(1, 1 << 32, 2), None);
    }

    #[test]
    fn records_are_the_span_past_the_token_namespace() {
        assert!(is_record(LockId::pair(TOKEN_NAMESPACE, 7)));
        assert!(is_record(LockId::pair(TOKEN_NAMESPACE + 1, -7)));
        assert!(is_record(LockId::pair(TOKEN_NAMESPACE + (1 << 16), 0)));
        assert!(!is_record(LockId::pair(TOKEN_NAMESPACE + (1 << 16) + 1, 0)));
        assert!(!is_record(LockId::pair(TOKEN_NAMESPACE - 1, 0)));
        assert!(!is_record(LockId::pair(i32::MAX, 0)));
        assert!(!is_record(LockId::Int8(
            i64::from(TOKEN_NAMESPACE + 1) << 32
        )));
    }

    #[test]
    fn the_statement_binds_keys_as_arrays_and_reads_waitstart_only_from_14() {
        assert!(LOCKS_14.contains("l.waitstart"));
        assert!(!LOCKS_BEFORE_14.contains("waitstart"));
        assert!(LOCKS_BEFORE_14.contains("NULL::int8 AS waited_us"));
    }

    #[test]
    fn tags_name_int8_keys_and_namespaces_name_pairs() {
        let names = KeyNames::new().named("jobs");
        let job = LockId::tagged(crate::namespace_tag("jobs"), 9).unwrap();
        assert_eq!(names.display(job).to_string(), "jobs:9");
        let pair = LockId::pair(crate::namespace("jobs"), -4);
        assert_eq!(names.display(pair).to_string(), "jobs:-4");
        assert_eq!(names.display(LockId::Int8(9)).to_string(), "9");
    }
}
