//! The lock object: many ids, one mode, re-entrant, on one connection.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use sqlx::PgConnection;

use crate::key::{self, KeyError};
use crate::protocol::{self, Hold, Patience};
use crate::{AdvisoryKeys, Error, LockId};

mod sealed {
    pub trait Sealed {}
}

/// The mode of an advisory lock: [`Exclusive`] or [`Shared`].
pub trait Mode: sealed::Sealed + Send + Sync + 'static {
    /// Whether this is the shared mode.
    const SHARED: bool;
}

/// Exclusive mode: conflicts with every other session's lock on the same id,
/// shared or exclusive. `pg_locks` shows it as `ExclusiveLock`.
#[derive(Debug)]
pub enum Exclusive {}

/// Shared mode: other sessions may hold the same id shared at the same time;
/// only an exclusive lock conflicts. `pg_locks` shows it as `ShareLock`.
#[derive(Debug)]
pub enum Shared {}

impl sealed::Sealed for Exclusive {}
impl sealed::Sealed for Shared {}

impl Mode for Exclusive {
    const SHARED: bool = false;
}

impl Mode for Shared {
    const SHARED: bool = true;
}

/// A session-level advisory lock on a sequence of ids, in one mode, held
/// through one connection: a re-entrant lock object.
///
/// Use it as [`ExclusiveLock`] or [`ShareLock`].
///
/// # Session-level locks
///
/// The ids are held by the database session, not by a transaction: they
/// survive `COMMIT` and `ROLLBACK` and are released by [`release`], by
/// dropping the object, or when the session ends (the server frees every lock
/// of a session that disconnects, however it disconnects).
///
/// # Many ids, all or nothing
///
/// The ids are taken in the order given and released in reverse order; int8
/// and int4-pair ids mix freely, and an id may appear more than once. An
/// acquire either takes every id or, whatever happens part way (another
/// session holds an id, a deadlock, a timeout, a cancel, a full lock table),
/// gives back every id it took before returning. Holds that the same session
/// has through other lock objects are never touched: the server counts a
/// session's holds, so each object only ever gives back what it took.
///
/// # Re-entrant
///
/// Like a re-entrant mutex, the object counts its acquisitions: the server is
/// contacted only when the count goes from 0 to 1 and from 1 to 0.
///
/// # Round trips
///
/// | call | round trips |
/// |---|---|
/// | [`acquire`], [`try_acquire`], [`acquire_timeout`] of free ids | 1 |
/// | [`acquire`], [`acquire_timeout`] of ids another session holds | 1, and 1 more per slice of waiting (900 ms at most; `deadlock_timeout` + 100 ms when that is less) |
/// | [`try_acquire`] that finds an id busy and gives back the rest | 1 |
/// | [`release`] | 1 |
/// | re-entrant [`acquire`] or [`release`] | 0 |
///
/// # Nesting
///
/// The object implements `AsMut<PgConnection>`, so lock objects nest on one
/// connection: `ExclusiveLock::new(&mut outer, ids)`.
///
/// # Dropping
///
/// Dropping an object that is still held gives its ids back no later than the
/// next use of its connection: the unlock is queued on the connection and
/// runs before anything sent on it afterwards, including the check a pool
/// runs when a connection is returned to it. See [`leak`] to keep the ids on
/// purpose.
///
/// # Examples
///
/// ```no_run
/// use alock::{ExclusiveLock, LockId};
/// # async fn example(conn: &mut sqlx::PgConnection) -> Result<(), alock::Error> {
/// let table1_oid = 192842;
/// let table2_oid = 192849;
/// let mut lock = ExclusiveLock::new(conn, [LockId::pair(table1_oid, 0), LockId::pair(table2_oid, 0)]);
/// lock.acquire().await?;
/// // ... both ids are held by this session ...
/// lock.release().await?;
/// # Ok(())
/// # }
/// ```
///
/// [`release`]: AdvisoryLock::release
/// [`acquire`]: AdvisoryLock::acquire
/// [`try_acquire`]: AdvisoryLock::try_acquire
/// [`acquire_timeout`]: AdvisoryLock::acquire_timeout
/// [`leak`]: AdvisoryLock::leak
pub struct AdvisoryLock<C: AsMut<PgConnection>, M: Mode> {
    conn: Option<C>,
    ids: Box<[LockId]>,
    /// Why the keys given to `new` name no lock, if they don't.
    invalid: Option<KeyError>,
    count: usize,
    hold: Hold,
    mode: PhantomData<M>,
}

