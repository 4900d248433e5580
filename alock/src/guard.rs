//! The guard: a held session-level lock that releases itself.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};

use crate::protocol::{self, Hold, Patience};
use crate::{AdvisoryKeys, Error, LockId, key};

mod sealed {
    pub trait Sealed {
        /// The connection, for `Deref`.
        fn connection_ref(&self) -> &sqlx::PgConnection;

        /// Makes sure the connection never goes back to a pool, where it can:
        /// its state is in doubt. `false` when that is not this holder's to
        /// decide (a borrowed connection).
        fn close_when_dropped(&mut self) -> bool {
            false
        }
    }
}

/// What a [`LockGuard`] holds its locks through: a borrowed
/// `&mut PgConnection`, an owned `PgConnection`, or a pooled
/// `PoolConnection<Postgres>`.
///
/// A guard over a connection it owns closes that connection, instead of
/// handing it back, whenever what the session holds is in doubt: so a pooled
/// connection never returns to its pool holding a guard's ids.
pub trait GuardConnection: AsMut<PgConnection> + sealed::Sealed {}

impl sealed::Sealed for &mut PgConnection {
    fn connection_ref(&self) -> &PgConnection {
        self
    }
}
impl GuardConnection for &mut PgConnection {}

impl sealed::Sealed for PgConnection {
    fn connection_ref(&self) -> &PgConnection {
        self
    }

    fn close_when_dropped(&mut self) -> bool {
        // Dropping an owned connection closes it.
        true
    }
}
impl GuardConnection for PgConnection {}

impl sealed::Sealed for PoolConnection<Postgres> {
    fn connection_ref(&self) -> &PgConnection {
        self
    }

    fn close_when_dropped(&mut self) -> bool {
        self.close_on_drop();
        true
    }
}
impl GuardConnection for PoolConnection<Postgres> {}

/// Session-level advisory locks on some ids, held until the guard is
/// released or dropped.
///
/// One guard type serves every connection a lock can be held through:
/// `LockGuard<&mut PgConnection>` from a borrowed connection
/// ([`AdvisoryLockExt`](crate::AdvisoryLockExt)), and
/// `LockGuard<PoolConnection<Postgres>>` from a pool
/// ([`PoolAdvisoryLockExt`](crate::PoolAdvisoryLockExt)), which owns its
/// connection and is `Send + 'static`, so it can move into `tokio::spawn`.
/// [`LockGuard::lock_exclusive`] takes an owned `PgConnection`, or any other
/// [`GuardConnection`].
///
/// The guard derefs to the connection, so queries run through it while the
/// ids are held.
///
/// - [`release`](Self::release) unlocks now, 1 round trip, and reports
///   errors, such as [`Error::Lost`] when something else released an id.
/// - Dropping the guard releases the ids before the connection's next use,
///   including the check a pool runs when a connection comes back to it.
/// - [`leak`](Self::leak) keeps the ids for the rest of the session, on
///   purpose.
#[must_use = "the ids are released as soon as the guard is dropped"]
pub struct LockGuard<C: GuardConnection> {
    conn: Option<C>,
    ids: Box<[LockId]>,
    shared: bool,
    hold: Hold,
}

const CONN: &str = "BUG: the connection is only taken by consuming methods";

impl<C: GuardConnection> LockGuard<C> {
    /// Takes `keys` exclusively at session level through `conn`, which the
    /// guard then owns, waiting while another session holds one.
    ///
    /// For a borrowed connection or a pool, the methods of
    /// [`AdvisoryLockExt`](crate::AdvisoryLockExt) and
    /// [`PoolAdvisoryLockExt`](crate::PoolAdvisoryLockExt) do the same.
    ///
    /// # Errors
    ///
    /// As for [`AdvisoryLockExt::lock_exclusive`](crate::AdvisoryLockExt::lock_exclusive).
    /// The connection is dropped with the error: an owned `PgConnection` is
    /// closed, and a pooled one goes back to its pool with whatever cleanup
    /// the call queued on it.
    pub async fn lock_exclusive(conn: C, keys: impl AdvisoryKeys) -> Result<Self, Error> {
        let ids = key::ids_of(&keys)?;
        let guard = Self::acquire(conn, ids, false, Patience::Forever).await?;
        Ok(guard.expect(protocol::GRANTED))
    }

    /// Takes `keys` in shared mode; otherwise as
    /// [`lock_exclusive`](Self::lock_exclusive).
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    pub async fn lock_shared(conn: C, keys: impl AdvisoryKeys) -> Result<Self, Error> {
        let ids = key::ids_of(&keys)?;
        let guard = Self::acquire(conn, ids, true, Patience::Forever).await?;
        Ok(guard.expect(protocol::GRANTED))
    }

