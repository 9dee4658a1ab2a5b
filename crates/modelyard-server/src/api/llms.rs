//! LLM configs: `/v1/llms` (docs/design.md#llm-configs), adapters over
//! [`crate::service::llm_configs`].
//!
//! A config as JSON (camelCase; times RFC 3339):
//! `{id, projectId, source ("user" | "system-default"), displayName, model,
//! systemPrompt, providerOptions {temperature, topP, maxTokens,
//! reasoningEffort, stop, seed, extra}, baseUrl, presetName, presetVersion,
//! createdAt, updatedAt, version, deleted}`.
//!
//! Versions: a config is version 1 when created and every PATCH makes the
//! next one; `GET /v1/llms/{id}/versions` lists them newest first (each the
//! whole config as it was) and `GET /v1/llms/{id}?version=N` shows one —
//! both also for a deleted config, so the snapshot an LLM session recorded
//! (`config.llmId` + `config.version`) can always be looked up.
//!
//! Configs never hold secrets: unknown fields (an `apiKey`) are refused with
//! 400, `extra` may not carry credential-like keys, and `baseUrl` must be a
//! configured provider's base URL — or, with `[security]
//! allow_custom_base_urls`, an `http(s)` URL without credentials or query
//! whose host the address policy passes (`base_url_allowlist`; never a
//! link-local / cloud metadata address, however it is spelled); turns of
//! such a config are sent there (`registry::ProviderRegistry::for_llm_config`).
//! Validation errors are 422 problems whose
//! `field` member names the field. System defaults (materialized from the
//! server's presets) are read-only: copy them (`POST /v1/llms/{id}/copy`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use modelyard_core::ids::LlmConfigId;
use modelyard_core::llm_config::ProviderOptions;
use modelyard_store::LlmConfigRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::dto::Page;
use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::http::{ApiError, ApiJson, ApiQuery};
use crate::service::llm_configs::{self as service, LlmConfigPatch, NewLlmConfig};

/// A config's provider options; every option is present (`null` when
/// unset).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderOptionsDto {
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// Reasoning effort.
    pub reasoning_effort: Option<String>,
    /// Stop sequences.
    pub stop: Option<Vec<String>>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// More request fields, merged at the top level.
    pub extra: Option<Value>,
}

impl From<&ProviderOptions> for ProviderOptionsDto {
    fn from(o: &ProviderOptions) -> Self {
        ProviderOptionsDto {
            temperature: o.temperature,
            top_p: o.top_p,
            max_tokens: o.max_tokens,
            reasoning_effort: o.reasoning_effort.clone(),
            stop: o.stop.clone(),
            seed: o.seed,
            extra: o.extra.clone(),
        }
    }
}

/// An LLM config.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmDto {
    /// Id.
    pub id: String,
    /// Its project.
    pub project_id: String,
    /// `user` or `system-default`.
    #[schema(value_type = String)]
    pub source: &'static str,
    /// Name shown in pickers.
    pub display_name: String,
    /// Model id.
    pub model: String,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Provider options.
    pub provider_options: ProviderOptionsDto,
    /// A configured provider's base URL.
    pub base_url: Option<String>,
    /// The preset of a system default.
    pub preset_name: Option<String>,
    /// The preset's version.
    pub preset_version: Option<i64>,
    /// Creation time.
    pub created_at: String,
    /// Last update time (of a past version: when it was written).
    pub updated_at: String,
    /// The version this answer shows: the current one, or the one asked
    /// for (`?version=N`). 1 at creation, one more with every change.
    pub version: i64,
    /// Whether the config is deleted (only its versions are still served).
    pub deleted: bool,
}

impl LlmDto {
    /// The config `row` of `app`'s project.
    pub fn new(app: &AppState, row: &LlmConfigRow) -> Self {
        LlmDto {
            id: row.id.clone(),
            project_id: app.project.as_str().to_owned(),
            source: row.source.as_str(),
            display_name: row.fields.display_name.clone(),
            model: row.fields.model.clone(),
            system_prompt: row.fields.system_prompt.clone(),
            provider_options: ProviderOptionsDto::from(&row.fields.provider_options),
            base_url: row.fields.base_url.clone(),
            preset_name: row.preset_name.clone(),
            preset_version: row.preset_version,
            created_at: rfc3339(row.created_at_ms),
            updated_at: rfc3339(row.updated_at_ms),
            version: row.version,
            deleted: row.deleted,
        }
    }
}

/// One version of a config (`GET /v1/llms/{id}/versions`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmVersionDto {
    /// The version, from 1.
    pub version: i64,
    /// When it was written, unix milliseconds.
    pub created_at_ms: i64,
    /// When it was written, RFC 3339.
    pub created_at: String,
    /// The whole config as it was at this version.
    pub config: LlmDto,
}

