//! `alock run`: a command run while the tool's session holds a lock.
//!
//! The lock is a session-level lock on the tool's own connection, so it is
//! held exactly as long as that session: released when the command exits,
//! and by the server when the tool dies, however it dies. While the command
//! runs, the tool checks every second that its session still holds the
//! lock; if the session was ended (an operator, `idle_session_timeout`, a
//! broken network), it says so, sends the command SIGTERM and exits 69.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use alock::{AdvisoryLockExt, KeyNames, LockId, LockQuery};
use sqlx::PgConnection;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::keys::KeyArgs;
use crate::{EX_TEMPFAIL, EX_UNAVAILABLE, Failure};

/// How often the tool asks whether its session still holds the lock.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    keys: KeyArgs,

    /// Take the lock in shared mode: other shared holders may run at the
    /// same time; exclusive ones may not
    #[arg(long)]
    shared: bool,

    /// Do not wait: exit 75 at once if the lock is busy
    #[arg(long, conflicts_with = "timeout")]
    no_wait: bool,

    /// Wait at most SECS for the lock, then exit 75
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs)]
    timeout: Option<Duration>,

    /// The command to run, and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub async fn main(url: Option<String>, args: Args) -> Result<ExitCode, Failure> {
    let ids = args.keys.required_ids()?;
    let names = args.keys.names();
    // Installed before anything can wait, so that no signal meant for the
    // command is lost, and none kills the tool while it holds the lock and
    // the command runs on.
    let mut signals = Signals::new()?;

    let program = args.command[0].to_string_lossy();
    let mut conn = crate::connect(url, &format!("alock run {program}")).await?;

    let taken = tokio::select! {
        taken = acquire(&mut conn, &ids, &args) => taken,
        signo = signals.recv() => return Ok(died_of(signo)),
    };
    let guard = match taken {
        Ok(Some(guard)) => guard,
        // Moved as a whole and mapped to a value that borrows nothing, so
        // that the connection is free again for the message.
        not_held => match not_held.map(|_| ()) {
            Ok(()) => {
                let why = match args.timeout {
                    Some(t) => format!("gave up after {}s (--timeout)", t.as_secs_f64()),
                    None => "not waiting (--no-wait)".to_owned(),
                };
                let holders = holders(&mut conn, &ids, &names).await;
                let is = if ids.len() > 1 { "are" } else { "is" };
                eprintln!("alock: {} {is} busy{holders}; {why}", list(&ids, &names));
                return Ok(ExitCode::from(EX_TEMPFAIL));
            }
            // A bad argument, refused before anything reached the server.
            Err(e @ (alock::Error::TimeoutTooLong(_) | alock::Error::InvalidKeys(_))) => {
                return Err(Failure::usage(format!("cannot take the lock: {e}")));
            }
            Err(e) => return Err(Failure::server(format!("cannot take the lock: {e}"))),
        },
    };

    let mut child = match tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("alock: cannot run {program}: {e}");
            // Released before exiting, so that the lock is free once the
            // tool has exited, not only once the server notices its
            // session ended.
            if let Err(e) = guard.release().await {
                eprintln!("alock: the lock was not held until now: {e}");
            }
            let status = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(ExitCode::from(status));
        }
    };
    // The session is asked every CHECK_EVERY whether it still holds the
    // lock (which also keeps it from looking idle to idle_session_timeout):
    // a lock lost while the command runs is said at once, and the command
    // is told to stop.
    let mut guard = guard;
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.tick().await;
    let mut lost = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signo = signals.recv() => forward(&child, signo),
            _ = checks.tick(), if !lost => {
                let why = match tokio::time::timeout(CHECK_EVERY, guard.held_on_server()).await {
                    Ok(Ok(true)) => continue,
                    Ok(Ok(false)) => "the session no longer holds it".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "the server stopped answering".to_owned(),
                };
                eprintln!("alock: the lock was lost while {program} ran ({why}); stopping it");
                lost = true;
                forward(&child, SignalKind::terminate().as_raw_value());
            }
        }
    };
    let status = match status {
        Ok(status) => exit_code(status),
        Err(e) => return Err(Failure::server(format!("cannot wait for {program}: {e}"))),
    };
    if lost {
        return Ok(ExitCode::from(EX_UNAVAILABLE));
    }

    match guard.release().await {
        Ok(()) => Ok(status),
        Err(e) => {
            eprintln!("alock: the lock was not held until {program} ended: {e}");
            Ok(if status == ExitCode::SUCCESS {
                ExitCode::from(EX_UNAVAILABLE)
            } else {
                status
            })
        }
    }
}

