//! LLM config use cases (`/v1/llms`): create, list, show (a version too),
//! the versions, patch, delete, copy. Validation normalizes what a config
//! says (the model id becomes its composite form); system defaults
//! (materialized from the server's presets, or from `defaults.model`:
//! [`ensure_server_default`]) are read-only. Every change of a config is
//! its next version; versions stay readable after a delete.

use modelyard_core::ids::LlmConfigId;
use modelyard_core::llm_config::{LlmSource, ProviderOptions};
use modelyard_store::{LlmConfigFields, LlmConfigFilter, LlmConfigRow, StoreError};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::{new_id, ServiceError};
use super::models::check_model;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::config::DEFAULT_PRESET;
use crate::conversations::configs::materialize;
use crate::registry::BaseUrlError;

/// Longest display name, characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Most configs per page, and the default page.
pub const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;

/// A 422 naming `field`.
fn invalid(field: &str, reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::invalid_field(field, format!("{field}: {reason}"))
}

fn read_only(row: &LlmConfigRow) -> ServiceError {
    ServiceError::conflict(
        "read_only",
        format!(
            "LLM config {id} is a system default (preset {preset:?}, version {version}) and cannot \
             be changed or deleted; copy it: POST /v1/llms/{id}/copy creates a user config you can edit",
            id = row.id,
            preset = row.preset_name.as_deref().unwrap_or_default(),
            version = row.preset_version.unwrap_or_default(),
        ),
    )
}

/// Config `id` that is not deleted.
///
/// # Errors
/// `llm_config_not_found`; the store's.
pub async fn load(app: &AppState, id: &LlmConfigId) -> Result<LlmConfigRow, ServiceError> {
    let id = id.as_str();
    match app.store.get_llm_config(&app.project, id).await? {
        Some(row) if !row.deleted => Ok(row),
        _ => Err(no_config(id)),
    }
}

/// Config `id` (deleted or not) as it was at `version`: the config's row
/// with that version's fields, `updated_at_ms` when it was written.
///
/// # Errors
/// `invalid_query` (400) for a version below 1; `llm_config_not_found`;
/// `llm_config_version_not_found`; the store's.
pub async fn load_version(
    app: &AppState,
    id: &LlmConfigId,
    version: i64,
) -> Result<LlmConfigRow, ServiceError> {
    if version < 1 {
        return Err(ServiceError::bad_request(
            "invalid_query",
            format!("version must be at least 1, got {version}"),
        ));
    }
    let id = id.as_str();
    let Some(mut row) = app.store.get_llm_config(&app.project, id).await? else {
        return Err(no_config(id));
    };
    let Some(past) = app
        .store
        .get_llm_config_version(&app.project, id, version)
        .await?
    else {
        return Err(ServiceError::not_found(
            "llm_config_version",
            format!("{id}@{version}"),
            format!(
                "LLM config {id:?} has no version {version} (its current version is {})",
                row.version
            ),
        ));
    };
    row.fields = past.fields;
    row.version = past.version;
    row.updated_at_ms = past.created_at_ms;
    Ok(row)
}

/// A page of a config's versions, newest first: each the config as it was
/// ([`load_version`]'s row) and when that version was written (unix ms).
#[derive(Debug)]
pub struct VersionPage {
    /// The versions.
    pub data: Vec<(LlmConfigRow, i64)>,
    /// Cursor of the next page (a version number), if the page was full.
    pub next_before: Option<String>,
}

/// The versions of config `id` (deleted or not), newest first (`limit`
/// 1..=200, default 50), below version `before`.
///
/// # Errors
/// `invalid_query` (400); `llm_config_not_found`; the store's.
pub async fn versions(
    app: &AppState,
    id: &LlmConfigId,
    limit: Option<u32>,
    before: Option<&str>,
) -> Result<VersionPage, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let before = match before {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    ServiceError::bad_request(
                        "invalid_query",
                        "before: not a cursor from nextBefore",
                    )
                })?,
        ),
    };
    let id = id.as_str();
    let Some(row) = app.store.get_llm_config(&app.project, id).await? else {
        return Err(no_config(id));
    };
    let versions = app
        .store
        .list_llm_config_versions(&app.project, id, limit, before)
        .await?;
    let next_before = (versions.len() == limit as usize)
        .then(|| versions.last().map(|v| v.version.to_string()))
        .flatten();
    let data = versions
        .into_iter()
        .map(|v| {
            let mut at = row.clone();
            at.fields = v.fields;
            at.version = v.version;
            at.updated_at_ms = v.created_at_ms;
            (at, v.created_at_ms)
        })
        .collect();
    Ok(VersionPage { data, next_before })
}