/// An [`AdvisoryLock`] in exclusive mode: `pg_advisory_lock`.
pub type ExclusiveLock<C> = AdvisoryLock<C, Exclusive>;

/// An [`AdvisoryLock`] in shared mode: `pg_advisory_lock_shared`.
pub type ShareLock<C> = AdvisoryLock<C, Shared>;

const CONN: &str = "BUG: the connection is only taken by consuming methods";

impl<C: AsMut<PgConnection>, M: Mode> AdvisoryLock<C, M> {
    /// A lock on `keys`, in order, through `conn`. Contacts no server.
    ///
    /// `conn` is anything that gives `&mut PgConnection`: an owned
    /// `PgConnection`, a `PoolConnection<Postgres>`, a `Transaction`, another
    /// lock object, or `&mut` of any of them. Keys that name no lock (none
    /// at all, or one that does not fit its key space) are reported by the
    /// first acquire, as [`Error::InvalidKeys`].
    pub fn new(conn: C, keys: impl AdvisoryKeys) -> Self {
        let (ids, invalid) = match key::ids_of(&keys) {
            Ok(ids) => (ids.into_boxed_slice(), None),
            Err(e) => (Box::default(), Some(e)),
        };
        AdvisoryLock {
            conn: Some(conn),
            ids,
            invalid,
            count: 0,
            hold: Hold::default(),
            mode: PhantomData,
        }
    }

    /// Takes every id, waiting as long as another session holds one.
    ///
    /// When the object is not held, takes every id in order
    /// (`pg_advisory_lock`), in one statement: 1 round trip, and one more for
    /// each second or so of waiting. When it is already held, only counts: 0
    /// round trips. See [`try_acquire`](Self::try_acquire) to never wait and
    /// [`acquire_timeout`](Self::acquire_timeout) to wait a bounded time.
    ///
    /// # Errors
    ///
    /// [`Error::Deadlock`], [`Error::LockTimeout`] (the session's own
    /// `lock_timeout`), [`Error::Canceled`] (`statement_timeout`, a cancel),
    /// [`Error::LockTableFull`], [`Error::InTransaction`] inside a
    /// transaction begun through sqlx, [`Error::ConnectionLost`], or
    /// [`Error::Database`]. Whatever the error, none of the ids is left held
    /// by this call, and other holds of the session are untouched.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the object not held and gives back
    /// whatever the call took before the connection's next use. The server
    /// stops waiting within 900 ms as a rule, and the connection's next use
    /// waits at most that long.
    pub async fn acquire(&mut self) -> Result<(), Error> {
        self.take(Patience::Forever).await.map(|_| ())
    }

