//! Leases: session-level locks held for minutes or days, on a connection of
//! their own, that notice when they are lost.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, watch};
use tokio::task::JoinHandle;

use crate::guard::LockGuard;
use crate::protocol::{self, Patience};
use crate::{AdvisoryKeys, Error, LockId, key};

/// Why a [`Lease`] was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostCause {
    /// The session ended, and the server freed its locks: the backend was
    /// terminated, the server restarted, or the connection broke.
    SessionEnded,
    /// The session no longer holds the ids: something on it released them
    /// (`pg_advisory_unlock_all()`, `DISCARD ALL`, a pooler's reset).
    NotHeld,
    /// The connection now runs on another server session than the one that
    /// took the lock, as behind a pooler in transaction mode.
    SessionChanged,
    /// A check got no answer within the check interval, or could not be
    /// made because the connection stayed borrowed: the connection hangs (a
    /// network that drops packets, a server that stopped answering) or is
    /// busy. The lease closes it; the server frees the lock when it notices
    /// the session is gone.
    Unresponsive,
    /// A check failed otherwise; the message says how.
    CheckFailed(String),
}

impl fmt::Display for LostCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostCause::SessionEnded => f.write_str("the session ended"),
            LostCause::NotHeld => f.write_str("the session no longer holds the lock"),
            LostCause::SessionChanged => f.write_str("the connection moved to another session"),
            LostCause::Unresponsive => f.write_str("the connection stopped answering"),
            LostCause::CheckFailed(why) => write!(f, "a check failed: {why}"),
        }
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Held,
    Lost(LostCause),
    Released,
}

/// How a lease is taken and checked: [`Lease::options`].
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    check_every: Duration,
}

/// The default check interval: a lost lease is noticed within twice this.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(2);

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            check_every: DEFAULT_CHECK_EVERY,
        }
    }
}

impl LeaseOptions {
    /// How often the lease asks the server whether it still holds its ids
    /// ([`DEFAULT_CHECK_EVERY`] by default). A check that gets no answer
    /// within the same interval counts as a loss, so a lost lease is noticed
    /// within twice this: the lease's [detection bound](Self::detection_bound).
    ///
    /// # Panics
    ///
    /// When `every` is zero.
    pub fn check_every(mut self, every: Duration) -> Self {
        assert!(!every.is_zero(), "a lease check interval must not be zero");
        self.check_every = every;
        self
    }

    /// The longest a lease can go on looking held after it was lost: two
    /// check intervals, one waiting for the next check and one for its
    /// answer.
    pub fn detection_bound(&self) -> Duration {
        self.check_every * 2
    }

    /// Checks out a connection from `pool` of its own and takes `keys`
    /// exclusively at session level through it, waiting while another
    /// session holds one.
    ///
    /// # Errors
    ///
    /// The pool's errors, or as for
    /// [`AdvisoryLockExt::lock_exclusive`](crate::AdvisoryLockExt::lock_exclusive).
    pub async fn exclusive(&self, pool: &PgPool, keys: impl AdvisoryKeys) -> Result<Lease, Error> {
        let lease = self.take(pool, key::ids_of(&keys)?, false, Patience::Forever);
        Ok(lease.await?.expect(protocol::GRANTED))
    }

    /// As [`exclusive`](Self::exclusive), in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`exclusive`](Self::exclusive).
    pub async fn shared(&self, pool: &PgPool, keys: impl AdvisoryKeys) -> Result<Lease, Error> {
        let lease = self.take(pool, key::ids_of(&keys)?, true, Patience::Forever);
        Ok(lease.await?.expect(protocol::GRANTED))
    }

    /// As [`exclusive`](Self::exclusive), but never waits: `None` when an
    /// id is busy, and the connection goes back to the pool.
    ///
    /// # Errors
    ///
    /// As for [`exclusive`](Self::exclusive).
    pub async fn try_exclusive(
        &self,
        pool: &PgPool,
        keys: impl AdvisoryKeys,
    ) -> Result<Option<Lease>, Error> {
        self.take(pool, key::ids_of(&keys)?, false, Patience::None)
            .await
    }

