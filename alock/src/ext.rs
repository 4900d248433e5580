//! Locking the sqlx way: methods on `PgConnection` and `PgPool`.

use std::future::Future;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::guard::{GuardConnection, LockGuard};
use crate::key;
use crate::protocol::{self, Patience};
use crate::{AdvisoryKeys, Error, Lease, LockId};

mod sealed {
    pub trait Connection {}
    impl Connection for sqlx::PgConnection {}
    pub trait Pool {}
    impl Pool for sqlx::PgPool {}
}

/// Advisory locks on a connection: `conn.lock_exclusive(&order).await?`.
///
/// Implemented for `PgConnection`, so also usable on a
/// `PoolConnection<Postgres>` and a `Transaction<'_, Postgres>` through
/// `DerefMut`. Every method takes [`AdvisoryKeys`]: one key, an array, a
/// slice, a `Vec`, or a tuple of keys of different types, taken in order, all
/// or nothing.
///
/// **Session-level** locks ([`lock_exclusive`](Self::lock_exclusive) and
/// siblings) are held by the database session until released; they return a
/// [`LockGuard`] that releases them. **Transaction-level** locks
/// ([`xact_lock_exclusive`](Self::xact_lock_exclusive) and siblings) are held
/// until the transaction ends, by `COMMIT`, `ROLLBACK`, or a dropped
/// `Transaction`, and cannot be released earlier. **Exclusive** locks
/// conflict with every other session's lock on the same id; **shared** locks
/// only with exclusive ones.
///
/// # Examples
///
#[cfg_attr(feature = "derive", doc = "```no_run")]
#[cfg_attr(not(feature = "derive"), doc = "```ignore")]
/// use alock::prelude::*;
///
/// #[derive(AdvisoryKey)]
/// #[advisory_key(namespace = "orders")]
/// struct Order {
///     #[advisory_key(id)]
///     id: i32,
/// }
///
/// # async fn example(conn: &mut sqlx::PgConnection) -> Result<(), alock::Error> {
/// let order = Order { id: 7 };
/// let mut guard = conn.lock_exclusive(&order).await?;
/// sqlx::query("UPDATE orders SET state = 'paid' WHERE id = $1")
///     .bind(order.id)
///     .execute(&mut *guard)
///     .await?;
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
pub trait AdvisoryLockExt: sealed::Connection {
    /// Takes `keys` exclusively at session level, waiting while another
    /// session holds one, and returns the guard that releases them.
    ///
    /// One statement (`pg_advisory_lock` for each id, in order): 1 round
    /// trip, and one more for each second or so of waiting. See
    /// [`try_lock_exclusive`](Self::try_lock_exclusive) and
    /// [`lock_exclusive_timeout`](Self::lock_exclusive_timeout).
    ///
    /// # Errors
    ///
    /// [`Error::Deadlock`], [`Error::LockTimeout`] (the session's own
    /// `lock_timeout`), [`Error::Canceled`], [`Error::LockTableFull`],
    /// [`Error::InTransaction`] inside a transaction begun through sqlx,
    /// [`Error::ConnectionLost`], or [`Error::Database`]. Whatever the error,
    /// none of the ids is left held by this call, and other holds of the
    /// session are untouched.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives back whatever the call took before the
    /// connection's next use, and touches no other hold. The server stops
    /// waiting within 900 ms as a rule, and the connection's next use waits
    /// at most that long.
    fn lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<LockGuard<&'_ mut PgConnection>, Error>> + Send + '_;

    /// As [`lock_exclusive`](Self::lock_exclusive), in shared mode
    /// (`pg_advisory_lock_shared`).
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    fn lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<LockGuard<&'_ mut PgConnection>, Error>> + Send + '_;

    /// Takes `keys` exclusively if all are free now; `None` if one is busy,
    /// with none of them held. Never waits: 1 round trip, including giving
    /// back what it took when a later id was busy.
    ///
    /// # Errors
    ///
    /// [`Error::LockTableFull`], [`Error::Canceled`],
    /// [`Error::InTransaction`], [`Error::ConnectionLost`], or
    /// [`Error::Database`]; none of the ids is left held by this call.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives back whatever the call took before the
    /// connection's next use, and touches no other hold.
    fn try_lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_;

    /// As [`try_lock_exclusive`](Self::try_lock_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`try_lock_exclusive`](Self::try_lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`try_lock_exclusive`](Self::try_lock_exclusive).
    fn try_lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_;

