//! Discovery: what a provider serves, whether it is up, which models are
//! loaded, and each model's context window as the serving process reports it.
//!
//! | kind | models | health | state ([`ModelState`]) | context window (first found) |
//! |---|---|---|---|---|
//! | `llama-cpp` | `/v1/models` | `/health` | one model: loaded; router mode: each item's `status.value` | `/props` `default_generation_settings.n_ctx` (one model), else `/v1/models` `meta.n_ctx` |
//! | `llama-swap` | `/v1/models` | `/health` | `/running` (`ready` / `starting`, with `ttl`) | loaded: `/upstream/{model}/props` `n_ctx`; else `/v1/models` metadata |
//! | `vllm` | `/v1/models` | `/health` | always loaded | `/v1/models` `max_model_len` |
//! | `ollama` | `/api/tags` | `/` | `/api/ps` | loaded: `/api/ps` `context_length`; else `/api/show` `model_info.<arch>.context_length` |
//! | `lmstudio` | `/api/v0/models` | — | each item's `state` | `loaded_context_length`, else `max_context_length` |
//! | `openrouter` | `/models` | — | — | `/models` `context_length` |
//! | `openai`, `deepseek` | `/models` | — | — | `/models` `context_length` / `context_window` when present |
//! | `anthropic` | `/v1/models` (`data[].id`, `display_name`; pages followed by `after_id` while `has_more`, at most [`ANTHROPIC_MAX_PAGES`]) | — | — | — |
//!
//! Ollama's `/api/show` `capabilities` also say which models only embed
//! ([`DiscoveredModel::embedding`]); llama.cpp, llama-swap and vLLM report
//! nothing cheap to tell (llama.cpp's `/props` and `/v1/models` look the same
//! with `--embeddings`), so their models are not marked.
//!
//! A number never crosses providers: each [`DiscoveredModel`] carries what
//! its own server said, and `None` when it said nothing.
//!
//! Prices: an OpenAI-shaped listing item with a `pricing` object
//! (OpenRouter's: `prompt`, `completion`, `input_cache_read`,
//! `internal_reasoning`, USD per token as decimal strings) gives
//! [`DiscoveredModel::price`] in USD per million tokens. A negative rate
//! (OpenRouter's `-1`, "varies") or a missing `prompt` / `completion` gives
//! no price; `internal_reasoning` of 0 is left out (reasoning tokens are then
//! priced as output, as OpenRouter bills them).

use modelyard_core::cost::Price;

use serde_json::Value;

use crate::client::{ProviderClient, UpstreamError};
use crate::kind::ProviderKind;

/// Whether a model is in memory on its host, as the host reports it.
///
/// Hosts that swap models (llama.cpp's router mode, llama-swap, Ollama,
/// LM Studio) say per model; a plain llama-server and vLLM serve what they
/// started with (always `loaded`); clouds say nothing (`unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelState {
    /// In memory, ready to answer.
    Loaded,
    /// Known to the host, not in memory: the first request loads it (and waits).
    Unloaded,
    /// Being loaded now.
    Loading,
    /// The host's last attempt to load it failed (llama.cpp router mode).
    Failed,
    /// The host does not say.
    Unknown,
}

impl ModelState {
    /// `loaded`, `unloaded`, `loading`, `failed` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Loaded => "loaded",
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Failed => "failed",
            ModelState::Unknown => "unknown",
        }
    }

    /// `Some(true)` when loaded, `Some(false)` when the host says it is not
    /// (unloaded, loading or failed), `None` when it does not say.
    pub fn loaded(self) -> Option<bool> {
        match self {
            ModelState::Loaded => Some(true),
            ModelState::Unknown => None,
            _ => Some(false),
        }
    }

    /// llama.cpp router mode's `status.value` (`server_model_status_to_string`
    /// in llama.cpp's `tools/server/server-models.cpp`): `loaded`, `loading`,
    /// `unloaded`, `sleeping` (paused, woken by the next request: unloaded),
    /// `downloading` / `downloaded` (not loaded yet); `failed` when the
    /// status says `failed: true`.
    fn from_llama_cpp_router(status: &Value) -> Self {
        if status.get("failed").and_then(Value::as_bool) == Some(true) {
            return ModelState::Failed;
        }
        match status.get("value").and_then(Value::as_str) {
            Some("loaded") => ModelState::Loaded,
            Some("loading") => ModelState::Loading,
            Some("unloaded" | "sleeping" | "downloading" | "downloaded") => ModelState::Unloaded,
            _ => ModelState::Unknown,
        }
    }
}