    /// Campaigns to lead: takes `keys` exclusively as a lease when they
    /// are free, trying again with a growing, jittered backoff while
    /// another instance leads, and runs `f` while it leads, with the lease.
    ///
    /// On taking the lease, it first waits out the
    /// [detection bound](Self::detection_bound), so that a previous leader
    /// whose lease was lost has noticed and stopped before `f` starts. When
    /// the lease is lost, `f`'s future is dropped at once (so within the
    /// detection bound of the loss) and campaigning resumes; errors while
    /// campaigning (a server restarting, a pool timing out) are logged and
    /// retried. When `f` returns, the lease is released and its output
    /// returned; when `stop` completes, the lease is released and `None`
    /// returned.
    ///
    /// No two instances run `f` at once, provided that every instance uses
    /// the same check interval, that their timers run at about the same
    /// rate (within a tenth; no clock needs to agree with another's), and
    /// that no process is paused, as by a debugger or a stopped VM, for
    /// longer than the margin.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKeys`]; nothing else ends the campaign.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops `f`'s and releases the lease, as a dropped
    /// [`Lease`] does.
    pub async fn lead<T, F, Fut>(
        &self,
        pool: &PgPool,
        keys: impl AdvisoryKeys,
        stop: impl Future<Output = ()>,
        mut f: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut(Arc<Lease>) -> Fut,
        Fut: Future<Output = T>,
    {
        let ids = key::ids_of(&keys)?;
        let mut stop = std::pin::pin!(stop);
        let first_backoff = (self.check_every / 4).max(Duration::from_millis(10));
        let mut backoff = first_backoff;
        tracing::info!(ids = ?ids, "alock: campaigning");
        loop {
            let attempt = self.take(pool, ids.clone(), false, Patience::None);
            let taken = tokio::select! {
                taken = attempt => taken,
                () = &mut stop => return Ok(None),
            };
            let lease = match taken {
                Ok(Some(lease)) => lease,
                Ok(None) | Err(_) => {
                    if let Err(e) = taken {
                        tracing::warn!(error = %e, "alock: a campaign attempt failed");
                    }
                    let jitter = protocol::random() % (backoff.as_millis() as u64 / 2 + 1);
                    tokio::select! {
                        () = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                        () = &mut stop => return Ok(None),
                    }
                    backoff = (backoff * 2).min(self.detection_bound());
                    continue;
                }
            };
            backoff = first_backoff;
            tracing::info!(ids = ?ids, "alock: lead gained");
            let lease = Arc::new(lease);
            let lost = lease.lost();
            let mut lost = std::pin::pin!(lost);
            let settled = tokio::select! {
                () = tokio::time::sleep(self.takeover_delay()) => true,
                cause = &mut lost => {
                    tracing::warn!(cause = %cause, "alock: lead lost");
                    false
                }
                () = &mut stop => {
                    step_down(lease).await;
                    return Ok(None);
                }
            };
            if !settled {
                continue;
            }
            tokio::select! {
                out = f(Arc::clone(&lease)) => {
                    step_down(lease).await;
                    return Ok(Some(out));
                }
                cause = &mut lost => {
                    tracing::warn!(cause = %cause, "alock: lead lost");
                }
                () = &mut stop => {
                    step_down(lease).await;
                    return Ok(None);
                }
            }
        }
    }

    /// How long a new leader waits before it acts: the detection bound and
    /// a tenth more, for timers that run at different rates.
    fn takeover_delay(&self) -> Duration {
        self.detection_bound() + self.detection_bound() / 10
    }

    async fn take(
        &self,
        pool: &PgPool,
        ids: Vec<LockId>,
        shared: bool,
        patience: Patience,
    ) -> Result<Option<Lease>, Error> {
        let conn = pool.acquire().await?;
        let Some(guard) = LockGuard::acquire(conn, ids, shared, patience).await? else {
            return Ok(None);
        };
        Ok(Some(Lease::start(guard, self.check_every)))
    }
}

/// Releases a lead's lease, or leaves it to the last of the clones that `f`
/// kept to release on drop.
async fn step_down(lease: Arc<Lease>) {
    if let Ok(lease) = Arc::try_unwrap(lease)
        && let Err(e) = lease.release().await
    {
        tracing::warn!(error = %e, "alock: releasing the lead failed");
    }
}

/// What a lease's handles share with its checker.
struct Shared {
    guard: Mutex<Option<LockGuard<PoolConnection<Postgres>>>>,
    state: watch::Sender<State>,
}

/// A session-level advisory lock held on a connection of its own, checked in
/// the background, that notices when it is lost.
///
/// A lock held for minutes or days (a scheduler, a leader, a singleton
/// consumer) can be lost while the program runs: the backend is
/// terminated, the connection breaks, the server restarts, or something on
/// the session releases it. A lease notices: every check interval it asks
/// the server, in one short statement on its own connection, whether its
/// session still holds the ids, and on the first answer that it does not,
/// or no answer within the interval, it counts as lost. So a lost lease is
/// noticed within twice the interval ([`LeaseOptions::detection_bound`]).
/// The checks also keep the connection from looking idle to idle-session
/// timeouts and firewalls.
///
/// - [`lost`](Self::lost) completes when the lease is lost, with the cause;
///   [`watch`](Self::watch) gives a cloneable handle to wait for that in
///   other tasks.
/// - [`is_held`](Self::is_held) answers from what the last check found,
///   without a round trip.
/// - [`release`](Self::release) releases the ids and returns the connection
///   to its pool; dropping the lease releases them too, as a guard does.
///
/// Made by [`PoolAdvisoryLockExt::lease_exclusive`](crate::PoolAdvisoryLockExt::lease_exclusive),
/// or [`Lease::options`] for another check interval.
pub struct Lease {
    shared: Arc<Shared>,
    checker: JoinHandle<()>,
    ids: Box<[LockId]>,
    options: LeaseOptions,
}

impl Lease {
    /// Options for taking a lease: [`LeaseOptions::check_every`], then
    /// [`LeaseOptions::exclusive`] or [`LeaseOptions::shared`].
    pub fn options() -> LeaseOptions {
        LeaseOptions::default()
    }

