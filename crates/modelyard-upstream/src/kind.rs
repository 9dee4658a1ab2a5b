//! Provider kinds. Every kind but `anthropic` speaks the OpenAI
//! chat-completions protocol; `anthropic` speaks only Anthropic's Messages
//! API ([`ProviderKind::speaks_only_messages`]). A kind adds how its server
//! is discovered (model listing, health, loaded state, context windows —
//! see [`crate::discovery`]), how its key is sent
//! ([`ProviderKind::key_header`]) and, for cloud presets, a default base
//! URL. A new kind is a new variant here plus its discovery in
//! `discovery.rs`.

use std::fmt;
use std::str::FromStr;

/// The kind of server behind a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Any OpenAI-compatible server, cloud or local (`/v1/chat/completions`, `/v1/models`).
    OpenAi,
    /// llama.cpp `llama-server`: plus `GET /health` and `GET /props`
    /// (`default_generation_settings.n_ctx`).
    LlamaCpp,
    /// llama-swap: `/v1/models` lists configured models, `/running` the
    /// loaded ones, `/upstream/{model}/props` a loaded model's llama.cpp props.
    LlamaSwap,
    /// vLLM: `/v1/models` with `max_model_len`, `GET /health`.
    Vllm,
    /// Ollama: `/api/tags`, `/api/show` (`model_info.*.context_length`),
    /// `/api/ps` (loaded models, `context_length`).
    Ollama,
    /// OpenRouter (preset of `openai`; `/models` with `context_length`).
    OpenRouter,
    /// DeepSeek (preset of `openai`).
    DeepSeek,
    /// LM Studio: `/api/v0/models` (its REST API: `type`, `state`,
    /// `max_context_length`, `loaded_context_length`) beside `/v1/models`.
    LmStudio,
    /// Anthropic's API (`https://api.anthropic.com`): `POST /v1/messages`
    /// only (no chat completions), the key as `x-api-key` with
    /// `anthropic-version: 2023-06-01`, models from `GET /v1/models`
    /// (`data[].id`, `display_name`, paged by `has_more` / `last_id`).
    Anthropic,
}

/// The `anthropic-version` header value sent to `anthropic` providers
/// unless the provider's `headers` (or, on `/v1/messages`, the client) name
/// another.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// How a provider's API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and every compatible server).
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
}

impl ProviderKind {
    /// Every kind, in documentation order.
    pub const ALL: [ProviderKind; 9] = [
        ProviderKind::OpenAi,
        ProviderKind::LlamaCpp,
        ProviderKind::LlamaSwap,
        ProviderKind::Vllm,
        ProviderKind::Ollama,
        ProviderKind::OpenRouter,
        ProviderKind::DeepSeek,
        ProviderKind::LmStudio,
        ProviderKind::Anthropic,
    ];

    /// The name used in config files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::LlamaCpp => "llama-cpp",
            ProviderKind::LlamaSwap => "llama-swap",
            ProviderKind::Vllm => "vllm",
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::DeepSeek => "deepseek",
            ProviderKind::LmStudio => "lmstudio",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The base URL a preset kind uses when the config gives none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenRouter => Some("https://openrouter.ai/api/v1"),
            ProviderKind::DeepSeek => Some("https://api.deepseek.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            _ => None,
        }
    }

    /// Whether this kind serves only Anthropic's Messages API
    /// (`POST /v1/messages`, `/v1/messages/count_tokens`) and no
    /// OpenAI-style endpoint: `anthropic`.
    pub fn speaks_only_messages(self) -> bool {
        matches!(self, ProviderKind::Anthropic)
    }

    /// How this kind's API key is sent.
    pub fn key_header(self) -> KeyHeader {
        match self {
            ProviderKind::Anthropic => KeyHeader::XApiKey,
            _ => KeyHeader::Bearer,
        }
    }

    /// Whether Modelyard can load and unload this kind's models
    /// (llama-swap, Ollama; see `ProviderClient::load_model`). A `llama-cpp`
    /// server can too in router mode, which only its discovery tells
    /// ([`crate::discovery::DiscoveredModel::host_loads`]).
    pub fn loads_models(self) -> bool {
        matches!(self, ProviderKind::LlamaSwap | ProviderKind::Ollama)
    }

    /// Path of a health endpoint relative to the server root, if the kind has one.
    pub fn health_path(self) -> Option<&'static str> {
        match self {
            ProviderKind::LlamaCpp | ProviderKind::LlamaSwap | ProviderKind::Vllm => {
                Some("/health")
            }
            ProviderKind::Ollama => Some("/"),
            ProviderKind::OpenAi
            | ProviderKind::OpenRouter
            | ProviderKind::DeepSeek
            | ProviderKind::LmStudio
            | ProviderKind::Anthropic => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown kind name; lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider kind {0:?}; expected one of: openai, llama-cpp, llama-swap, vllm, ollama, openrouter, deepseek, lmstudio, anthropic")]
pub struct UnknownKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}
