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
use serde::Serialize;
use utoipa::ToSchema;

use super::catalog::ModelDto;
use crate::api::dto::List;
use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::error::Problem;
use crate::registry::{Provider, ProviderState};

/// A deployment of a provider that routing skips now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoolingDownDto {
    /// The deployment's composite id, `provider/model`.
    pub model: String,
    /// End of its cooldown (RFC 3339).
    pub cooling_down_until: String,
    /// The error that started it.
    pub last_error: Option<String>,
}

/// A provider (without models; see the module docs).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderDto {
    /// Its name.
    pub name: String,
    /// Its kind (`[[providers]] kind`).
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Whether `/v1/messages` passes through to it natively.
    pub messages_api: bool,
    /// Its base URL, credentials redacted.
    pub base_url: String,
    /// `online`, `offline`, `disabled` or `unknown`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Error of the last probe, if it failed.
    pub last_error: Option<String>,
    /// Why it is disabled, if it is.
    pub disabled_reason: Option<String>,
    /// Time of the last probe (RFC 3339).
    pub last_checked_at: Option<String>,
    /// Time of the last successful probe (RFC 3339).
    pub last_ok_at: Option<String>,
    /// How often it is probed, ms.
    pub probe_interval_ms: u64,
    /// How many models its catalog lists.
    pub model_count: usize,
    /// Its deployments that routing skips now.
    pub cooling_down: Vec<CoolingDownDto>,
}

impl ProviderDto {
    /// `provider` in `state` (its current one).
    pub fn new(app: &AppState, provider: &Provider, state: &ProviderState) -> Self {
        let prefix = format!("{}/", provider.name());
        let cooling_down = app
            .router
            .cooling_down(crate::clock::now_ms())
            .into_iter()
            .filter(|(id, _, _)| id.starts_with(&prefix))
            .map(|(model, until, last_error)| CoolingDownDto {
                model,
                cooling_down_until: rfc3339(until),
                last_error,
            })
            .collect();
        ProviderDto {
            name: provider.name().to_owned(),
            kind: provider.config.kind.as_str(),
            messages_api: provider.config.messages_api,
            base_url: modelyard_upstream::client::redact_url(provider.config.base_url.as_str()),
            status: state.status.as_str(),
            last_error: state.last_error.clone(),
            disabled_reason: provider.disabled_reason.clone(),
            last_checked_at: state.last_checked_at_ms.map(rfc3339),
            last_ok_at: state.last_ok_at_ms.map(rfc3339),
            probe_interval_ms: provider.config.probe_interval_ms,
            model_count: state.catalog.len(),
            cooling_down,
        }
    }
}

/// A provider with its catalog models (`GET /v1/providers/{name}`, the
/// catalog's `providers`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderDetailDto {
    /// The provider.
    #[serde(flatten)]
    pub provider: ProviderDto,
    /// Its models as the catalog shows them.
    pub models: Vec<ModelDto>,
}

fn detail(app: &AppState, provider: &Provider, favorites: &[String]) -> ProviderDetailDto {
    let state = provider.state();
    let online = state.status == crate::registry::ProviderStatus::Online;
    ProviderDetailDto {
        provider: ProviderDto::new(app, provider, &state),
        models: state
            .catalog
            .iter()
            .map(|m| ModelDto::new(app, provider, m, online, favorites))
            .collect(),
    }
}

/// The answer of a load or unload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ControlledDto {
    /// The provider.
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// Whether the model is loaded once the provider's discovery was
    /// refreshed; `null` when the provider does not say.
    pub loaded: Option<bool>,
}

/// `GET /v1/providers`: `{data: [provider]}` in config order.
#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "models",
    responses((status = 200, description = "`{data: [provider]}` in config order", body = List<ProviderDto>))
)]
pub async fn list(Scoped(app): Scoped) -> Response {
    let data = app
        .registry
        .providers()
        .iter()
        .map(|p| ProviderDto::new(&app, p, &p.state()))
        .collect();
    axum::Json(List::<ProviderDto> { data }).into_response()
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
    responses((status = 200, description = "The provider with its `models`", body = ProviderDetailDto))
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
    responses((status = 200, description = "The provider with its `models`, probed now", body = ProviderDetailDto))
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
    responses((status = 200, description = "`{provider, model, loaded}`", body = ControlledDto))
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
    responses((status = 200, description = "`{provider, model, loaded}`", body = ControlledDto))
)]
pub async fn unload(Scoped(app): Scoped, Path((name, model)): Path<(String, String)>) -> Response {
    control(&app, &name, &model, false).await
}

async fn control(app: &AppState, name: &str, model: &str, load: bool) -> Response {
    match crate::service::models::control(app, name, model, load).await {
        Ok(done) => axum::Json(ControlledDto {
            provider: done.provider,
            model: done.model,
            loaded: done.loaded,
        })
        .into_response(),
        Err(err) => crate::http::ApiError::from(err).into_response(),
    }
}