    fn start(guard: LockGuard<PoolConnection<Postgres>>, check_every: Duration) -> Lease {
        let ids = guard.ids().into();
        let (state, _) = watch::channel(State::Held);
        let shared = Arc::new(Shared {
            guard: Mutex::new(Some(guard)),
            state,
        });
        let checker = tokio::spawn(check(Arc::clone(&shared), check_every));
        tracing::debug!(ids = ?ids, "alock: lease taken");
        Lease {
            shared,
            checker,
            ids,
            options: LeaseOptions { check_every },
        }
    }

    /// Whether the lease is held, from what the last check found: no round
    /// trip.
    pub fn is_held(&self) -> bool {
        *self.shared.state.borrow() == State::Held
    }

    /// Completes when the lease is lost, with the cause; never, if it is
    /// released first.
    ///
    /// # Cancel safety
    ///
    /// A wait: dropping the future changes nothing.
    pub fn lost(&self) -> impl Future<Output = LostCause> + Send + use<> {
        self.watch().lost()
    }

    /// A cloneable handle that other tasks can wait on for the loss.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch(self.shared.state.subscribe())
    }

    /// The ids, in lock order.
    pub fn ids(&self) -> &[LockId] {
        &self.ids
    }

    /// The options the lease was taken with, and so its detection bound.
    pub fn options_used(&self) -> &LeaseOptions {
        &self.options
    }

