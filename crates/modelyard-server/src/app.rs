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

mod accept;
mod running;

use accept::{serve, ConnLimits};
pub use running::{RunningServer, ShutdownOutcome};

/// Accept-queue length (connections) asked of `listen(2)`; the kernel caps it
/// at `net.core.somaxconn` (4096 on current Linux). `TcpListener::bind` asks
/// for 128, the standard library's value: a burst of more new connections
/// than that (200 clients starting at once) overflows the queue, and each
/// dropped SYN costs its client the 1 s initial retransmission timeout
/// (RFC 6298). nginx asks for 511 by default; mio before 1.0 asked for 1024.
pub(crate) const LISTEN_BACKLOG: u32 = 1024;

/// Binds a TCP listener on `addr` with `SO_REUSEADDR` (a restart does not
/// wait out `TIME_WAIT`) and an accept queue of [`LISTEN_BACKLOG`].
///
/// # Errors
/// The socket's creation, bind or listen error (address in use, no permission).
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Shared state of every handler, scoped to a project. Cheap to clone.
/// The router holds it for the `default` project; handlers get it scoped to
/// the caller's project through [`crate::auth::Scoped`].
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<AppInner>,
    /// The project requests act for: the caller's.
    pub project: ProjectId,
    /// The request's admission under its key's and project's budgets and
    /// rate limits ([`crate::quota`]), when they have any: taken by the
    /// request's first model call ([`Self::take_admission`]).
    pub admission: Option<crate::quota::AdmissionSlot>,
    /// The caller's API key id, if a key was used: recorded on the LLM
    /// sessions its requests make (`GET /v1/usage?groupBy=key`).
    pub key_id: Option<String>,
}

impl AppState {
    /// This state acting for `caller`'s project.
    pub fn scoped(&self, caller: crate::auth::Caller) -> AppState {
        AppState {
            inner: Arc::clone(&self.inner),
            project: caller.project,
            admission: None,
            key_id: caller.key_id,
        }
    }

    /// Takes the request's admission (once: the gateway's call draft or
    /// the turn run the request starts settles it).
    pub fn take_admission(&self) -> Option<crate::quota::Admission> {
        self.admission.as_ref().and_then(|slot| slot.take())
    }

