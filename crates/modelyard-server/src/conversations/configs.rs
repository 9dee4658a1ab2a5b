//! The LLM configs a turn's model resolution looks at (docs/design.md#turn-model,
//! steps 3–5): the conversation's config for the operation, its default config,
//! the server's preset for the operation, then the `default` preset (or
//! `defaults.model`, materialized as a config too:
//! [`crate::service::llm_configs::ensure_server_default`]).
//!
//! Loaded in that order and only as far as needed: options and system
//! prompt come from the first config found, and every later step's model
//! is only reached through a config too, so nothing after the first config
//! can change the outcome. Presets are materialized as `system-default`
//! configs (once per preset version) only when a turn reaches them.
//!
//! A conversation's `llmId` that names a materialized server default
//! ([`llm_configs::is_server_default`]; what a conversation created without
//! `llmId` gets) counts as step 5, not step 4.

use modelyard_core::conversation::ConversationRecord;
use modelyard_core::turn_model::{ConfigRef, TurnModelInput};
use modelyard_store::{LlmConfigFields, LlmConfigRow};

use crate::app::AppState;
use crate::clock::now_ms;
use crate::config::PresetConfig;
use crate::service::error::{new_id, ServiceError};
use crate::service::llm_configs;

/// What resolution needs of LLM configs for one turn.
#[derive(Debug, Default)]
pub struct TurnConfigs {
    /// Step 3: `llm_overrides[operation]`.
    operation: Option<LlmConfigRow>,
    /// Step 4: `llm_id`, unless it names a server default (then step 5b).
    conversation: Option<LlmConfigRow>,
    /// Step 5a: the preset named after the operation.
    server_operation: Option<LlmConfigRow>,
    /// Step 5b: the `default` preset (or `defaults.model`'s config).
    server_default: Option<LlmConfigRow>,
}

impl TurnConfigs {
    /// Loads (and, for presets, materializes) the configs of a turn of
    /// `operation` in `conversation`, stopping at the first one found.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] when the conversation names a config that no
    /// longer exists; the store's errors.
    pub async fn load(
        app: &AppState,
        conversation: &ConversationRecord,
        operation: &str,
    ) -> Result<Self, ServiceError> {
        let mut configs = TurnConfigs::default();
        if let Some(id) = conversation.llm_overrides.get(operation) {
            configs.operation = Some(
                named(
                    app,
                    id,
                    &format!("llmOverrides.{operation}"),
                    &conversation.id,
                )
                .await?,
            );
            return Ok(configs);
        }
        // A server default as `llmId` (what a conversation created without
        // one names) is step 5, not step 4: the operation's preset still
        // applies, and turns follow the server's current default; the
        // stored version only serves when the server has no default now.
        let mut created_under = None;
        if let Some(id) = &conversation.llm_id {
            let row = named(app, id, "llmId", &conversation.id).await?;
            if !llm_configs::is_server_default(&row) {
                configs.conversation = Some(row);
                return Ok(configs);
            }
            created_under = Some(row);
        }
        let presets = &app.config.defaults.presets;
        if let Some(preset) = presets.get(operation) {
            configs.server_operation = Some(materialize(app, operation, preset).await?);
            return Ok(configs);
        }
        configs.server_default = llm_configs::ensure_server_default(app)
            .await?
            .or(created_under);
        Ok(configs)
    }

    /// The resolution input for this turn.
    pub fn input<'a>(
        &'a self,
        operation: &'a str,
        request_model: Option<&'a str>,
        conversation_model: Option<&'a str>,
    ) -> TurnModelInput<'a> {
        let config = |row: &'a Option<LlmConfigRow>| {
            row.as_ref().map(|row| ConfigRef {
                id: Some(row.id.as_str()),
                model: row.fields.model.as_str(),
            })
        };
        TurnModelInput {
            operation,
            request_model,
            conversation_model,
            operation_config: config(&self.operation),
            conversation_config: config(&self.conversation),
            server_operation_default: config(&self.server_operation),
            server_default: config(&self.server_default),
        }
    }

    /// The config with id `id` (resolution's `llm_config_id`), if loaded.
    pub fn supplying(&self, id: Option<&str>) -> Option<&LlmConfigRow> {
        let id = id?;
        [
            &self.operation,
            &self.conversation,
            &self.server_operation,
            &self.server_default,
        ]
        .into_iter()
        .flatten()
        .find(|row| row.id == id)
    }
}

/// A config the conversation names under `field`.
async fn named(
    app: &AppState,
    id: &str,
    field: &str,
    conversation_id: &str,
) -> Result<LlmConfigRow, ServiceError> {
    match app.store.get_llm_config(&app.project, id).await {
        Ok(Some(row)) if !row.deleted => Ok(row),
        Ok(_) => Err(ServiceError::invalid_field(
            field,
            format!(
                "the conversation's {field} names LLM config {id:?}, which no longer exists; \
                 PATCH /v1/conversations/{conversation_id} to name another"
            ),
        )),
        Err(err) => Err(err.into()),
    }
}

/// The `system-default` config of preset `name` at its configured version.
pub(crate) async fn materialize(
    app: &AppState,
    name: &str,
    preset: &PresetConfig,
) -> Result<LlmConfigRow, ServiceError> {
    let fields = LlmConfigFields {
        display_name: preset
            .display_name
            .clone()
            .unwrap_or_else(|| format!("{name} (system default v{})", preset.version)),
        model: preset.model.clone(),
        system_prompt: preset.system_prompt.clone(),
        provider_options: preset.provider_options.clone(),
        base_url: None,
    };
    let row = app
        .store
        .ensure_system_default(
            &app.project,
            name,
            i64::from(preset.version),
            &new_id(),
            &fields,
            now_ms(),
        )
        .await?;
    if row.fields != fields {
        tracing::warn!(
            preset = name,
            version = preset.version,
            id = %row.id,
            "[defaults.presets.{name}] differs from its stored version {}; bump `version` to apply the change",
            preset.version
        );
    }
    Ok(row)
}
