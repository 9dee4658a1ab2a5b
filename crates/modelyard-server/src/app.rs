//! Application state, the route table, and the server's life cycle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use axum::Router;
use modelyard_store::{ProjectId, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, RetentionConfig};
use crate::recorder::Recorder;
use crate::registry::ProviderRegistry;

/// Shared state of every handler, scoped to a project. Cheap to clone.
/// The router holds it for the `default` project; handlers get it scoped to
/// the caller's project through [`crate::auth::Scoped`].
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<AppInner>,
    /// The project requests act for: the caller's.
    pub project: ProjectId,
}

impl AppState {
    /// This state acting for `caller`'s project.
    pub fn scoped(&self, caller: crate::auth::Caller) -> AppState {
        AppState {
            inner: Arc::clone(&self.inner),
            project: caller.project,
        }
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct AppInner {
    /// The loaded configuration.
    pub config: Config,
    /// Providers and what discovery saw.
    pub registry: Arc<ProviderRegistry>,
    /// Routes, deployment health and affinity.
    pub router: Arc<crate::routing::Router>,
    /// The call log writer.
    pub recorder: Recorder,
    /// The database.
    pub store: Store,
    /// API keys and whether they are required.
    pub auth: crate::auth::Auth,
    /// Fan-out of conversation events.
    pub bus: Arc<dyn crate::conversations::bus::EventBus>,
    /// Running turns of this process.
    pub live: crate::conversations::live::LiveTurns,
    /// Open SSE responses, capped by `[limits]`.
    pub streams: crate::limits::StreamSlots,
    /// Cancelled when the server halts (the shutdown is over or its
    /// deadline passed): work that waits for the store gives up.
    pub halt: tokio_util::sync::CancellationToken,
    /// Prometheus metrics (`[telemetry]`).
    pub metrics: Arc<crate::telemetry::Metrics>,
}

impl AppState {
    /// What `requested` stands for: a route or one deployment
    /// ([`crate::routing::Router::destination`]).
    ///
    /// # Errors
    /// [`crate::registry::RouteError`].
    pub fn destination(
        &self,
        requested: Option<&str>,
    ) -> Result<crate::routing::Destination, crate::registry::RouteError> {
        self.router.destination(&self.registry, requested)
    }

    /// Appends events to a conversation of this project, with stored text
    /// redacted first when `[security] redact_secrets` is on
    /// ([`crate::redact::payloads`]); not published (see
    /// [`Self::append_and_publish`]).
    ///
    /// # Errors
    /// The store's error (conflict, not found, database).
    pub async fn append_events(
        &self,
        conversation_id: &str,
        payloads: Vec<modelyard_core::conversation::EventPayload>,
    ) -> Result<Vec<modelyard_core::conversation::Event>, modelyard_store::StoreError> {
        self.append_folded(conversation_id, payloads)
            .await
            .map(|appended| appended.events)
    }

    /// [`Self::append_events`], also returning the conversation record the
    /// append wrote ([`modelyard_store::Store::append_events_folded`]), so
    /// the caller need not re-read it.
    ///
    /// # Errors
    /// The store's error (conflict, not found, database).
    pub async fn append_folded(
        &self,
        conversation_id: &str,
        mut payloads: Vec<modelyard_core::conversation::EventPayload>,
    ) -> Result<modelyard_store::Appended, modelyard_store::StoreError> {
        crate::redact::payloads(self.config.security.redact_secrets, &mut payloads);
        self.store
            .append_events_folded(
                &self.project,
                conversation_id,
                &payloads,
                crate::clock::now_ms(),
            )
            .await
    }

    /// [`Self::append_events`], then publishes the committed events on the bus.
    ///
    /// # Errors
    /// The store's error.
    pub async fn append_and_publish(
        &self,
        conversation_id: &str,
        payloads: Vec<modelyard_core::conversation::EventPayload>,
    ) -> Result<Vec<modelyard_core::conversation::Event>, modelyard_store::StoreError> {
        self.append_and_publish_folded(conversation_id, payloads)
            .await
            .map(|appended| appended.events)
    }

    /// [`Self::append_folded`], then publishes the committed events on the
    /// bus; returns the events and the conversation record the append wrote.
    ///
    /// # Errors
    /// The store's error.
    pub async fn append_and_publish_folded(
        &self,
        conversation_id: &str,
        payloads: Vec<modelyard_core::conversation::EventPayload>,
    ) -> Result<modelyard_store::Appended, modelyard_store::StoreError> {
        let appended = self.append_folded(conversation_id, payloads).await?;
        crate::conversations::engine::publish_events(
            self.bus.as_ref(),
            conversation_id,
            &appended.events,
        );
        Ok(appended)
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

/// Server start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened or migrated.
    #[error("storage {url}: {source}")]
    Store {
        /// Redacted storage URL.
        url: String,
        /// Cause.
        #[source]
        source: modelyard_store::StoreError,
    },
    /// A provider client could not be built.
    #[error(transparent)]
    Provider(#[from] modelyard_upstream::UpstreamError),
    /// A non-loopback listen address without any API key.
    #[error(
        "refusing to listen on {addr} without API keys: anyone who can reach it could use every \
         model and read every conversation. Create a key first (`modelyard keys create --role \
         admin`), or listen on 127.0.0.1"
    )]
    Unprotected {
        /// The configured address.
        addr: SocketAddr,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The server's router: the route table ([`crate::http::routes`]) behind
/// auth, the guard and the body limits, all inside the access layer
/// (request id, access log, HTTP metrics: [`crate::http::access`]).
pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    crate::http::routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::middleware,
        ))
        // The web UI shell: public, so merged after the auth route layer.
        .merge(crate::ui::routes())
        // Host, Origin and Content-Type checks on every request (UI too),
        // before routing and auth.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::middleware,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                axum::http::header::AUTHORIZATION,
                axum::http::HeaderName::from_static("api-key"),
                axum::http::HeaderName::from_static("x-api-key"),
            ]),
        )
        // Oversized bodies get 413 in each surface's error shape before any handler.
        .layer(axum::middleware::from_fn_with_state(
            max_body,
            crate::limits::body_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::access::middleware,
        ))
        .with_state(state)
}

