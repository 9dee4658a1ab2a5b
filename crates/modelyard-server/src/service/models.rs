//! Model and LLM-config checks shared by the use cases: is a model id
//! something we can select, which ids are close to a wrong one, does a
//! config id name a config.

use modelyard_core::{ModelRef, ResolveError};
use modelyard_upstream::ProviderKind;

use super::error::ServiceError;
use crate::app::AppState;
use crate::registry::{ProviderStatus, RouteError};

/// Up to five ids the registry has seen that are close to `wanted`
/// (normalized Levenshtein ≥ 0.4), closest first.
pub fn suggestions(app: &AppState, wanted: &str) -> Vec<String> {
    let mut scored: Vec<(f64, String)> = app
        .registry
        .seen_ids()
        .into_iter()
        .map(|id| (strsim::normalized_levenshtein(&id, wanted), id))
        .filter(|(score, _)| *score >= 0.4)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(5).map(|(_, id)| id).collect()
}

/// `model_not_found` for `model`, with suggestions.
pub fn unknown_model(app: &AppState, model: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::UnknownModel {
        field: None,
        message: message.into(),
        suggestions: suggestions(app, model),
    }
}

/// Result of checking a model id for a selection.
#[derive(Debug)]
pub struct Checked {
    /// The composite id to store.
    pub model: String,
    /// False when the provider is offline and the model could not be checked.
    pub verified: bool,
}

/// Validates a model selection: a route name is accepted as is; an invalid id or unknown provider → 422; a
/// model an online provider does not serve → 422 with suggestions; an
/// offline provider's model is accepted unverified.
///
/// # Errors
/// [`ServiceError::Invalid`] / [`ServiceError::UnknownModel`].
pub fn check_model(app: &AppState, id: &str) -> Result<Checked, ServiceError> {
    // A route is selected by its name; its deployments are checked per call.
    if app.router.route(id).is_some() {
        return Ok(Checked {
            model: id.to_owned(),
            verified: true,
        });
    }
    let parsed = ModelRef::parse(id, |p| app.registry.provider(p).is_some()).map_err(|e| {
        ServiceError::Invalid {
            code: "invalid_model_id",
            field: None,
            reason: format!("invalid model id: {e}"),
        }
    })?;
    let provider_name = match &parsed {
        ModelRef::Composite(m) => m.provider().as_str().to_owned(),
        ModelRef::Bare(_) => match app.registry.resolve(Some(id)) {
            Ok(target) => target.provider.name().to_owned(),
            Err(err) => {
                let detail = match id.split_once('/') {
                    Some((prefix, _)) => format!("unknown provider {prefix:?} in model id {id:?}"),
                    None => err.to_string(),
                };
                return Err(unknown_model(app, id, detail));
            }
        },
    };
    let provider = app.registry.provider(&provider_name).cloned();
    let online = provider
        .as_ref()
        .is_some_and(|p| p.state().status == ProviderStatus::Online);
    match app.registry.resolve(Some(id)) {
        Ok(target) => Ok(Checked {
            model: target.resolution.model_id.to_string(),
            verified: online,
        }),
        Err(RouteError::Resolve(ResolveError::UnknownModel { .. })) if !online => Ok(Checked {
            model: id.to_owned(),
            verified: false,
        }),
        Err(err @ RouteError::Disabled { .. }) => Err(ServiceError::Invalid {
            code: "provider_disabled",
            field: None,
            reason: err.to_string(),
        }),
        Err(err) => Err(unknown_model(app, id, err.to_string())),
    }
}

/// Longest model id a selection accepts, in bytes.
pub const MAX_MODEL_ID_BYTES: usize = 512;

/// Why `id` is not a model id at all (the selection contract's "malformed"),
/// or `None` when it is well-formed.
fn malformed(app: &AppState, id: &str) -> Option<String> {
    if id.len() > MAX_MODEL_ID_BYTES {
        return Some(format!(
            "a model id is at most {MAX_MODEL_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "a model id holds no whitespace or control characters, got {c:?} in {id:?}"
        ));
    }
    if id.starts_with('/') || id.ends_with('/') {
        return Some(format!(
            "a model id neither starts nor ends with '/', got {id:?}"
        ));
    }
    ModelRef::parse(id, |p| app.registry.provider(p).is_some())
        .err()
        .map(|e| e.to_string())
}

