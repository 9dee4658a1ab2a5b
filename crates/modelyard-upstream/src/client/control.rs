//! Loading and unloading a model on hosts that swap models in and out:
//!
//! | kind | load | unload |
//! |---|---|---|
//! | `llama-swap` | `GET /upstream/{model}/health` (a request through the model's own llama-server starts it) | `POST /api/models/unload/{model}` |
//! | `ollama` | `POST /api/generate {model, keep_alive}` (no prompt) | `POST /api/generate {model, keep_alive: 0}` |
//! | `llama-cpp` in router mode | `POST /models/load {model}` | `POST /models/unload {model}` |
//!
//! A `llama-cpp` server that is not in router mode has no such routes (404).
//!
//! Both run under the provider's `total_ms` deadline (a load can take a
//! while); other kinds cannot ([`ProviderKind::loads_models`]).

use serde_json::{json, Value};

use super::{ProviderClient, TimeoutPhase, UpstreamError};
use crate::kind::ProviderKind;

/// What was sent to load or unload a model (for the call log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelControl {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path under the server root.
    pub path: String,
    /// The JSON body, for a `POST` that has one.
    pub body: Option<Value>,
}

impl ModelControl {
    /// As one JSON object `{method, path, body?}`.
    pub fn to_json(&self) -> Value {
        let mut value = json!({"method": self.method, "path": self.path});
        if let Some(body) = &self.body {
            value["body"] = body.clone();
        }
        value
    }
}

impl ProviderClient {
    /// Loads `model` (see the module table); `keep_alive` is Ollama's (how
    /// long the model stays loaded: `-1` for ever, `"5m"`, ...; its
    /// default when `None`). Returns what was sent.
    ///
    /// # Errors
    /// [`UpstreamError::Config`] for a kind that cannot load models; any
    /// other [`UpstreamError`] of the exchange (a non-2xx status is
    /// [`UpstreamError::Status`]).
    pub async fn load_model(
        &self,
        model: &str,
        keep_alive: Option<Value>,
    ) -> Result<ModelControl, UpstreamError> {
        let control = match self.endpoint.kind {
            ProviderKind::LlamaSwap => ModelControl {
                method: "GET",
                path: format!("/upstream/{model}/health"),
                body: None,
            },
            ProviderKind::Ollama => {
                let mut body = json!({"model": model});
                if let Some(keep_alive) = keep_alive {
                    body["keep_alive"] = keep_alive;
                }
                ModelControl {
                    method: "POST",
                    path: "/api/generate".into(),
                    body: Some(body),
                }
            }
            ProviderKind::LlamaCpp => ModelControl {
                method: "POST",
                path: "/models/load".into(),
                body: Some(json!({ "model": model })),
            },
            kind => return Err(self.cannot_load(kind)),
        };
        self.control(control).await
    }

    /// Unloads `model` (see the module table). Returns what was sent.
    ///
    /// # Errors
    /// As [`Self::load_model`].
    pub async fn unload_model(&self, model: &str) -> Result<ModelControl, UpstreamError> {
        let control = match self.endpoint.kind {
            ProviderKind::LlamaSwap => ModelControl {
                method: "POST",
                path: format!("/api/models/unload/{model}"),
                body: None,
            },
            ProviderKind::Ollama => ModelControl {
                method: "POST",
                path: "/api/generate".into(),
                body: Some(json!({"model": model, "keep_alive": 0})),
            },
            ProviderKind::LlamaCpp => ModelControl {
                method: "POST",
                path: "/models/unload".into(),
                body: Some(json!({ "model": model })),
            },
            kind => return Err(self.cannot_load(kind)),
        };
        self.control(control).await
    }

    fn cannot_load(&self, kind: ProviderKind) -> UpstreamError {
        UpstreamError::Config {
            provider: self.name(),
            reason: format!("loading and unloading models is not supported by kind {kind}"),
        }
    }

    async fn control(&self, control: ModelControl) -> Result<ModelControl, UpstreamError> {
        let url = format!("{}{}", self.server_root, control.path);
        // A POST without a body still sends an empty JSON object.
        let body = match (control.method, &control.body) {
            ("POST", None) => Some(json!({})),
            (_, body) => body.clone(),
        };
        let limit_ms = self.endpoint.timeouts.total_ms;
        self.exchange(&url, body.as_ref(), limit_ms, TimeoutPhase::Total)
            .await?;
        Ok(control)
    }
}
