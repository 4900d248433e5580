//! `alock locks`: the table of held and awaited locks, and who blocks whom.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use alock::{KeyNames, LockId, LockInfo, LockQuery};

use crate::keys::KeyArgs;
use crate::{EX_UNAVAILABLE, Failure};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    keys: KeyArgs,

    /// Only the keys someone waits for: their waiters and holders
    #[arg(long)]
    waiting: bool,

    /// Print a JSON array of locks instead of the table (one per line with
    /// --watch)
    #[arg(long)]
    json: bool,

    /// Print again every SECS seconds, until interrupted
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs)]
    watch: Option<Duration>,

    /// Also list alock's internal record locks, which never block anyone
    #[arg(long)]
    internal: bool,
}

pub async fn main(url: Option<String>, args: Args) -> Result<ExitCode, Failure> {
    let ids = args.keys.ids();
    let query = if ids.is_empty() {
        LockQuery::all()
    } else {
        LockQuery::keys(ids).map_err(|e| Failure::usage(e.to_string()))?
    }
    .internal(args.internal);
    let names = args.keys.names();
    let mut conn = crate::connect(url, "alock locks").await?;
    let clear = args.watch.is_some() && !args.json && std::io::stdout().is_terminal();
    loop {
        let mut locks = alock::locks(&mut conn, &query)
            .await
            .map_err(|e| Failure::server(format!("cannot read the locks: {e}")))?;
        if args.waiting {
            let awaited: BTreeSet<LockId> =
                locks.iter().filter(|l| !l.granted).map(|l| l.key).collect();
            locks.retain(|l| awaited.contains(&l.key));
        }
        let text = if args.json {
            json(&locks, &names)
        } else {
            table(&locks, &names)
        };
        let mut stdout = std::io::stdout().lock();
        let written = if clear {
            write!(stdout, "\x1b[H\x1b[2J{text}")
        } else {
            write!(stdout, "{text}")
        };
        // A closed pipe (`alock locks | head`) ends the tool quietly.
        if written.and_then(|()| stdout.flush()).is_err() {
            return Ok(ExitCode::from(EX_UNAVAILABLE));
        }
        drop(stdout);
        match args.watch {
            Some(every) => tokio::time::sleep(every).await,
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// The locks as a table, then the blocking chains as a tree.
fn table(locks: &[LockInfo], names: &KeyNames) -> String {
    if locks.is_empty() {
        return "no advisory locks\n".to_owned();
    }
    let header = [
        "KEY",
        "MODE",
        "STATE",
        "PID",
        "WAITED",
        "APPLICATION",
        "CLIENT",
    ];
    let rows: Vec<[String; 7]> = locks
        .iter()
        .map(|lock| {
            [
                names.display(lock.key).to_string(),
                lock.mode.to_string(),
                state(lock).to_owned(),
                pid(lock.pid),
                lock.waited.map(waited).unwrap_or_default(),
                lock.application_name.clone().unwrap_or_default(),
                client(lock),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    let tree = blocking_tree(locks, names);
    if !tree.is_empty() {
        out.push_str("\nblocking:\n");
        out.push_str(&tree);
    }
    out
}

fn state(lock: &LockInfo) -> &'static str {
    match (lock.granted, lock.internal) {
        (true, false) => "held",
        (false, false) => "waiting",
        (true, true) => "held (internal)",
        (false, true) => "waiting (internal)",
    }
}

fn pid(pid: Option<i32>) -> String {
    pid.map_or("prepared".to_owned(), |p| p.to_string())
}

fn waited(waited: Duration) -> String {
    let secs = waited.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let secs = waited.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

fn client(lock: &LockInfo) -> String {
    match (lock.client_addr, lock.client_port) {
        (Some(addr @ std::net::IpAddr::V6(_)), Some(port)) => format!("[{addr}]:{port}"),
        (Some(addr), Some(port)) => format!("{addr}:{port}"),
        (Some(addr), None) => addr.to_string(),
        (None, _) if lock.pid.is_some() && lock.application_name.is_some() => "local".to_owned(),
        (None, _) => String::new(),
    }
}

/// Each session that blocks others and waits for nobody, with the sessions
/// waiting behind it beneath, recursively:
///
/// ```text
/// 101 (worker) holds orders:42 exclusive
/// └─ 102 (worker) waits 3.2s for orders:42 exclusive
///    └─ 103 (report) waits 1.0s for orders:42 shared
/// ```
///
/// A waiter behind several sessions is shown once, under the first, and
/// names the others.
fn blocking_tree(locks: &[LockInfo], names: &KeyNames) -> String {
    let waits: BTreeMap<i32, &LockInfo> = locks
        .iter()
        .filter(|l| !l.granted && !l.blocked_by.is_empty())
        .filter_map(|l| Some((l.pid?, l)))
        .collect();
    let mut held: BTreeMap<i32, Vec<&LockInfo>> = BTreeMap::new();
    for lock in locks.iter().filter(|l| l.granted) {
        if let Some(pid) = lock.pid {
            held.entry(pid).or_default().push(lock);
        }
    }
    let blockers: BTreeSet<i32> = waits
        .values()
        .flat_map(|l| l.blocked_by.iter().copied())
        .collect();
    // Sessions in a cycle wait for each other until a deadlock detector (the
    // server's, or this crate's at the end of a slice) breaks it. Until then
    // one of them stands in as a root.
    let roots: Vec<i32> = blockers
        .iter()
        .copied()
        .filter(|p| !waits.contains_key(p))
        .collect();
    let mut shown = BTreeSet::new();
    let mut out = String::new();
    let tree = Tree {
        waits: &waits,
        held: &held,
        names,
    };
    for root in roots {
        tree.node(root, "", "", &mut shown, &mut out);
    }
    for &pid in waits.keys() {
        if !shown.contains(&pid) {
            tree.node(pid, "", "", &mut shown, &mut out);
        }
    }
    out
}

struct Tree<'a> {
    waits: &'a BTreeMap<i32, &'a LockInfo>,
    held: &'a BTreeMap<i32, Vec<&'a LockInfo>>,
    names: &'a KeyNames,
}

impl Tree<'_> {
    fn node(&self, pid: i32, first: &str, rest: &str, shown: &mut BTreeSet<i32>, out: &mut String) {
        shown.insert(pid);
        let _ = writeln!(out, "{first}{}", self.label(pid));
        let children: Vec<i32> = self
            .waits
            .iter()
            .filter(|(waiter, lock)| lock.blocked_by.contains(&pid) && !shown.contains(waiter))
            .map(|(&waiter, _)| waiter)
            .collect();
        // Marked before descending, so that a waiter behind two sessions of
        // this subtree appears once.
        shown.extend(&children);
        for (i, &child) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let (branch, indent) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            shown.remove(&child);
            self.node(
                child,
                &format!("{rest}{branch}"),
                &format!("{rest}{indent}"),
                shown,
                out,
            );
        }
    }

    fn label(&self, pid: i32) -> String {
        let app = self
            .waits
            .get(&pid)
            .copied()
            .or_else(|| self.held.get(&pid).and_then(|h| h.first().copied()))
            .and_then(|l| l.application_name.as_deref())
            .filter(|a| !a.is_empty());
        let mut label = match (pid, app) {
            (0, _) => "a prepared transaction".to_owned(),
            (pid, Some(app)) => format!("{pid} ({app})"),
            (pid, None) => pid.to_string(),
        };
        if let Some(held) = self.held.get(&pid) {
            let keys: Vec<String> = held
                .iter()
                .map(|l| format!("{} {}", self.names.display(l.key), l.mode))
                .collect();
            let _ = write!(label, " holds {}", keys.join(", "));
        }
        if let Some(wait) = self.waits.get(&pid) {
            let sep = if self.held.contains_key(&pid) {
                ";"
            } else {
                ""
            };
            let _ = write!(label, "{sep} waits");
            if let Some(w) = wait.waited {
                let _ = write!(label, " {}", waited(w));
            }
            let _ = write!(label, " for {} {}", self.names.display(wait.key), wait.mode);
            if wait.blocked_by.len() > 1 {
                let all: Vec<String> = wait.blocked_by.iter().map(i32::to_string).collect();
                let _ = write!(label, " (behind {})", all.join(", "));
            }
        }
        label
    }
}

/// The locks as one JSON array. Written by hand: ten fields do not need a
/// serializer in the tool's dependencies.
fn json(locks: &[LockInfo], names: &KeyNames) -> String {
    let mut out = String::from("[");
    for (i, lock) in locks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let id = match lock.key {
            LockId::Int8(key) => format!("{{\"int8\":{key}}}"),
            LockId::Int4Pair(a, b) => format!("{{\"int4_pair\":[{a},{b}]}}"),
        };
        let blocked_by: Vec<String> = lock.blocked_by.iter().map(i32::to_string).collect();
        let _ = write!(
            out,
            "{{\"key\":{},\"id\":{id},\"mode\":\"{}\",\"granted\":{},\"internal\":{},\
             \"pid\":{},\"application_name\":{},\"client_addr\":{},\"client_port\":{},\
             \"waited_seconds\":{},\"blocked_by\":[{}]}}",
            string(&names.display(lock.key).to_string()),
            lock.mode,
            lock.granted,
            lock.internal,
            lock.pid.map_or("null".to_owned(), |p| p.to_string()),
            lock.application_name
                .as_deref()
                .map_or("null".to_owned(), string),
            lock.client_addr
                .map_or("null".to_owned(), |a| string(&a.to_string())),
            lock.client_port
                .map_or("null".to_owned(), |p| p.to_string()),
            lock.waited
                .map_or("null".to_owned(), |w| format!("{:.3}", w.as_secs_f64())),
            blocked_by.join(","),
        );
    }
    out.push_str("]\n");
    out
}

/// A JSON string literal.
fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        assert_eq!(string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn waiting_times_read_as_seconds_then_minutes() {
        assert_eq!(waited(Duration::from_millis(3240)), "3.2s");
        assert_eq!(waited(Duration::from_secs(125)), "2m05s");
    }
}
