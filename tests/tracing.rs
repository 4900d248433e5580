//! What a `tracing` subscriber sees: the spans of a contended acquire and of
//! its release, with their fields, and the events of a queued release and a
//! refused call.
//!
//! A binary of its own: `tracing` caches, process-wide, which call sites
//! some subscriber wants, and the other tests' calls, made with none
//! listening, would race with these.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alock::prelude::*;
use alock_dev::{backend_pid, connect, hold_elsewhere, unique_keys, until_waiting};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span or an event as the subscriber saw it: its name (or message) and
/// every field recorded on it.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    level: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

/// Keeps every span and event of the crate, in order.
#[derive(Default, Clone)]
struct Recorder {
    spans: Arc<Mutex<BTreeMap<u64, Seen>>>,
    events: Arc<Mutex<Vec<Seen>>>,
    next: Arc<AtomicU64>,
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("alock")
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut seen = Seen {
            name: span.metadata().name().to_owned(),
            level: span.metadata().level().to_string(),
            ..Seen::default()
        };
        span.record(&mut seen);
        self.spans.lock().unwrap().insert(id, seen);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(seen) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(seen);
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            level: event.metadata().level().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        seen.name = seen.fields.get("message").cloned().unwrap_or_default();
        self.events.lock().unwrap().push(seen);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Recorder {
    fn spans(&self, name: &str) -> Vec<Seen> {
        let spans = self.spans.lock().unwrap();
        spans.values().filter(|s| s.name == name).cloned().collect()
    }

    fn events(&self, message: &str) -> Vec<Seen> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.name.contains(message))
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn a_contended_acquire_and_its_release_have_spans_with_their_fields() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let id = unique_keys(1)[0];
    let holder = hold_elsewhere(id).await;
    let mut conn = connect().await;
    let pid = backend_pid(&mut conn).await;
    let mut observer = connect().await;
    let waiter = tokio::spawn(async move {
        let guard = conn.lock_exclusive(id).await.unwrap();
        guard.release().await.unwrap();
    });
    until_waiting(&mut observer, pid).await;
    drop(holder);
    waiter.await.unwrap();

    let acquires = recorder.spans("alock.acquire");
    let [acquire] = acquires.as_slice() else {
        panic!("one acquire span: {acquires:?}")
    };
    assert_eq!(acquire.level, "DEBUG");
    let field = |name: &str| acquire.fields.get(name).map(String::as_str);
    assert_eq!(field("level"), Some("session"));
    assert_eq!(field("mode"), Some("exclusive"));
    assert_eq!(field("ids"), Some("1"));
    assert_eq!(field("waited"), Some("true"));
    assert_eq!(field("outcome"), Some("acquired"));
    assert!(field("wait_ms").is_some_and(|ms| ms.parse::<u64>().is_ok()));

    let releases = recorder.spans("alock.release");
    let [release] = releases.as_slice() else {
        panic!("one release span: {releases:?}")
    };
    assert_eq!(
        release.fields.get("outcome").map(String::as_str),
        Some("released")
    );
}

#[tokio::test]
async fn a_queued_release_and_a_refused_call_are_events() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let mut conn = connect().await;
    drop(conn.lock_shared(unique_keys(2)).await.unwrap());
    let queued = recorder.events("release queued");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].fields.get("ids").map(String::as_str), Some("2"));

    let refused = conn.try_lock_exclusive(Vec::<alock::LockId>::new()).await;
    assert!(refused.is_err());
    let events = recorder.events("call refused");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].level, "DEBUG");
}