/// Checks a model selection (`PUT /v1/conversations/{id}/model`), the chat
/// front end's contract: a route name is stored as is; a well-formed id
/// that resolves is stored as its composite id, `verified` when its
/// provider is online; a well-formed id that does not resolve now (its
/// provider offline, the model not listed yet, a bare id no provider
/// lists) is stored as written with `verified: false` — the turn resolves
/// it again and fails clearly if it still cannot. Only a malformed id
/// (whitespace or control characters, over [`MAX_MODEL_ID_BYTES`], a
/// leading or trailing `/`, `provider/` with no model), a bare id several
/// providers serve, or a disabled provider's model is refused.
///
/// # Errors
/// 422: `invalid_model_id` (with `suggestions`) for a malformed id;
/// `model_not_found` (with `suggestions`) for an ambiguous bare id;
/// `provider_disabled`.
pub fn check_selection(app: &AppState, id: &str) -> Result<Checked, ServiceError> {
    if app.router.route(id).is_some() {
        return Ok(Checked {
            model: id.to_owned(),
            verified: true,
        });
    }
    if let Some(reason) = malformed(app, id) {
        return Err(ServiceError::InvalidModelId {
            message: format!("invalid model id: {reason}"),
            suggestions: suggestions(app, id.trim()),
        });
    }
    match app.registry.resolve(Some(id)) {
        Ok(target) => Ok(Checked {
            model: target.resolution.model_id.to_string(),
            verified: target.provider.is_online(),
        }),
        Err(RouteError::Resolve(
            ResolveError::UnknownModel { .. } | ResolveError::NotFound { .. },
        )) => Ok(Checked {
            model: id.to_owned(),
            verified: false,
        }),
        Err(err @ RouteError::Disabled { .. }) => Err(ServiceError::Invalid {
            code: "provider_disabled",
            field: None,
            reason: err.to_string(),
        }),
        Err(RouteError::Resolve(ResolveError::Invalid(e))) => Err(ServiceError::InvalidModelId {
            message: format!("invalid model id: {e}"),
            suggestions: suggestions(app, id),
        }),
        Err(err) => Err(unknown_model(app, id, err.to_string())),
    }
}

/// Checks that `id` names a config that is not deleted; a 422 naming
/// `field` otherwise. Reads only: nothing is written or materialized.
///
/// # Errors
/// [`ServiceError::Invalid`]; the store's errors.
pub async fn check_config_id(app: &AppState, field: &str, id: &str) -> Result<(), ServiceError> {
    match app.store.get_llm_config(&app.project, id).await? {
        Some(row) if !row.deleted => Ok(()),
        _ => Err(ServiceError::invalid_field(
            field,
            format!("{field}: no LLM config with id {id:?}"),
        )),
    }
}

/// What a load or unload left.
#[derive(Debug)]
pub struct Controlled {
    /// The provider.
    pub provider: String,
    /// The upstream model name.
    pub model: String,
    /// The catalog's `loaded` after the provider's discovery was refreshed
    /// (`None` when the provider does not say).
    pub loaded: Option<bool>,
}

/// Loads (`load`) or unloads `model` on provider `name` (llama-swap,
/// Ollama: see `modelyard_upstream::ProviderClient::load_model`; an
/// explicit Ollama load keeps the model loaded, `keep_alive: -1`), then
/// refreshes that provider's discovery so the catalog says what is loaded.
///
/// # Errors
/// `provider_not_found`, `model_not_found` (404: not in the provider's
/// catalog); `provider_disabled` (409); `load_not_supported` (422) for other
/// kinds; `upstream_error` (502) when the host refuses or fails.
pub async fn control(
    app: &AppState,
    name: &str,
    model: &str,
    load: bool,
) -> Result<Controlled, ServiceError> {
    let Some(provider) = app.registry.provider(name).cloned() else {
        let names: Vec<&str> = app.registry.providers().iter().map(|p| p.name()).collect();
        return Err(ServiceError::not_found(
            "provider",
            name,
            format!(
                "no provider named {name:?}; providers: {}",
                names.join(", ")
            ),
        ));
    };
    let kind = provider.config.kind;
    let router_mode = kind == ProviderKind::LlamaCpp
        && provider.read_state().catalog.iter().any(|m| m.host_loads);
    if !kind.loads_models() && !router_mode {
        return Err(ServiceError::Invalid {
            code: "load_not_supported",
            field: None,
            reason: format!(
                "loading and unloading models is not supported by kind {kind} \
                 (provider {name:?}); llama-swap, ollama and llama-cpp in router mode can"
            ),
        });
    }
    let client = match (&provider.client, &provider.disabled_reason) {
        (Some(client), None) => client,
        (_, reason) => {
            return Err(ServiceError::conflict(
                "provider_disabled",
                format!(
                    "provider {name:?} is disabled: {}",
                    reason.as_deref().unwrap_or("no client")
                ),
            ))
        }
    };
    let listed = provider
        .read_state()
        .catalog
        .iter()
        .any(|m| m.model == model);
    if !listed {
        return Err(ServiceError::not_found(
            "model",
            model,
            format!("provider {name:?} lists no model {model:?}"),
        ));
    }
    let sent = if load {
        client.load_model(model, Some(serde_json::json!(-1))).await
    } else {
        client.unload_model(model).await
    };
    sent.map_err(|err| ServiceError::Upstream {
        message: err.to_string(),
        session_id: None,
    })?;
    provider.refresh().await;
    let loaded = provider
        .read_state()
        .catalog
        .iter()
        .find(|m| m.model == model)
        .and_then(|m| m.loaded);
    Ok(Controlled {
        provider: name.to_owned(),
        model: model.to_owned(),
        loaded,
    })
}
