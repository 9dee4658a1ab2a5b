//! The discovery endpoints of each [`Flavour`]: route parsing and the answers' bodies.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::options::{Flavour, MockModel};
use crate::response::json_value;

/// `created` of every listed model.
pub(crate) const CREATED: u64 = 1_700_000_000;
pub(crate) const OLLAMA_TIME: &str = "2026-01-01T00:00:00Z";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    /// `POST /v1/messages` (every flavour).
    Messages,
    /// `POST /v1/messages/count_tokens` (every flavour).
    CountTokens,
    /// The Anthropic flavour's paged `GET /v1/models`.
    AnthropicModels,
    Embeddings,
    Rerank,
    Completions,
    Health,
    Models,
    Props,
    /// llama.cpp `POST /apply-template`: the messages' text, one per line.
    ApplyTemplate,
    /// llama.cpp `POST /tokenize`: one token per whitespace-separated word.
    Tokenize,
    Running,
    /// llama-swap `/upstream/<id>/props`, with the decoded model id.
    UpstreamProps(String),
    /// llama-swap `GET /upstream/<id>/health`: loads the model (the warm
    /// path's and `…/load`'s request).
    UpstreamHealth(String),
    /// llama-swap `POST /api/models/unload/<id>`.
    SwapUnload(String),
    /// llama.cpp router mode `POST /models/load` / `POST /models/unload` (`{model}`); true
    /// for load.
    RouterControl(bool),
    /// LM Studio `GET /api/v0/models`.
    LmStudioModels,
    /// llama.cpp router mode `GET /props?model=<id>`: the loaded model's props.
    RouterProps,
    /// Ollama `POST /api/generate` without a prompt: loads the model, or
    /// unloads it with `keep_alive: 0`.
    Generate,
    OllamaRoot,
    Tags,
    Show,
    Ps,
    NotFound,
}

impl Route {
    pub(crate) fn parse(flavour: Flavour, method: &Method, path: &str) -> Route {
        use Flavour::{LlamaCpp, LlamaCppRouter, LlamaSwap, LmStudio, Ollama, OpenRouter, Vllm};
        let get = *method == Method::GET;
        let post = *method == Method::POST;
        match (flavour, path) {
            (_, "/v1/messages") if post => Route::Messages,
            (_, "/v1/messages/count_tokens") if post => Route::CountTokens,
            (Flavour::Anthropic, "/v1/models") if get => Route::AnthropicModels,
            (_, "/v1/chat/completions") | (OpenRouter, "/api/v1/chat/completions") if post => {
                Route::Chat
            }
            (_, "/v1/embeddings") if post => Route::Embeddings,
            (_, "/v1/rerank" | "/v1/reranking") if post => Route::Rerank,
            (_, "/v1/completions") if post => Route::Completions,
            (_, "/v1/models") | (OpenRouter, "/api/v1/models") if get => Route::Models,
            (LlamaCpp | LlamaCppRouter | LlamaSwap | Vllm, "/health") if get => Route::Health,
            (LlamaCppRouter, "/props") if get => Route::RouterProps,
            (LlamaCppRouter, "/models/load") if post => Route::RouterControl(true),
            (LlamaCppRouter, "/models/unload") if post => Route::RouterControl(false),
            (LmStudio, "/api/v0/models") if get => Route::LmStudioModels,
            (LlamaCpp, "/props") if get => Route::Props,
            (LlamaCpp, "/apply-template") if post => Route::ApplyTemplate,
            (LlamaCpp, "/tokenize") if post => Route::Tokenize,
            (LlamaSwap, "/running") if get => Route::Running,
            (LlamaSwap, p) if post && p.starts_with("/api/models/unload/") => {
                Route::SwapUnload(percent_decode(p.trim_start_matches("/api/models/unload/")))
            }
            (LlamaSwap, p) if get => {
                let rest = p.strip_prefix("/upstream/");
                if let Some(id) = rest.and_then(|r| r.strip_suffix("/props")) {
                    Route::UpstreamProps(percent_decode(id))
                } else if let Some(id) = rest.and_then(|r| r.strip_suffix("/health")) {
                    Route::UpstreamHealth(percent_decode(id))
                } else {
                    Route::NotFound
                }
            }
            (Ollama, "/") if get || *method == Method::HEAD => Route::OllamaRoot,
            (Ollama, "/api/tags") if get => Route::Tags,
            (Ollama, "/api/show") if post => Route::Show,
            (Ollama, "/api/ps") if get => Route::Ps,
            (Ollama, "/api/generate") if post => Route::Generate,
            _ => Route::NotFound,
        }
    }

