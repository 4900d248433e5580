//! Leader election: four instances campaign for one key; exactly one leads.
//! The example kills the leader's backend three times, and each time a new
//! term begins within the lease's bound: another instance, or the one whose
//! backend was killed, campaigning again on a new connection.
//!
//! ```sh
//! cargo run --example leader
//! ```
//!
//! With `DATABASE_URL` unset it starts the same throwaway PostgreSQL the
//! tests use. It exits 0 when a new term began after every kill and no two
//! instances ever led at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alock::{Lease, LockId};
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;

const INSTANCES: usize = 4;
const KILLS: usize = 3;

/// Who leads now: an instance number, or none; how many terms began; and
/// how often two led.
#[derive(Default)]
struct Board {
    leader: std::sync::Mutex<Option<usize>>,
    terms: AtomicUsize,
    overlaps: AtomicUsize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = LockId::from_name(&format!("alock-example-leader-{}", std::process::id()));
    let options = Lease::options().check_every(Duration::from_millis(250));
    let bound = options.detection_bound();
    let board = Arc::new(Board::default());
    let (stop, stopped) = watch::channel(false);

    let mut instances = Vec::new();
    for me in 0..INSTANCES {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(alock_dev::database_url())
            .await?;
        let (options, board, mut stopped) = (options.clone(), board.clone(), stopped.clone());
        instances.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            options
                .lead(&pool, key, stop, |_lease: Arc<Lease>| {
                    let board = board.clone();
                    async move {
                        // Leading until this future is dropped.
                        let _term = Term::begin(board, me);
                        std::future::pending::<()>().await
                    }
                })
                .await
        }));
    }

    let mut observer = alock_dev::connect().await;
    let started = Instant::now();
    let mut first = wait_for_leader(&board, 0, Duration::from_secs(30)).await?;
    println!("instance {first} leads ({:.1?})", started.elapsed());
    for _ in 0..KILLS {
        let [pid] = alock_dev::holders(&mut observer, key).await[..] else {
            return Err("one instance holds the key".into());
        };
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut observer)
            .await?;
        let terms = board.terms.load(Ordering::SeqCst);
        let killed = Instant::now();
        println!("killed the backend of instance {first} (pid {pid})");
        // The old leader stops within the bound; the new one takes the lock
        // as soon as the server frees it, then waits out the bound before it
        // acts.
        let next = wait_for_leader(&board, terms, bound * 3 + Duration::from_secs(5)).await?;
        println!(
            "instance {next} leads, {:.1?} after the kill: it took the lock at once, \
             then waited out the {bound:?} detection bound before acting",
            killed.elapsed()
        );
        first = next;
    }

    stop.send(true)?;
    for instance in instances {
        instance.await??;
    }
    let overlaps = board.overlaps.load(Ordering::SeqCst);
    println!("two instances led at once: {overlaps} times");
    if overlaps > 0 {
        return Err("two instances led at once".into());
    }
    println!("ok: a new term began after every kill, and one instance led at a time");
    Ok(())
}

/// One instance's time as leader, recorded on the board.
struct Term {
    board: Arc<Board>,
}

impl Term {
    fn begin(board: Arc<Board>, me: usize) -> Term {
        let mut leader = board.leader.lock().unwrap();
        if leader.is_some() {
            board.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *leader = Some(me);
        board.terms.fetch_add(1, Ordering::SeqCst);
        drop(leader);
        Term { board }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        *self.board.leader.lock().unwrap() = None;
    }
}

/// Waits until an instance leads in a term that began after the first
/// `terms` terms.
async fn wait_for_leader(
    board: &Board,
    terms: usize,
    limit: Duration,
) -> Result<usize, Box<dyn std::error::Error>> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(leader) = *board.leader.lock().unwrap()
            && board.terms.load(Ordering::SeqCst) > terms
        {
            return Ok(leader);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("no new leader within {limit:?}").into())
}
