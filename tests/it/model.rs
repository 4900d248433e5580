//! The model-based fault test (`src/model.rs`): random sequences of lock
//! calls under faults, on three sessions, checked after every step against
//! a model of what each session must hold.
//!
//! Each sequence prints its seed. `ALOCK_MODEL_SEED=<seed> cargo test --test
//! model` reruns one (`ALOCK_MODEL_STEPS` sets its length), and
//! `cargo run --release --example soak -- --minutes N` runs many more.
//!
//! Fresh seeds run for [`BUDGET`] by default, so that a warm `cargo test`
//! stays quick; `ALOCK_MODEL_SECONDS` sets another budget and
//! `ALOCK_MODEL_SEQUENCES` a cap on the number of sequences (`.ci/run` sets both).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alock_dev::model;

/// How long the fresh seeds run, in all, unless `ALOCK_MODEL_SECONDS` says
/// otherwise: a sequence or so per thread.
const BUDGET: Duration = Duration::from_secs(5);
/// How often a long run says how far it got, past the test harness's
/// capture, so a CI log never goes quiet for long.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
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

fn budget() -> Duration {
    std::env::var("ALOCK_MODEL_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(BUDGET, Duration::from_secs_f64)
}

fn max_sequences() -> usize {
    std::env::var("ALOCK_MODEL_SEQUENCES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX)
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
    let (budget, max) = (budget(), max_sequences());
    let started = Instant::now();
    let failed = Arc::new(AtomicBool::new(false));
    let claimed = Arc::new(AtomicUsize::new(0));
    let passed = Arc::new(AtomicUsize::new(0));
    let last_report = Arc::new(Mutex::new(started));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (failed, claimed) = (failed.clone(), claimed.clone());
            let (passed, last_report) = (passed.clone(), last_report.clone());
            std::thread::spawn(move || {
                let mut runs = 0;
                let mut longest = Duration::ZERO;
                while !failed.load(Ordering::SeqCst)
                    && started.elapsed() + longest < budget
                    && claimed.fetch_add(1, Ordering::SeqCst) < max
                {
                    let seed = model::fresh_seed();
                    eprintln!("model: seed {seed}");
                    let began = Instant::now();
                    if let Err(report) = model::run(seed, steps()) {
                        failed.store(true, Ordering::SeqCst);
                        return Err(report);
                    }
                    longest = longest.max(began.elapsed());
                    runs += 1;
                    let done = passed.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut reported = last_report.lock().unwrap();
                    if reported.elapsed() >= PROGRESS_EVERY {
                        *reported = Instant::now();
                        // Straight to stderr: `eprintln!` is captured until the test ends.
                        let _ = writeln!(
                            std::io::stderr(),
                            "model: {done} sequences passed in {:.0} s of {:.0} s",
                            started.elapsed().as_secs_f64(),
                            budget.as_secs_f64()
                        );
                    }
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
