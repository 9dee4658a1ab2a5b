//! Application state, the route table, and the server's life cycle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use modelyard_store::{ProjectId, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::conversations as conv;
use crate::config::{Config, RetentionConfig};
use crate::recorder::Recorder;
use crate::registry::ProviderRegistry;
use crate::{api, gateway};

/// Shared state of every handler. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppInner>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct AppInner {
    /// The loaded configuration.
    pub config: Config,
    /// Providers and what discovery saw.
    pub registry: Arc<ProviderRegistry>,
    /// The call log writer.
    pub recorder: Recorder,
    /// The database.
    pub store: Store,
    /// The project requests act for (`default` until API keys exist).
    pub project: ProjectId,
    /// Fan-out of conversation events.
    pub bus: Arc<dyn crate::conversations::bus::EventBus>,
    /// Running turns of this process.
    pub live: crate::conversations::live::LiveTurns,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
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

/// The route table.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/chat/completions", post(gateway::chat_completions))
        .route("/v1/models", get(gateway::list_models))
        .route("/v1/calls", get(api::calls::list))
        .route("/v1/calls/{id}", get(api::calls::show))
        .route("/v1/llm-calls/{id}", get(api::calls::show))
        .route("/v1/llm-sessions", get(api::sessions::list))
        .route("/v1/llm-sessions/{id}", get(api::sessions::show))
        .route("/v1/usage", get(api::sessions::usage))
        .route("/v1/catalog", get(api::catalog::catalog))
        .route("/v1/providers", get(api::providers::list))
        .route("/v1/providers/{name}", get(api::providers::show))
        .route(
            "/v1/providers/{name}/refresh",
            post(api::providers::refresh),
        )
        .route(
            "/v1/favorites",
            get(api::favorites::list)
                .put(api::favorites::replace)
                .post(api::favorites::add),
        )
        .route(
            "/v1/favorites/{*model_id}",
            axum::routing::delete(api::favorites::remove),
        )
        .route("/v1/llms", get(api::llms::list).post(api::llms::create))
        .route(
            "/v1/llms/{id}",
            get(api::llms::show)
                .patch(api::llms::patch)
                .delete(api::llms::delete),
        )
        .route("/v1/llms/{id}/copy", post(api::llms::copy))
        .route("/v1/conversations", get(conv::list).post(conv::create))
        .route(
            "/v1/conversations/{id}",
            get(conv::show).patch(conv::patch).delete(conv::delete),
        )
        .route(
            "/v1/conversations/{id}/messages",
            get(conv::messages).post(crate::api::imports::import),
        )
        .route(
            "/v1/conversations/{id}/model",
            get(conv::get_model).put(conv::put_model),
        )
        .route(
            "/v1/conversations/{id}/settings",
            get(conv::get_settings).patch(conv::patch_settings),
        )
        .route(
            "/v1/conversations/{id}/model-history",
            get(conv::model_history),
        )
        .route(
            "/v1/conversations/{id}/turns",
            get(conv::turns).post(conv::start_turn),
        )
        .route(
            "/v1/conversations/{id}/turns/{turn_id}/cancel",
            post(conv::cancel_turn),
        )
        .route(
            "/v1/conversations/{id}/turns/{turn_id}/tool-results",
            post(conv::tool_results),
        )
        .route("/v1/conversations/{id}/events", get(conv::events))
        .route("/v1/conversations/{id}/title", post(api::operations::title))
        .route(
            "/v1/conversations/{id}/compact",
            post(api::operations::compact),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open requests finish, flushes the call log.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`RunningServer::shutdown`] or a
    /// fatal error).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that triggers shutdown from elsewhere (a signal handler).
    pub fn shutdown_handle(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown.clone()
    }
}

fn redact_storage_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
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
    let (recorder, recorder_task) = if config.storage.call_log {
        let (recorder, task) =
            Recorder::spawn(store.clone(), project.clone(), config.storage.content);
        (recorder, Some(task))
    } else {
        (Recorder::disabled(), None)
    };
    let pruner = config
        .storage
        .retention
        .is_configured()
        .then(|| spawn_pruner(store.clone(), config.storage.retention));
    let listen = config.server.listen;
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
    let state = AppState(Arc::new(AppInner {
        config,
        registry,
        recorder,
        store: store.clone(),
        project,
        bus,
        live,
    }));
    let live_state = state.clone();
    let stopping_state = state.clone();
    let app = router(state);
    let (shutdown, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
                // Interrupt turns and end events streams now: open streams
                // would otherwise keep the graceful shutdown waiting forever.
                stopping_state.live.begin_shutdown();
                drop(stopping_state);
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "server stopped with an error");
        }
        // Running turns end `interrupted` (with their partial answer) before the store closes.
        live_state.live.interrupt_all();
        for _ in 0..250 {
            if live_state.live.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(live_state);
        refresh.iter().for_each(|task| task.abort());
        if let Some(task) = &pruner {
            task.abort();
        }
        // The router (and its recorder handle) is gone: the writer drains and exits.
        if let Some(task) = recorder_task {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("call log did not flush within 10 s");
            }
        }
        store.close().await;
    });
    Ok(RunningServer {
        addr,
        shutdown,
        task,
    })
}