fn no_config(id: &str) -> ServiceError {
    ServiceError::not_found("llm_config", id, format!("no LLM config with id {id:?}"))
}

/// `presetName` of the system default materialized from `defaults.model`
/// (a preset name can never have a dot, so it collides with none).
pub const DEFAULTS_MODEL_PRESET: &str = "defaults.model";

/// Whether `row` is a materialized server default: a `system-default`
/// config of the `default` preset or of `defaults.model`
/// ([`DEFAULTS_MODEL_PRESET`]), any version. A conversation whose `llmId`
/// names one resolves as if it named none (docs/design.md#turn-model,
/// step 5): operation presets apply and turns follow the current default.
pub fn is_server_default(row: &LlmConfigRow) -> bool {
    row.source == LlmSource::SystemDefault
        && matches!(
            row.preset_name.as_deref(),
            Some(DEFAULT_PRESET | DEFAULTS_MODEL_PRESET)
        )
}

/// The server default of `app`'s project as a `system-default` config: the
/// `[defaults.presets.default]` preset's (materialized once per version),
/// or, on a server with only `defaults.model`, one materialized from that
/// model (preset [`DEFAULTS_MODEL_PRESET`]; no system prompt or options; a
/// new version whenever the model changes). `None` without a default model.
///
/// # Errors
/// The store's.
pub async fn ensure_server_default(app: &AppState) -> Result<Option<LlmConfigRow>, ServiceError> {
    if let Some(preset) = app.config.defaults.presets.get(DEFAULT_PRESET) {
        return materialize(app, DEFAULT_PRESET, preset).await.map(Some);
    }
    let Some(model) = app.config.defaults.model.as_deref() else {
        return Ok(None);
    };
    let fields = LlmConfigFields {
        display_name: format!("{model} (server default)"),
        model: model.to_owned(),
        ..LlmConfigFields::default()
    };
    let version = match app
        .store
        .latest_system_default(&app.project, DEFAULTS_MODEL_PRESET)
        .await?
    {
        Some(row) if row.fields == fields => return Ok(Some(row)),
        Some(row) => row.preset_version.unwrap_or(0) + 1,
        None => 1,
    };
    Ok(Some(
        app.store
            .ensure_system_default(
                &app.project,
                DEFAULTS_MODEL_PRESET,
                version,
                &new_id(),
                &fields,
                now_ms(),
            )
            .await?,
    ))
}

/// Validates (and normalizes: the model id becomes its composite form)
/// what a config says.
fn validate(app: &AppState, fields: &mut LlmConfigFields) -> Result<(), ServiceError> {
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
        Err(err) => return Err(err.in_field("model")),
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

/// What a new config says.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewLlmConfig {
    /// Display name (default: the model id).
    pub display_name: Option<String>,
    /// Model id (required).
    pub model: Option<String>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Provider options.
    #[schema(value_type = Option<Object>)]
    pub provider_options: Option<ProviderOptions>,
    /// A configured provider's base URL (or, when allowed, a custom one).
    pub base_url: Option<String>,
}

/// Creates a `user` config.
///
/// # Errors
/// `invalid_field` 422s; the store's.
pub async fn create(app: &AppState, body: NewLlmConfig) -> Result<LlmConfigRow, ServiceError> {
    let Some(model) = body.model else {
        return Err(invalid(
            "model",
            "is required (a model id like provider/model)",
        ));
    };
    let mut fields = LlmConfigFields {
        display_name: body.display_name.unwrap_or_else(|| model.clone()),
        model,
        system_prompt: body.system_prompt,
        provider_options: body.provider_options.unwrap_or_default(),
        base_url: body.base_url,
    };
    validate(app, &mut fields)?;
    Ok(app
        .store
        .create_llm_config(&app.project, &new_id(), &fields, now_ms())
        .await?)
}

/// A page of configs, newest first.
#[derive(Debug)]
pub struct Page {
    /// The configs.
    pub data: Vec<LlmConfigRow>,
    /// Cursor of the next page, if the page was full.
    pub next_before: Option<String>,
}

