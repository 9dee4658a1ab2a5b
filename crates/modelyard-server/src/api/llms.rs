//! LLM configs: `/v1/llms` (docs/design.md#llm-configs), adapters over
//! [`crate::service::llm_configs`].
//!
//! A config as JSON (camelCase; times RFC 3339):
//! `{id, projectId, source ("user" | "system-default"), displayName, model,
//! systemPrompt, providerOptions {temperature, topP, maxTokens,
//! reasoningEffort, stop, seed, extra}, baseUrl, presetName, presetVersion,
//! createdAt, updatedAt}`.
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
use modelyard_store::LlmConfigRow;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::http::{ApiError, ApiJson, ApiQuery};
use crate::service::llm_configs::{self as service, LlmConfigPatch, NewLlmConfig};

/// The config as JSON.
pub fn llm_json(app: &AppState, row: &LlmConfigRow) -> Value {
    let o = &row.fields.provider_options;
    json!({
        "id": row.id,
        "projectId": app.project.as_str(),
        "source": row.source.as_str(),
        "displayName": row.fields.display_name,
        "model": row.fields.model,
        "systemPrompt": row.fields.system_prompt,
        "providerOptions": {
            "temperature": o.temperature,
            "topP": o.top_p,
            "maxTokens": o.max_tokens,
            "reasoningEffort": o.reasoning_effort,
            "stop": o.stop,
            "seed": o.seed,
            "extra": o.extra,
        },
        "baseUrl": row.fields.base_url,
        "presetName": row.preset_name,
        "presetVersion": row.preset_version,
        "createdAt": rfc3339(row.created_at_ms),
        "updatedAt": rfc3339(row.updated_at_ms),
    })
}

/// `POST /v1/llms` → 201 with the config.
pub async fn create(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<NewLlmConfig>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let row = service::create(&app, body).await?;
    Ok((StatusCode::CREATED, Json(llm_json(&app, &row))))
}

/// Query of `GET /v1/llms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /v1/llms`: `{data, nextBefore}`, newest first, deleted ones left out.
pub async fn list(
    Scoped(app): Scoped,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = service::list(&app, query.limit, query.before.as_deref()).await?;
    let data: Vec<Value> = page.data.iter().map(|r| llm_json(&app, r)).collect();
    Ok(Json(json!({"data": data, "nextBefore": page.next_before})))
}

/// `GET /v1/llms/{id}`.
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(llm_json(&app, &service::load(&app, &id).await?)))
}

/// `PATCH /v1/llms/{id}` → the config; 409 for a system default.
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LlmConfigPatch>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(llm_json(
        &app,
        &service::patch(&app, &id, body).await?,
    )))
}

/// `DELETE /v1/llms/{id}` → 204 (soft); 409 for a system default or a
/// config that conversations still name (listed in `conversations`).
pub async fn delete(Scoped(app): Scoped, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    service::delete(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/llms/{id}/copy` → 201 with a new `user` config saying what
/// `id` says (display name + " (copy)").
pub async fn copy(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let row = service::copy(&app, &id).await?;
    Ok((StatusCode::CREATED, Json(llm_json(&app, &row))))
}