    /// Takes `keys` exclusively, waiting at most `timeout` on the server
    /// (`lock_timeout`); `None` when the time ran out, with none of them
    /// held.
    ///
    /// 1 round trip, and one more for each second or so of waiting. The
    /// session's `lock_timeout` is left as it was. A zero timeout never
    /// waits.
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive), except that running
    /// out of time is `Ok(None)`.
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive); this call returns by
    /// itself when the time is up, so it needs no client-side timeout.
    fn lock_exclusive_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_;

    /// As [`lock_exclusive_timeout`](Self::lock_exclusive_timeout), in shared
    /// mode.
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive_timeout`](Self::lock_exclusive_timeout).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive_timeout`](Self::lock_exclusive_timeout).
    fn lock_shared_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_;

    /// Runs `f` with the connection while `keys` are held exclusively, then
    /// releases them, whatever `f` returns, and if `f` panics (the panic then
    /// continues).
    ///
    /// Costs [`lock_exclusive`](Self::lock_exclusive) plus one round trip to
    /// release. `f`'s error type only needs `From<alock::Error>`:
    /// `alock::Error`, `sqlx::Error`, `Box<dyn Error + Send + Sync>`,
    /// `anyhow::Error`, or an error type of your own with that `From`, so `?`
    /// works on both inside and outside:
    ///
    /// ```no_run
    /// use alock::prelude::*;
    ///
    /// # async fn example(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    /// let shipped = conn
    ///     .with_exclusive(7_i64, async |conn| {
    ///         let done = sqlx::query("UPDATE orders SET state = 'shipped' WHERE id = 7")
    ///             .execute(conn)
    ///             .await?;
    ///         Ok::<_, sqlx::Error>(done.rows_affected())
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// `f`'s error, or the lock's errors (as for
    /// [`lock_exclusive`](Self::lock_exclusive)) converted into it, or the
    /// release's error when `f` succeeded: [`Error::Lost`] says that
    /// something released the ids while `f` ran. When `f` fails, its error
    /// is returned even if the release failed too: the ids stay with the
    /// session only when `f` left a transaction failed
    /// ([`Error::InFailedTransaction`]).
    ///
    /// # Cancel safety
    ///
    /// Dropped at any point, the ids are released before the connection's
    /// next use, as for a dropped [`LockGuard`]; what `f` had done is as
    /// `f`'s own cancel safety leaves it.
    fn with_exclusive<T, E, F>(
        &mut self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>;

    /// As [`with_exclusive`](Self::with_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`with_exclusive`](Self::with_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`with_exclusive`](Self::with_exclusive).
    fn with_shared<T, E, F>(
        &mut self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>;

    /// Takes `keys` exclusively until the current transaction ends, waiting
    /// while another session holds one (`pg_advisory_xact_lock`).
    ///
    /// One free id costs 1 round trip (`pg_try_advisory_xact_lock`); else the
    /// lock body runs, 1 round trip more, and one more for each second or so
    /// of waiting. The connection must be in a transaction begun through
    /// sqlx (`Connection::begin`).
    ///
    /// # Errors
    ///
    /// [`Error::NotInTransaction`] outside a transaction (where the lock
    /// would end with its own statement), and otherwise as for
    /// [`lock_exclusive`](Self::lock_exclusive): none of the ids is left held
    /// by this call, and the transaction is not aborted by a failed wait.
    ///
    /// # Cancel safety
    ///
    /// Dropped mid-wait, the server stops waiting within a second or so, and
    /// what the call took lasts until the transaction ends, like any lock of
    /// it.
    fn xact_lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_;

    /// As [`xact_lock_exclusive`](Self::xact_lock_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`xact_lock_exclusive`](Self::xact_lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`xact_lock_exclusive`](Self::xact_lock_exclusive).
    fn xact_lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_;

    /// Takes `keys` exclusively until the transaction ends if all are free
    /// now; `false` if one is busy, with none of them held. 1 round trip.
    ///
    /// # Errors
    ///
    /// [`Error::NotInTransaction`], or as for
    /// [`try_lock_exclusive`](Self::try_lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// Dropped after the statement is sent, whatever it took lasts until the
    /// transaction ends.
    fn try_xact_lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_;

    /// As [`try_xact_lock_exclusive`](Self::try_xact_lock_exclusive), in
    /// shared mode.
    ///
    /// # Errors
    ///
    /// As for [`try_xact_lock_exclusive`](Self::try_xact_lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`try_xact_lock_exclusive`](Self::try_xact_lock_exclusive).
    fn try_xact_lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_;

    /// Takes `keys` exclusively until the transaction ends, waiting at most
    /// `timeout` on the server; `false` when the time ran out, with none of
    /// them held and the transaction not aborted. Round trips as for
    /// [`xact_lock_exclusive`](Self::xact_lock_exclusive).
    ///
    /// # Errors
    ///
    /// As for [`xact_lock_exclusive`](Self::xact_lock_exclusive), except that
    /// running out of time is `Ok(false)`.
    ///
    /// # Cancel safety
    ///
    /// As for [`xact_lock_exclusive`](Self::xact_lock_exclusive).
    fn xact_lock_exclusive_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_;

    /// As [`xact_lock_exclusive_timeout`](Self::xact_lock_exclusive_timeout),
    /// in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`xact_lock_exclusive_timeout`](Self::xact_lock_exclusive_timeout).
    ///
    /// # Cancel safety
    ///
    /// As for [`xact_lock_exclusive_timeout`](Self::xact_lock_exclusive_timeout).
    fn xact_lock_shared_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_;

    /// Begins a transaction that holds `keys` exclusively: `BEGIN` (a
    /// savepoint inside a transaction), then
    /// [`xact_lock_exclusive`](Self::xact_lock_exclusive); 2 round trips for
    /// free ids.
    ///
    /// # Errors
    ///
    /// As for [`xact_lock_exclusive`](Self::xact_lock_exclusive); on an
    /// error no transaction is left open and none of the ids is held.
    ///
    /// # Cancel safety
    ///
    /// Dropped once `BEGIN` is answered, the transaction is rolled back
    /// before the connection's next use, and nothing is held. Dropped before
    /// `BEGIN` is answered, it is a dropped `Connection::begin`.
    fn begin_locked_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Transaction<'_, Postgres>, Error>> + Send + '_;

    /// As [`begin_locked_exclusive`](Self::begin_locked_exclusive), in shared
    /// mode.
    ///
    /// # Errors
    ///
    /// As for [`begin_locked_exclusive`](Self::begin_locked_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`begin_locked_exclusive`](Self::begin_locked_exclusive).
    fn begin_locked_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Transaction<'_, Postgres>, Error>> + Send + '_;
}

impl AdvisoryLockExt for PgConnection {
    fn lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<LockGuard<&'_ mut PgConnection>, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move {
            let guard = LockGuard::acquire(self, ids?, false, Patience::Forever).await?;
            Ok(guard.expect(protocol::GRANTED))
        }
    }

    fn lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<LockGuard<&'_ mut PgConnection>, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move {
            let guard = LockGuard::acquire(self, ids?, true, Patience::Forever).await?;
            Ok(guard.expect(protocol::GRANTED))
        }
    }

    fn try_lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_
    {
        let ids = key::ids_of(&keys);
        async move { LockGuard::acquire(self, ids?, false, Patience::None).await }
    }

    fn try_lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_
    {
        let ids = key::ids_of(&keys);
        async move { LockGuard::acquire(self, ids?, true, Patience::None).await }
    }

    fn lock_exclusive_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_
    {
        let ids = key::ids_of(&keys);
        async move { LockGuard::acquire(self, ids?, false, Patience::within(timeout)?).await }
    }

    fn lock_shared_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<LockGuard<&'_ mut PgConnection>>, Error>> + Send + '_
    {
        let ids = key::ids_of(&keys);
        async move { LockGuard::acquire(self, ids?, true, Patience::within(timeout)?).await }
    }

    fn with_exclusive<T, E, F>(
        &mut self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let ids = key::ids_of(&keys);
        async move { with_lock(self, ids.map_err(Error::from)?, false, f).await }
    }

    fn with_shared<T, E, F>(
        &mut self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let ids = key::ids_of(&keys);
        async move { with_lock(self, ids.map_err(Error::from)?, true, f).await }
    }

    fn xact_lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { xact_lock(self, ids?, false).await }
    }

    fn xact_lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { xact_lock(self, ids?, true).await }
    }

    fn try_xact_lock_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { xact_take(self, ids?, false, Patience::None).await }
    }

    fn try_xact_lock_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { xact_take(self, ids?, true, Patience::None).await }
    }

    fn xact_lock_exclusive_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { xact_take(self, ids?, false, Patience::within(timeout)?).await }
    }

    fn xact_lock_shared_timeout(
        &mut self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { xact_take(self, ids?, true, Patience::within(timeout)?).await }
    }

    fn begin_locked_exclusive(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Transaction<'_, Postgres>, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { begin_locked(self, ids?, false).await }
    }

    fn begin_locked_shared(
        &mut self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Transaction<'_, Postgres>, Error>> + Send + '_ {
        let ids = key::ids_of(&keys);
        async move { begin_locked(self, ids?, true).await }
    }
}

