//! Test support for Modelyard: a mock OpenAI-compatible upstream whose behaviour is chosen by
//! model name.
//!
//! [`MockUpstream::start`] binds `127.0.0.1:0` and serves a llama.cpp-flavoured
//! OpenAI-compatible API on a spawned tokio task. It adds no latency unless asked to, so it
//! doubles as the baseline of the gateway overhead benchmark, and it records what it receives
//! ([`MockUpstream::requests`]) and how clients went away ([`MockUpstream::cancelled_streams`],
//! [`MockUpstream::cancelled_requests`], [`MockUpstream::in_flight`]).
//!
//! For byte-level faults an axum server cannot produce (a TCP reset, a line that never ends,
//! bytes that are not UTF-8, a redirect), [`hostile::HostileUpstream`] is a raw TCP server
//! whose behaviour is also chosen by model name ([`hostile::HOSTILE_MODELS`]).
//!
//! [`MockUpstream::start_with`] picks another [`Flavour`] (the discovery endpoints of one
//! provider kind: OpenAI, llama-swap, vLLM, Ollama, OpenRouter) and the [`MockModel`]s it
//! serves, so provider discovery can be tested against several mocks at once. At run time
//! [`MockUpstream::set_models`] changes the models (appear/disappear, load/unload),
//! [`MockUpstream::set_down`] takes the whole host offline and
//! [`MockUpstream::set_discovery_delay_ms`] makes discovery slow.
//!
//! # Routes
//!
//! Every flavour serves chat completions at `POST /v1/chat/completions` (OpenRouter also at
//! `POST /api/v1/chat/completions`), with the behaviour chosen by the request's `model` (table
//! below) whatever the model list says. Anything not listed answers `404` with an OpenAI error
//! envelope (`{"error":{"message":…,"type":"invalid_request_error","param":null,"code":null}}`).
//! `<ctx>` is the model's [`MockModel::context_window`]; when that is `None` the field is
//! left out (OpenRouter: `null`), as a server that does not know it would.
//!
//! | Flavour | Route | Response |
//! |---------|-------|----------|
//! | [`LlamaCpp`](Flavour::LlamaCpp) (default, [`MockUpstream::start`]) | `GET /health` | `200 {"status":"ok"}` |
//! | | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"llamacpp","meta":{"n_ctx":<ctx>,"n_ctx_train":<ctx>}}]}` (`meta` left out when `<ctx>` is unknown) |
//! | | `GET /props` | `{"default_generation_settings":{"n_ctx":<ctx>},"total_slots":1,"model_alias":<id>,"model_path":"/models/<id>.gguf"}` of the first model; with no models `503 {"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}` |
//! | [`OpenAi`](Flavour::OpenAi) | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"openai"}]}` (no context window, no `/health`) |
//! | [`LlamaSwap`](Flavour::LlamaSwap) | `GET /v1/models` | every model: `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"llama-swap"}]}` |
//! | | `GET /running` | `{"running":[{"model":<id>,"state":"ready"}]}` for the models with `loaded` |
//! | | `GET /upstream/<id>/props` | llama.cpp `/props` (above) of `<id>` when it is loaded; `<id>` is the rest of the path minus the trailing `/props`, so it may contain `/` (`%XX` is decoded). `404` when `<id>` is unknown **or not loaded**: real llama-swap would start the model, the mock never does |
//! | | `GET /health` | `200` `text/plain` `OK` |
//! | [`Vllm`](Flavour::Vllm) | `GET /v1/models` | `{"object":"list","data":[{"id","object":"model","created":1700000000,"owned_by":"vllm","root":<id>,"parent":null,"max_model_len":<ctx>}]}` |
//! | | `GET /health` | `200` with an empty body |
//! | [`Ollama`](Flavour::Ollama) | `GET /` (and `HEAD /`) | `200` `text/plain` `Ollama is running` |
//! | | `GET /api/tags` | `{"models":[{"name":<id>,"model":<id>,"modified_at":"2026-01-01T00:00:00Z","size":1,"digest":"x","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8B","quantization_level":"Q4_K_M"}}]}` (every model) |
//! | | `POST /api/show` `{"model":<id>}` (or `{"name":<id>}`) | `{"details":{…},"model_info":{"general.architecture":"llama","llama.context_length":<ctx>},"parameters":"","template":"{{ .Prompt }}","capabilities":["completion"],"modified_at":…}` for any listed model (loaded or not; `x` also finds `x:latest`); unknown: `404 {"error":"model 'x' not found"}`; no name / bad JSON: `400 {"error":…}` |
//! | | `GET /api/ps` | `{"models":[{"name":<id>,"model":<id>,"size":1,"digest":"x","details":{…},"expires_at":"2026-01-01T00:00:00Z","size_vram":1,"context_length":<ctx>}]}` for the models with `loaded` |
//! | | `GET /v1/models` | as OpenAI, with `owned_by:"library"` |
//! | [`OpenRouter`](Flavour::OpenRouter) | `GET /v1/models`, `GET /api/v1/models` | `{"data":[{"id","name":"Display <id>","context_length":<ctx>\|null,"created":1700000000}]}` |
//!
//! [`MockModel::loaded`] only matters to llama-swap (`/running`, `/upstream/<id>/props`) and
//! Ollama (`/api/ps`); the other flavours list every model.
//!
//! The discovery routes are every route above except chat. [`MockUpstream::set_discovery_delay_ms`]
//! delays their answers (after recording the request; a client hanging up during the delay
//! counts in [`MockUpstream::cancelled_requests`]); chat is never delayed by it. While
//! [`MockUpstream::set_down`] is on, **every** request (chat, discovery, unknown routes) is
//! recorded and then answered at once, undelayed, with `503`
//! `{"error":{"message":"mock upstream is down","type":"unavailable_error","param":null,"code":503}}`;
//! responses already streaming are not cut.
//!
//! The default model list ([`MockOptions::default`], used by [`MockUpstream::start`]) is
//! [`MODEL_IDS`], each with context window 4096 and loaded.
//!
//! A chat body that is not valid JSON gets `400` with
//! `{"error":{"message":…,"type":"invalid_request_error","param":null,"code":null}}`.
//!
//! # Chat behaviours
//!
//! The `model` field is split at the first `:`; the part before selects the behaviour, the part
//! after is its parameter (`<ms>` defaults to 100 when missing or unparseable; `<code>` to 500).
//! For `tool-call` the parameter is `<name>`, optionally followed by `*<n>` (`n >= 1`; missing,
//! `0` or unparseable means 1) and/or `@<ms>`; `<name>` is everything before the first `*` or
//! `@` (`tool` when empty). Examples: `tool-call:advisor`, `tool-call:advisor*3`,
//! `tool-call:get_weather*2@50`. The arguments are serialised with `serde_json` (compact, so
//! escaped), e.g. `{"question":"hello there world"}`.
//!
//! | `model`            | `"stream": true` | non-stream |
//! |--------------------|------------------|------------|
//! | anything else (`mock-model`, `echo`, …) | normal stream (below) | normal completion (below) |
//! | `slow:<ms>`        | sleeps `<ms>` between every two SSE events | sleeps `<ms>` before the response headers |
//! | `slow-first:<ms>`  | sleeps `<ms>` before sending anything (headers included), then normal | same |
//! | `stall:<ms>`       | role chunk + first word chunk, sleeps `<ms>`, then the rest | sleeps `<ms>`, then normal |
//! | `drop`             | role chunk + one content chunk, then the connection is aborted (no `[DONE]`) | headers + the first half of the JSON, then aborted |
//! | `malformed`        | role chunk, `data: {this is not json`, `data: [DONE]` | `200` with body `{this is not json` |
//! | `inband-error`     | role chunk, one content chunk, `data: {"error":{"message":"mock upstream failed mid-stream","type":"server_error","code":500}}`, end without `[DONE]` | `200` with that error object as body |
//! | `status:<code>`    | status `<code>`, body `{"error":{"message":"mock upstream status <code>","type":"mock_error","param":null,"code":<code>}}`, plus `retry-after: 1` for 429 | same |
//! | `tools`            | role chunk (`content:null`), `delta.tool_calls` pieces (id+type+name with `""` arguments, then `{"city": ` and `"Paris"}`), finish `tool_calls`, usage chunk if `include_usage`, `[DONE]` | `message.tool_calls=[{"id":"call_mock_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]`, `content:null`, finish `tool_calls` |
//! | `reasoning`        | normal, with two `delta.reasoning_content` chunks (`thinking`, `...`) before the content | normal plus `message.reasoning_content:"thinking..."` |
//! | `leak-auth`        | status 401 whose error message echoes the request's `Authorization` header (`invalid credentials: Bearer …`), like a careless upstream | same |
//! | `hang`             | never responds (sleeps an hour); counts in [`MockUpstream::cancelled_requests`] when dropped | same |
//! | `tool-call:<name>[*<n>][@<ms>]` | while fewer than `<n>` (default 1) `tool` messages follow the last `user` message: role chunk (`content:null`), a `delta.tool_calls` chunk with `id` `call_mock_<k>` (`<k>` = that count + 1), `type:"function"`, `function:{"name":<name>,"arguments":""}`, then the arguments `{"question":<last user text>}` in two pieces (first/second half by chars), finish `tool_calls`, usage chunk if `include_usage`, `[DONE]`; otherwise a normal stream of `"tool said: "` + the content of the last `tool` message. With `@<ms>`, sleeps `<ms>` between every two SSE events (either way) | the same tool call as `message.tool_calls=[{"id":"call_mock_<k>","type":"function","function":{"name":<name>,"arguments":"{\"question\":…}"}}]`, `content:null`, finish `tool_calls`; otherwise a normal completion with content `"tool said: <tool content>"`. Never delayed |
//!
//! **Normal completion**: content is `"echo: "` + the text of the last `user` message (string
//! content, or its `text` parts concatenated). The response `model` is always
//! [`UPSTREAM_MODEL`] (`"mock-upstream-model"`) whatever was requested, `id` is
//! `"chatcmpl-mock"`, `created` `1700000000`, `system_fingerprint` `"fp_mock"`, and there is an
//! unknown extra top-level field `"x_mock_extra":{"kept":true}`. `finish_reason` is `"stop"`.
//! `usage` = `{prompt_tokens, completion_tokens, total_tokens,
//! prompt_tokens_details:{cached_tokens:0}, completion_tokens_details:{reasoning_tokens}}` where
//! `prompt_tokens` is the number of whitespace-separated words across all message contents and
//! `completion_tokens` the number of words of the content (`tools` and a `tool-call` that calls:
//! words of the arguments; `reasoning`: content words + 2, with `reasoning_tokens: 2`).
//!
//! **Normal stream**: `text/event-stream`, every event exactly `data: <json>\n\n`: a
//! `chat.completion.chunk` with `delta {"role":"assistant","content":""}`, one chunk per
//! word of the content (the word plus a trailing space, except the last word), a chunk with
//! `delta:{}` and `finish_reason:"stop"`, then — only if the request had
//! `stream_options.include_usage == true` — a usage chunk with `"choices":[]` and `usage`,
//! then `data: [DONE]\n\n`. Every chunk carries `"x_mock_extra":{"kept":true}`.
//!
//! A stream counts as cancelled ([`MockUpstream::cancelled_streams`]) when its body is dropped
//! before the mock produced its last event (client went away). A handler dropped before it
//! produced a response (e.g. `hang`, `slow:<ms>` non-stream, `slow-first:<ms>`) counts in
//! [`MockUpstream::cancelled_requests`].