/// One model as discovered on its provider.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredModel {
    /// Upstream model name.
    pub id: String,
    /// A human-readable name when the provider has one (OpenRouter `name`).
    pub display_name: Option<String>,
    /// Context window in tokens, as reported by the provider.
    pub context_window: Option<u64>,
    /// Which endpoint and field gave `context_window` (e.g. `/props n_ctx`).
    pub context_window_from: Option<&'static str>,
    /// Whether the model is in memory, as its host says.
    pub state: ModelState,
    /// How long the host keeps the model loaded while idle, seconds, when it
    /// says (llama-swap's `ttl`; `0` = until swapped out).
    pub ttl_seconds: Option<u64>,
    /// Whether the host loads and unloads this model on request: llama-swap
    /// and Ollama always, llama.cpp in router mode (its listing says each
    /// model's status). `ProviderClient::load_model` works for these.
    pub host_loads: bool,
    /// Whether the provider says the model only computes embeddings (Ollama:
    /// `/api/show` `capabilities` has `embedding` and not `completion`);
    /// `false` when it cannot tell (the other kinds).
    pub embedding: bool,
    /// The price the provider's listing reports (see the module docs).
    pub price: Option<Price>,
}

impl DiscoveredModel {
    fn new(id: String) -> Self {
        Self {
            id,
            display_name: None,
            context_window: None,
            context_window_from: None,
            state: ModelState::Unknown,
            ttl_seconds: None,
            host_loads: false,
            embedding: false,
            price: None,
        }
    }

    fn set_context(&mut self, n: Option<u64>, from: &'static str) {
        if self.context_window.is_none() {
            if let Some(n) = n.filter(|n| *n > 0) {
                self.context_window = Some(n);
                self.context_window_from = Some(from);
            }
        }
    }
}

/// The result of probing a provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    /// Models in the provider's order.
    pub models: Vec<DiscoveredModel>,
}

/// Most pages of Anthropic's model listing read in one probe (each at most
/// [`ANTHROPIC_PAGE_LIMIT`] models).
pub const ANTHROPIC_MAX_PAGES: usize = 10;

/// The `limit` asked of each page of Anthropic's model listing (its maximum).
pub const ANTHROPIC_PAGE_LIMIT: u32 = 1000;

