//! LLM configs: `/v1/llms` (DESIGN.md §2).
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
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_core::llm_config::{LlmSource, ProviderOptions};
use modelyard_store::{LlmConfigFields, LlmConfigFilter, LlmConfigRow, StoreError};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::{now_ms, rfc3339};
use crate::error::Problem;
use crate::http::store_problem;
use crate::http::{ApiJson, ApiQuery};
use crate::registry::BaseUrlError;
use crate::service::error::{new_id, ServiceError};
use crate::service::models::check_model;

/// Longest display name, characters.
const MAX_DISPLAY_NAME: usize = 200;

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

/// A 422 naming `field`.
fn invalid(field: &str, reason: impl std::fmt::Display) -> Problem {
    ServiceError::invalid_field(field, format!("{field}: {reason}")).into()
}

fn read_only(row: &LlmConfigRow) -> Problem {
    ServiceError::conflict("read_only", format!(
        "LLM config {id} is a system default (preset {preset:?}, version {version}) and cannot \
         be changed or deleted; copy it: POST /v1/llms/{id}/copy creates a user config you can edit",
        id = row.id,
        preset = row.preset_name.as_deref().unwrap_or_default(),
        version = row.preset_version.unwrap_or_default(),
    ))
    .into()
}

/// Config `id` that is not deleted, or 404.
async fn load(app: &AppState, id: &str) -> Result<LlmConfigRow, Problem> {
    match app.store.get_llm_config(&app.project, id).await {
        Ok(Some(row)) if !row.deleted => Ok(row),
        Ok(_) => {
            Err(
                ServiceError::not_found("llm_config", id, format!("no LLM config with id {id:?}"))
                    .into(),
            )
        }
        Err(err) => Err(store_problem(err)),
    }
}

/// Validates (and normalizes: the model id becomes its composite form)
/// what a config says.
fn validate(app: &AppState, fields: &mut LlmConfigFields) -> Result<(), Problem> {
    let name = fields.display_name.trim();
    if name.is_empty() {
        return Err(invalid("displayName", "must not be empty"));
    }
    if name.chars().count() > MAX_DISPLAY_NAME {
        return Err(invalid(
            "displayName",
            format!("at most {MAX_DISPLAY_NAME} characters"),
        ));
    }
    fields.display_name = name.to_owned();
    match check_model(app, &fields.model) {
        Ok(checked) => fields.model = checked.model,
        Err(err) => return Err(err.in_field("model").into()),
    }
    if fields.system_prompt.as_deref() == Some("") {
        return Err(invalid(
            "systemPrompt",
            "must not be empty (null for no system prompt)",
        ));
    }
    if let Err(bad) = fields.provider_options.validate() {
        return Err(invalid(
            &format!("providerOptions.{}", bad.field.camel()),
            bad.reason,
        ));
    }
    if let Some(base_url) = &fields.base_url {
        let configured: Vec<String> = app
            .config
            .providers
            .iter()
            .map(|p| p.base_url.as_str().trim_end_matches('/').to_owned())
            .collect();
        match app.registry.check_base_url(base_url) {
            Ok(url) => fields.base_url = Some(url),
            Err(BaseUrlError::NotConfigured { .. }) => {
                return Err(invalid(
                    "baseUrl",
                    format!(
                        "{base_url:?} is not the base URL of a configured provider; an LLM config \
                         may only name one of the configured providers' base URLs ({})",
                        if configured.is_empty() {
                            "none configured".to_owned()
                        } else {
                            configured.join(", ")
                        }
                    ),
                ));
            }
            Err(err) => return Err(invalid("baseUrl", err)),
        }
    }
    Ok(())
}

/// Body of `POST /v1/llms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    display_name: Option<String>,
    model: Option<String>,
    system_prompt: Option<String>,
    provider_options: Option<ProviderOptions>,
    base_url: Option<String>,
}

/// `POST /v1/llms` → 201 with the config.
pub async fn create(Scoped(app): Scoped, ApiJson(body): ApiJson<CreateBody>) -> Response {
    let Some(model) = body.model else {
        return invalid("model", "is required (a model id like provider/model)").into_response();
    };
    let mut fields = LlmConfigFields {
        display_name: body.display_name.unwrap_or_else(|| model.clone()),
        model,
        system_prompt: body.system_prompt,
        provider_options: body.provider_options.unwrap_or_default(),
        base_url: body.base_url,
    };
    if let Err(problem) = validate(&app, &mut fields) {
        return problem.into_response();
    }
    match app
        .store
        .create_llm_config(&app.project, &new_id(), &fields, now_ms())
        .await
    {
        Ok(row) => (StatusCode::CREATED, Json(llm_json(&app, &row))).into_response(),
        Err(err) => store_problem(err).into_response(),
    }
}

/// Query of `GET /v1/llms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    before: Option<String>,
}