pub mod hostile;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

/// The `model` reported in every completion, whatever the request asked for (llama.cpp ignores
/// the requested name too).
pub const UPSTREAM_MODEL: &str = "mock-upstream-model";

/// Model ids listed by `GET /v1/models`: the plain models plus one example of each behaviour.
pub const MODEL_IDS: &[&str] = &[
    "mock-model",
    "echo",
    "slow:100",
    "slow-first:100",
    "stall:1000",
    "drop",
    "malformed",
    "inband-error",
    "status:429",
    "status:500",
    "tools",
    "reasoning",
    "hang",
];

const DEFAULT_MS: u64 = 100;
const MAX_BODY: usize = 64 * 1024 * 1024;
const HEALTH_BODY: &str = r#"{"status":"ok"}"#;
const LOADING_BODY: &str =
    r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;
/// `created` of every listed model.
const CREATED: u64 = 1_700_000_000;
/// Context window of the default models (and of [`MockUpstream::set_listed_models`] ids).
const DEFAULT_CONTEXT: u64 = 4096;
const OLLAMA_TIME: &str = "2026-01-01T00:00:00Z";
const DONE_EVENT: &str = "data: [DONE]\n\n";
const INBAND_ERROR: &str =
    r#"{"error":{"message":"mock upstream failed mid-stream","type":"server_error","code":500}}"#;
