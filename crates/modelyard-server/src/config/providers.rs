//! `[[providers]]`: names, kinds, URLs, credentials by reference only,
//! parameters, timeouts and the models' overrides.

use std::collections::BTreeMap;

use modelyard_core::ProviderName;
use modelyard_upstream::{ProviderKind, Timeouts};
use url::Url;

use super::raw::{RawModel, RawProvider};
use super::validate::error_in;
use super::ConfigError;

/// One `[[providers]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Unique name, the prefix of composite model ids.
    pub name: ProviderName,
    /// `openai`, `llama-cpp`, `llama-swap`, `vllm`, `ollama`, `openrouter`,
    /// `deepseek`, `lmstudio` or `anthropic`.
    pub kind: ProviderKind,
    /// `false` disables the provider (`enabled`, default true).
    pub enabled: bool,
    /// Server root or API base ending in `/v1` (preset kinds have a default).
    pub base_url: Url,
    /// Forward proxy for this provider only (`proxy_url`).
    pub proxy_url: Option<Url>,
    /// How often the provider is probed, ms (`probe_interval_ms`, default 30 000).
    pub probe_interval_ms: u64,
    /// Top-level request fields set on every request to this provider
    /// (`set_params`, JSON values), overriding the client's.
    pub set_params: serde_json::Map<String, serde_json::Value>,
    /// Top-level request fields removed from every request to this provider
    /// (`strip_params`).
    pub strip_params: Vec<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Whether the provider serves Anthropic's Messages API natively
    /// (`messages_api`, default false; always true for kind `anthropic`):
    /// `POST /v1/messages` requests routed to it are passed through as they
    /// are instead of being translated to chat completions.
    pub messages_api: bool,
    /// Extra request headers (non-secret).
    pub headers: BTreeMap<String, String>,
    /// Timeouts (`[providers.timeouts]`, ms).
    pub timeouts: Timeouts,
    /// Declared models and per-model overrides (`[[providers.models]]`).
    pub models: Vec<ModelConfig>,
}

/// A declared model of a provider, with overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Upstream model name.
    pub id: String,
    /// Context window in tokens; overrides what the provider reports.
    pub context_window: Option<u64>,
    /// Display name for pickers.
    pub display_name: Option<String>,
}

/// Request fields that routing owns and `set_params` / `strip_params` may not touch.
const RESERVED_PARAMS: [&str; 4] = ["model", "messages", "stream", "stream_options"];

/// Headers that carry credentials and so may not be written in the file.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "api-key",
    "x-api-key",
    "proxy-authorization",
];

/// Every `[[providers]]` entry, in file order.
pub(super) fn providers(
    raw: Vec<RawProvider>,
    source_name: &str,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    let mut providers: Vec<ProviderConfig> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let provider = provider(i, p, &providers, source_name)?;
        providers.push(provider);
    }
    Ok(providers)
}