async fn with_lock<C, T, E, F>(conn: C, ids: Vec<LockId>, shared: bool, f: F) -> Result<T, E>
where
    C: GuardConnection,
    F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<Error>,
{
    let mut guard = LockGuard::acquire(conn, ids, shared, Patience::Forever)
        .await?
        .expect(protocol::GRANTED);
    let out = f(guard.connection()).await;
    let released = guard.release().await;
    let value = out?;
    released?;
    Ok(value)
}

async fn xact_lock(conn: &mut PgConnection, ids: Vec<LockId>, shared: bool) -> Result<(), Error> {
    let taken = xact_take(conn, ids, shared, Patience::Forever).await?;
    debug_assert!(taken, "{}", protocol::GRANTED);
    Ok(())
}

async fn xact_take(
    conn: &mut PgConnection,
    ids: Vec<LockId>,
    shared: bool,
    patience: Patience,
) -> Result<bool, Error> {
    protocol::acquire_xact(conn, &ids, shared, patience).await
}

async fn begin_locked(
    conn: &mut PgConnection,
    ids: Vec<LockId>,
    shared: bool,
) -> Result<Transaction<'_, Postgres>, Error> {
    // Dropped or failed at any point after `BEGIN`, the transaction is
    // dropped with it, and sqlx queues its rollback.
    let mut tx = conn.begin().await?;
    protocol::acquire_xact(&mut tx, &ids, shared, Patience::Forever).await?;
    Ok(tx)
}