/// The metrics listener's router: `GET /metrics` only, no auth
/// (`[telemetry] metrics_listen`).
fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(crate::api::metrics::unauthenticated),
        )
        .with_state(state)
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every open request ended, running turns were closed and the call log
    /// was drained.
    Clean,
    /// `server.shutdown_timeout_ms` passed first (or the server task
    /// failed): some of that work was abandoned.
    Incomplete,
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<ShutdownOutcome>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's bound address (`[telemetry] metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends events streams and running turns (closed
    /// `interrupted`), lets open requests finish, flushes the call log —
    /// within `server.shutdown_timeout_ms`.
    pub async fn shutdown(self) -> ShutdownOutcome {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] or a
    /// fatal error).
    pub async fn wait(self) -> ShutdownOutcome {
        self.task.await.unwrap_or(ShutdownOutcome::Incomplete)
    }

    /// A handle that triggers shutdown from elsewhere (a signal handler).
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The storage URL as errors and logs show it: no password (in the
/// userinfo or a `password=` parameter).
pub fn redact_storage_url(url: &str) -> String {
    modelyard_store::redact_url(url)
}

/// How often the call-log retention runs (after once at start-up).
pub const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// Starts the call-log pruner: applies `retention` at once, then every
/// [`PRUNE_EVERY`], across all projects.
fn spawn_pruner(store: Store, retention: RetentionConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let cutoff = retention
                .max_age_days
                .map(|days| crate::clock::now_ms() - i64::from(days) * 86_400_000);
            match store.prune_calls(cutoff, retention.max_calls).await {
                Ok(deleted) => tracing::info!(
                    deleted_calls = deleted,
                    max_age_days = retention.max_age_days,
                    max_calls = retention.max_calls,
                    "call-log retention applied"
                ),
                Err(err) => tracing::error!(error = %err, "call-log retention failed"),
            }
        }
    })
}

/// What [`serve`] bounds per connection and in all (`[limits]`).
#[derive(Debug, Clone)]
struct ConnLimits {
    /// Head and body deadlines of each request.
    deadlines: crate::conn::Deadlines,
    /// Open connections at most (`limits.max_connections`).
    max_connections: usize,
    /// Requests in flight (`limits.max_concurrent_requests`).
    requests: crate::limits::RequestSlots,
}