const TOOL_ARGUMENTS: &str = r#"{"city": "Paris"}"#;

/// One HTTP request received by the mock, as recorded by [`MockUpstream::requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Request path without the query string, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// Headers in received order; names lower-case, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The complete request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is valid JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Which provider kind's discovery endpoints the mock speaks (see the crate docs for the routes
/// of each). Chat completions are the same for every flavour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// llama.cpp `llama-server`: `/health`, `/v1/models` with `meta.n_ctx`, `/props`. The
    /// default, and what [`MockUpstream::start`] serves.
    #[default]
    LlamaCpp,
    /// A plain OpenAI-compatible server: `/v1/models` only, no context windows, no health.
    OpenAi,
    /// llama-swap: `/v1/models`, `/running`, `/upstream/<model>/props`, `/health`.
    LlamaSwap,
    /// vLLM: `/v1/models` with `max_model_len`, `/health`.
    Vllm,
    /// Ollama: `/`, `/api/tags`, `/api/show`, `/api/ps`, and `/v1/models`.
    Ollama,
    /// OpenRouter: `/v1/models` and `/api/v1/models` with `context_length`; chat also at
    /// `/api/v1/chat/completions`.
    OpenRouter,
}

impl Flavour {
    /// Every flavour, in declaration order.
    pub const ALL: [Flavour; 6] = [
        Flavour::LlamaCpp,
        Flavour::OpenAi,
        Flavour::LlamaSwap,
        Flavour::Vllm,
        Flavour::Ollama,
        Flavour::OpenRouter,
    ];
}

/// One model the mock reports through its discovery endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockModel {
    /// The model id (may contain `/` and `:`; chat behaviour still follows the crate docs'
    /// table, so an id like `qwen3-8b` or `meta-llama/Llama-3-8B` gets the normal echo).
    pub id: String,
    /// Context window in tokens; `None` leaves it out of the discovery answers.
    pub context_window: Option<u64>,
    /// Whether the model is loaded (llama-swap `/running`, Ollama `/api/ps`).
    pub loaded: bool,
}

impl MockModel {
    /// A loaded model.
    pub fn new(id: impl Into<String>, context_window: Option<u64>) -> MockModel {
        MockModel {
            id: id.into(),
            context_window,
            loaded: true,
        }
    }

    /// The same model with `loaded` set.
    #[must_use]
    pub fn with_loaded(mut self, loaded: bool) -> MockModel {
        self.loaded = loaded;
        self
    }
}

/// Options for [`MockUpstream::start_with`].
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Which discovery endpoints to serve.
    pub flavour: Flavour,
    /// The initial models (replaced at run time by [`MockUpstream::set_models`]).
    pub models: Vec<MockModel>,
}

impl MockOptions {
    /// Options with the given flavour and models.
    pub fn new(flavour: Flavour, models: Vec<MockModel>) -> MockOptions {
        MockOptions { flavour, models }
    }
}

impl Default for MockOptions {
    /// [`Flavour::LlamaCpp`] with [`MODEL_IDS`], each loaded with context window 4096: what
    /// [`MockUpstream::start`] serves.
    fn default() -> MockOptions {
        MockOptions {
            flavour: Flavour::LlamaCpp,
            models: MODEL_IDS
                .iter()
                .map(|id| MockModel::new(*id, Some(DEFAULT_CONTEXT)))
                .collect(),
        }
    }
}