/// Advisory locks on a pool: the session-level methods of
/// [`AdvisoryLockExt`], each on a connection checked out for the lock.
///
/// The guards own their pooled connection: they are `Send + 'static`, so
/// they move into `tokio::spawn`, and releasing one returns its connection to
/// the pool. A connection whose state is in doubt (an acquire dropped before
/// its answer, a release that failed) is closed instead of returned, so the
/// pool never hands out a connection holding someone's lock or still
/// waiting for one.
///
/// # Examples
///
/// ```no_run
/// use alock::prelude::*;
///
/// # async fn example(pool: sqlx::PgPool) -> Result<(), alock::Error> {
/// let mut guard = pool.lock_exclusive(42_i64).await?;
/// tokio::spawn(async move {
///     sqlx::query("SELECT 1").execute(&mut *guard).await?;
///     guard.release().await
/// });
/// # Ok(())
/// # }
/// ```
pub trait PoolAdvisoryLockExt: sealed::Pool {
    /// Checks out a connection and takes `keys` exclusively through it, as
    /// [`AdvisoryLockExt::lock_exclusive`].
    ///
    /// # Errors
    ///
    /// The pool's errors, or as for [`AdvisoryLockExt::lock_exclusive`].
    ///
    /// # Cancel safety
    ///
    /// Dropped before the lock is granted, the connection is closed rather
    /// than returned: the server ends the wait and frees what it granted.
    fn lock_exclusive(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<LockGuard<PoolConnection<Postgres>>, Error>> + Send + 'static;

    /// As [`lock_exclusive`](Self::lock_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    fn lock_shared(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<LockGuard<PoolConnection<Postgres>>, Error>> + Send + 'static;

    /// Checks out a connection and takes `keys` exclusively if all are free
    /// now, as [`AdvisoryLockExt::try_lock_exclusive`]; `None` if one is
    /// busy, and the connection goes back to the pool.
    ///
    /// # Errors
    ///
    /// The pool's errors, or as for [`AdvisoryLockExt::try_lock_exclusive`].
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    fn try_lock_exclusive(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<LockGuard<PoolConnection<Postgres>>>, Error>> + Send + 'static;

    /// As [`try_lock_exclusive`](Self::try_lock_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`try_lock_exclusive`](Self::try_lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    fn try_lock_shared(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<LockGuard<PoolConnection<Postgres>>>, Error>> + Send + 'static;

    /// Checks out a connection and takes `keys` exclusively, waiting at most
    /// `timeout` on the server, as [`AdvisoryLockExt::lock_exclusive_timeout`];
    /// `None` when the time ran out. The pool's own checkout is not counted
    /// in `timeout`: it has the pool's `acquire_timeout`.
    ///
    /// # Errors
    ///
    /// The pool's errors, or as for
    /// [`AdvisoryLockExt::lock_exclusive_timeout`].
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive); this call returns by
    /// itself when the time is up, so it needs no client-side timeout.
    fn lock_exclusive_timeout(
        &self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<LockGuard<PoolConnection<Postgres>>>, Error>> + Send + 'static;

    /// As [`lock_exclusive_timeout`](Self::lock_exclusive_timeout), in shared
    /// mode.
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive_timeout`](Self::lock_exclusive_timeout).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive_timeout`](Self::lock_exclusive_timeout).
    fn lock_shared_timeout(
        &self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<LockGuard<PoolConnection<Postgres>>>, Error>> + Send + 'static;

    /// Checks out a connection and runs `f` with it while `keys` are held
    /// exclusively, as [`AdvisoryLockExt::with_exclusive`]; the connection
    /// then goes back to the pool.
    ///
    /// # Errors
    ///
    /// As for [`AdvisoryLockExt::with_exclusive`], and the pool's errors.
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive) while the lock is
    /// taken, and as for [`AdvisoryLockExt::with_exclusive`] afterwards.
    fn with_exclusive<T, E, F>(
        &self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>;

    /// Checks out a connection of its own and takes `keys` exclusively
    /// through it as a [`Lease`], checked every [`DEFAULT_CHECK_EVERY`](crate::DEFAULT_CHECK_EVERY)
    /// (see [`Lease::options`] for another interval), which notices when
    /// the lock is lost.
    ///
    /// # Errors
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    fn lease_exclusive(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static;

    /// As [`lease_exclusive`](Self::lease_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`lease_exclusive`](Self::lease_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`lock_exclusive`](Self::lock_exclusive).
    fn lease_shared(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static;

    /// As [`with_exclusive`](Self::with_exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`with_exclusive`](Self::with_exclusive).
    ///
    /// # Cancel safety
    ///
    /// As for [`with_exclusive`](Self::with_exclusive).
    fn with_shared<T, E, F>(
        &self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>;
}

type PoolGuard = LockGuard<PoolConnection<Postgres>>;

impl PoolAdvisoryLockExt for PgPool {
    fn lease_exclusive(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move { pool_lease(pool, ids?, false).await }
    }

    fn lease_shared(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Lease, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move { pool_lease(pool, ids?, true).await }
    }

    fn lock_exclusive(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<PoolGuard, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move {
            let guard = pool_lock(pool, ids?, false, Patience::Forever).await?;
            Ok(guard.expect(protocol::GRANTED))
        }
    }

    fn lock_shared(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<PoolGuard, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move {
            let guard = pool_lock(pool, ids?, true, Patience::Forever).await?;
            Ok(guard.expect(protocol::GRANTED))
        }
    }

    fn try_lock_exclusive(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<PoolGuard>, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move { pool_lock(pool, ids?, false, Patience::None).await }
    }

    fn try_lock_shared(
        &self,
        keys: impl AdvisoryKeys,
    ) -> impl Future<Output = Result<Option<PoolGuard>, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move { pool_lock(pool, ids?, true, Patience::None).await }
    }

    fn lock_exclusive_timeout(
        &self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<PoolGuard>, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move { pool_lock(pool, ids?, false, Patience::within(timeout)?).await }
    }

    fn lock_shared_timeout(
        &self,
        keys: impl AdvisoryKeys,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<PoolGuard>, Error>> + Send + 'static {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move { pool_lock(pool, ids?, true, Patience::within(timeout)?).await }
    }

    fn with_exclusive<T, E, F>(
        &self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move {
            let conn = pool.acquire().await.map_err(Error::from)?;
            with_lock(conn, ids.map_err(Error::from)?, false, f).await
        }
    }

    fn with_shared<T, E, F>(
        &self,
        keys: impl AdvisoryKeys,
        f: F,
    ) -> impl Future<Output = Result<T, E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<Error>,
    {
        let (pool, ids) = (self.clone(), key::ids_of(&keys));
        async move {
            let conn = pool.acquire().await.map_err(Error::from)?;
            with_lock(conn, ids.map_err(Error::from)?, true, f).await
        }
    }
}

async fn pool_lease(pool: PgPool, ids: Vec<LockId>, shared: bool) -> Result<Lease, Error> {
    if shared {
        Lease::options().shared(&pool, ids).await
    } else {
        Lease::options().exclusive(&pool, ids).await
    }
}

async fn pool_lock(
    pool: PgPool,
    ids: Vec<LockId>,
    shared: bool,
    patience: Patience,
) -> Result<Option<PoolGuard>, Error> {
    let conn = pool.acquire().await?;
    LockGuard::acquire(conn, ids, shared, patience).await
}