    /// Takes the ids through `conn`; `None` when `patience` ran out.
    pub(crate) async fn acquire(
        conn: C,
        ids: Vec<LockId>,
        shared: bool,
        patience: Patience,
    ) -> Result<Option<Self>, Error> {
        // Dropped before the outcome is known, an owned connection is
        // closed: the server then ends the wait and frees whatever it
        // granted, and a pool gets a fresh connection instead of one still
        // waiting. A borrowed one runs the cleanup queued on it instead.
        struct CloseUnlessKept<C: GuardConnection>(Option<C>);
        impl<C: GuardConnection> Drop for CloseUnlessKept<C> {
            fn drop(&mut self) {
                if let Some(conn) = self.0.as_mut() {
                    conn.close_when_dropped();
                }
            }
        }
        let mut checkout = CloseUnlessKept(Some(conn));
        let taken = protocol::acquire(
            checkout.0.as_mut().expect(CONN).as_mut(),
            &ids,
            shared,
            patience,
        )
        .await;
        // Finished, with or without the ids: the connection's state is known
        // (any cleanup is queued on it), and it can go back to a pool.
        let conn = checkout.0.take().expect(CONN);
        Ok(taken?.map(|hold| LockGuard {
            conn: Some(conn),
            ids: ids.into_boxed_slice(),
            shared,
            hold,
        }))
    }

    /// Releases the ids now, in reverse order (`pg_advisory_unlock`): 1
    /// round trip. A pooled connection then goes back to its pool.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the session no longer held some of the ids:
    /// something else released them while the guard was alive (the rest are
    /// released). [`Error::InFailedTransaction`] when the connection is in a
    /// failed transaction, where the server refuses the unlock.
    /// [`Error::ConnectionLost`] when the session is gone, and its locks
    /// with it. After any error but [`Error::Lost`], a connection the guard
    /// owns is closed rather than returned to a pool.
    ///
    /// # Cancel safety
    ///
    /// Dropped at any point, the ids are released before the connection's
    /// next use.
    pub async fn release(mut self) -> Result<(), Error> {
        let mut conn = self.conn.take().expect(CONN);
        let released = protocol::release(conn.as_mut(), &self.ids, self.shared, self.hold).await;
        if released
            .as_ref()
            .is_err_and(|e| !matches!(e, Error::Lost { .. }))
        {
            conn.close_when_dropped();
        }
        released
    }

    /// Asks the server whether this session holds every id of the guard, in
    /// its mode (from `pg_locks`): 1 round trip. `Ok(false)` when the
    /// session is gone.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the query fails otherwise.
    ///
    /// # Cancel safety
    ///
    /// A read: dropping the future changes nothing.
    pub async fn held_on_server(&mut self) -> Result<bool, Error> {
        let conn = self.conn.as_mut().expect(CONN).as_mut();
        let held = protocol::held(conn, &self.ids, self.shared, Some(self.hold.pid)).await;
        match held {
            Err(e) if e.is_connection_lost() => Ok(false),
            held => held,
        }
    }

    /// Whether the session still holds every id, with errors as they are:
    /// a lost connection is an error here.
    pub(crate) async fn check(&mut self) -> Result<bool, Error> {
        let conn = self.conn.as_mut().expect(CONN).as_mut();
        protocol::held(conn, &self.ids, self.shared, Some(self.hold.pid)).await
    }

    /// Closes a connection the guard owns, with whatever its session holds,
    /// instead of returning it to a pool.
    pub(crate) fn close_connection(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_when_dropped();
        }
    }

    /// Keeps the ids held by the session, on purpose, and hands back the
    /// connection. The ids stay held until released by hand or the session
    /// ends, even when a pooled connection goes back to its pool.
    pub fn leak(mut self) -> C {
        self.conn.take().expect(CONN)
    }

    /// Hands back the connection, with the release queued on it as when the
    /// guard is dropped: it runs before anything sent on the connection
    /// afterwards.
    pub fn into_inner(mut self) -> C {
        let mut conn = self.conn.take().expect(CONN);
        protocol::release_on_drop(conn.as_mut(), &self.ids, self.shared, self.hold.token);
        conn
    }

    /// The connection, to run queries while the ids are held (the guard
    /// also derefs to it).
    pub fn connection(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(CONN).as_mut()
    }

    /// The ids, in lock order.
    pub fn ids(&self) -> &[LockId] {
        &self.ids
    }

    /// Whether the ids are held in shared mode.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether taking the ids had to wait for another session to release
    /// one: a measure of contention, for metrics.
    pub fn waited(&self) -> bool {
        self.hold.waited
    }
}

impl<C: GuardConnection> Deref for LockGuard<C> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect(CONN).connection_ref()
    }
}

impl<C: GuardConnection> DerefMut for LockGuard<C> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection()
    }
}

impl<C: GuardConnection> AsMut<PgConnection> for LockGuard<C> {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.connection()
    }
}

impl<C: GuardConnection> Drop for LockGuard<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            // In a transaction the queued release could not run; a
            // connection the guard owns is closed instead, which frees every
            // lock of its session.
            if !(conn.as_mut().is_in_transaction() && conn.close_when_dropped()) {
                protocol::release_on_drop(conn.as_mut(), &self.ids, self.shared, self.hold.token);
            }
        }
    }
}

impl<C: GuardConnection> fmt::Debug for LockGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("ids", &self.ids)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}