    /// Records a session that no request's admission covers — a
    /// conversation's title, compaction, advisor call or warm-up — under
    /// the caller's key (when the session names none), after charging
    /// what its calls spent against the key's and project's limits
    /// ([`crate::quota::Quotas::charge`]).
    pub async fn record_charged(&self, mut session: modelyard_store::RecordedSession) {
        if session.session.key_id.is_none() {
            session.session.key_id.clone_from(&self.key_id);
        }
        let spent: Vec<crate::quota::CallUsage<'_>> = session
            .calls
            .iter()
            .map(|call| crate::quota::CallUsage {
                model_id: &call.model_id,
                usage: crate::pricing::usage_of_row(&call.usage),
            })
            .collect();
        self.quotas
            .charge(
                &self.project,
                session.session.key_id.as_deref(),
                &spent,
                &self.pricing,
                crate::clock::now_ms(),
            )
            .await;
        self.recorder.record(&self.project, session);
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
    /// Which price applies to a deployment (`[[prices]]`, then discovery).
    pub pricing: Arc<crate::pricing::Pricing>,
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
    /// OpenTelemetry traces (`[telemetry] otlp_endpoint`; the router holds
    /// the same handle for its attempts).
    pub traces: Arc<crate::traces::Traces>,
    /// Budgets and rate limits of projects and keys.
    pub quotas: Arc<crate::quota::Quotas>,
    /// Each conversation's last prompt size against the bytes sent
    /// ([`crate::service::context`]), for estimates without a tokenizer.
    pub calibrations: crate::service::context::Calibrations,
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
            &self.project,
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
    /// The OTLP trace exporter could not be built.
    #[error(transparent)]
    Traces(#[from] crate::traces::TracesError),
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
    use axum::middleware::from_fn_with_state;
    let max_body = state.config.server.max_body_bytes;
    // Each `layer` / `route_layer` call boxes every route once more, and
    // every request clones each box level of its route: the layers go on
    // as two stacks (`ServiceBuilder`: the first layer is the outermost),
    // not one call per layer.
    //
    // Budgets and rate limits run after auth (inside it), so the caller is
    // known.
    let per_route = tower::ServiceBuilder::new()
        .layer(from_fn_with_state(state.clone(), crate::auth::middleware))
        .layer(from_fn_with_state(
            state.clone(),
            crate::http::quota::middleware,
        ));
    let every_request = tower::ServiceBuilder::new()
        .layer(from_fn_with_state(
            state.clone(),
            crate::http::access::middleware,
        ))
        // Oversized bodies get 413 in each surface's error shape before any handler.
        .layer(from_fn_with_state(max_body, crate::limits::body_limit))
        .layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                axum::http::header::AUTHORIZATION,
                axum::http::HeaderName::from_static("api-key"),
                axum::http::HeaderName::from_static("x-api-key"),
            ]),
        )
        .layer(DefaultBodyLimit::max(max_body))
        // Host, Origin and Content-Type checks on every request (UI too),
        // before auth.
        .layer(from_fn_with_state(state.clone(), crate::guard::middleware));
    crate::http::routes::router()
        .route_layer(per_route)
        // The web UI shell: public, so merged after the auth route layer.
        .merge(crate::ui::routes())
        .layer(every_request)
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
    let pricing = Arc::new(crate::pricing::Pricing::new(
        config.prices.clone(),
        Arc::clone(&registry),
    ));
    let (recorder, recorder_task) = if config.storage.call_log {
        let (recorder, task) = Recorder::spawn(
            store.clone(),
            config.storage.content,
            config.security.redact_secrets,
            Arc::clone(&pricing),
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
    let listener = bind_listener(listen).map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    let live = crate::conversations::live::LiveTurns::new(
        crate::conversations::live::DEFAULT_MAX_EVENTS,
        config.turns.tool_output_buffer_bytes,
    );
    // Replicas with NATS share live events; otherwise one process's bus.
    let bus: Arc<dyn crate::conversations::bus::EventBus> =
        match config.cluster.as_ref().and_then(|c| {
            c.nats_url
                .as_deref()
                .map(|url| (url, c.replica_id.as_str()))
        }) {
            Some((url, replica)) => Arc::new(crate::conversations::nats_bus::NatsBus::start(
                url,
                replica,
                live.mirrors(),
            )),
            None => Arc::new(crate::conversations::bus::InProcessBus::default()),
        };
    crate::conversations::engine::recover_interrupted(
        &store,
        bus.as_ref(),
        config.cluster.as_ref(),
    )
    .await;
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
    let traces = Arc::new(crate::traces::Traces::new(&config.telemetry)?);
    let metrics_listener = match config.telemetry.metrics_listen {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "telemetry.metrics_listen is not loopback: /metrics there has no auth");
            }
            let listener =
                bind_listener(addr).map_err(|source| ServerError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let quotas = crate::quota::Quotas::new(
        store.clone(),
        u64::from(config.limits.budget_reserve_tokens),
    );
    let quota_stop = tokio_util::sync::CancellationToken::new();
    let quota_flush = quotas.spawn_flush(quota_stop.clone());
    let state = AppState {
        inner: Arc::new(AppInner {
            router: Arc::new(
                crate::routing::Router::with_metrics(
                    config.routing.clone(),
                    &config.routes,
                    Arc::clone(&metrics),
                )
                .with_traces(Arc::clone(&traces)),
            ),
            config,
            registry,
            recorder,
            pricing,
            store: store.clone(),
            auth,
            bus,
            live,
            streams,
            halt: halt.clone(),
            metrics,
            traces: Arc::clone(&traces),
            quotas: Arc::clone(&quotas),
            calibrations: crate::service::context::Calibrations::default(),
        }),
        project,
        admission: None,
        key_id: None,
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
    crate::conversations::engine::spawn_lease_renewal(state.clone());
    // Keys created or revoked elsewhere (the CLI, another replica) take
    // effect within KEY_COUNT_INTERVAL (CLUSTER_KEY_INTERVAL between
    // replicas).
    let auth_state = state.clone();
    let auth_stop = state.live.shutdown_token();
    let key_interval = match state.config.cluster {
        Some(_) => crate::auth::CLUSTER_KEY_INTERVAL,
        None => crate::auth::KEY_COUNT_INTERVAL,
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(key_interval) => {
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
        // Unspent leases go back to the shared counters, overspends are charged.
        quota_stop.cancel();
        let _ = quota_flush.await;
        quotas.return_all().await;
        store.close().await;
        // The last spans (the exporter blocks on its own thread).
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
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