struct Shared {
    record: AtomicBool,
    log: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    cancelled_streams: AtomicUsize,
    streams_notify: Notify,
    cancelled_requests: AtomicUsize,
    requests_notify: Notify,
    flavour: Flavour,
    /// The models given at start, restored by `set_listed_models(None)`.
    initial_models: Vec<MockModel>,
    models: Mutex<Arc<Vec<MockModel>>>,
    down: AtomicBool,
    discovery_delay_ms: AtomicU64,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("mock upstream: bind 127.0.0.1:0");
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
    /// (for [`start`](Self::start): [`MODEL_IDS`]). Tests use it to list the exact behaviour
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn wait_count(counter: &AtomicUsize, notify: &Notify, n: usize, timeout: Duration) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Guards

/// Counts a request in `in_flight` until dropped (moved into stream bodies).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
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
struct RequestGuard<'a> {
    shared: &'a Shared,
    done: bool,
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
struct StreamGuard {
    finished: bool,
    in_flight: InFlight,
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

// ---------------------------------------------------------------------------------------------
// Dispatch

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let in_flight = InFlight::new(&shared);
    let mut guard = RequestGuard {
        shared: &shared,
        done: false,
    };
    let resp = dispatch(&shared, req, in_flight).await;
    guard.done = true;
    resp
}

async fn dispatch(shared: &Arc<Shared>, req: Request, in_flight: InFlight) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("failed to read request body: {e}"),
                "invalid_request_error",
                Value::Null,
            )
        }
    };
    if shared.record.load(Ordering::Relaxed) {
        let recorded = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
        };
        lock(&shared.log).push(recorded);
    }

    if shared.down.load(Ordering::SeqCst) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "mock upstream is down",
            "unavailable_error",
            Value::from(503),
        );
    }

    let route = Route::parse(shared.flavour, &parts.method, parts.uri.path());
    if route.is_discovery() {
        let ms = shared.discovery_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    let models = lock(&shared.models).clone();
    match route {
        Route::Chat => {
            // `leak-auth`: a careless upstream that echoes the credential it got.
            let model = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_owned));
            if model.as_deref() == Some("leak-auth") {
                let auth = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    &format!("invalid credentials: {auth}"),
                    "authentication_error",
                    Value::from(401),
                );
            }
            chat(body, in_flight).await
        }
        Route::Health => match shared.flavour {
            Flavour::LlamaCpp => {
                json_response(StatusCode::OK, Bytes::from_static(HEALTH_BODY.as_bytes()))
            }
            Flavour::LlamaSwap => text_response(StatusCode::OK, "OK"),
            // vLLM: 200 with an empty body.
            _ => Response::new(Body::empty()),
        },
        Route::Models => json_value(StatusCode::OK, &models_listing(shared.flavour, &models)),
        Route::Props => match models.first() {
            Some(m) => json_value(StatusCode::OK, &props(m)),
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(LOADING_BODY.as_bytes()),
            ),
        },
        Route::Running => {
            let running: Vec<Value> = models
                .iter()
                .filter(|m| m.loaded)
                .map(|m| json!({"model": m.id, "state": "ready"}))
                .collect();
            json_value(StatusCode::OK, &json!({ "running": running }))
        }
        Route::UpstreamProps(id) => match models.iter().find(|m| m.id == id) {
            Some(m) if m.loaded => json_value(StatusCode::OK, &props(m)),
            Some(_) => error_response(
                StatusCode::NOT_FOUND,
                &format!(
                    "mock upstream: model '{id}' is not loaded (the mock never starts models)"
                ),
                "invalid_request_error",
                Value::Null,
            ),
            None => error_response(
                StatusCode::NOT_FOUND,
                &format!("mock upstream: model '{id}' not found"),
                "invalid_request_error",
                Value::Null,
            ),
        },
        Route::OllamaRoot => text_response(StatusCode::OK, "Ollama is running"),
        Route::Tags => {
            let list: Vec<Value> = models
                .iter()
                .map(|m| {
                    json!({
                        "name": m.id,
                        "model": m.id,
                        "modified_at": OLLAMA_TIME,
                        "size": 1,
                        "digest": "x",
                        "details": ollama_details(),
                    })
                })
                .collect();
            json_value(StatusCode::OK, &json!({ "models": list }))
        }
        Route::Show => ollama_show(&body, &models),
        Route::Ps => {
            let list: Vec<Value> = models
                .iter()
                .filter(|m| m.loaded)
                .map(|m| {
                    let mut v = json!({
                        "name": m.id,
                        "model": m.id,
                        "size": 1,
                        "digest": "x",
                        "details": ollama_details(),
                        "expires_at": OLLAMA_TIME,
                        "size_vram": 1,
                    });
                    if let Some(ctx) = m.context_window {
                        v["context_length"] = Value::from(ctx);
                    }
                    v
                })
                .collect();
            json_value(StatusCode::OK, &json!({ "models": list }))
        }
        Route::NotFound => error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "mock upstream: no route for {} {}",
                parts.method,
                parts.uri.path()
            ),
            "invalid_request_error",
            Value::Null,
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Chat,
    Health,
    Models,
    Props,
    Running,
    /// llama-swap `/upstream/<id>/props`, with the decoded model id.
    UpstreamProps(String),
    OllamaRoot,
    Tags,
    Show,
    Ps,
    NotFound,
}

impl Route {
    fn parse(flavour: Flavour, method: &Method, path: &str) -> Route {
        use Flavour::{LlamaCpp, LlamaSwap, Ollama, OpenRouter, Vllm};
        let get = *method == Method::GET;
        let post = *method == Method::POST;
        match (flavour, path) {
            (_, "/v1/chat/completions") | (OpenRouter, "/api/v1/chat/completions") if post => {
                Route::Chat
            }
            (_, "/v1/models") | (OpenRouter, "/api/v1/models") if get => Route::Models,
            (LlamaCpp | LlamaSwap | Vllm, "/health") if get => Route::Health,
            (LlamaCpp, "/props") if get => Route::Props,
            (LlamaSwap, "/running") if get => Route::Running,
            (LlamaSwap, p) if get => match p
                .strip_prefix("/upstream/")
                .and_then(|rest| rest.strip_suffix("/props"))
            {
                Some(id) => Route::UpstreamProps(percent_decode(id)),
                None => Route::NotFound,
            },
            (Ollama, "/") if get || *method == Method::HEAD => Route::OllamaRoot,
            (Ollama, "/api/tags") if get => Route::Tags,
            (Ollama, "/api/show") if post => Route::Show,
            (Ollama, "/api/ps") if get => Route::Ps,
            _ => Route::NotFound,
        }
    }

    fn is_discovery(&self) -> bool {
        !matches!(self, Route::Chat | Route::NotFound)
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn models_listing(flavour: Flavour, models: &[MockModel]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            let mut v = match flavour {
                Flavour::OpenRouter => {
                    return json!({
                        "id": m.id,
                        "name": format!("Display {}", m.id),
                        "context_length": m.context_window,
                        "created": CREATED,
                    })
                }
                Flavour::LlamaCpp => openai_model(&m.id, "llamacpp"),
                Flavour::OpenAi => openai_model(&m.id, "openai"),
                Flavour::LlamaSwap => openai_model(&m.id, "llama-swap"),
                Flavour::Vllm => openai_model(&m.id, "vllm"),
                Flavour::Ollama => openai_model(&m.id, "library"),
            };
            match (flavour, m.context_window) {
                (Flavour::LlamaCpp, Some(ctx)) => {
                    v["meta"] = json!({"n_ctx": ctx, "n_ctx_train": ctx});
                }
                (Flavour::Vllm, ctx) => {
                    v["root"] = Value::from(m.id.as_str());
                    v["parent"] = Value::Null;
                    if let Some(ctx) = ctx {
                        v["max_model_len"] = Value::from(ctx);
                    }
                }
                _ => {}
            }
            v
        })
        .collect();
    if flavour == Flavour::OpenRouter {
        json!({ "data": data })
    } else {
        json!({"object": "list", "data": data})
    }
}

fn openai_model(id: &str, owned_by: &str) -> Value {
    json!({"id": id, "object": "model", "created": CREATED, "owned_by": owned_by})
}

/// llama.cpp `GET /props` for `model`.
fn props(model: &MockModel) -> Value {
    let mut settings = json!({});
    if let Some(ctx) = model.context_window {
        settings["n_ctx"] = Value::from(ctx);
    }
    json!({
        "default_generation_settings": settings,
        "total_slots": 1,
        "model_alias": model.id,
        "model_path": format!("/models/{}.gguf", model.id),
    })
}

