//! Drop guards that count requests in flight and the ones a client gave up on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::upstream::Shared;

/// Counts a request in `in_flight` until dropped (moved into stream bodies).
pub(crate) struct InFlight(pub(crate) Arc<Shared>);

impl InFlight {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a cancelled request if dropped before `done`.
pub(crate) struct RequestGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) done: bool,
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .cancelled_requests
                .fetch_add(1, Ordering::SeqCst);
            self.shared.requests_notify.notify_waiters();
        }
    }
}

/// Counts a cancelled stream if the body is dropped before its last event was produced.
pub(crate) struct StreamGuard {
    pub(crate) finished: bool,
    pub(crate) in_flight: InFlight,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            let shared = &self.in_flight.0;
            shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
            shared.streams_notify.notify_waiters();
        }
    }
}