/// Whether a request takes a slot among `limits.max_concurrent_requests`:
/// the API does, `/health` and the web UI do not.
fn counts_in_flight(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// Serves HTTP/1.1 on `listener` until `signal` completes, then stops
/// accepting, lets every connection finish its open requests (idle ones close
/// at once) and returns when all are closed — `axum::serve`'s graceful
/// shutdown, plus: a request head that does not arrive within
/// `limits.header_read_timeout_ms` of its first byte, or a body that does
/// not arrive within `limits.body_read_timeout_ms` of its head, closes the
/// connection, an idle keep-alive connection closes after
/// [`crate::conn::IDLE_TIMEOUT`] (see [`crate::conn`]), a connection past
/// `limits.max_connections` open ones is closed as soon as it is accepted
/// (so the process keeps file descriptors for the ones it serves; an
/// `accept` that fails anyway, e.g. `EMFILE`, is retried after 1 s by axum's
/// `Listener`, not in a busy loop), an API request past
/// `limits.max_concurrent_requests` in flight is answered 429 before
/// anything else runs ([`crate::limits::RequestSlots`]), and every request
/// carries `ConnectInfo<SocketAddr>` (and its [`crate::limits::InFlight`]
/// slot).
async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // HTTP/1 only, like axum with its `http1` feature: no protocol sniffing
    // before the header timeout starts.
    let builder =
        Arc::new(hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only());
    // Connection tasks watch `stop` (closed on the signal) and hold `open`
    // (its sender sees every receiver gone once they all ended).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(stop_rx);
    });
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (io, remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop_tx.closed() => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            // Past the cap: closed at once, never served.
            tracing::debug!(%remote, max_connections = limits.max_connections, "connection refused: too many open");
            drop(io);
            continue;
        };
        let router = app.clone();
        let requests = limits.requests.clone();
        let conn_state = crate::conn::ConnState::new();
        let io = crate::conn::GuardedIo::new(io, conn_state.clone(), limits.deadlines);
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                // The head is in: the body deadline runs until the body is
                // in, then none until the response is done.
                let guard = conn_state.request(!hyper::body::Body::is_end_stream(request.body()));
                let body_state = conn_state.clone();
                let mut request = request.map(|body| crate::conn::TimedBody::new(body, body_state));
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                let in_flight = if counts_in_flight(request.uri().path()) {
                    match requests.try_acquire() {
                        Ok(slot) => slot,
                        Err(limit) => {
                            let mut refused = limit.response_for(request.uri().path());
                            refused.headers_mut().insert(
                                crate::http::access::REQUEST_ID,
                                crate::http::access::request_id(request.headers()),
                            );
                            let response = refused.map(|body| crate::conn::hold(body, guard));
                            return futures_util::future::Either::Left(std::future::ready(Ok(
                                response,
                            )));
                        }
                    }
                } else {
                    crate::limits::InFlight::default()
                };
                request.extensions_mut().insert(in_flight.clone());
                let call = tower_service::Service::call(&mut router.clone(), request);
                futures_util::future::Either::Right(async move {
                    call.await.map(|response| {
                        // An SSE response is bounded by the stream caps: its
                        // slot is freed as it starts; others' with their body.
                        let streaming = response
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                        if streaming {
                            in_flight.release();
                        }
                        response.map(|body| crate::conn::hold(body, (guard, in_flight)))
                    })
                })
            });
        let builder = Arc::clone(&builder);
        let stop_tx = stop_tx.clone();
        let open_rx = open_rx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = stop_tx.closed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = served {
                tracing::trace!(error = %err, %remote, "connection ended with an error");
            }
            drop(permit);
            drop(open_rx);
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}

