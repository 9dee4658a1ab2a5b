//! The SQL of LLM configs, the row they read and the checks and helpers
//! the [`Store`](crate::Store) methods share.

use modelyard_core::llm_config::LlmSource;

use super::{LlmConfigFields, LlmConfigRow, LlmConfigVersionRow};
use crate::StoreError;

// ---------------------------------------------------------------- SQL

macro_rules! llm_columns {
    () => {
        "id, source, display_name, model, system_prompt, provider_options_json, base_url, \
         preset_name, CAST(preset_version AS BIGINT) AS preset_version, created_at_ms, \
         updated_at_ms, deleted, CAST(version AS BIGINT) AS version"
    };
}

pub(super) const SELECT_LLM: &str = concat!(
    "SELECT ",
    llm_columns!(),
    " FROM llm_configs WHERE project_id = $1 AND id = $2"
);

pub(super) const SELECT_PRESET: &str = concat!(
    "SELECT ",
    llm_columns!(),
    " FROM llm_configs WHERE project_id = $1 AND preset_name = $2 AND preset_version = $3"
);

pub(super) const SELECT_LATEST_PRESET: &str = concat!(
    "SELECT ",
    llm_columns!(),
    " FROM llm_configs WHERE project_id = $1 AND preset_name = $2 \
     ORDER BY preset_version DESC LIMIT 1"
);

pub(super) const INSERT_LLM: &str =
    "INSERT INTO llm_configs (project_id, id, source, display_name, model, \
     system_prompt, provider_options_json, base_url, preset_name, preset_version, \
     created_at_ms, updated_at_ms, deleted, version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, 1)";

/// Materializes a preset: a concurrent twin collides on the unique
/// `(project_id, preset_name, preset_version)` index and inserts nothing.
pub(super) const INSERT_PRESET: &str =
    "INSERT INTO llm_configs (project_id, id, source, display_name, \
     model, system_prompt, provider_options_json, base_url, preset_name, preset_version, \
     created_at_ms, updated_at_ms, deleted, version) \
     VALUES ($1, $2, 'system-default', $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, 1) \
     ON CONFLICT DO NOTHING";

/// A change is the config's next version.
pub(super) const UPDATE_LLM: &str = "UPDATE llm_configs SET display_name = $3, model = $4, \
     system_prompt = $5, provider_options_json = $6, base_url = $7, updated_at_ms = $8, \
     version = version + 1 \
     WHERE project_id = $1 AND id = $2 AND source = 'user' AND NOT deleted";

/// Keeps what config `$2` says now as its current version (in the
/// transaction that wrote it). A version is written once: the same version
/// again (a system default a concurrent twin materialized) inserts nothing.
/// (SQLite: the `WHERE` keeps `ON CONFLICT` from reading as a join's `ON`.)
pub(super) const INSERT_VERSION: &str = "INSERT INTO llm_config_versions (project_id, llm_id, \
     version, display_name, model, system_prompt, provider_options_json, base_url, created_at_ms) \
     SELECT project_id, id, version, display_name, model, system_prompt, provider_options_json, \
     base_url, updated_at_ms FROM llm_configs WHERE project_id = $1 AND id = $2 \
     ON CONFLICT DO NOTHING";

macro_rules! version_columns {
    () => {
        "llm_id, CAST(version AS BIGINT) AS version, display_name, model, system_prompt, \
         provider_options_json, base_url, created_at_ms"
    };
}

pub(super) const SELECT_VERSION: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM llm_config_versions WHERE project_id = $1 AND llm_id = $2 AND version = $3"
);

pub(super) const DELETE_LLM: &str = "UPDATE llm_configs SET deleted = $3, updated_at_ms = $4 \
     WHERE project_id = $1 AND id = $2 AND NOT deleted";

/// PostgreSQL: the row lock that orders a delete after a concurrent update.
pub(super) const LOCK_LLM_PG: &str = "SELECT source FROM llm_configs \
     WHERE project_id = $1 AND id = $2 AND NOT deleted FOR UPDATE";

/// SQLite: no row locks (`BEGIN IMMEDIATE` already serializes writers).
pub(super) const LOCK_LLM_SQLITE: &str =
    "SELECT source FROM llm_configs WHERE project_id = $1 AND id = $2 AND NOT deleted";