/// Lists configs (`limit` 1..=200, default 50) before cursor `before`,
/// deleted ones left out; the server default ([`ensure_server_default`])
/// is materialized first, so a server with a default model never lists
/// none.
///
/// # Errors
/// `invalid_query` (400); the store's.
pub async fn list(
    app: &AppState,
    limit: Option<u32>,
    before: Option<&str>,
) -> Result<Page, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let before = match before {
        None => None,
        Some(text) => Some(
            text.split_once('_')
                .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    ServiceError::bad_request(
                        "invalid_query",
                        "before: not a cursor from nextBefore",
                    )
                })?,
        ),
    };
    // A server with a default model always lists it: the first page
    // materializes it when no turn has yet.
    if before.is_none() {
        ensure_server_default(app).await?;
    }
    let filter = LlmConfigFilter { limit, before };
    let data = app.store.list_llm_configs(&app.project, &filter).await?;
    let next_before = (data.len() == limit as usize)
        .then(|| data.last().map(|r| format!("{}_{}", r.created_at_ms, r.id)))
        .flatten();
    Ok(Page { data, next_before })
}

fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change: absent fields stay; `null` clears `systemPrompt`, `baseUrl`
/// and `providerOptions`; `providerOptions` is merged key by key (a `null`
/// option is removed).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LlmConfigPatch {
    /// Display name.
    pub display_name: Option<String>,
    /// Model id.
    pub model: Option<String>,
    /// System prompt; `null` clears.
    #[serde(default, deserialize_with = "double")]
    pub system_prompt: Option<Option<String>>,
    /// Options merged key by key; `null` clears all.
    #[serde(default, deserialize_with = "double")]
    pub provider_options: Option<Option<Map<String, Value>>>,
    /// Base URL; `null` clears.
    #[serde(default, deserialize_with = "double")]
    pub base_url: Option<Option<String>>,
}

/// Changes a `user` config.
///
/// # Errors
/// `llm_config_not_found`; `read_only` (409) for a system default;
/// `invalid_field` 422s; `invalid_body` (400) for options that do not
/// parse; the store's.
pub async fn patch(
    app: &AppState,
    id: &LlmConfigId,
    body: LlmConfigPatch,
) -> Result<LlmConfigRow, ServiceError> {
    let row = load(app, id).await?;
    let id = id.as_str();
    if row.source == LlmSource::SystemDefault {
        return Err(read_only(&row));
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
            fields.provider_options =
                serde_json::from_value(Value::Object(merged)).map_err(|e| {
                    ServiceError::bad_request("invalid_body", format!("providerOptions: {e}"))
                })?;
        }
    }
    validate(app, &mut fields)?;
    match app
        .store
        .update_llm_config(&app.project, id, &fields, now_ms())
        .await
    {
        Ok(row) => Ok(row),
        Err(StoreError::Conflict { .. }) => Err(read_only(&row)),
        Err(err) => Err(err.into()),
    }
}

/// Soft-deletes a `user` config that no conversation names.
///
/// # Errors
/// `llm_config_not_found`; `read_only` or `in_use` (409, with the
/// conversations that name it); the store's.
pub async fn delete(app: &AppState, id: &LlmConfigId) -> Result<(), ServiceError> {
    let row = load(app, id).await?;
    let id = id.as_str();
    if row.source == LlmSource::SystemDefault {
        return Err(read_only(&row));
    }
    match app
        .store
        .delete_llm_config(&app.project, id, now_ms())
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::InUse { referrers, .. }) => Err(ServiceError::InUse {
            message: format!(
                "LLM config {id} is used by conversation(s) {}; point them at another config \
                 (PATCH /v1/conversations/{{id}} with llmId / llmOverrides) or delete them first",
                referrers.join(", ")
            ),
            conversations: referrers,
        }),
        Err(StoreError::Conflict { .. }) => Err(read_only(&row)),
        Err(err) => Err(err.into()),
    }
}

/// Creates a `user` config saying what `id` says (display name + " (copy)").
///
/// # Errors
/// `llm_config_not_found`; the store's.
pub async fn copy(app: &AppState, id: &LlmConfigId) -> Result<LlmConfigRow, ServiceError> {
    let row = load(app, id).await?;
    let mut fields = row.fields;
    let mut name = fields.display_name.clone();
    name.push_str(" (copy)");
    if name.chars().count() > MAX_DISPLAY_NAME {
        name = name.chars().take(MAX_DISPLAY_NAME).collect();
    }
    fields.display_name = name;
    Ok(app
        .store
        .create_llm_config(&app.project, &new_id(), &fields, now_ms())
        .await?)
}