fn ollama_details() -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8B",
        "quantization_level": "Q4_K_M",
    })
}

/// Ollama `POST /api/show` with `{"model": <id>}` or `{"name": <id>}`.
fn ollama_show(body: &[u8], models: &[MockModel]) -> Response {
    let ollama_error =
        |status: StatusCode, message: String| json_value(status, &json!({ "error": message }));
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return ollama_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let Some(name) = ["model", "name"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_str))
        .filter(|n| !n.is_empty())
    else {
        return ollama_error(StatusCode::BAD_REQUEST, "model is required".to_owned());
    };
    // Ollama's default tag: `llama3` names `llama3:latest`.
    let found = models.iter().find(|m| m.id == name).or_else(|| {
        if name.contains(':') {
            return None;
        }
        let tagged = format!("{name}:latest");
        models.iter().find(|m| m.id == tagged)
    });
    let Some(model) = found else {
        return ollama_error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    };
    let mut info = json!({"general.architecture": "llama"});
    if let Some(ctx) = model.context_window {
        info["llama.context_length"] = Value::from(ctx);
    }
    json_value(
        StatusCode::OK,
        &json!({
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": ollama_details(),
            "model_info": info,
            "capabilities": ["completion"],
            "modified_at": OLLAMA_TIME,
        }),
    )
}

fn json_value(status: StatusCode, body: &Value) -> Response {
    json_response(status, Bytes::from(serde_json::to_vec(body).unwrap()))
}

fn text_response(status: StatusCode, body: &'static str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(status: StatusCode, message: &str, kind: &str, code: Value) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    json_response(status, Bytes::from(serde_json::to_vec(&body).unwrap()))
}

// ---------------------------------------------------------------------------------------------
// Chat completions

#[derive(Debug, Clone, PartialEq, Eq)]
enum Behaviour {
    Normal,
    Slow(Duration),
    SlowFirst(Duration),
    Stall(Duration),
    Drop,
    Malformed,
    InbandError,
    Status(u16),
    Tools,
    Reasoning,
    Hang,
    /// `tool-call:<name>[*<times>][@<ms>]`: calls `name` until `times` tool results follow the
    /// last user message, then answers with the last tool result.
    ToolCall {
        name: String,
        times: usize,
        delay: Option<Duration>,
    },
}

impl Behaviour {
    fn parse(model: &str) -> Behaviour {
        let (name, param) = match model.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (model, None),
        };
        let ms = || {
            Duration::from_millis(
                param
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(DEFAULT_MS),
            )
        };
        match name {
            "slow" => Behaviour::Slow(ms()),
            "slow-first" => Behaviour::SlowFirst(ms()),
            "stall" => Behaviour::Stall(ms()),
            "drop" => Behaviour::Drop,
            "malformed" => Behaviour::Malformed,
            "inband-error" => Behaviour::InbandError,
            "status" => Behaviour::Status(param.and_then(|p| p.trim().parse().ok()).unwrap_or(500)),
            "tools" => Behaviour::Tools,
            "reasoning" => Behaviour::Reasoning,
            "hang" => Behaviour::Hang,
            "tool-call" => Behaviour::parse_tool_call(param.unwrap_or("")),
            _ => Behaviour::Normal,
        }
    }

    /// `<name>[*<times>][@<ms>]` (the `*` and `@` parts in either order).
    fn parse_tool_call(param: &str) -> Behaviour {
        let name_end = param.find(['*', '@']).unwrap_or(param.len());
        let name = match param[..name_end].trim() {
            "" => "tool",
            n => n,
        };
        // The text after `marker` up to the next `*`/`@` (or the end).
        let part = |marker: char| {
            param[name_end..].find(marker).map(|i| {
                let rest = &param[name_end + i + 1..];
                rest[..rest.find(['*', '@']).unwrap_or(rest.len())].trim()
            })
        };
        let times = part('*')
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .unwrap_or(1);
        let delay = part('@').map(|ms| Duration::from_millis(ms.parse().unwrap_or(DEFAULT_MS)));
        Behaviour::ToolCall {
            name: name.to_owned(),
            times,
            delay,
        }
    }
}

/// The one tool call a `tool-call` behaviour answers with.
struct ToolCallOut {
    id: String,
    name: String,
    arguments: String,
}

/// What a `tool-call:<name>*<times>` request gets: `Ok(call)` while fewer than `times` `tool`
/// messages follow the last `user` message, else `Err(answer content)`.
fn tool_call_turn(name: &str, times: usize, messages: &[Value]) -> Result<ToolCallOut, String> {
    let is = |m: &Value, r: &str| m.get("role").and_then(Value::as_str) == Some(r);
    let last_user = messages.iter().rposition(|m| is(m, "user"));
    let after = last_user.map_or(messages, |i| &messages[i + 1..]);
    let results = after.iter().filter(|m| is(m, "tool")).count();
    if results < times {
        let question = content_text(last_user.and_then(|i| messages[i].get("content")));
        let arguments = serde_json::to_string(&json!({ "question": question })).unwrap();
        return Ok(ToolCallOut {
            id: format!("call_mock_{}", results + 1),
            name: name.to_owned(),
            arguments,
        });
    }
    let last_tool = messages.iter().rev().find(|m| is(m, "tool"));
    Err(format!(
        "tool said: {}",
        content_text(last_tool.and_then(|m| m.get("content")))
    ))
}

/// Text of a message `content`: a string, or the `text` parts of an array concatenated.
fn content_text(content: Option<&Value>) -> std::borrow::Cow<'_, str> {
    match content {
        Some(Value::String(s)) => s.as_str().into(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<String>()
            .into(),
        _ => "".into(),
    }
}

fn count_words(content: Option<&Value>) -> usize {
    match content {
        Some(Value::String(s)) => s.split_whitespace().count(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.split_whitespace().count())
            .sum(),
        _ => 0,
    }
}

struct Usage {
    prompt: usize,
    completion: usize,
    reasoning: usize,
}

impl Usage {
    fn to_json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }
}

