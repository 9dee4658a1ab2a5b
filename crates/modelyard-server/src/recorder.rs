//! The call recorder: gateway handlers hand finished call records to a
//! bounded channel; one background task writes them to the store in batches
//! (one transaction per batch). A proxied token never waits for the
//! database. When the channel is full the record is dropped and counted
//! (logged at most once per second), never blocking the request.
//!
//! Durability: records are written after the response ends; a crash loses
//! at most what was still queued. Shutdown drains the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use modelyard_store::{ProjectId, RecordedSession, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::now_ms;

/// Queue capacity, in sessions.
pub const QUEUE_CAPACITY: usize = 8_192;
/// Most sessions written per transaction.
pub const MAX_BATCH: usize = 256;

/// Handle to the recorder. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Pending>>,
    dropped: Arc<AtomicU64>,
    last_drop_log_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl Recorder {
    /// A recorder that discards everything (`storage.call_log = false`).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::default(),
            last_drop_log_ms: Arc::default(),
        }
    }

    /// Starts the writer task for `project`.
    pub fn spawn(store: Store, project: ProjectId) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(write_loop(store, project, rx));
        let recorder = Self {
            tx: Some(tx),
            dropped: Arc::default(),
            last_drop_log_ms: Arc::default(),
        };
        (recorder, task)
    }

    /// Queues a session for writing; never waits.
    pub fn record(&self, session: RecordedSession) {
        self.send(Pending::Ready(Box::new(session)));
    }

    /// Queues a session that the writer task builds: copying bodies and
    /// serializing happen there, off the request's path. Never waits.
    pub fn record_with(&self, build: impl FnOnce() -> RecordedSession + Send + 'static) {
        self.send(Pending::Build(Box::new(build)));
    }

    fn send(&self, pending: Pending) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(pending).is_err() {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = now_ms();
            let last = self.last_drop_log_ms.load(Ordering::Relaxed);
            if now - last >= 1_000 {
                self.last_drop_log_ms.store(now, Ordering::Relaxed);
                tracing::warn!(
                    dropped_total = total,
                    "call log queue full or closed; call records dropped"
                );
            }
        }
    }

    /// Records dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A queued record: ready, or built by the writer task.
enum Pending {
    Ready(Box<RecordedSession>),
    Build(Box<dyn FnOnce() -> RecordedSession + Send>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pending::Ready(_) => "Pending::Ready",
            Pending::Build(_) => "Pending::Build",
        })
    }
}

async fn write_loop(store: Store, project: ProjectId, mut rx: mpsc::Receiver<Pending>) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        batch.extend(pending.drain(..).map(|p| match p {
            Pending::Ready(session) => *session,
            Pending::Build(build) => build(),
        }));
        if let Err(err) = store.record_sessions(&project, &batch).await {
            tracing::error!(error = %err, sessions = batch.len(), "failed to write call records");
        }
        batch.clear();
    }
}