fn as_u64(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// A listing item's `pricing` (USD per token, as strings or numbers) as a
/// [`Price`] in USD per million tokens; `None` without `prompt` and
/// `completion` or with a negative or non-finite rate.
pub fn listed_price(pricing: &Value) -> Option<Price> {
    let per_mtok = |field: &str| -> Option<Option<f64>> {
        let rate = match pricing.get(field) {
            None | Some(Value::Null) => return Some(None),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok()?,
            Some(v) => v.as_f64()?,
        };
        // Per token → per million tokens, kept to 1e-9 USD / Mtok so
        // `0.000003` reads as 3, not 2.9999999999999996.
        let per_mtok = (rate * 1e6 * 1e9).round() / 1e9;
        (per_mtok.is_finite() && per_mtok >= 0.0).then_some(Some(per_mtok))
    };
    Some(Price {
        input_per_mtok: per_mtok("prompt")??,
        cached_input_per_mtok: per_mtok("input_cache_read")?,
        output_per_mtok: per_mtok("completion")??,
        reasoning_per_mtok: per_mtok("internal_reasoning")?.filter(|r| *r > 0.0),
    })
}

impl ProviderClient {
    /// Probes the provider according to its kind (see the module table).
    ///
    /// # Errors
    /// The first failing required probe (listing or health). Optional probes
    /// (`/props`, `/running`, `/api/ps`, `/api/show`) that fail only leave
    /// their fields unknown.
    pub async fn discover(&self) -> Result<Discovery, UpstreamError> {
        let kind = self.endpoint().kind;
        if let Some(path) = kind.health_path() {
            self.probe(&format!("{}{path}", self.server_root()), None)
                .await?;
        }
        match kind {
            ProviderKind::Ollama => self.discover_ollama().await,
            ProviderKind::LmStudio => self.discover_lmstudio().await,
            ProviderKind::Anthropic => self.discover_anthropic().await,
            _ => {
                let mut models = self.openai_listing().await?;
                match kind {
                    ProviderKind::LlamaCpp => self.llama_cpp_props(&mut models).await,
                    ProviderKind::LlamaSwap => self.llama_swap_running(&mut models).await,
                    ProviderKind::Vllm => {
                        models.iter_mut().for_each(|m| m.state = ModelState::Loaded)
                    }
                    _ => {}
                }
                Ok(Discovery { models })
            }
        }
    }

    /// `GET {api_base}/models` in OpenAI shape, with the context fields the
    /// various servers add.
    async fn openai_listing(&self) -> Result<Vec<DiscoveredModel>, UpstreamError> {
        let url = format!("{}/models", self.api_base());
        let body = self.probe_json(&url, None).await?;
        let data = body.get("data").and_then(Value::as_array).ok_or_else(|| {
            UpstreamError::InvalidResponse {
                provider: self.endpoint().name.clone(),
                reason: "model listing has no `data` array".into(),
            }
        })?;
        Ok(data
            .iter()
            .filter_map(|m| {
                let mut model = DiscoveredModel::new(m.get("id")?.as_str()?.to_owned());
                model.display_name = m.get("name").and_then(Value::as_str).map(str::to_owned);
                model.set_context(as_u64(m.get("max_model_len")), "/v1/models max_model_len");
                model.set_context(as_u64(m.get("context_length")), "/v1/models context_length");
                model.set_context(as_u64(m.get("context_window")), "/v1/models context_window");
                model.set_context(as_u64(m.pointer("/meta/n_ctx")), "/v1/models meta.n_ctx");
                model.price = m.get("pricing").and_then(listed_price);
                if let Some(status) = m.get("status").filter(|s| s.is_object()) {
                    model.state = ModelState::from_llama_cpp_router(status);
                    model.host_loads = true;
                }
                Some(model)
            })
            .collect())
    }

    /// llama.cpp serves one model; `/props` gives the context each request
    /// may actually use, which wins over the listing's `meta.n_ctx`. In
    /// router mode (the listing carries a `status` per model) the listing's
    /// states stand and `/props?model=` is asked per loaded model.
    async fn llama_cpp_props(&self, models: &mut [DiscoveredModel]) {
        if models.iter().any(|m| m.host_loads) {
            return self.llama_cpp_router_props(models).await;
        }
        let props = self
            .probe_json(&format!("{}/props", self.server_root()), None)
            .await;
        let n_ctx = props
            .ok()
            .and_then(|p| as_u64(p.pointer("/default_generation_settings/n_ctx")))
            .filter(|n| *n > 0);
        for model in models.iter_mut() {
            model.state = ModelState::Loaded;
            if let Some(n) = n_ctx {
                model.context_window = Some(n);
                model.context_window_from = Some("/props n_ctx");
            }
        }
    }

    /// llama.cpp router mode: `/props?model=<id>` answers for a loaded
    /// model (the router asks that model's own server); unloaded models are
    /// not started by a probe, so their window stays what the listing said.
    async fn llama_cpp_router_props(&self, models: &mut [DiscoveredModel]) {
        let root = self.server_root();
        let props = futures_util::future::join_all(models.iter().map(|m| {
            let loaded = m.state == ModelState::Loaded;
            let model: String = url::form_urlencoded::byte_serialize(m.id.as_bytes()).collect();
            let url = format!("{root}/props?model={model}");
            async move {
                if !loaded {
                    return None;
                }
                self.probe_json(&url, None)
                    .await
                    .ok()
                    .and_then(|p| as_u64(p.pointer("/default_generation_settings/n_ctx")))
            }
        }))
        .await;
        for (model, n_ctx) in models.iter_mut().zip(props) {
            if let Some(n) = n_ctx.filter(|n| *n > 0) {
                model.context_window = Some(n);
                model.context_window_from = Some("/props?model= n_ctx");
            }
        }
    }

    /// llama-swap: `/running` says which models are loaded; each loaded
    /// model's own llama-server reports its `n_ctx` through
    /// `/upstream/{model}/props`. Unloaded models are not started by a probe.
    async fn llama_swap_running(&self, models: &mut [DiscoveredModel]) {
        let running: Vec<Value> = self
            .probe_json(&format!("{}/running", self.server_root()), None)
            .await
            .ok()
            .and_then(|r| r.get("running").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        // `state`: `ready` (loaded), `starting` (loading), `stopping` /
        // `stopped` / `shutdown` (on the way out); old versions list only
        // ready processes, some without a state.
        let state_of = |id: &str| -> (ModelState, Option<u64>) {
            let Some(r) = running
                .iter()
                .find(|r| r.get("model").and_then(Value::as_str) == Some(id))
            else {
                return (ModelState::Unloaded, None);
            };
            let state = match r.get("state").and_then(Value::as_str) {
                None | Some("ready") => ModelState::Loaded,
                Some("starting") => ModelState::Loading,
                Some(_) => ModelState::Unloaded,
            };
            (state, as_u64(r.get("ttl")))
        };
        let props = futures_util::future::join_all(models.iter().map(|m| {
            let loaded = state_of(&m.id).0 == ModelState::Loaded;
            let url = format!("{}/upstream/{}/props", self.server_root(), m.id);
            async move {
                if !loaded {
                    return None;
                }
                self.probe_json(&url, None)
                    .await
                    .ok()
                    .and_then(|p| as_u64(p.pointer("/default_generation_settings/n_ctx")))
            }
        }))
        .await;
        for (model, n_ctx) in models.iter_mut().zip(props) {
            let (state, ttl) = state_of(&model.id);
            model.state = state;
            model.ttl_seconds = ttl;
            model.host_loads = true;
            if let Some(n) = n_ctx.filter(|n| *n > 0) {
                model.context_window = Some(n);
                model.context_window_from = Some("/upstream/{model}/props n_ctx");
            }
        }
    }

    /// Ollama: `/api/tags` lists, `/api/ps` says what is loaded (with the
    /// context it was loaded with), `/api/show` gives the model's context
    /// length otherwise.
    async fn discover_ollama(&self) -> Result<Discovery, UpstreamError> {
        let root = self.server_root();
        let tags = self.probe_json(&format!("{root}/api/tags"), None).await?;
        let names: Vec<String> = tags
            .get("models")
            .and_then(Value::as_array)
            .ok_or_else(|| UpstreamError::InvalidResponse {
                provider: self.endpoint().name.clone(),
                reason: "/api/tags has no `models` array".into(),
            })?
            .iter()
            .filter_map(|m| {
                m.get("name")
                    .or_else(|| m.get("model"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let ps = self.probe_json(&format!("{root}/api/ps"), None).await.ok();
        let loaded: Vec<(String, Option<u64>)> = ps
            .as_ref()
            .and_then(|p| p.get("models").and_then(Value::as_array))
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let name = m
                    .get("name")
                    .or_else(|| m.get("model"))
                    .and_then(Value::as_str)?;
                Some((name.to_owned(), as_u64(m.get("context_length"))))
            })
            .collect();
        let shows = futures_util::future::join_all(names.iter().map(|name| {
            let url = format!("{root}/api/show");
            let body = serde_json::json!({"model": name});
            async move { self.probe_json(&url, Some(&body)).await.ok() }
        }))
        .await;
        let models = names
            .into_iter()
            .zip(shows)
            .map(|(name, show)| {
                let mut model = DiscoveredModel::new(name);
                let running = loaded.iter().find(|(n, _)| *n == model.id);
                model.host_loads = true;
                model.state = if running.is_some() {
                    ModelState::Loaded
                } else {
                    ModelState::Unloaded
                };
                model.set_context(running.and_then(|(_, ctx)| *ctx), "/api/ps context_length");
                let trained = show
                    .as_ref()
                    .and_then(|s| s.get("model_info"))
                    .and_then(Value::as_object)
                    .and_then(|info| {
                        info.iter()
                            .find(|(k, _)| k.ends_with(".context_length"))
                            .and_then(|(_, v)| v.as_u64())
                    });
                model.set_context(trained, "/api/show model_info.context_length");
                let capabilities = show
                    .as_ref()
                    .and_then(|s| s.get("capabilities"))
                    .and_then(Value::as_array);
                let has = |name: &str| {
                    capabilities.is_some_and(|c| c.iter().any(|v| v.as_str() == Some(name)))
                };
                model.embedding = has("embedding") && !has("completion");
                model
            })
            .collect();
        Ok(Discovery { models })
    }

    /// Anthropic: `GET {api_base}/models?limit=1000` (`{data: [{type:
    /// "model", id, display_name, created_at}], has_more, first_id,
    /// last_id}`), then `&after_id=<last_id>` while `has_more`, at most
    /// [`ANTHROPIC_MAX_PAGES`] pages. The listing says nothing of context
    /// windows or loaded state.
    async fn discover_anthropic(&self) -> Result<Discovery, UpstreamError> {
        let mut models = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..ANTHROPIC_MAX_PAGES {
            let mut url = format!("{}/models?limit={ANTHROPIC_PAGE_LIMIT}", self.api_base());
            if let Some(after) = &after {
                url.push_str("&after_id=");
                url.extend(url::form_urlencoded::byte_serialize(after.as_bytes()));
            }
            let body = self.probe_json(&url, None).await?;
            let data = body.get("data").and_then(Value::as_array).ok_or_else(|| {
                UpstreamError::InvalidResponse {
                    provider: self.endpoint().name.clone(),
                    reason: "model listing has no `data` array".into(),
                }
            })?;
            models.extend(data.iter().filter_map(|m| {
                let mut model = DiscoveredModel::new(m.get("id")?.as_str()?.to_owned());
                model.display_name = m
                    .get("display_name")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some(model)
            }));
            let more = body.get("has_more").and_then(Value::as_bool) == Some(true);
            let last = body.get("last_id").and_then(Value::as_str);
            match (more, last) {
                (true, Some(last)) if after.as_deref() != Some(last) => {
                    after = Some(last.to_owned());
                }
                _ => break,
            }
        }
        Ok(Discovery { models })
    }

    /// LM Studio: its REST API's `GET /api/v0/models` lists every
    /// downloaded model with `type` (`llm`, `vlm`, `embeddings`), `state`
    /// (`loaded` / `not-loaded`), `max_context_length` (what the model
    /// supports) and, while loaded, `loaded_context_length` (what it was
    /// loaded with, which wins).
    async fn discover_lmstudio(&self) -> Result<Discovery, UpstreamError> {
        let url = format!("{}/api/v0/models", self.server_root());
        let body = self.probe_json(&url, None).await?;
        let data = body.get("data").and_then(Value::as_array).ok_or_else(|| {
            UpstreamError::InvalidResponse {
                provider: self.endpoint().name.clone(),
                reason: "/api/v0/models has no `data` array".into(),
            }
        })?;
        let models = data
            .iter()
            .filter_map(|m| {
                let mut model = DiscoveredModel::new(m.get("id")?.as_str()?.to_owned());
                model.state = match m.get("state").and_then(Value::as_str) {
                    Some("loaded") => ModelState::Loaded,
                    Some("not-loaded") => ModelState::Unloaded,
                    Some("loading") => ModelState::Loading,
                    _ => ModelState::Unknown,
                };
                model.set_context(
                    as_u64(m.get("loaded_context_length")),
                    "/api/v0/models loaded_context_length",
                );
                model.set_context(
                    as_u64(m.get("max_context_length")),
                    "/api/v0/models max_context_length",
                );
                model.embedding = m.get("type").and_then(Value::as_str) == Some("embeddings");
                Some(model)
            })
            .collect();
        Ok(Discovery { models })
    }
}

#[cfg(test)]
mod tests {
    use super::listed_price;
    use serde_json::json;

    #[test]
    fn openrouter_pricing_reads_as_usd_per_million_tokens() {
        let price = listed_price(&json!({
            "prompt": "0.000003", "completion": "0.000015",
            "input_cache_read": "0.0000003", "internal_reasoning": "0",
            "request": "0", "image": "0.0048"
        }))
        .unwrap();
        assert_eq!(price.input_per_mtok, 3.0);
        assert_eq!(price.output_per_mtok, 15.0);
        assert_eq!(price.cached_input_per_mtok, Some(0.3));
        assert_eq!(price.reasoning_per_mtok, None);
        let reasoning = listed_price(&json!({
            "prompt": 0.0000011, "completion": "0.0000044", "internal_reasoning": "0.000005"
        }))
        .unwrap();
        assert_eq!(reasoning.input_per_mtok, 1.1);
        assert_eq!(reasoning.reasoning_per_mtok, Some(5.0));
        assert_eq!(reasoning.cached_input_per_mtok, None);
        // "Varies" (openrouter/auto), missing or unreadable rates: no price.
        for bad in [
            json!({"prompt": "-1", "completion": "-1"}),
            json!({"prompt": "0.000001"}),
            json!({"prompt": "cheap", "completion": "0"}),
            json!("0.1"),
        ] {
            assert_eq!(listed_price(&bad), None, "{bad}");
        }
    }
}
