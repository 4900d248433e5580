//! What the crate tells a `tracing` subscriber: a span per acquire and per
//! release, and events for releases queued from `Drop`, lost locks and
//! refused calls. With no subscriber listening, a disabled span costs an
//! atomic load and its fields are never computed.

use std::time::Instant;

use tracing::Span;
use tracing::field::Empty;

use crate::Error;

fn mode(shared: bool) -> &'static str {
    if shared { "shared" } else { "exclusive" }
}

/// The span of an acquire: `alock.acquire`, at `DEBUG`.
pub(crate) fn acquire_span(level: &'static str, shared: bool, ids: usize) -> Span {
    tracing::debug_span!(
        "alock.acquire",
        level,
        mode = mode(shared),
        ids,
        waited = Empty,
        wait_ms = Empty,
        outcome = Empty,
    )
}

/// Records how an acquire ended: `Some(waited)` when it took the ids, `None`
/// when they were busy and it gave up.
pub(crate) fn acquired(span: &Span, started: Instant, taken: Result<Option<bool>, &Error>) {
    if span.is_disabled() {
        return;
    }
    span.record("wait_ms", started.elapsed().as_millis() as u64);
    match taken {
        Ok(Some(waited)) => {
            span.record("waited", waited);
            span.record("outcome", "acquired");
        }
        Ok(None) => {
            span.record("outcome", "busy");
        }
        Err(e) => {
            span.record("outcome", tracing::field::display(e));
            lost_with_session(span, e);
        }
    }
}

/// A session that ended took every lock it held with it: a `WARN` event.
fn lost_with_session(span: &Span, error: &Error) {
    if error.is_connection_lost() {
        tracing::warn!(parent: span, error = %error, "alock: the session is gone, and its locks with it");
    }
}

/// The span of a release: `alock.release`, at `DEBUG`.
pub(crate) fn release_span(shared: bool, ids: usize) -> Span {
    tracing::debug_span!("alock.release", mode = mode(shared), ids, outcome = Empty)
}

/// Records how a release ended; a lost lock is also a `WARN` event.
pub(crate) fn released(span: &Span, released: &Result<(), Error>) {
    match released {
        Ok(()) => span.record("outcome", "released"),
        Err(e) => span.record("outcome", tracing::field::display(e)),
    };
    match released {
        Err(Error::Lost { missing, total }) => tracing::warn!(
            parent: span,
            missing,
            total,
            "alock: advisory lock ids were no longer held when released"
        ),
        Err(e) => lost_with_session(span, e),
        Ok(()) => {}
    }
}

/// A call refused before it reached the server: a `DEBUG` event.
pub(crate) fn refused(error: Error) -> Error {
    tracing::debug!(error = %error, "alock: call refused");
    error
}
