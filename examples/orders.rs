//! The project's main job in miniature: several workers process the same
//! orders at the same time, and an advisory lock on each order's derived key
//! makes sure that no order is processed twice. Even workers lock through a
//! connection they keep; odd ones take a guard from the pool for each order,
//! which owns its pooled connection. Both are the same `LockGuard`.
//!
//! ```sh
//! cargo run --example orders
//! ```
//!
//! With `DATABASE_URL` unset it starts the same throwaway PostgreSQL the
//! tests use. It creates (and recreates) one table, `alock_example_orders`.

use std::time::{Duration, Instant};

use alock::prelude::*;
use alock::{GuardConnection, LockGuard};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

/// An order, as stored; its advisory key is (namespace "orders", id).
#[derive(Debug, sqlx::FromRow, AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct Order {
    #[advisory_key(id)]
    id: i32,
    state: String,
}

const ORDERS: i32 = 200;
const WORKERS: usize = 6;

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    /// Orders this worker processed.
    processed: u32,
    /// Times it found an order locked by another worker and waited.
    lock_waits: u32,
    /// Times it waited for an order's lock and then found the order done:
    /// without the lock, both workers would have processed it.
    conflicts_avoided: u32,
    /// Orders it found already done, without waiting.
    already_done: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let pool = PgPoolOptions::new()
        .max_connections(WORKERS as u32 + 1)
        .connect(alock_dev::database_url())
        .await?;
    create_orders(&pool).await?;

    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let pool = pool.clone();
            tokio::spawn(async move { work(worker, pool).await })
        })
        .collect();
    let mut total = Tally::default();
    for (worker, handle) in workers.into_iter().enumerate() {
        let tally = handle.await??;
        println!(
            "worker {worker}: processed {:>3}, waited for a lock {:>2} times \
             ({:>2} of them for an order then found done), skipped {:>3} done orders",
            tally.processed, tally.lock_waits, tally.conflicts_avoided, tally.already_done
        );
        total.processed += tally.processed;
        total.lock_waits += tally.lock_waits;
        total.conflicts_avoided += tally.conflicts_avoided;
    }

    let (done, twice): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'done'),
                count(*) FILTER (WHERE times_processed > 1)
           FROM alock_example_orders",
    )
    .fetch_one(&pool)
    .await?;
    println!();
    println!("orders processed:   {} of {ORDERS}", total.processed);
    println!("lock waits:         {}", total.lock_waits);
    println!("conflicts avoided:  {}", total.conflicts_avoided);
    println!("orders done:        {done}");
    println!("processed twice:    {twice}");
    println!("took:               {:.2?}", started.elapsed());
    if done != i64::from(ORDERS) || twice != 0 || total.processed != ORDERS as u32 {
        return Err("an order was processed twice, or not at all".into());
    }
    println!("ok: every order was processed exactly once");
    Ok(())
}

async fn create_orders(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS alock_example_orders;
         CREATE TABLE alock_example_orders (
             id int PRIMARY KEY,
             state text NOT NULL DEFAULT 'pending',
             processed_by int,
             times_processed int NOT NULL DEFAULT 0
         )",
    )
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO alock_example_orders (id) SELECT generate_series(1, $1)")
        .bind(ORDERS)
        .execute(pool)
        .await?;
    Ok(())
}

/// Goes through every order, in an order of its own, and processes those
/// still pending, each under the order's advisory lock.
async fn work(worker: usize, pool: PgPool) -> Result<Tally, alock::Error> {
    let mut kept = pool.acquire().await?;
    let mut tally = Tally::default();
    for id in visiting_order(worker) {
        let order = Order {
            id,
            state: String::new(),
        };
        // Waits, on the server, while another worker holds this order.
        let (waited, processed) = if worker.is_multiple_of(2) {
            let guard = kept.lock_exclusive(&order).await?;
            under_lock(worker, guard, id).await?
        } else {
            let guard = pool.lock_exclusive(&order).await?;
            under_lock(worker, guard, id).await?
        };
        tally.lock_waits += u32::from(waited);
        if processed {
            tally.processed += 1;
        } else if waited {
            tally.conflicts_avoided += 1;
        } else {
            tally.already_done += 1;
        }
    }
    Ok(tally)
}

/// Processes the order its guard locks, then releases the lock: whether
/// taking it waited, and whether the order was processed.
async fn under_lock<C: GuardConnection>(
    worker: usize,
    mut guard: LockGuard<C>,
    id: i32,
) -> Result<(bool, bool), alock::Error> {
    let processed = process(worker, &mut guard, id).await?;
    let waited = guard.waited();
    guard.release().await?;
    Ok((waited, processed))
}

/// Processes one order if it is still pending; the caller holds its lock.
async fn process(worker: usize, conn: &mut PgConnection, id: i32) -> Result<bool, sqlx::Error> {
    let order: Order = sqlx::query_as("SELECT id, state FROM alock_example_orders WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    if order.state != "pending" {
        return Ok(false);
    }
    // The work itself: slow enough that workers meet on the same orders.
    tokio::time::sleep(Duration::from_millis(2)).await;
    sqlx::query(
        "UPDATE alock_example_orders
            SET state = 'done', processed_by = $2, times_processed = times_processed + 1
          WHERE id = $1",
    )
    .bind(order.id)
    .bind(worker as i32)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Every order id once, in an order that differs between workers (half go
/// up, half go down, each from its own starting point), so that they collide.
fn visiting_order(worker: usize) -> Vec<i32> {
    let start = (worker as i32 * ORDERS) / WORKERS as i32;
    let mut ids: Vec<i32> = (0..ORDERS).map(|i| (start + i) % ORDERS + 1).collect();
    if worker % 2 == 1 {
        ids.reverse();
    }
    ids
}
