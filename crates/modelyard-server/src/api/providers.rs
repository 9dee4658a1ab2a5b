//! Providers: `GET /v1/providers`, `GET /v1/providers/{name}`,
//! `POST /v1/providers/{name}/refresh`, `POST
//! /v1/providers/{name}/models/{model}/load` and `…/unload` (llama-swap,
//! Ollama; `{provider, model, loaded}` once the provider's discovery was
//! refreshed; 422 `load_not_supported` for other kinds).
//!
//! A provider as JSON: `{name, kind, messagesApi (whether `/v1/messages`
//! passes through to it natively), baseUrl, status ("online" | "offline" |
//! "disabled" | "unknown"), lastError, disabledReason, lastCheckedAt,
//! lastOkAt (RFC 3339 or null), probeIntervalMs, modelCount, coolingDown:
//! [{model, coolingDownUntil (RFC 3339), lastError}]}` (`coolingDown`: its
//! deployments that routing skips now); the single view adds `models`
//! (catalog entries, see [`super::catalog`]).

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::catalog::model_json;
use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::error::Problem;
use crate::registry::{Provider, ProviderState};

/// A provider's JSON (without models).
pub fn provider_json(app: &AppState, provider: &Provider, state: &ProviderState) -> Value {
    let prefix = format!("{}/", provider.name());
    let cooling: Vec<Value> = app
        .router
        .cooling_down(crate::clock::now_ms())
        .into_iter()
        .filter(|(id, _, _)| id.starts_with(&prefix))
        .map(|(id, until, error)| {
            json!({"model": id, "coolingDownUntil": rfc3339(until), "lastError": error})
        })
        .collect();
    json!({
        "name": provider.name(),
        "kind": provider.config.kind.as_str(),
        "messagesApi": provider.config.messages_api,
        "baseUrl": modelyard_upstream::client::redact_url(provider.config.base_url.as_str()),
        "status": state.status.as_str(),
        "lastError": state.last_error,
        "disabledReason": provider.disabled_reason,
        "lastCheckedAt": state.last_checked_at_ms.map(rfc3339),
        "lastOkAt": state.last_ok_at_ms.map(rfc3339),
        "probeIntervalMs": provider.config.probe_interval_ms,
        "modelCount": state.catalog.len(),
        "coolingDown": cooling,
    })
}

fn detail(app: &AppState, provider: &Provider, favorites: &[String]) -> Value {
    let state = provider.state();
    let mut value = provider_json(app, provider, &state);
    let online = state.status == crate::registry::ProviderStatus::Online;
    value["models"] = state
        .catalog
        .iter()
        .map(|m| model_json(app, provider, m, online, favorites))
        .collect();
    value
}

/// `GET /v1/providers`: `{data: [provider]}` in config order.
#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "models",
    responses((status = 200, description = "`{data: [provider]}` in config order", body = Object))
)]
pub async fn list(Scoped(app): Scoped) -> Response {
    let data: Vec<Value> = app
        .registry
        .providers()
        .iter()
        .map(|p| provider_json(&app, p, &p.state()))
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

fn unknown(app: &AppState, name: &str) -> Problem {
    let names: Vec<&str> = app.registry.providers().iter().map(|p| p.name()).collect();
    Problem::not_found(format!(
        "no provider named {name:?}; providers: {}",
        names.join(", ")
    ))
    .with("code", "provider_not_found")
}

/// `GET /v1/providers/{name}`: the provider with its models.
#[utoipa::path(
    get,
    path = "/v1/providers/{name}",
    tag = "models",
    params(("name" = String, Path, description = "Provider name")),
    responses((status = 200, description = "The provider with its `models`", body = Object))
)]
pub async fn show(Scoped(app): Scoped, Path(name): Path<String>) -> Response {
    let Some(provider) = app.registry.provider(&name).cloned() else {
        return unknown(&app, &name).into_response();
    };
    let favorites = match crate::service::favorites::ids(&app).await {
        Ok(f) => f,
        Err(err) => return crate::http::ApiError::from(err).into_response(),
    };
    axum::Json(detail(&app, &provider, &favorites)).into_response()
}

/// `POST /v1/providers/{name}/refresh`: probes now (bounded by the
/// provider's `probe_ms`) and answers with the result.
#[utoipa::path(
    post,
    path = "/v1/providers/{name}/refresh",
    tag = "models",
    params(("name" = String, Path, description = "Provider name")),
    responses((status = 200, description = "The provider with its `models`, probed now", body = Object))
)]
pub async fn refresh(Scoped(app): Scoped, Path(name): Path<String>) -> Response {
    let Some(provider) = app.registry.provider(&name).cloned() else {
        return unknown(&app, &name).into_response();
    };
    if let Some(reason) = &provider.disabled_reason {
        return Problem::conflict(format!("provider {name:?} is disabled: {reason}"))
            .with("code", "provider_disabled")
            .into_response();
    }
    provider.refresh().await;
    let favorites = match crate::service::favorites::ids(&app).await {
        Ok(f) => f,
        Err(err) => return crate::http::ApiError::from(err).into_response(),
    };
    axum::Json(detail(&app, &provider, &favorites)).into_response()
}

/// `POST /v1/providers/{name}/models/{model}/load`.
#[utoipa::path(
    post,
    path = "/v1/providers/{name}/models/{model}/load",
    tag = "models",
    params(("name" = String, Path, description = "Provider name"), ("model" = String, Path, description = "The provider's model name")),
    responses((status = 200, description = "`{provider, model, loaded}`", body = Object))
)]
pub async fn load(Scoped(app): Scoped, Path((name, model)): Path<(String, String)>) -> Response {
    control(&app, &name, &model, true).await
}

/// `POST /v1/providers/{name}/models/{model}/unload`.
#[utoipa::path(
    post,
    path = "/v1/providers/{name}/models/{model}/unload",
    tag = "models",
    params(("name" = String, Path, description = "Provider name"), ("model" = String, Path, description = "The provider's model name")),
    responses((status = 200, description = "`{provider, model, loaded}`", body = Object))
)]
pub async fn unload(Scoped(app): Scoped, Path((name, model)): Path<(String, String)>) -> Response {
    control(&app, &name, &model, false).await
}

async fn control(app: &AppState, name: &str, model: &str, load: bool) -> Response {
    match crate::service::models::control(app, name, model, load).await {
        Ok(done) => axum::Json(json!({
            "provider": done.provider,
            "model": done.model,
            "loaded": done.loaded,
        }))
        .into_response(),
        Err(err) => crate::http::ApiError::from(err).into_response(),
    }
}