async fn acquire<'c>(
    conn: &'c mut PgConnection,
    ids: &[LockId],
    args: &Args,
) -> Result<Option<alock::LockGuard<&'c mut PgConnection>>, alock::Error> {
    match (args.shared, args.no_wait, args.timeout) {
        (false, true, _) => conn.try_lock_exclusive(ids).await,
        (true, true, _) => conn.try_lock_shared(ids).await,
        (false, false, Some(t)) => conn.lock_exclusive_timeout(ids, t).await,
        (true, false, Some(t)) => conn.lock_shared_timeout(ids, t).await,
        (false, false, None) => conn.lock_exclusive(ids).await.map(Some),
        (true, false, None) => conn.lock_shared(ids).await.map(Some),
    }
}

fn list(ids: &[LockId], names: &KeyNames) -> String {
    let shown: Vec<String> = ids
        .iter()
        .map(|id| names.display(*id).to_string())
        .collect();
    shown.join(", ")
}

/// ", held by pid 12 (worker, exclusive)" for the message of a busy lock, or nothing
/// when the holders cannot be read (or let go in the meantime).
async fn holders(conn: &mut PgConnection, ids: &[LockId], names: &KeyNames) -> String {
    let Ok(query) = LockQuery::keys(ids) else {
        return String::new();
    };
    let Ok(locks) = alock::locks(conn, &query).await else {
        return String::new();
    };
    let held: Vec<String> = locks
        .iter()
        .filter(|lock| lock.granted)
        .map(|lock| {
            let pid = lock
                .pid
                .map_or("a prepared transaction".to_owned(), |p| format!("pid {p}"));
            let app = match lock.application_name.as_deref() {
                Some(app) if !app.is_empty() => format!("{app}, "),
                _ => String::new(),
            };
            let on = if ids.len() > 1 {
                format!(" on {}", names.display(lock.key))
            } else {
                String::new()
            };
            format!("{pid} ({app}{}){on}", lock.mode)
        })
        .collect();
    if held.is_empty() {
        String::new()
    } else {
        format!(", held by {}", held.join(", "))
    }
}

/// The status the tool exits with for the command's: its exit code, or
/// 128 + N when signal N ended it, as a shell reports it.
fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signo)) => died_of(signo),
        (None, None) => ExitCode::FAILURE,
    }
}

fn died_of(signo: i32) -> ExitCode {
    ExitCode::from(128_u8.wrapping_add(signo as u8))
}

/// Passes a signal the tool received on to the command, unless the command
/// has it already.
///
/// The command runs in the tool's process group, so that it can read the
/// terminal; a Ctrl-C or Ctrl-\ at the terminal signals that whole group,
/// the command included, and is not sent a second time.
///
/// Sent with rustix's `kill`, a safe wrapper of kill(2): std's
/// `ChildExt::send_signal` is unstable, libc's `kill` is an `unsafe` call
/// (forbidden in this crate), and running `kill(1)` would need a shell
/// utility in the image and a process per signal. The command has not been
/// reaped while `child.wait()` has not returned, so its pid cannot have been
/// reused.
fn forward(child: &tokio::process::Child, signo: i32) {
    let keyboard = [SignalKind::interrupt(), SignalKind::quit()];
    if keyboard.iter().any(|k| k.as_raw_value() == signo) && in_the_foreground() {
        return;
    }
    let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    else {
        return;
    };
    let Some(signal) = rustix::process::Signal::from_named_raw(signo) else {
        return;
    };
    // The command may have exited already: then there is no one to tell.
    let _ = rustix::process::kill_process(pid, signal);
}

/// Whether the tool's process group is the foreground group of its
/// controlling terminal, which gets the terminal's keyboard signals.
fn in_the_foreground() -> bool {
    std::fs::File::open("/dev/tty")
        .and_then(|tty| Ok(rustix::termios::tcgetpgrp(&tty)?))
        .is_ok_and(|group| group == rustix::process::getpgrp())
}

/// The signals the tool passes on: those that ask a process to stop.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Signals {
    fn new() -> Result<Signals, Failure> {
        let listen = |kind: SignalKind| {
            signal(kind).map_err(|e| Failure::server(format!("cannot handle signals: {e}")))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
            quit: listen(SignalKind::quit())?,
        })
    }

    /// The next signal received, as its number.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => SignalKind::interrupt().as_raw_value(),
            _ = self.terminate.recv() => SignalKind::terminate().as_raw_value(),
            _ = self.hangup.recv() => SignalKind::hangup().as_raw_value(),
            _ = self.quit.recv() => SignalKind::quit().as_raw_value(),
        }
    }
}