/// `providers[i]`; `earlier` are the entries before it (names are unique).
fn provider(
    i: usize,
    p: RawProvider,
    earlier: &[ProviderConfig],
    source_name: &str,
) -> Result<ProviderConfig, ConfigError> {
    let err = error_in(source_name);
    let key = |field: &str| format!("providers[{i}].{field}");
    let name = ProviderName::new(p.name.clone()).map_err(|e| err(key("name"), e.to_string()))?;
    if earlier.iter().any(|other| other.name == name) {
        return Err(err(
            key("name"),
            format!("duplicate provider name {:?}", p.name),
        ));
    }
    let kind: ProviderKind = p
        .kind
        .parse()
        .map_err(|e: modelyard_upstream::kind::UnknownKind| err(key("kind"), e.to_string()))?;
    let base_text = match (&p.base_url, kind.default_base_url()) {
        (Some(url), _) => url.clone(),
        (None, Some(default)) => default.to_owned(),
        (None, None) => return Err(err(key("base_url"), format!("is required for kind {kind}"))),
    };
    let base_url = Url::parse(&base_text)
        .map_err(|e| err(key("base_url"), format!("{base_text:?} is not a URL: {e}")))?;
    if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
        return Err(err(
            key("base_url"),
            "must be an http:// or https:// URL with a host".into(),
        ));
    }
    if !base_url.username().is_empty() || base_url.password().is_some() {
        return Err(err(
            key("base_url"),
            "must not contain credentials; use api_key_env".into(),
        ));
    }
    if base_url.query().is_some() {
        return Err(err(
            key("base_url"),
            "must not contain a query string".into(),
        ));
    }
    if let Some(var) = &p.api_key_env {
        let valid = !var.is_empty()
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !var.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(err(key("api_key_env"), format!("{var:?} is not an environment variable name (the key itself never goes in the file)")));
        }
    }
    for header in p.headers.keys() {
        if SECRET_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
            return Err(err(
                format!("providers[{i}].headers.{header}"),
                "credentials may not be written in the config; use api_key_env".into(),
            ));
        }
    }
    let proxy_url = match &p.proxy_url {
        None => None,
        Some(text) => {
            let url = Url::parse(text)
                .map_err(|e| err(key("proxy_url"), format!("{text:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(err(
                    key("proxy_url"),
                    "must be an http:// or https:// proxy URL".into(),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(err(key("proxy_url"), "must not contain credentials".into()));
            }
            Some(url)
        }
    };
    let mut set_params = serde_json::Map::new();
    for (param, value) in p.set_params {
        if RESERVED_PARAMS.contains(&param.as_str()) {
            return Err(err(
                format!("providers[{i}].set_params.{param}"),
                "is set by routing and cannot be overridden".into(),
            ));
        }
        let value = serde_json::to_value(&value)
            .map_err(|e| err(format!("providers[{i}].set_params.{param}"), e.to_string()))?;
        set_params.insert(param, value);
    }
    for (j, param) in p.strip_params.iter().enumerate() {
        if RESERVED_PARAMS.contains(&param.as_str()) {
            return Err(err(
                key(&format!("strip_params[{j}]")),
                format!("{param:?} is needed by routing and cannot be stripped"),
            ));
        }
    }
    let probe_interval_ms = p.probe_interval_ms.unwrap_or(30_000);
    if probe_interval_ms < 1_000 {
        return Err(err(
            key("probe_interval_ms"),
            "must be at least 1000".into(),
        ));
    }
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        probe_ms: p.timeouts.probe_ms.unwrap_or(defaults.probe_ms),
        connect_ms: p.timeouts.connect_ms.unwrap_or(defaults.connect_ms),
        first_token_ms: p.timeouts.first_token_ms.unwrap_or(defaults.first_token_ms),
        idle_ms: p.timeouts.idle_ms.unwrap_or(defaults.idle_ms),
        total_ms: p.timeouts.total_ms.unwrap_or(defaults.total_ms),
    };
    for (field, value) in [
        ("probe_ms", timeouts.probe_ms),
        ("connect_ms", timeouts.connect_ms),
        ("first_token_ms", timeouts.first_token_ms),
        ("idle_ms", timeouts.idle_ms),
        ("total_ms", timeouts.total_ms),
    ] {
        if value == 0 {
            return Err(err(
                key(&format!("timeouts.{field}")),
                "must be greater than 0".into(),
            ));
        }
    }
    // `anthropic` speaks nothing but Messages; other kinds say so with
    // `messages_api = true` (llama.cpp's llama-server serves `/v1/messages`).
    let messages_api = match (kind.speaks_only_messages(), p.messages_api) {
        (true, Some(false)) => {
            return Err(err(
                key("messages_api"),
                format!("kind {kind} speaks only the Messages API; it cannot be false"),
            ))
        }
        (true, _) => true,
        (false, set) => set.unwrap_or(false),
    };
    let models = models(i, p.models, source_name)?;
    Ok(ProviderConfig {
        name,
        kind,
        enabled: p.enabled,
        base_url,
        proxy_url,
        probe_interval_ms,
        set_params,
        strip_params: p.strip_params,
        api_key_env: p.api_key_env,
        messages_api,
        headers: p.headers,
        timeouts,
        models,
    })
}

/// `providers[i].models`: per-model overrides (ids unique, windows > 0).
fn models(
    i: usize,
    raw: Vec<RawModel>,
    source_name: &str,
) -> Result<Vec<ModelConfig>, ConfigError> {
    let err = error_in(source_name);
    let key = |field: &str| format!("providers[{i}].{field}");
    let mut models: Vec<ModelConfig> = Vec::with_capacity(raw.len());
    for (j, m) in raw.into_iter().enumerate() {
        if m.id.is_empty() {
            return Err(err(
                key(&format!("models[{j}].id")),
                "must not be empty".into(),
            ));
        }
        if models.iter().any(|other| other.id == m.id) {
            return Err(err(
                key(&format!("models[{j}].id")),
                format!("duplicate model {:?}", m.id),
            ));
        }
        if m.context_window == Some(0) {
            return Err(err(
                key(&format!("models[{j}].context_window")),
                "must be greater than 0".into(),
            ));
        }
        models.push(ModelConfig {
            id: m.id,
            context_window: m.context_window,
            display_name: m.display_name,
        });
    }
    Ok(models)
}
