//! The `alock` tool, run as a user runs it: the built binary against the
//! throwaway server, each test on keys of its own.
//!
//! These tests live in the `alock` package because only a package's own
//! tests can name its binaries (`CARGO_BIN_EXE_alock`); the server comes
//! from the workspace's harness, `alock-dev`. They need the `cli` feature,
//! which `cargo test --workspace` enables through the root package.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use alock::LockId;
use alock::prelude::*;
use alock_dev::{
    backend_pid, connect, database_url, hold_elsewhere, is_free, unique_key, until_waiting,
};
use sqlx::Connection;
use tokio::process::Command;

/// The tool, pointed at the shared server through `DATABASE_URL`.
fn alock(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alock"));
    command
        .args(args)
        .env("DATABASE_URL", database_url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the tool to its end, within a minute.
async fn output(args: &[&str]) -> Output {
    within(alock(args).output()).await.expect("run alock")
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("alock did not finish within a minute")
}

/// A lock name no other test (in any process) uses.
fn unique_name(what: &str) -> String {
    let LockId::Int4Pair(process, n) = unique_key() else {
        unreachable!()
    };
    format!("alock-cli-test-{process}-{n}-{what}")
}

fn pair_arg(key: LockId) -> String {
    let LockId::Int4Pair(a, b) = key else {
        unreachable!()
    };
    format!("{a},{b}")
}

fn temp_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits until `path` exists with content: the command under the tool has
/// started.
async fn until_written(path: &PathBuf) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_free(key: LockId) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_free(key).await {
        assert!(Instant::now() < deadline, "{key} was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_runs_on_the_same_key_never_overlap() {
    let name = unique_name("serialize");
    let log = temp_file(&format!("{name}.log"));
    let script = format!(
        "echo start $(date +%s.%N) >> '{log}'; sleep 0.3; echo end $(date +%s.%N) >> '{log}'",
        log = log.display()
    );
    let run = || alock(&["run", "--key", &name, "--", "sh", "-c", &script]).output();
    let (first, second) = within(async { tokio::join!(run(), run()) }).await;
    for output in [first.unwrap(), second.unwrap()] {
        assert!(output.status.success(), "{}", stderr(&output));
    }

    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<(&str, f64)> = text
        .lines()
        .map(|line| {
            let (what, at) = line.split_once(' ').unwrap();
            (what, at.parse().unwrap())
        })
        .collect();
    let order: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(order, ["start", "end", "start", "end"], "{text}");
    assert!(
        events[2].1 >= events[1].1,
        "the second began before the first ended: {text}"
    );
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn no_wait_on_a_busy_key_exits_75_at_once_and_names_the_holder() {
    let name = unique_name("no-wait");
    // `--key NAME` locks what sqlx's PgAdvisoryLock::new(NAME) locks.
    let mut holder = hold_elsewhere(LockId::from_name(&name)).await;
    let holder_pid = backend_pid(&mut holder).await;

    let started = Instant::now();
    let output = output(&["run", "--no-wait", "--key", &name, "--", "echo", "ran"]).await;

    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "the command ran");
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains(&name) && message.contains(&format!("pid {holder_pid}")),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    holder.close().await.unwrap();
}

#[tokio::test]
async fn a_timeout_on_a_busy_key_exits_75_once_it_has_passed() {
    let key = unique_key();
    let holder = hold_elsewhere(key).await;

    let started = Instant::now();
    let output = output(&[
        "run",
        "--timeout",
        "1",
        "--pair",
        &pair_arg(key),
        "--",
        "echo",
        "ran",
    ])
    .await;

    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "the command ran");
    assert!(
        stderr(&output).contains("gave up after 1s"),
        "{}",
        stderr(&output)
    );
    assert!(
        elapsed >= Duration::from_millis(950),
        "gave up after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "gave up after {elapsed:?}"
    );
    holder.close().await.unwrap();
}

#[tokio::test]
async fn the_commands_exit_status_passes_through() {
    let key = unique_key();
    let pair = pair_arg(key);
    let exits = output(&["run", "--pair", &pair, "--", "sh", "-c", "exit 7"]).await;
    assert_eq!(exits.status.code(), Some(7), "{}", stderr(&exits));

    let killed = output(&["run", "--pair", &pair, "--", "sh", "-c", "kill -TERM $$"]).await;
    assert_eq!(killed.status.code(), Some(128 + 15), "{}", stderr(&killed));

    let missing = output(&["run", "--pair", &pair, "--", "/nonexistent/alock-test"]).await;
    assert_eq!(missing.status.code(), Some(127), "{}", stderr(&missing));
    assert!(is_free(key).await, "the lock outlived its command");
}

#[tokio::test]
async fn a_shared_run_holds_in_shared_mode_until_the_command_ends() {
    let key = unique_key();
    let ready = temp_file(&format!("{}.ready", unique_name("shared")));
    let script = format!("echo ready > '{}'; sleep 0.5", ready.display());
    let mut run = alock(&[
        "run",
        "--shared",
        "--pair",
        &pair_arg(key),
        "--",
        "sh",
        "-c",
        &script,
    ])
    .spawn()
    .unwrap();
    until_written(&ready).await;

    let mut observer = connect().await;
    let shared = observer.try_lock_shared(key).await.unwrap();
    assert!(shared.is_some(), "a shared run excluded a shared lock");
    shared.unwrap().release().await.unwrap();
    assert!(!is_free(key).await, "a shared run let an exclusive lock in");

    let status = within(run.wait()).await.unwrap();
    assert!(status.success());
    assert!(is_free(key).await, "the lock outlived its command");
    let _ = std::fs::remove_file(&ready);
}

#[tokio::test]
async fn sigterm_and_sigint_reach_the_command_and_its_status_comes_back() {
    for (signal, status) in [("TERM", 3), ("INT", 4)] {
        let key = unique_key();
        let ready = temp_file(&format!("{}.ready", unique_name(signal)));
        let script = format!(
            "trap 'exit {status}' {signal}; echo ready > '{}'; while :; do sleep 0.05; done",
            ready.display()
        );
        // In a process group of its own, as when a supervisor signals it:
        // run from a terminal, the test's own group may be the foreground
        // one, whose Ctrl-C the tool leaves to the terminal.
        let mut run = alock(&["run", "--pair", &pair_arg(key), "--", "sh", "-c", &script])
            .process_group(0)
            .spawn()
            .unwrap();
        until_written(&ready).await;

        let pid = run.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());

        let exit = within(run.wait()).await.unwrap();
        assert_eq!(
            exit.code(),
            Some(status),
            "the command did not see SIG{signal}"
        );
        assert!(is_free(key).await, "the lock outlived its command");
        let _ = std::fs::remove_file(&ready);
    }
}

#[tokio::test]
async fn killing_the_tool_frees_the_lock_for_other_sessions() {
    let key = unique_key();
    let ready = temp_file(&format!("{}.pid", unique_name("sigkill")));
    let script = format!("echo $$ > '{}'; exec sleep 60", ready.display());
    let mut run = alock(&["run", "--pair", &pair_arg(key), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let command_pid = until_written(&ready).await.trim().to_owned();
    assert!(!is_free(key).await, "the command ran without the lock");

    run.start_kill().unwrap(); // SIGKILL
    within(run.wait()).await.unwrap();
    within(until_free(key)).await;

    // The command outlives a killed tool; end it here.
    let _ = std::process::Command::new("kill")
        .arg(&command_pid)
        .status();
    let _ = std::fs::remove_file(&ready);
}

/// The tool's session ended while the command ran (an operator, an
/// idle-session timeout): the tool says so at once, stops the command, and
/// exits 69 instead of letting it run on unlocked.
#[tokio::test]
async fn a_lock_lost_while_the_command_runs_stops_it_and_says_so() {
    let key = unique_key();
    let ready = temp_file(&format!("{}.ready", unique_name("lost")));
    let script = format!("echo ready > '{}'; exec sleep 60", ready.display());
    let run = alock(&["run", "--pair", &pair_arg(key), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    until_written(&ready).await;
    let mut observer = connect().await;
    let [pid] = alock_dev::holders(&mut observer, key).await[..] else {
        panic!("the tool holds the key")
    };
    let ended = Instant::now();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut observer)
        .await
        .unwrap();
    let out = within(run.wait_with_output()).await.unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the lock was lost while sh ran"),
        "{}",
        stderr(&out)
    );
    assert!(
        ended.elapsed() < Duration::from_secs(10),
        "the command was stopped"
    );
    let _ = std::fs::remove_file(&ready);
}

#[tokio::test]
async fn locks_shows_a_holder_and_its_waiter_as_a_table_a_tree_and_json() {
    let key = unique_key();
    let pair = pair_arg(key);
    let mut holder = hold_elsewhere(key).await;
    let holder_pid = backend_pid(&mut holder).await;
    let mut waiter = connect().await;
    let waiter_pid = backend_pid(&mut waiter).await;
    let waiting = tokio::spawn(async move {
        let guard = waiter.lock_shared(key).await.unwrap();
        guard.release().await.unwrap();
    });
    let mut observer = connect().await;
    until_waiting(&mut observer, waiter_pid).await;

    let table = output(&["locks", "--pair", &pair]).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8(table.stdout).unwrap();
    let key_text = format!(
        "({}, {})",
        pair.split(',').next().unwrap(),
        pair.split(',').nth(1).unwrap()
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&key_text)).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("exclusive")
            && rows[0].contains("held")
            && rows[0].contains(&holder_pid.to_string()),
        "{text}"
    );
    assert!(
        rows[1].contains("shared")
            && rows[1].contains("waiting")
            && rows[1].contains(&waiter_pid.to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("{holder_pid} holds {key_text} exclusive")),
        "{text}"
    );
    assert!(text.contains(&format!("└─ {waiter_pid} waits")), "{text}");

    let json = output(&["locks", "--json", "--waiting", "--pair", &pair]).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let locks: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let locks = locks.as_array().unwrap();
    assert_eq!(locks.len(), 2, "{locks:#?}");
    assert_eq!(locks[0]["pid"], holder_pid);
    assert_eq!(locks[0]["granted"], true);
    assert_eq!(
        locks[0]["id"]["int4_pair"][1],
        serde_json::json!(pair.split(',').nth(1).unwrap().parse::<i32>().unwrap())
    );
    assert_eq!(locks[1]["pid"], waiter_pid);
    assert_eq!(locks[1]["granted"], false);
    assert_eq!(locks[1]["mode"], "shared");
    assert_eq!(locks[1]["blocked_by"], serde_json::json!([holder_pid]));

    holder.close().await.unwrap();
    within(waiting).await.unwrap();
}

#[tokio::test]
async fn mistakes_and_an_unreachable_server_are_one_line_and_a_failure() {
    let cases: [(&[&str], i32); 5] = [
        (&["locks", "--bogus"], 64),
        (&["run", "--", "true"], 64),
        (&["run", "--pair", "1,x", "--", "true"], 64),
        (&["run", "--id", "1"], 64),
        (
            &["locks", "--url", "postgres://postgres@127.0.0.1:1/postgres"],
            69,
        ),
    ];
    for (args, status) in cases {
        let output = output(args).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.starts_with("alock: "), "{args:?}: {message}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