    /// Takes every id if all are free now; never waits.
    ///
    /// One statement, 1 round trip, which gives back, before it returns,
    /// whatever ids it took if a later one was busy. Already held: counts, 0
    /// round trips, `true`.
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire), less the waiting ones; none of
    /// the ids is left held by this call.
    ///
    /// # Cancel safety
    ///
    /// As for [`acquire`](Self::acquire).
    pub async fn try_acquire(&mut self) -> Result<bool, Error> {
        self.take(Patience::None).await
    }

    /// Takes every id, waiting at most `timeout` for ids another session
    /// holds; `Ok(false)` when the time ran out, with none of them held.
    ///
    /// The wait happens on the server, through `lock_timeout`: 1 round trip,
    /// and one more for each second or so of waiting. The session's own
    /// `lock_timeout` is left as it was. A zero `timeout` behaves like
    /// [`try_acquire`](Self::try_acquire). Already held: counts, 0 round
    /// trips, `true`.
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire), except that running out of time is
    /// `Ok(false)`.
    ///
    /// # Cancel safety
    ///
    /// As for [`acquire`](Self::acquire); since this call returns by itself
    /// when the time is up, there is no need to wrap it in a client-side
    /// timeout.
    pub async fn acquire_timeout(&mut self, timeout: Duration) -> Result<bool, Error> {
        self.take(Patience::within(timeout)?).await
    }

    async fn take(&mut self, patience: Patience) -> Result<bool, Error> {
        if self.count > 0 {
            self.count += 1;
            return Ok(true);
        }
        if let Some(invalid) = &self.invalid {
            return Err(invalid.clone().into());
        }
        let conn = self.conn.as_mut().expect(CONN).as_mut();
        match protocol::acquire(conn, &self.ids, M::SHARED, patience).await? {
            Some(hold) => {
                self.hold = hold;
                self.count = 1;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives back one acquisition; when it is the last, releases every id, in
    /// reverse order (`pg_advisory_unlock`), 1 round trip; otherwise only
    /// counts, 0 round trips.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when the object is not held (nothing changes);
    /// [`Error::Lost`] when the session no longer held some of the ids
    /// (something else released them while the object was held; the rest
    /// are released); [`Error::InFailedTransaction`] in a failed
    /// transaction, where the server refuses the unlock: the object stays
    /// held, to be released once the transaction has ended;
    /// [`Error::ConnectionLost`] when the session is gone, and its locks with
    /// it. After any other error the object is not held, and the ids are
    /// released before the connection's next use.
    ///
    /// # Cancel safety
    ///
    /// The object counts as released once the future is first polled;
    /// dropped after that, the ids are released before the connection's next
    /// use all the same.
    pub async fn release(&mut self) -> Result<(), Error> {
        match self.count {
            0 => Err(Error::NotHeld),
            1 => {
                self.count = 0;
                let conn = self.conn.as_mut().expect(CONN).as_mut();
                let released = protocol::release(conn, &self.ids, M::SHARED, self.hold).await;
                if let Err(Error::InFailedTransaction(_)) = released {
                    // Nothing ran: the ids are still held, and released
                    // again once the transaction has ended.
                    self.count = 1;
                }
                released
            }
            _ => {
                self.count -= 1;
                Ok(())
            }
        }
    }

    /// Asks the server whether this session holds every id, in this mode
    /// (from `pg_locks`, by this backend's pid). 1 round trip.
    ///
    /// The server answers for the session, not for this object: the ids may
    /// also be held through other objects or by hand.
    ///
    /// `Ok(false)` when the session is gone; the object is then no longer
    /// held.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the query fails otherwise.
    ///
    /// # Cancel safety
    ///
    /// A read: dropping the future changes nothing.
    pub async fn held_on_server(&mut self) -> Result<bool, Error> {
        let took = (self.count > 0).then_some(self.hold.pid);
        let conn = self.conn.as_mut().expect(CONN).as_mut();
        match protocol::held(conn, &self.ids, M::SHARED, took).await {
            // The session is gone, and its locks with it.
            Err(e) if e.is_connection_lost() => {
                self.count = 0;
                Ok(false)
            }
            held => held,
        }
    }

    /// Whether the object is held: acquired more times than released, and
    /// its connection not found gone by one of its own calls since. Contacts
    /// no server; see [`held_on_server`](Self::held_on_server).
    pub fn is_locked(&self) -> bool {
        self.count > 0
    }

    /// How many times the object is held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The ids, in lock order.
    pub fn ids(&self) -> &[LockId] {
        &self.ids
    }

    /// The connection.
    pub fn get_ref(&self) -> &C {
        self.conn.as_ref().expect(CONN)
    }

    /// The connection as given to [`new`](Self::new).
    pub fn get_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect(CONN)
    }

    /// The connection, to run queries while the ids are held:
    /// `sqlx::query(..).execute(lock.connection())`.
    pub fn connection(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(CONN).as_mut()
    }

    /// Gives the connection back. If the object is held, its release is
    /// queued on the connection first, as when it is dropped.
    pub fn into_inner(mut self) -> C {
        self.release_on_drop();
        self.conn.take().expect(CONN)
    }

    /// Gives the connection back and keeps the ids held by the session on
    /// purpose, until they are released by hand or the session ends.
    pub fn leak(mut self) -> C {
        self.count = 0;
        self.conn.take().expect(CONN)
    }

    fn release_on_drop(&mut self) {
        if self.count > 0 {
            self.count = 0;
            if let Some(conn) = self.conn.as_mut() {
                protocol::release_on_drop(conn.as_mut(), &self.ids, M::SHARED, self.hold.token);
            }
        }
    }
}

impl<C: AsMut<PgConnection>, M: Mode> AsMut<PgConnection> for AdvisoryLock<C, M> {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(CONN).as_mut()
    }
}

impl<C: AsMut<PgConnection>, M: Mode> Drop for AdvisoryLock<C, M> {
    fn drop(&mut self) {
        self.release_on_drop();
    }
}

impl<C: AsMut<PgConnection>, M: Mode> fmt::Debug for AdvisoryLock<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if M::SHARED {
            "ShareLock"
        } else {
            "ExclusiveLock"
        })
        .field("ids", &self.ids)
        .field("count", &self.count)
        .finish_non_exhaustive()
    }
}
