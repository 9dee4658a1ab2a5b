//! [`MockUpstream`]: the server's state shared with its handlers, start-up, and the test-facing
//! controls and counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::sync::{oneshot, Notify};

use crate::dispatch::handle;
use crate::options::{Flavour, MockModel, MockOptions, RecordedRequest, DEFAULT_CONTEXT};

pub(crate) struct Shared {
    pub(crate) record: AtomicBool,
    pub(crate) log: Mutex<Vec<RecordedRequest>>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) cancelled_streams: AtomicUsize,
    pub(crate) streams_notify: Notify,
    pub(crate) cancelled_requests: AtomicUsize,
    pub(crate) requests_notify: Notify,
    pub(crate) flavour: Flavour,
    /// The models given at start, restored by `set_listed_models(None)`.
    pub(crate) initial_models: Vec<MockModel>,
    pub(crate) models: Mutex<Arc<Vec<MockModel>>>,
    pub(crate) down: AtomicBool,
    pub(crate) discovery_delay_ms: AtomicU64,
    /// Whether chat answers `400 exceed_context_size_error` to a prompt
    /// that does not fit the model's context window.
    pub(crate) enforce_context: AtomicBool,
    /// Requests seen per `fail-first:` model.
    pub(crate) fail_counts: Mutex<std::collections::HashMap<String, usize>>,
}

/// An in-process mock OpenAI-compatible upstream (llama.cpp-flavoured unless started with
/// another [`Flavour`]); see the crate docs for its routes and behaviours. The server shuts down (gracefully) when this value is dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Binds `127.0.0.1:0`, serves on a spawned tokio task (with `TCP_NODELAY` on accepted
    /// sockets) and returns once the listener is bound.
    ///
    /// # Panics
    /// If the socket cannot be bound.
    pub async fn start() -> MockUpstream {
        MockUpstream::start_with(MockOptions::default()).await
    }

    /// Like [`start`](Self::start), serving `options.flavour`'s discovery endpoints for
    /// `options.models`.
    ///
    /// # Panics
    /// If the socket cannot be bound.
    pub async fn start_with(options: MockOptions) -> MockUpstream {
        // An accept queue of 1024, not `TcpListener::bind`'s 128: the
        // benchmarks open 200 connections at once, and an overflowed queue
        // drops SYNs that the client retries only after 1 s.
        let socket = tokio::net::TcpSocket::new_v4().expect("mock upstream: socket");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("mock upstream: bind 127.0.0.1:0");
        let listener = socket.listen(1024).expect("mock upstream: listen");
        let addr = listener.local_addr().expect("mock upstream: local address");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let shared = Arc::new(Shared {
            record: AtomicBool::new(true),
            log: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            cancelled_streams: AtomicUsize::new(0),
            streams_notify: Notify::new(),
            cancelled_requests: AtomicUsize::new(0),
            requests_notify: Notify::new(),
            flavour: options.flavour,
            models: Mutex::new(Arc::new(options.models.clone())),
            initial_models: options.models,
            down: AtomicBool::new(false),
            enforce_context: AtomicBool::new(false),
            fail_counts: Mutex::new(std::collections::HashMap::new()),
            discovery_delay_ms: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        MockUpstream {
            addr,
            shared,
            shutdown: Some(tx),
        }
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"http://127.0.0.1:<port>"`: no trailing slash, no `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received while recording was on, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.log).last().cloned()
    }

    /// Streamed responses whose body was dropped (client went away) before the mock produced
    /// its last event.
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// Waits until [`cancelled_streams`](Self::cancelled_streams) `>= n`; returns `false` if
    /// `timeout` elapsed first.
    pub async fn wait_cancelled(&self, n: usize, timeout: Duration) -> bool {
        wait_count(
            &self.shared.cancelled_streams,
            &self.shared.streams_notify,
            n,
            timeout,
        )
        .await
    }

    /// Requests whose handler was dropped before it produced a response (client went away
    /// during `hang`, a non-stream `slow:<ms>`, `slow-first:<ms>`, …).
    pub fn cancelled_requests(&self) -> usize {
        self.shared.cancelled_requests.load(Ordering::SeqCst)
    }

    /// Waits until [`cancelled_requests`](Self::cancelled_requests) `>= n`; returns `false` if
    /// `timeout` elapsed first.
    pub async fn wait_cancelled_requests(&self, n: usize, timeout: Duration) -> bool {
        wait_count(
            &self.shared.cancelled_requests,
            &self.shared.requests_notify,
            n,
            timeout,
        )
        .await
    }

    /// Requests currently being served, including streams whose body is still open.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Replaces the listed models by `ids`, each loaded with context window 4096 (shorthand for
    /// [`set_models`](Self::set_models)); `None` restores the models the mock started with
    /// (for [`start`](Self::start): [`MODEL_IDS`](crate::MODEL_IDS)). Tests use it to list the exact behaviour
    /// names (`slow-first:3000`) they call.
    pub fn set_listed_models(&self, ids: Option<Vec<String>>) {
        let models = match ids {
            Some(ids) => ids
                .into_iter()
                .map(|id| MockModel::new(id, Some(DEFAULT_CONTEXT)))
                .collect(),
            None => self.shared.initial_models.clone(),
        };
        self.set_models(models);
    }

    /// Replaces the model list at run time (models appear/disappear, load/unload); discovery
    /// requests arriving afterwards see the new list.
    pub fn set_models(&self, models: Vec<MockModel>) {
        *lock(&self.shared.models) = Arc::new(models);
    }

    /// The current model list.
    pub fn models(&self) -> Vec<MockModel> {
        lock(&self.shared.models).as_ref().clone()
    }

    /// The flavour the mock was started with.
    pub fn flavour(&self) -> Flavour {
        self.shared.flavour
    }

    /// While down, every request (any route, chat included) is answered at once with `503`
    /// `{"error":{"message":"mock upstream is down",…}}` (simulates a host going offline);
    /// `false` restores normal service. Responses already streaming are not cut.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Adds a delay of `ms` milliseconds before answering the discovery endpoints (models,
    /// props, health, tags, show, ps, running; not chat), to test that slow probes never block
    /// chat requests. `0` (the default) removes it.
    pub fn set_discovery_delay_ms(&self, ms: u64) {
        self.shared.discovery_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// While on, a chat request whose prompt (its words, as `prompt_tokens` counts them) is at
    /// least the requested model's [`MockModel::context_window`] is answered like llama.cpp
    /// answers one that does not fit: `400` `{"error":{"code":400,"message":"the request
    /// exceeds the available context size, try increasing it","type":"exceed_context_size_error",
    /// "n_prompt_tokens":<words>,"n_ctx":<ctx>}}`; and an answer stops at the request's
    /// `max_tokens` (or `max_completion_tokens`) words, as a real server's does. Models without
    /// a known window, and every request while off (the default), are served as usual.
    pub fn set_enforce_context(&self, on: bool) {
        self.shared.enforce_context.store(on, Ordering::SeqCst);
    }

    /// Turns request recording on or off (default on). The benchmark turns it off so that the
    /// mock takes no lock and keeps no memory per request.
    pub fn set_record_requests(&self, on: bool) {
        self.shared.record.store(on, Ordering::SeqCst);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn wait_count(
    counter: &AtomicUsize,
    notify: &Notify,
    n: usize,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Register before checking so that a notification in between is not lost.
        notified.as_mut().enable();
        if counter.load(Ordering::SeqCst) >= n {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return counter.load(Ordering::SeqCst) >= n;
        }
    }
}