    pub(crate) fn is_discovery(&self) -> bool {
        !matches!(
            self,
            Route::Chat
                | Route::Messages
                | Route::CountTokens
                | Route::Embeddings
                | Route::Rerank
                | Route::Completions
                | Route::NotFound
                | Route::ApplyTemplate
                | Route::Tokenize
                | Route::UpstreamHealth(_)
                | Route::SwapUnload(_)
                | Route::RouterControl(_)
                | Route::Generate
        )
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
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

pub(crate) fn models_listing(flavour: Flavour, models: &[MockModel]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            let mut v = match flavour {
                Flavour::OpenRouter => {
                    let mut v = json!({
                        "id": m.id,
                        "name": format!("Display {}", m.id),
                        "context_length": m.context_window,
                        "created": CREATED,
                    });
                    if !m.pricing.is_empty() {
                        let pricing: serde_json::Map<String, Value> = m
                            .pricing
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                            .collect();
                        v["pricing"] = Value::Object(pricing);
                    }
                    return v;
                }
                Flavour::LlamaCpp => openai_model(&m.id, "llamacpp"),
                Flavour::OpenAi => openai_model(&m.id, "openai"),
                Flavour::LlamaSwap => openai_model(&m.id, "llama-swap"),
                Flavour::Vllm => openai_model(&m.id, "vllm"),
                Flavour::Ollama => openai_model(&m.id, "library"),
                Flavour::LmStudio => openai_model(&m.id, "organization_owner"),
                Flavour::Anthropic => {
                    return json!({"type": "model", "id": m.id,
                                  "display_name": format!("Display {}", m.id),
                                  "created_at": "2025-01-01T00:00:00Z"})
                }
                Flavour::LlamaCppRouter => {
                    let mut v = openai_model(&m.id, "llamacpp");
                    v["status"] = match (m.state, m.loaded) {
                        (Some("failed"), _) => {
                            json!({"value": "unloaded", "failed": true, "exit_code": 1})
                        }
                        (Some(state), _) => json!({ "value": state }),
                        (None, true) => json!({"value": "loaded", "args": ["-m", format!("/models/{}.gguf", m.id)]}),
                        (None, false) => json!({"value": "unloaded"}),
                    };
                    v
                }
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

/// LM Studio's `GET /api/v0/models` listing.
pub(crate) fn lmstudio_models(models: &[MockModel]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            let mut v = json!({
                "id": m.id,
                "object": "model",
                "type": if m.embedding { "embeddings" } else { "llm" },
                "publisher": "mock",
                "arch": "llama",
                "compatibility_type": "gguf",
                "quantization": "Q4_K_M",
                "state": if m.loaded { "loaded" } else { "not-loaded" },
            });
            if let Some(ctx) = m.context_window {
                v["max_context_length"] = Value::from(ctx * 2);
                if m.loaded {
                    v["loaded_context_length"] = Value::from(ctx);
                }
            }
            v
        })
        .collect();
    json!({"object": "list", "data": data})
}

pub(crate) fn openai_model(id: &str, owned_by: &str) -> Value {
    json!({"id": id, "object": "model", "created": CREATED, "owned_by": owned_by})
}

/// llama.cpp `GET /props` for `model`.
pub(crate) fn props(model: &MockModel) -> Value {
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

pub(crate) fn ollama_details() -> Value {
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
pub(crate) fn ollama_show(body: &[u8], models: &[MockModel]) -> Response {
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
            // An id with `embed` in it is an embedding model, as Ollama says.
            "capabilities": [if model.id.contains("embed") { "embedding" } else { "completion" }],
            "modified_at": OLLAMA_TIME,
        }),
    )
}