async fn chat(body: Bytes, in_flight: InFlight) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {e}"),
                "invalid_request_error",
                Value::Null,
            )
        }
    };
    let behaviour = Behaviour::parse(req.get("model").and_then(Value::as_str).unwrap_or(""));
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);

    match &behaviour {
        Behaviour::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        Behaviour::SlowFirst(d) => tokio::time::sleep(*d).await,
        Behaviour::Slow(d) | Behaviour::Stall(d) if !stream => tokio::time::sleep(*d).await,
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error_response(
                status,
                &format!("mock upstream status {}", status.as_u16()),
                "mock_error",
                Value::from(status.as_u16()),
            );
            if status == StatusCode::TOO_MANY_REQUESTS {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return resp;
        }
        _ => {}
    }

    let messages = req.get("messages").and_then(Value::as_array);
    let last_user = messages.and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    });
    let mut content = format!(
        "echo: {}",
        content_text(last_user.and_then(|m| m.get("content")))
    );
    let mut tool_call = None;
    if let Behaviour::ToolCall { name, times, .. } = &behaviour {
        match tool_call_turn(name, *times, messages.map_or(&[], Vec::as_slice)) {
            Ok(call) => tool_call = Some(call),
            Err(answer) => content = answer,
        }
    }
    let prompt = messages.map_or(0, |m| m.iter().map(|m| count_words(m.get("content"))).sum());
    let usage = match (&behaviour, &tool_call) {
        (_, Some(call)) => Usage {
            prompt,
            completion: call.arguments.split_whitespace().count(),
            reasoning: 0,
        },
        (Behaviour::Tools, None) => Usage {
            prompt,
            completion: TOOL_ARGUMENTS.split_whitespace().count(),
            reasoning: 0,
        },
        (Behaviour::Reasoning, None) => Usage {
            prompt,
            completion: content.split_whitespace().count() + 2,
            reasoning: 2,
        },
        _ => Usage {
            prompt,
            completion: content.split_whitespace().count(),
            reasoning: 0,
        },
    };

    if stream {
        stream_response(
            &behaviour,
            &content,
            tool_call.as_ref(),
            &usage,
            include_usage,
            in_flight,
        )
    } else {
        drop(in_flight);
        complete_response(&behaviour, content, tool_call.as_ref(), &usage)
    }
}

fn complete_response(
    behaviour: &Behaviour,
    content: String,
    tool_call: Option<&ToolCallOut>,
    usage: &Usage,
) -> Response {
    let (message, finish) = if let Some(call) = tool_call {
        (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }],
            }),
            "tool_calls",
        )
    } else {
        match behaviour {
            Behaviour::Malformed => {
                return json_response(StatusCode::OK, Bytes::from_static(b"{this is not json"))
            }
            Behaviour::InbandError => {
                return json_response(StatusCode::OK, Bytes::from_static(INBAND_ERROR.as_bytes()))
            }
            Behaviour::Tools => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_mock_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                    }],
                }),
                "tool_calls",
            ),
            Behaviour::Reasoning => (
                json!({"role": "assistant", "content": content, "reasoning_content": "thinking..."}),
                "stop",
            ),
            _ => (json!({"role": "assistant", "content": content}), "stop"),
        }
    };
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": UPSTREAM_MODEL,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_json(),
        "x_mock_extra": {"kept": true},
    });
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    if *behaviour == Behaviour::Drop {
        // Headers and the first half of the JSON, then abort the connection.
        let half = bytes.slice(..bytes.len() / 2);
        let steps = vec![Step::Data(half), Step::Flush, Step::Fail];
        let mut resp = Response::new(step_body(steps, None));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    json_response(StatusCode::OK, bytes)
}

