//! Provider kinds. Every kind speaks the OpenAI chat-completions protocol;
//! a kind adds what else its server offers (health, context-window props).
//! New kinds (llama-swap, vLLM, Ollama, ...) are new variants here plus their
//! probes in [`crate::client`].

use std::fmt;
use std::str::FromStr;

/// The kind of server behind a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Any OpenAI-compatible server, cloud or local (`/v1/chat/completions`, `/v1/models`).
    OpenAi,
    /// llama.cpp `llama-server`: OpenAI protocol plus `GET /health` and `GET /props`
    /// (`default_generation_settings.n_ctx`).
    LlamaCpp,
}

impl ProviderKind {
    /// Every kind, in documentation order.
    pub const ALL: [ProviderKind; 2] = [ProviderKind::OpenAi, ProviderKind::LlamaCpp];

    /// The name used in config files and the API (`openai`, `llama-cpp`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::LlamaCpp => "llama-cpp",
        }
    }

    /// Path of a health endpoint relative to the server root, if the kind has one.
    pub fn health_path(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => None,
            ProviderKind::LlamaCpp => Some("/health"),
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
#[error("unknown provider kind {0:?}; expected one of: openai, llama-cpp")]
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
