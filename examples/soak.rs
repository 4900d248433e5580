//! The model-based fault test (`src/model.rs`) for as long as you like:
//! sequences with fresh seeds until the time is up, each seed printed, the
//! report of the first failure printed in full.
//!
//! ```sh
//! cargo run --release --example soak -- --minutes 10
//! cargo run --release --example soak -- --minutes 60 --steps 500 --parallel 3
//! ```
//!
//! Exits with status 1 on the first failure; rerun its seed with
//! `ALOCK_MODEL_SEED=<seed> cargo test --test it model::`. With `DATABASE_URL`
//! unset it starts the same throwaway PostgreSQL the tests use.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alock_dev::model;

/// What the command line asked for.
struct Options {
    minutes: f64,
    steps: usize,
    parallel: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        minutes: 1.0,
        steps: 300,
        parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--minutes" => {
                options.minutes = value("--minutes")?
                    .parse()
                    .map_err(|e| format!("--minutes: {e}"))?;
            }
            "--steps" => {
                options.steps = value("--steps")?
                    .parse()
                    .map_err(|e| format!("--steps: {e}"))?;
            }
            "--parallel" => {
                options.parallel = value("--parallel")?
                    .parse()
                    .map_err(|e| format!("--parallel: {e}"))?;
            }
            "-h" | "--help" => {
                return Err("usage: soak [--minutes N] [--steps N] [--parallel N]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if options.minutes.is_nan()
        || options.minutes <= 0.0
        || options.steps == 0
        || options.parallel == 0
    {
        return Err("--minutes, --steps and --parallel must be positive".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let budget = Duration::from_secs_f64(options.minutes * 60.0);
    println!(
        "soak: {} minute(s), sequences of {} steps, {} at a time, on {}",
        options.minutes,
        options.steps,
        options.parallel,
        alock_dev::database_url()
    );
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let passed = Arc::new(AtomicUsize::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let workers: Vec<_> = (0..options.parallel)
        .map(|_| {
            let (stop, passed, failure) = (stop.clone(), passed.clone(), failure.clone());
            let steps = options.steps;
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && started.elapsed() < budget {
                    let seed = model::fresh_seed();
                    let began = Instant::now();
                    match model::run(seed, steps) {
                        Ok(()) => {
                            let n = passed.fetch_add(1, Ordering::SeqCst) + 1;
                            println!(
                                "soak: seed {seed} passed in {:.1} s ({n} sequences, {:.0} s of {:.0} s)",
                                began.elapsed().as_secs_f64(),
                                started.elapsed().as_secs_f64(),
                                budget.as_secs_f64()
                            );
                        }
                        Err(report) => {
                            println!("soak: seed {seed} FAILED");
                            stop.store(true, Ordering::SeqCst);
                            let mut first = failure.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert(report);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        if worker.join().is_err() {
            stop.store(true, Ordering::SeqCst);
            failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| "a soak thread panicked".into());
        }
    }
    let passed = passed.load(Ordering::SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    match failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(report) => {
            eprintln!("{report}");
            eprintln!("soak: FAILED after {passed} passing sequences in {elapsed:.0} s");
            ExitCode::FAILURE
        }
        None => {
            println!(
                "soak: {passed} sequences of {} steps passed in {elapsed:.0} s",
                options.steps
            );
            ExitCode::SUCCESS
        }
    }
}