/// Opens the store, probes providers once, binds and serves in the
/// background.
///
/// # Errors
/// [`ServerError`].
pub async fn start(
    config: Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunningServer, ServerError> {
    let store = Store::connect(&config.storage.url)
        .await
        .map_err(|source| ServerError::Store {
            url: redact_storage_url(&config.storage.url),
            source,
        })?;
    let registry = Arc::new(ProviderRegistry::new(&config, env)?);
    registry.refresh_all().await;
    let refresh = registry.spawn_refresh();
    let project = ProjectId::default_project();
    let (recorder, recorder_task) = if config.storage.call_log {
        let (recorder, task) = Recorder::spawn(
            store.clone(),
            config.storage.content,
            config.security.redact_secrets,
        );
        (recorder, Some(task))
    } else {
        (Recorder::disabled(), None)
    };
    let pruner = config
        .storage
        .retention
        .is_configured()
        .then(|| spawn_pruner(store.clone(), config.storage.retention));
    let auth = crate::auth::Auth::load(store.clone())
        .await
        .map_err(|source| ServerError::Store {
            url: redact_storage_url(&config.storage.url),
            source,
        })?;
    let listen = config.server.listen;
    // Without keys every request is the default project's admin: loopback only.
    if !auth.required() && !listen.ip().is_loopback() {
        return Err(ServerError::Unprotected { addr: listen });
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let bus: Arc<dyn crate::conversations::bus::EventBus> =
        Arc::new(crate::conversations::bus::InProcessBus::default());
    crate::conversations::engine::recover_interrupted(&store, bus.as_ref()).await;
    let live = crate::conversations::live::LiveTurns::new(
        crate::conversations::live::DEFAULT_MAX_EVENTS,
        config.turns.tool_output_buffer_bytes,
    );
    let streams = crate::limits::StreamSlots::new(
        config.limits.max_streams,
        config.limits.max_streams_per_key,
        config.limits.max_streams_per_project,
    );
    let conn_limits = ConnLimits {
        requests: crate::limits::RequestSlots::new(config.limits.max_concurrent_requests),
        deadlines: crate::conn::Deadlines {
            header: Duration::from_millis(config.limits.header_read_timeout_ms),
            body: Duration::from_millis(config.limits.body_read_timeout_ms),
        },
        max_connections: config.limits.max_connections as usize,
    };
    let shutdown_timeout = Duration::from_millis(config.server.shutdown_timeout_ms);
    let sweep_every = Duration::from_millis(config.turns.sweep_interval_ms);
    let halt = tokio_util::sync::CancellationToken::new();
    let metrics = crate::telemetry::Metrics::new(&config.telemetry);
    let metrics_listener = match config.telemetry.metrics_listen {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "telemetry.metrics_listen is not loopback: /metrics there has no auth");
            }
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let state = AppState {
        inner: Arc::new(AppInner {
            router: Arc::new(crate::routing::Router::with_metrics(
                config.routing.clone(),
                &config.routes,
                Arc::clone(&metrics),
            )),
            config,
            registry,
            recorder,
            store: store.clone(),
            auth,
            bus,
            live,
            streams,
            halt: halt.clone(),
            metrics,
        }),
        project,
    };
    if let Some((listener, _)) = metrics_listener {
        let app = metrics_router(state.clone());
        let stop = state.live.shutdown_token();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "metrics listener stopped");
            }
        });
    }
    crate::conversations::engine::spawn_sweeper(state.clone(), sweep_every);
    // Keys created or revoked elsewhere (the CLI, another replica) take
    // effect within KEY_COUNT_INTERVAL.
    let auth_state = state.clone();
    let auth_stop = state.live.shutdown_token();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(crate::auth::KEY_COUNT_INTERVAL) => {
                    auth_state.auth.refresh().await;
                }
                () = auth_stop.cancelled() => return,
            }
        }
    });
    let live_state = state.clone();
    let stopping_state = state.clone();
    let app = router(state);
    let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let mut deadline_rx = shutdown.subscribe();
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let work = async move {
        serve(listener, app, conn_limits, async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
            // Interrupt turns and end events streams now: open streams
            // would otherwise keep the graceful shutdown waiting forever.
            stopping_state.live.begin_shutdown();
            drop(stopping_state);
        })
        .await;
        // Running turns end `interrupted` (with their partial answer) before the store closes.
        live_state.live.interrupt_all();
        while !live_state.live.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(live_state);
        refresh.iter().for_each(|task| task.abort());
        if let Some(task) = &pruner {
            task.abort();
        }
        // The router (and its recorder handle) is gone: the writer drains and exits.
        if let Some(task) = recorder_task {
            let _ = task.await;
        }
        store.close().await;
    };
    // Everything after the signal happens within `shutdown_timeout`.
    let deadline = async move {
        let _ = deadline_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(shutdown_timeout).await;
    };
    let task = tokio::spawn(async move {
        let outcome = tokio::select! {
            () = work => ShutdownOutcome::Clean,
            () = deadline => {
                tracing::warn!(
                    timeout_ms = shutdown_timeout.as_millis() as u64,
                    "shutdown deadline passed: stopping with requests, turns or call records unfinished"
                );
                ShutdownOutcome::Incomplete
            }
        };
        halt.cancel();
        outcome
    });
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown,
        task,
    })
}
