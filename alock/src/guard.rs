//! Guards: a held session-level lock that releases itself.

use std::fmt;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};

use crate::protocol::{self, Patience};
use crate::{Error, LockId};

/// Session-level advisory locks on some ids, held through a borrowed
/// connection until the guard is released or dropped.
///
/// Made by [`lock_exclusive`](crate::AdvisoryLockExt::lock_exclusive) and
/// its siblings. The guard derefs to the connection, so queries run through
/// it while the ids are held.
///
/// - [`release`](Self::release) unlocks now: 1 round trip, errors reported.
/// - Dropping the guard queues the unlock on the connection: it runs before
///   anything sent on the connection afterwards, including the check a pool
///   runs when a connection is returned to it.
/// - [`leak`](Self::leak) keeps the ids for the rest of the session, on
///   purpose.
#[must_use = "the ids are released as soon as the guard is dropped"]
pub struct LockGuard<'c> {
    conn: &'c mut PgConnection,
    ids: Box<[LockId]>,
    shared: bool,
    token: i32,
    waited: bool,
    held: bool,
}

impl<'c> LockGuard<'c> {
    pub(crate) async fn acquire(
        conn: &'c mut PgConnection,
        ids: Vec<LockId>,
        shared: bool,
        patience: Patience,
    ) -> Result<Option<LockGuard<'c>>, Error> {
        let hold = protocol::acquire(&mut *conn, &ids, shared, patience).await?;
        Ok(hold.map(|hold| LockGuard {
            conn,
            ids: ids.into_boxed_slice(),
            shared,
            token: hold.token,
            waited: hold.waited,
            held: true,
        }))
    }

    /// Releases the ids now, in reverse order (`pg_advisory_unlock`): 1
    /// round trip.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the session no longer held some of the ids:
    /// something else released them while the guard was alive (the rest are
    /// released); [`Error::InFailedTransaction`] when the connection is in a
    /// failed transaction, where the server refuses the unlock and the ids
    /// stay with the session; [`Error::Database`] when the connection
    /// fails, and the server frees the ids when it notices the session is
    /// gone.
    ///
    /// # Cancel safety
    ///
    /// Dropped at any point, the ids are released before the connection's
    /// next use: by the unlock if it was sent, or by a statement queued in its
    /// place if it was not.
    pub async fn release(mut self) -> Result<(), Error> {
        self.held = false;
        protocol::release(self.conn, &self.ids, self.shared, self.token).await
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
        held_or_gone(protocol::held(self.conn, &self.ids, self.shared).await)
    }

    /// Keeps the ids held by the session, on purpose, until they are
    /// released by hand or the session ends.
    pub fn leak(mut self) {
        self.held = false;
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
        self.waited
    }
}

impl Deref for LockGuard<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
    }
}

impl DerefMut for LockGuard<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
    }
}

impl AsMut<PgConnection> for LockGuard<'_> {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.conn
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            protocol::release_on_drop(self.conn, &self.ids, self.shared, self.token);
        }
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("ids", &self.ids)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Session-level advisory locks held through a pooled connection that the
/// guard owns: `Send + 'static`, so it can move into `tokio::spawn`.
///
/// Made by [`PoolAdvisoryLockExt`](crate::PoolAdvisoryLockExt). Derefs to the
/// connection. [`release`](Self::release) unlocks and returns the connection
/// to its pool. Dropped, the guard queues the unlock, and the pool runs it
/// before the connection can be handed out again; a connection whose state is
/// in doubt (inside a transaction) is closed instead, which frees every lock
/// of its session. A pooled connection never goes back into its pool holding
/// the guard's ids.
#[must_use = "the ids are released as soon as the guard is dropped"]
pub struct PoolLockGuard {
    conn: Option<PoolConnection<Postgres>>,
    ids: Box<[LockId]>,
    shared: bool,
    token: i32,
    waited: bool,
}

const CONN: &str = "BUG: the pooled connection is only taken by consuming methods";

impl PoolLockGuard {
    pub(crate) async fn acquire(
        conn: PoolConnection<Postgres>,
        ids: Vec<LockId>,
        shared: bool,
        patience: Patience,
    ) -> Result<Option<PoolLockGuard>, Error> {
        // Dropped before the outcome is known, the connection is closed: the
        // server then ends the wait and frees whatever it granted, and the
        // pool gets a fresh connection instead of one still waiting.
        struct CloseUnlessKept(Option<PoolConnection<Postgres>>);
        impl Drop for CloseUnlessKept {
            fn drop(&mut self) {
                if let Some(conn) = self.0.as_mut() {
                    conn.close_on_drop();
                }
            }
        }
        let mut checkout = CloseUnlessKept(Some(conn));
        let conn = checkout.0.as_mut().expect(CONN);
        let taken = protocol::acquire(conn, &ids, shared, patience).await;
        // Finished, with or without the ids: the connection's state is known
        // (any cleanup is queued on it), and it can go back to the pool.
        let conn = checkout.0.take().expect(CONN);
        Ok(taken?.map(|hold| PoolLockGuard {
            conn: Some(conn),
            ids: ids.into_boxed_slice(),
            shared,
            token: hold.token,
            waited: hold.waited,
        }))
    }

    /// Releases the ids (`pg_advisory_unlock`, 1 round trip) and returns the
    /// connection to its pool.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the session no longer held some of the ids:
    /// something else released them while the guard was alive (the rest are
    /// released, and the connection goes back to the pool);
    /// [`Error::Database`] when the connection fails; it is then closed, not
    /// returned, and the server frees the ids with the session.
    ///
    /// # Cancel safety
    ///
    /// Dropped at any point, the unlock, or a statement queued in its place,
    /// runs before the pool hands the connection out again.
    pub async fn release(mut self) -> Result<(), Error> {
        let mut conn = self.conn.take().expect(CONN);
        let released = protocol::release(&mut conn, &self.ids, self.shared, self.token).await;
        if released
            .as_ref()
            .is_err_and(|e| !matches!(e, Error::Lost { .. }))
        {
            conn.close_on_drop();
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
        let conn = self.conn.as_mut().expect(CONN);
        held_or_gone(protocol::held(conn, &self.ids, self.shared).await)
    }

    /// Keeps the ids held by the session, on purpose, and hands over the
    /// pooled connection. Returned to the pool, the connection keeps the ids
    /// until they are released by hand or the session ends.
    pub fn leak(mut self) -> PoolConnection<Postgres> {
        self.conn.take().expect(CONN)
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
    /// one.
    pub fn waited(&self) -> bool {
        self.waited
    }
}

impl Deref for PoolLockGuard {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect(CONN)
    }
}

impl DerefMut for PoolLockGuard {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(CONN)
    }
}

impl AsMut<PgConnection> for PoolLockGuard {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect(CONN)
    }
}

impl Drop for PoolLockGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.is_in_transaction() {
                conn.close_on_drop();
            } else {
                protocol::release_on_drop(conn, &self.ids, self.shared, self.token);
            }
        }
    }
}

impl fmt::Debug for PoolLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolLockGuard")
            .field("ids", &self.ids)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// A session that is gone holds nothing.
fn held_or_gone(held: Result<bool, Error>) -> Result<bool, Error> {
    match held {
        Err(e) if e.is_connection_lost() => Ok(false),
        held => held,
    }
}
