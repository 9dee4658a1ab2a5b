//! What the mock is started with and what it records: [`RecordedRequest`], [`Flavour`],
//! [`MockModel`], [`MockOptions`].

use bytes::Bytes;
use serde_json::Value;

use crate::MODEL_IDS;

/// Context window of the default models (and of [`MockUpstream::set_listed_models`](crate::MockUpstream::set_listed_models) ids).
pub(crate) const DEFAULT_CONTEXT: u64 = 4096;

/// One HTTP request received by the mock, as recorded by [`MockUpstream::requests`](crate::MockUpstream::requests).
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
    /// default, and what [`MockUpstream::start`](crate::MockUpstream::start) serves.
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
    /// llama.cpp `llama-server` in router mode: `/v1/models` items carry `status.value`
    /// (`loaded` / `unloaded` / `loading`, `failed: true`), `POST /models/load` and
    /// `POST /models/unload` with `{model}`, `/health`; no `/props`.
    LlamaCppRouter,
    /// LM Studio: `/api/v0/models` with `type`, `state` (`loaded` / `not-loaded`),
    /// `max_context_length` and, when loaded, `loaded_context_length`; `/v1/models`.
    LmStudio,
    /// Anthropic's API: `GET /v1/models` in Anthropic's paged shape (no health endpoint);
    /// Messages and chat as every flavour (Anthropic has an OpenAI-compatible chat endpoint
    /// too, which Modelyard does not use).
    Anthropic,
}

impl Flavour {
    /// Every flavour, in declaration order.
    pub const ALL: [Flavour; 9] = [
        Flavour::LlamaCpp,
        Flavour::OpenAi,
        Flavour::LlamaSwap,
        Flavour::Vllm,
        Flavour::Ollama,
        Flavour::OpenRouter,
        Flavour::LlamaCppRouter,
        Flavour::LmStudio,
        Flavour::Anthropic,
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
    /// Whether the model is loaded (llama-swap `/running`, Ollama `/api/ps`, the router's
    /// `status`, LM Studio's `state`).
    pub loaded: bool,
    /// A state other than loaded / unloaded the host reports: `Some("loading")` (llama-swap
    /// `starting`, router `loading`) or `Some("failed")` (router `failed: true`).
    pub state: Option<&'static str>,
    /// Whether the model only embeds (LM Studio `type: "embeddings"`).
    pub embedding: bool,
    /// OpenRouter's `pricing` members (`("prompt", "0.000003")`: USD per
    /// token as strings), served in the [`Flavour::OpenRouter`](crate::Flavour::OpenRouter)
    /// listing when not empty.
    pub pricing: Vec<(&'static str, &'static str)>,
}

impl MockModel {
    /// A loaded model.
    pub fn new(id: impl Into<String>, context_window: Option<u64>) -> MockModel {
        MockModel {
            id: id.into(),
            context_window,
            loaded: true,
            state: None,
            embedding: false,
            pricing: Vec::new(),
        }
    }

    /// The same model with OpenRouter `pricing` members (see [`MockModel::pricing`]).
    #[must_use]
    pub fn with_pricing(mut self, pricing: &[(&'static str, &'static str)]) -> MockModel {
        self.pricing = pricing.to_vec();
        self
    }

    /// The same model reported as being loaded (`"loading"`) or failed to load (`"failed"`).
    #[must_use]
    pub fn with_state(mut self, state: &'static str) -> MockModel {
        self.loaded = false;
        self.state = Some(state);
        self
    }

    /// The same model marked as an embedding model (LM Studio's `type`).
    #[must_use]
    pub fn embedding(mut self) -> MockModel {
        self.embedding = true;
        self
    }

    /// The same model with `loaded` set.
    #[must_use]
    pub fn with_loaded(mut self, loaded: bool) -> MockModel {
        self.loaded = loaded;
        self
    }
}

/// Options for [`MockUpstream::start_with`](crate::MockUpstream::start_with).
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Which discovery endpoints to serve.
    pub flavour: Flavour,
    /// The initial models (replaced at run time by [`MockUpstream::set_models`](crate::MockUpstream::set_models)).
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
    /// [`MockUpstream::start`](crate::MockUpstream::start) serves.
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