/// `POST /v1/llms` → 201 with the config.
#[utoipa::path(
    post,
    path = "/v1/llms",
    tag = "llms",
    request_body = NewLlmConfig,
    responses((status = 201, description = "Created", body = LlmDto))
)]
pub async fn create(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<NewLlmConfig>,
) -> Result<(StatusCode, Json<LlmDto>), ApiError> {
    let row = service::create(&app, body).await?;
    Ok((StatusCode::CREATED, Json(LlmDto::new(&app, &row))))
}

/// Query of `GET /v1/llms`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /v1/llms`: `{data, nextBefore}`, newest first, deleted ones left out.
#[utoipa::path(
    get,
    path = "/v1/llms",
    tag = "llms",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Page<LlmDto>))
)]
pub async fn list(
    Scoped(app): Scoped,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<LlmDto>>, ApiError> {
    let page = service::list(&app, query.limit, query.before.as_deref()).await?;
    Ok(Json(Page {
        data: page.data.iter().map(|r| LlmDto::new(&app, r)).collect(),
        next_before: page.next_before,
    }))
}

/// Query of `GET /v1/llms/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// A past (or the current) version instead of the current config; also
    /// served for a deleted config.
    version: Option<i64>,
}

/// `GET /v1/llms/{id}`: the current config, or with `?version=N` the
/// config as it was at version N (`updatedAt` is when that version was
/// written; also for a deleted config, with `deleted: true`).
#[utoipa::path(
    get,
    path = "/v1/llms/{id}",
    tag = "llms",
    params(("id" = String, Path, description = "LLM config id"), ShowQuery),
    responses((status = 200, description = "OK", body = LlmDto))
)]
pub async fn show(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ShowQuery>,
) -> Result<Json<LlmDto>, ApiError> {
    let id = LlmConfigId::parse(&id)?;
    let row = match query.version {
        None => service::load(&app, &id).await?,
        Some(version) => service::load_version(&app, &id, version).await?,
    };
    Ok(Json(LlmDto::new(&app, &row)))
}

/// Query of `GET /v1/llms/{id}/versions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// Only versions below this one (the previous page's `nextBefore`).
    before: Option<String>,
}

/// `GET /v1/llms/{id}/versions`: `{data: [{version, createdAtMs,
/// createdAt, config}], nextBefore}`, newest first; also for a deleted
/// config.
#[utoipa::path(
    get,
    path = "/v1/llms/{id}/versions",
    tag = "llms",
    params(("id" = String, Path, description = "LLM config id"), VersionsQuery),
    responses((status = 200, description = "OK", body = Page<LlmVersionDto>))
)]
pub async fn versions(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<VersionsQuery>,
) -> Result<Json<Page<LlmVersionDto>>, ApiError> {
    let id = LlmConfigId::parse(&id)?;
    let page = service::versions(&app, &id, query.limit, query.before.as_deref()).await?;
    Ok(Json(Page {
        data: page
            .data
            .iter()
            .map(|(row, created_at_ms)| LlmVersionDto {
                version: row.version,
                created_at_ms: *created_at_ms,
                created_at: rfc3339(*created_at_ms),
                config: LlmDto::new(&app, row),
            })
            .collect(),
        next_before: page.next_before,
    }))
}

/// `PATCH /v1/llms/{id}` → the config; 409 for a system default.
#[utoipa::path(
    patch,
    path = "/v1/llms/{id}",
    tag = "llms",
    params(("id" = String, Path, description = "LLM config id")),
    request_body = LlmConfigPatch,
    responses((status = 200, description = "OK", body = LlmDto))
)]
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LlmConfigPatch>,
) -> Result<Json<LlmDto>, ApiError> {
    let id = LlmConfigId::parse(&id)?;
    Ok(Json(LlmDto::new(
        &app,
        &service::patch(&app, &id, body).await?,
    )))
}

/// `DELETE /v1/llms/{id}` → 204 (soft); 409 for a system default or a
/// config that conversations still name (listed in `conversations`).
#[utoipa::path(
    delete,
    path = "/v1/llms/{id}",
    tag = "llms",
    params(("id" = String, Path, description = "LLM config id")),
    responses((status = 204, description = "Done; no body"))
)]
pub async fn delete(Scoped(app): Scoped, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = LlmConfigId::parse(&id)?;
    service::delete(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/llms/{id}/copy` → 201 with a new `user` config saying what
/// `id` says (display name + " (copy)").
#[utoipa::path(
    post,
    path = "/v1/llms/{id}/copy",
    tag = "llms",
    params(("id" = String, Path, description = "LLM config id")),
    responses((status = 201, description = "Created", body = LlmDto))
)]
pub async fn copy(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<LlmDto>), ApiError> {
    let id = LlmConfigId::parse(&id)?;
    let row = service::copy(&app, &id).await?;
    Ok((StatusCode::CREATED, Json(LlmDto::new(&app, &row))))
}
