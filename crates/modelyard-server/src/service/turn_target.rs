//! Where the next call of a conversation's operation goes: the one
//! resolution shared by starting a turn ([`super::turns::start`]), the
//! server-side operations ([`super::operations`]) and the warm path
//! ([`super::warm`]): docs/design.md#turn-model, then the route or
//! deployment the model id stands for, then an LLM config's custom base URL.
//! Also the config snapshot ([`config_snapshot`]) the LLM session of such a
//! call records.

use modelyard_core::conversation::{ConversationRecord, ResolvedFrom};
use modelyard_core::llm_config::ConfigSnapshot;
use modelyard_core::turn_model::{resolve_turn_model, TurnModel};
use modelyard_store::LlmConfigRow;

use super::error::ServiceError;
use crate::app::AppState;
use crate::conversations::configs::TurnConfigs;
use crate::routing::Destination;

/// The resolved model of a call, the config that supplies its options and
/// where it goes.
#[derive(Debug)]
pub struct TurnTarget {
    /// How the model was resolved.
    pub resolved: TurnModel,
    /// The LLM config that supplies options and system prompt, if any.
    pub llm_config: Option<LlmConfigRow>,
    /// One deployment or a route (the config's custom base URL applied).
    pub destination: Destination,
}

/// Why no target resolved; each caller words it its own way.
#[derive(Debug)]
pub enum TargetError {
    /// No step of the turn-model rule yields a model.
    NoModel,
    /// Loading the LLM configs failed.
    Configs(ServiceError),
    /// The resolved model id does not route.
    Route {
        /// The model id.
        model: String,
        /// Why.
        message: String,
    },
    /// The supplying config's custom base URL is refused.
    BaseUrl(String),
}

/// Resolves `operation`'s model for `conversation` exactly as its next turn
/// would (`model`: the per-call override) and where a call of it goes.
///
/// # Errors
/// [`TargetError`].
pub async fn resolve(
    app: &AppState,
    conversation: &ConversationRecord,
    operation: &str,
    model: Option<&str>,
) -> Result<TurnTarget, TargetError> {
    let configs = TurnConfigs::load(app, conversation, operation)
        .await
        .map_err(TargetError::Configs)?;
    let resolved =
        resolve_turn_model(&configs.input(operation, model, conversation.model.as_deref()))
            .ok_or(TargetError::NoModel)?;
    let llm_config = configs
        .supplying(resolved.llm_config_id.as_deref())
        .cloned();
    let destination = app
        .destination(Some(&resolved.model))
        .map_err(|err| TargetError::Route {
            model: resolved.model.clone(),
            message: err.to_string(),
        })?;
    // An LLM config's custom baseUrl ([security] allow_custom_base_urls).
    let destination = destination
        .for_llm_config(&app.registry, llm_config.as_ref())
        .map_err(|err| TargetError::BaseUrl(err.to_string()))?;
    Ok(TurnTarget {
        resolved,
        llm_config,
        destination,
    })
}

impl TurnTarget {
    /// The config snapshot a session of this call records.
    pub fn snapshot(&self) -> ConfigSnapshot {
        config_snapshot(
            Some(self.resolved.resolved_from),
            &self.destination,
            self.llm_config.as_ref(),
        )
    }
}

/// The snapshot of what a call to `destination` runs with: the model id it
/// names (a route's name or a deployment's composite id), how it was
/// resolved (`None` outside conversations), the supplying `config` (id,
/// version, source, options, system prompt) as it is now, and the base URL
/// of the deployment (the config's custom one when it has one; without
/// credentials or query; `None` for a route, whose calls name their own
/// providers).
pub fn config_snapshot(
    resolved_from: Option<ResolvedFrom>,
    destination: &Destination,
    config: Option<&LlmConfigRow>,
) -> ConfigSnapshot {
    let base_url = match destination {
        Destination::Deployment(target) => Some(modelyard_upstream::client::redact_url(
            target.provider.config.base_url.as_str(),
        )),
        Destination::Route(_) => None,
    };
    ConfigSnapshot {
        llm_id: config.map(|c| c.id.clone()),
        version: config.map(|c| c.version),
        source: config.map(|c| c.source),
        resolved_from,
        model: destination.model_id(),
        provider_options: config
            .map(|c| c.fields.provider_options.clone())
            .unwrap_or_default(),
        system_prompt: config.and_then(|c| c.fields.system_prompt.clone()),
        base_url,
    }
}

impl TargetError {
    /// As a turn's error (also the warm path's): `no_model`,
    /// `model_not_found` with suggestions, `invalid_base_url`.
    pub fn into_turn_error(self, app: &AppState) -> ServiceError {
        match self {
            TargetError::NoModel => ServiceError::NoModel(
                "no model: pass `model`, select one for the conversation, give it an LLM config \
                 (llmId / llmOverrides), or configure [defaults.presets.default] or \
                 defaults.model"
                    .into(),
            ),
            TargetError::Configs(err) => err,
            TargetError::Route { model, message } => {
                super::models::unknown_model(app, &model, message)
            }
            TargetError::BaseUrl(reason) => ServiceError::Invalid {
                code: "invalid_base_url",
                field: None,
                reason,
            },
        }
    }
}