/// One `data: <chat.completion.chunk>\n\n` event; `delta` is already-serialised JSON.
fn chunk_event(delta: &str, finish_reason: Option<&str>) -> Bytes {
    const HEAD: &str = r#"data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"mock-upstream-model","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#;
    const TAIL: &str = "}],\"x_mock_extra\":{\"kept\":true}}\n\n";
    let mut s = String::with_capacity(HEAD.len() + delta.len() + 64 + TAIL.len());
    s.push_str(HEAD);
    s.push_str(delta);
    s.push_str(r#","logprobs":null,"finish_reason":"#);
    match finish_reason {
        Some(r) => {
            s.push('"');
            s.push_str(r);
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push_str(TAIL);
    Bytes::from(s)
}

fn usage_event(usage: &Usage) -> Bytes {
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": UPSTREAM_MODEL,
        "system_fingerprint": "fp_mock",
        "choices": [],
        "usage": usage.to_json(),
        "x_mock_extra": {"kept": true},
    });
    let mut v = Vec::with_capacity(320);
    v.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut v, &body).unwrap();
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

fn content_delta(key: &str, text: &str) -> String {
    // `{"<key>":<json string>}`; serde_json escapes the text.
    let mut s = String::with_capacity(text.len() + key.len() + 8);
    s.push_str("{\"");
    s.push_str(key);
    s.push_str("\":");
    s.push_str(&serde_json::to_string(text).unwrap());
    s.push('}');
    s
}

fn stream_response(
    behaviour: &Behaviour,
    content: &str,
    tool_call: Option<&ToolCallOut>,
    usage: &Usage,
    include_usage: bool,
    in_flight: InFlight,
) -> Response {
    let role = r#"{"role":"assistant","content":""}"#;
    let word_events = || -> Vec<Bytes> {
        let mut words = content.split_whitespace().peekable();
        let mut out = Vec::new();
        while let Some(w) = words.next() {
            let piece = if words.peek().is_some() {
                format!("{w} ")
            } else {
                w.to_owned()
            };
            out.push(chunk_event(&content_delta("content", &piece), None));
        }
        out
    };
    let mut events: Vec<Bytes> = Vec::new();
    let mut tail_fail = false;
    if let Some(call) = tool_call {
        events.push(chunk_event(r#"{"role":"assistant","content":null}"#, None));
        let head = json!({"tool_calls": [{
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]});
        events.push(chunk_event(&head.to_string(), None));
        let half = call.arguments.chars().count() / 2;
        let split = call
            .arguments
            .char_indices()
            .nth(half)
            .map_or(call.arguments.len(), |(i, _)| i);
        let (first, second) = call.arguments.split_at(split);
        for piece in [first, second] {
            let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
            events.push(chunk_event(&delta.to_string(), None));
        }
        events.push(chunk_event("{}", Some("tool_calls")));
    } else {
        match behaviour {
            Behaviour::Drop => {
                events.push(chunk_event(role, None));
                events.extend(word_events().into_iter().take(1));
                tail_fail = true;
            }
            Behaviour::Malformed => {
                events.push(chunk_event(role, None));
                events.push(Bytes::from_static(b"data: {this is not json\n\n"));
                events.push(Bytes::from_static(DONE_EVENT.as_bytes()));
            }
            Behaviour::InbandError => {
                events.push(chunk_event(role, None));
                events.extend(word_events().into_iter().take(1));
                events.push(Bytes::from(format!("data: {INBAND_ERROR}\n\n")));
            }
            Behaviour::Tools => {
                events.push(chunk_event(r#"{"role":"assistant","content":null}"#, None));
                events.push(chunk_event(
                r#"{"tool_calls":[{"index":0,"id":"call_mock_1","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
                None,
            ));
                events.push(chunk_event(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]}"#,
                    None,
                ));
                events.push(chunk_event(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#,
                    None,
                ));
                events.push(chunk_event("{}", Some("tool_calls")));
            }
            _ => {
                events.push(chunk_event(role, None));
                if *behaviour == Behaviour::Reasoning {
                    events.push(chunk_event(r#"{"reasoning_content":"thinking"}"#, None));
                    events.push(chunk_event(r#"{"reasoning_content":"..."}"#, None));
                }
                events.extend(word_events());
                events.push(chunk_event("{}", Some("stop")));
            }
        }
    }
    if !matches!(
        behaviour,
        Behaviour::Drop | Behaviour::Malformed | Behaviour::InbandError
    ) {
        if include_usage {
            events.push(usage_event(usage));
        }
        events.push(Bytes::from_static(DONE_EVENT.as_bytes()));
    }

    let mut steps = Vec::with_capacity(events.len() * 2 + 2);
    for (i, ev) in events.into_iter().enumerate() {
        match behaviour {
            Behaviour::Slow(d) | Behaviour::ToolCall { delay: Some(d), .. } if i > 0 => {
                steps.push(Step::Sleep(*d))
            }
            Behaviour::Stall(d) if i == 2 => steps.push(Step::Sleep(*d)),
            _ => {}
        }
        steps.push(Step::Data(ev));
    }
    if tail_fail {
        steps.push(Step::Flush);
        steps.push(Step::Fail);
    }

    let mut resp = Response::new(step_body(steps, Some(in_flight)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

// ---------------------------------------------------------------------------------------------
// Scripted bodies

enum Step {
    Data(Bytes),
    Sleep(Duration),
    /// Return `Pending` once so hyper flushes what it has buffered.
    Flush,
    /// Yield an error: hyper aborts the connection mid-body.
    Fail,
}

struct BodyState {
    steps: std::vec::IntoIter<Step>,
    guard: Option<StreamGuard>,
}

impl BodyState {
    fn finish(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.finished = true;
        }
    }
}

/// A body that plays `steps`; with a guard, dropping it early counts a cancelled stream.
fn step_body(steps: Vec<Step>, in_flight: Option<InFlight>) -> Body {
    let state = BodyState {
        steps: steps.into_iter(),
        guard: in_flight.map(|in_flight| StreamGuard {
            finished: false,
            in_flight,
        }),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            match st.steps.next() {
                None => {
                    st.finish();
                    return None;
                }
                Some(Step::Data(b)) => {
                    if st.steps.len() == 0 {
                        st.finish();
                    }
                    return Some((Ok::<Bytes, io::Error>(b), st));
                }
                Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                Some(Step::Flush) => tokio::task::yield_now().await,
                Some(Step::Fail) => {
                    st.finish();
                    return Some((Err(io::Error::other("mock upstream: aborted mid-body")), st));
                }
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// POSTs `body` to `/v1/chat/completions` (`Connection: close`) and returns the status and
    /// the de-chunked body.
    async fn post_chat(mock: &MockUpstream, body: &Value) -> (u16, String) {
        let body = body.to_string();
        let mut s = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            mock.addr(),
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        if !chunked {
            return (status, rest.to_owned());
        }
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                return (status, out);
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
    }

    fn request(model: &str, messages: Value, stream: bool) -> Value {
        let mut v = json!({"model": model, "messages": messages});
        if stream {
            v["stream"] = json!(true);
            v["stream_options"] = json!({"include_usage": true});
        }
        v
    }

    /// The chunks of an SSE body (must end with `[DONE]`).
    fn sse_chunks(body: &str) -> Vec<Value> {
        let data: Vec<&str> = body
            .split_terminator("\n\n")
            .map(|ev| ev.strip_prefix("data: ").unwrap())
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// Asserts a non-stream tool call.
    fn assert_tool_call(v: &Value, id: &str, name: &str, arguments: &str) {
        assert_eq!(
            v["choices"][0]["message"],
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }],
            })
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"]["completion_tokens"],
            arguments.split_whitespace().count()
        );
    }

    /// Asserts a streamed tool call (framing as `tools`), with usage.
    fn assert_streamed_tool_call(chunks: &[Value], id: &str, name: &str, arguments: &str) {
        // role, head, two argument pieces, finish, usage
        assert_eq!(chunks.len(), 6, "{chunks:?}");
        let delta = |i: usize| &chunks[i]["choices"][0]["delta"];
        assert_eq!(*delta(0), json!({"role": "assistant", "content": null}));
        assert_eq!(
            *delta(1),
            json!({"tool_calls": [{
                "index": 0,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]})
        );
        let pieces: Vec<&str> = (2..4)
            .map(|i| {
                assert_eq!(delta(i)["tool_calls"][0]["index"], 0);
                assert!(delta(i)["tool_calls"][0].get("id").is_none());
                delta(i)["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        let half = arguments.chars().count() / 2;
        assert_eq!(pieces[0].chars().count(), half);
        assert_eq!(pieces.concat(), arguments);
        assert_eq!(*delta(4), json!({}));
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[5]["choices"], json!([]));
        assert_eq!(
            chunks[5]["usage"]["completion_tokens"],
            arguments.split_whitespace().count()
        );
    }

    /// Asserts a normal answer `content`, non-stream and stream.
    async fn assert_answer(mock: &MockUpstream, model: &str, messages: &Value, content: &str) {
        let (status, body) = post_chat(mock, &request(model, messages.clone(), false)).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"],
            json!({"role": "assistant", "content": content})
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let words = content.split_whitespace().count();
        assert_eq!(v["usage"]["completion_tokens"], words);

        let (status, body) = post_chat(mock, &request(model, messages.clone(), true)).await;
        assert_eq!(status, 200);
        let chunks = sse_chunks(&body);
        // role + one chunk per word + finish + usage
        assert_eq!(chunks.len(), words + 3, "{body}");
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let text: String = chunks[1..=words]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, content);
        assert_eq!(chunks[words + 1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[words + 2]["usage"]["completion_tokens"], words);
    }

    #[test]
    fn parse_tool_call() {
        let tc = |name: &str, times: usize, delay: Option<u64>| Behaviour::ToolCall {
            name: name.to_owned(),
            times,
            delay: delay.map(Duration::from_millis),
        };
        assert_eq!(
            Behaviour::parse("tool-call:advisor"),
            tc("advisor", 1, None)
        );
        assert_eq!(
            Behaviour::parse("tool-call:advisor*3"),
            tc("advisor", 3, None)
        );
        assert_eq!(
            Behaviour::parse("tool-call:get_weather*2@50"),
            tc("get_weather", 2, Some(50))
        );
        assert_eq!(Behaviour::parse("tool-call:a@7*2"), tc("a", 2, Some(7)));
        assert_eq!(Behaviour::parse("tool-call:a@20"), tc("a", 1, Some(20)));
        assert_eq!(Behaviour::parse("tool-call:a*0"), tc("a", 1, None));
        assert_eq!(Behaviour::parse("tool-call:a*x@y"), tc("a", 1, Some(100)));
        assert_eq!(Behaviour::parse("tool-call"), tc("tool", 1, None));
        // The other behaviours are unchanged.
        assert_eq!(Behaviour::parse("tools"), Behaviour::Tools);
        assert_eq!(
            Behaviour::parse("slow:5"),
            Behaviour::Slow(Duration::from_millis(5))
        );
        assert_eq!(Behaviour::parse("tool"), Behaviour::Normal);
    }

    #[tokio::test]
    async fn tool_call_without_tool_result_calls_the_tool() {
        let mock = MockUpstream::start().await;
        // A quote in the question checks the arguments are escaped JSON.
        let messages = json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "earlier question"},
            {"role": "tool", "tool_call_id": "old", "content": "old result"},
            {"role": "user", "content": "what is \"up\" today"},
        ]);
        let args = r#"{"question":"what is \"up\" today"}"#;
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"question": "what is \"up\" today"})
        );

        let (status, body) = post_chat(
            &mock,
            &request("tool-call:advisor", messages.clone(), false),
        )
        .await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_tool_call(&v, "call_mock_1", "advisor", args);
        assert_eq!(v["model"], UPSTREAM_MODEL);
        // prompt: 2 + 2 + 2 + 4 words
        assert_eq!(v["usage"]["prompt_tokens"], 10);

        let (status, body) = post_chat(&mock, &request("tool-call:advisor", messages, true)).await;
        assert_eq!(status, 200);
        assert_streamed_tool_call(&sse_chunks(&body), "call_mock_1", "advisor", args);
        assert_eq!(mock.cancelled_streams(), 0);
    }

    #[tokio::test]
    async fn tool_call_with_tool_result_answers() {
        let mock = MockUpstream::start().await;
        let messages = json!([
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_mock_1", "type": "function",
                "function": {"name": "advisor", "arguments": "{\"question\":\"hello there\"}"},
            }]},
            {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny and warm"},
        ]);
        assert_answer(
            &mock,
            "tool-call:advisor",
            &messages,
            "tool said: sunny and warm",
        )
        .await;
    }

    #[tokio::test]
    async fn tool_call_times_two() {
        let mock = MockUpstream::start().await;
        let model = "tool-call:get_weather*2";
        let args = r#"{"question":"weather in Paris"}"#;
        let mut messages = vec![json!({"role": "user", "content": "weather in Paris"})];

        // No result yet: first call.
        let (_, body) = post_chat(&mock, &request(model, json!(messages), false)).await;
        assert_tool_call(
            &serde_json::from_str(&body).unwrap(),
            "call_mock_1",
            "get_weather",
            args,
        );

        // One result: calls again, with the next id.
        messages.push(json!({"role": "tool", "tool_call_id": "call_mock_1", "content": "rain"}));
        let (_, body) = post_chat(&mock, &request(model, json!(messages), false)).await;
        assert_tool_call(
            &serde_json::from_str(&body).unwrap(),
            "call_mock_2",
            "get_weather",
            args,
        );
        let (_, body) = post_chat(&mock, &request(model, json!(messages), true)).await;
        assert_streamed_tool_call(&sse_chunks(&body), "call_mock_2", "get_weather", args);

        // Two results: answers with the last one.
        messages
            .push(json!({"role": "tool", "tool_call_id": "call_mock_2", "content": "sun later"}));
        assert_answer(&mock, model, &json!(messages), "tool said: sun later").await;
    }

    #[tokio::test]
    async fn tool_call_stream_delay() {
        let mock = MockUpstream::start().await;
        let messages = json!([{"role": "user", "content": "hi"}]);
        // 6 events without usage (role, head, 2 pieces, finish, [DONE]): 5 gaps of 20ms.
        let mut req = request("tool-call:advisor@20", messages.clone(), true);
        req["stream_options"] = json!({"include_usage": false});
        let t = std::time::Instant::now();
        let (_, body) = post_chat(&mock, &req).await;
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(body.matches("\n\n").count(), 6, "{body}");
        // Non-stream is not delayed.
        let t = std::time::Instant::now();
        let (status, _) =
            post_chat(&mock, &request("tool-call:advisor@500", messages, false)).await;
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_millis(500));
    }
}