/// Candidate referrers: `llm_id` is the id, or the overrides' JSON text
/// contains it as a JSON string (checked exactly in Rust).
pub(super) const SELECT_REFERRERS: &str =
    "SELECT id, llm_id, llm_overrides_json FROM conversations \
     WHERE project_id = $1 AND NOT deleted \
     AND (llm_id = $2 OR llm_overrides_json LIKE $3 ESCAPE '\\') ORDER BY id";

// ---------------------------------------------------------------- rows

#[derive(sqlx::FromRow)]
pub(super) struct LlmRow {
    id: String,
    source: String,
    display_name: String,
    model: String,
    system_prompt: Option<String>,
    provider_options_json: String,
    base_url: Option<String>,
    preset_name: Option<String>,
    preset_version: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
    deleted: bool,
    version: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct VersionRow {
    llm_id: String,
    version: i64,
    display_name: String,
    model: String,
    system_prompt: Option<String>,
    provider_options_json: String,
    base_url: Option<String>,
    created_at_ms: i64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl LlmRow {
    pub(super) fn into_row(self) -> Result<LlmConfigRow, BoxError> {
        Ok(LlmConfigRow {
            source: LlmSource::parse(&self.source)
                .ok_or_else(|| format!("unknown LLM config source {:?}", self.source))?,
            fields: LlmConfigFields {
                display_name: self.display_name,
                model: self.model,
                system_prompt: self.system_prompt,
                provider_options: serde_json::from_str(&self.provider_options_json)?,
                base_url: self.base_url,
            },
            id: self.id,
            preset_name: self.preset_name,
            preset_version: self.preset_version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            deleted: self.deleted,
            version: self.version,
        })
    }
}

impl VersionRow {
    pub(super) fn into_row(self) -> Result<LlmConfigVersionRow, BoxError> {
        Ok(LlmConfigVersionRow {
            llm_id: self.llm_id,
            version: self.version,
            fields: LlmConfigFields {
                display_name: self.display_name,
                model: self.model,
                system_prompt: self.system_prompt,
                provider_options: serde_json::from_str(&self.provider_options_json)?,
                base_url: self.base_url,
            },
            created_at_ms: self.created_at_ms,
        })
    }
}

pub(super) fn decode(op: &'static str) -> impl Fn(BoxError) -> StoreError {
    move |e| StoreError::Query {
        op,
        source: sqlx::Error::Decode(e),
    }
}

pub(super) fn options_json(fields: &LlmConfigFields) -> Result<String, StoreError> {
    serde_json::to_string(&fields.provider_options).map_err(|e| StoreError::InvalidInput {
        reason: format!("provider options cannot be serialized as JSON: {e}"),
    })
}

pub(super) fn check_fields(fields: &LlmConfigFields) -> Result<(), StoreError> {
    let reason = if fields.model.is_empty() {
        "empty model id"
    } else if fields.display_name.is_empty() {
        "empty display name"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidInput {
        reason: reason.to_owned(),
    })
}

/// The LIKE pattern matching an overrides JSON text that holds `id` as a
/// string value (or key; the exact check follows in Rust).
pub(super) fn referrer_pattern(id: &str) -> String {
    let json = serde_json::Value::String(id.to_owned()).to_string();
    let mut pattern = String::with_capacity(json.len() + 2);
    pattern.push('%');
    for c in json.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The ids of candidate rows that really refer to `id`.
pub(super) fn referrers(
    id: &str,
    candidates: Vec<(String, Option<String>, String)>,
) -> Vec<String> {
    candidates
        .into_iter()
        .filter(|(_, llm_id, overrides)| {
            llm_id.as_deref() == Some(id)
                || serde_json::from_str::<std::collections::BTreeMap<String, String>>(overrides)
                    .is_ok_and(|map| map.values().any(|v| v == id))
        })
        .map(|(conversation, _, _)| conversation)
        .collect()
}

pub(super) fn not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        kind: "LLM config",
        id: id.to_owned(),
    }
}

pub(super) fn system_default_conflict(id: &str) -> StoreError {
    StoreError::Conflict {
        reason: format!("LLM config {id} is a system default and cannot be changed"),
    }
}