/// `GET /v1/llms`: `{data, nextBefore}`, newest first, deleted ones left out.
pub async fn list(Scoped(app): Scoped, ApiQuery(query): ApiQuery<ListQuery>) -> Response {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Problem::bad_request(format!("limit must be between 1 and 200, got {limit}"))
            .into_response();
    }
    let before = match query.before.as_deref() {
        None => None,
        Some(text) => match text
            .split_once('_')
            .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
        {
            Some(cursor) => Some(cursor),
            None => {
                return Problem::bad_request("before: not a cursor from nextBefore").into_response()
            }
        },
    };
    let filter = LlmConfigFilter { limit, before };
    match app.store.list_llm_configs(&app.project, &filter).await {
        Ok(rows) => {
            let next = (rows.len() == limit as usize)
                .then(|| rows.last().map(|r| format!("{}_{}", r.created_at_ms, r.id)))
                .flatten();
            let data: Vec<Value> = rows.iter().map(|r| llm_json(&app, r)).collect();
            Json(json!({"data": data, "nextBefore": next})).into_response()
        }
        Err(err) => store_problem(err).into_response(),
    }
}

/// `GET /v1/llms/{id}`.
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match load(&app, &id).await {
        Ok(row) => Json(llm_json(&app, &row)).into_response(),
        Err(problem) => problem.into_response(),
    }
}

fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /v1/llms/{id}`: absent fields stay; `null` clears
/// `systemPrompt`, `baseUrl` and `providerOptions`; `providerOptions` is
/// merged key by key (a `null` option is removed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchBody {
    display_name: Option<String>,
    model: Option<String>,
    #[serde(default, deserialize_with = "double")]
    system_prompt: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    provider_options: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "double")]
    base_url: Option<Option<String>>,
}

/// `PATCH /v1/llms/{id}` → the config; 409 for a system default.
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Response {
    let row = match load(&app, &id).await {
        Ok(row) => row,
        Err(problem) => return problem.into_response(),
    };
    if row.source == LlmSource::SystemDefault {
        return read_only(&row).into_response();
    }
    let mut fields = row.fields.clone();
    if let Some(name) = body.display_name {
        fields.display_name = name;
    }
    if let Some(model) = body.model {
        fields.model = model;
    }
    if let Some(prompt) = body.system_prompt {
        fields.system_prompt = prompt;
    }
    if let Some(base_url) = body.base_url {
        fields.base_url = base_url;
    }
    match body.provider_options {
        None => {}
        Some(None) => fields.provider_options = ProviderOptions::default(),
        Some(Some(changes)) => {
            let mut merged = match serde_json::to_value(&fields.provider_options) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
            for (key, value) in changes {
                if value.is_null() {
                    merged.remove(&key);
                } else {
                    merged.insert(key, value);
                }
            }
            fields.provider_options = match serde_json::from_value(Value::Object(merged)) {
                Ok(options) => options,
                Err(e) => {
                    return Problem::bad_request(format!("providerOptions: {e}")).into_response()
                }
            };
        }
    }
    if let Err(problem) = validate(&app, &mut fields) {
        return problem.into_response();
    }
    match app
        .store
        .update_llm_config(&app.project, &id, &fields, now_ms())
        .await
    {
        Ok(row) => Json(llm_json(&app, &row)).into_response(),
        Err(StoreError::Conflict { .. }) => read_only(&row).into_response(),
        Err(err) => store_problem(err).into_response(),
    }
}

/// `DELETE /v1/llms/{id}` → 204 (soft); 409 for a system default or a
/// config that conversations still name (listed in `conversations`).
pub async fn delete(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    let row = match load(&app, &id).await {
        Ok(row) => row,
        Err(problem) => return problem.into_response(),
    };
    if row.source == LlmSource::SystemDefault {
        return read_only(&row).into_response();
    }
    match app
        .store
        .delete_llm_config(&app.project, &id, now_ms())
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(StoreError::InUse { referrers, .. }) => Problem::conflict(format!(
            "LLM config {id} is used by conversation(s) {}; point them at another config \
             (PATCH /v1/conversations/{{id}} with llmId / llmOverrides) or delete them first",
            referrers.join(", ")
        ))
        .with("conversations", referrers)
        .with("code", "in_use")
        .into_response(),
        Err(StoreError::Conflict { .. }) => read_only(&row).into_response(),
        Err(err) => store_problem(err).into_response(),
    }
}

/// `POST /v1/llms/{id}/copy` → 201 with a new `user` config saying what
/// `id` says (display name + " (copy)").
pub async fn copy(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    let row = match load(&app, &id).await {
        Ok(row) => row,
        Err(problem) => return problem.into_response(),
    };
    let mut fields = row.fields;
    let mut name = fields.display_name.clone();
    name.push_str(" (copy)");
    if name.chars().count() > MAX_DISPLAY_NAME {
        name = name.chars().take(MAX_DISPLAY_NAME).collect();
    }
    fields.display_name = name;
    match app
        .store
        .create_llm_config(&app.project, &new_id(), &fields, now_ms())
        .await
    {
        Ok(row) => (StatusCode::CREATED, Json(llm_json(&app, &row))).into_response(),
        Err(err) => store_problem(err).into_response(),
    }
}
