//! `alock`: see and take PostgreSQL advisory locks from the shell.
//!
//! - `alock locks` lists who holds and who waits for which key, with the
//!   blocking chains as a tree ([`show`]).
//! - `alock run --key K -- CMD` runs a command while holding a lock
//!   ([`run`]).
//!
//! Exit statuses follow `sysexits.h`, so that scripts can tell a busy lock
//! (75, try again later) from a mistake (64) or an unreachable server (69);
//! `run` otherwise exits with its command's status.
#![forbid(unsafe_code)]

mod keys;
mod run;
mod show;

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// EX_USAGE: a mistake on the command line.
const EX_USAGE: u8 = 64;
/// EX_UNAVAILABLE: no server, or the server refused.
const EX_UNAVAILABLE: u8 = 69;
/// EX_TEMPFAIL: the lock could not be had now; trying again later may work.
const EX_TEMPFAIL: u8 = 75;

/// See and take PostgreSQL advisory locks.
///
/// The server is given by --url or the DATABASE_URL environment variable,
/// as a postgres:// URL.
#[derive(Debug, Parser)]
#[command(name = "alock", version)]
struct Cli {
    /// The server, as postgres://user:password@host:port/database
    /// [default: $DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the advisory locks held and awaited in the database, with who
    /// blocks whom.
    Locks(show::Args),
    /// Run a command while holding an advisory lock, released when it exits.
    ///
    /// Exits with the command's status (128 + N if signal N ended it), or 75
    /// when the lock could not be had (--no-wait, --timeout). SIGTERM,
    /// SIGHUP, SIGINT and SIGQUIT sent to alock are passed on to the command
    /// (a Ctrl-C at the terminal reaches both at once, and is not sent
    /// twice). If alock itself is killed, the server releases the lock with
    /// its session, and the command runs on without it.
    Run(run::Args),
}

/// Why the tool stops before it could do its job: one line on stderr, and
/// an exit status.
#[derive(Debug)]
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: EX_USAGE,
            message: message.into(),
        }
    }

    fn server(message: impl Into<String>) -> Failure {
        Failure {
            status: EX_UNAVAILABLE,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return fail(Failure::usage(one_line(&e.to_string()))),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("BUG: a current-thread runtime builds");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Locks(args) => show::main(cli.url, args).await,
            Command::Run(args) => run::main(cli.url, args).await,
        }
    });
    match outcome {
        Ok(status) => status,
        Err(failure) => fail(failure),
    }
}

fn fail(failure: Failure) -> ExitCode {
    eprintln!("alock: {}", failure.message);
    ExitCode::from(failure.status)
}

/// clap's message up to its usage section, on one line:
/// "error: the following required arguments were not provided:\n  --key"
/// becomes "the following required arguments were not provided: --key".
fn one_line(rendered: &str) -> String {
    let message = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see 'alock --help')")
}

/// A new session on the server, named `application_name` in
/// `pg_stat_activity` (and so in `alock locks`).
async fn connect(url: Option<String>, application_name: &str) -> Result<PgConnection, Failure> {
    let url = match url {
        Some(url) => url,
        None => match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                return Err(Failure::usage(
                    "no server given: pass --url or set DATABASE_URL",
                ));
            }
        },
    };
    let options = PgConnectOptions::from_str(&url)
        .map_err(|e| Failure::usage(format!("invalid server URL: {e}")))?
        .application_name(application_name);
    // A server that drops packets would otherwise keep the tool in the TCP
    // handshake for minutes.
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failure::server(format!(
            "cannot connect to the server: {e}"
        ))),
        Err(_) => Err(Failure::server(format!(
            "cannot connect to the server: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A number of seconds, such as `1` or `0.5`.
fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs = f64::from_str(text).map_err(|_| format!("'{text}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is not a number of seconds"))
}
