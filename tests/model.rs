//! The model-based fault test (`src/model.rs`): random sequences of lock
//! calls under faults, on three sessions, checked after every step against
//! a model of what each session must hold.
//!
//! Each sequence prints its seed. `ALOCK_MODEL_SEED=<seed> cargo test --test
//! model` reruns one (`ALOCK_MODEL_STEPS` sets its length), and
//! `cargo run --release --example soak -- --minutes N` runs many more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alock_dev::model;

/// How long the fresh seeds run, in all: well under a minute in a debug
/// build on two cores.
const BUDGET: Duration = Duration::from_secs(34);
/// Steps per sequence.
const STEPS: usize = 150;
/// Sequences at a time (each on three sessions of its own).
const PARALLEL: usize = 2;

fn steps() -> usize {
    std::env::var("ALOCK_MODEL_STEPS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(STEPS)
}

#[test]
fn random_sequences_of_calls_under_faults_keep_every_promise() {
    if let Some(seed) = model::seed_from_env() {
        let steps = steps();
        eprintln!("model: seed {seed}, {steps} steps (from ALOCK_MODEL_SEED)");
        if let Err(report) = model::run(seed, steps) {
            panic!("{report}");
        }
        return;
    }
    // The server starts once, before the clock does.
    let _ = alock_dev::database_url();
    let started = Instant::now();
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let failed = failed.clone();
            std::thread::spawn(move || {
                let mut runs = 0;
                let mut longest = Duration::ZERO;
                while !failed.load(Ordering::SeqCst) && started.elapsed() + longest < BUDGET {
                    let seed = model::fresh_seed();
                    eprintln!("model: seed {seed}");
                    let began = Instant::now();
                    if let Err(report) = model::run(seed, steps()) {
                        failed.store(true, Ordering::SeqCst);
                        return Err(report);
                    }
                    longest = longest.max(began.elapsed());
                    runs += 1;
                }
                Ok(runs)
            })
        })
        .collect();
    let mut runs = 0;
    let mut reports = Vec::new();
    for worker in workers {
        match worker.join().expect("a model thread panicked") {
            Ok(n) => runs += n,
            Err(report) => reports.push(report),
        }
    }
    eprintln!(
        "model: {runs} sequences of {} steps passed in {:.1} s",
        steps(),
        started.elapsed().as_secs_f64()
    );
    assert!(reports.is_empty(), "{}", reports.join("\n\n"));
    assert!(runs > 0, "no sequence ran");
}