    /// The lease's connection, to run queries on the session that holds
    /// the lock. Checks wait while it is borrowed, and a check that cannot
    /// be made within the check interval counts as a loss
    /// ([`LostCause::Unresponsive`]): keep borrows shorter than that.
    ///
    /// A statement run here commits, if at all, while its session holds the
    /// ids. When the session ends during a statement, the statement may
    /// have committed without its answer reaching you; ask the server to
    /// know.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] once the lease is lost: its connection was
    /// closed.
    pub async fn connection(&self) -> Result<MappedMutexGuard<'_, PgConnection>, Error> {
        let guard = self.shared.guard.lock().await;
        if !self.is_held() {
            return Err(Error::LeaseLost(self.cause()));
        }
        MutexGuard::try_map(guard, |g| g.as_mut().map(|g| g.connection()))
            .map_err(|_| Error::LeaseLost(self.cause()))
    }

    fn cause(&self) -> LostCause {
        match &*self.shared.state.borrow() {
            State::Lost(cause) => cause.clone(),
            _ => LostCause::SessionEnded,
        }
    }

    /// Releases the ids and returns the connection to its pool.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when the lease was lost before; otherwise as for
    /// [`LockGuard::release`].
    pub async fn release(self) -> Result<(), Error> {
        let guard = self.shared.guard.lock().await.take();
        self.shared.state.send_if_modified(|state| {
            let held = *state == State::Held;
            if held {
                *state = State::Released;
            }
            held
        });
        self.checker.abort();
        match guard {
            // Found lost, but not closed yet: the loss stands.
            Some(mut guard) if !matches!(*self.shared.state.borrow(), State::Released) => {
                guard.close_connection();
                Err(Error::LeaseLost(self.cause()))
            }
            Some(guard) => guard.release().await,
            None => Err(Error::LeaseLost(self.cause())),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The guard goes with the last reference to it, when the checker
        // has stopped: a guard's drop releases its ids.
        self.checker.abort();
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("ids", &self.ids)
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

/// A cloneable handle on a [`Lease`], to wait for its loss in other tasks.
#[derive(Debug, Clone)]
pub struct LeaseWatch(watch::Receiver<State>);

impl LeaseWatch {
    /// Whether the lease is held, from what the last check found.
    pub fn is_held(&self) -> bool {
        *self.0.borrow() == State::Held
    }

    /// Completes when the lease is lost, with the cause; never, if it is
    /// released first.
    ///
    /// # Cancel safety
    ///
    /// A wait: dropping the future changes nothing.
    pub fn lost(&self) -> impl Future<Output = LostCause> + Send + use<> {
        let mut state = self.0.clone();
        async move {
            loop {
                match &*state.borrow_and_update() {
                    State::Lost(cause) => return cause.clone(),
                    State::Released => break,
                    State::Held => {}
                }
                if state.changed().await.is_err() {
                    break;
                }
            }
            std::future::pending().await
        }
    }
}

/// The checker: every `every`, asks the server whether the session still
/// holds the ids, and ends the lease on the first answer that it does not,
/// or none within `every`.
async fn check(shared: Arc<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        // Waiting for a borrowed connection counts against the same
        // interval as the answer: a lease that cannot be checked in time
        // cannot be vouched for.
        let checked = tokio::time::timeout(every, async {
            let mut slot = shared.guard.lock().await;
            match slot.as_mut() {
                Some(guard) => Some(guard.check().await),
                None => None,
            }
        })
        .await;
        let cause = match checked {
            Ok(None) => return,
            Ok(Some(Ok(true))) => continue,
            Ok(Some(Ok(false))) => LostCause::NotHeld,
            Ok(Some(Err(Error::SessionChanged { .. }))) => LostCause::SessionChanged,
            Ok(Some(Err(e))) if e.is_connection_lost() => LostCause::SessionEnded,
            Ok(Some(Err(e))) => LostCause::CheckFailed(e.to_string()),
            Err(_) => LostCause::Unresponsive,
        };
        // Said first, so that whoever borrows the connection lets go of it
        // (a leader's work is dropped); then whatever the session still
        // holds goes with the connection, closed rather than returned.
        tracing::warn!(cause = %cause, "alock: lease lost");
        shared.state.send_replace(State::Lost(cause));
        if let Some(mut guard) = shared.guard.lock().await.take() {
            guard.close_connection();
        }
        return;
    }
}
