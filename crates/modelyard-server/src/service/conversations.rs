//! Conversation use cases: create, list, show, patch (title, metadata, LLM
//! configs), delete, the model selection, settings, and history (messages,
//! turns, model history). Every change is an event appended to the log and
//! published on the bus.

use modelyard_core::ids::ConversationId;
use std::collections::BTreeMap;

use modelyard_core::conversation::{
    ConversationRecord, EventPayload, MessageRecord, SelectionSource, TurnRecord,
};
use modelyard_core::llm_config::{is_operation_name, ReasoningEffort};
use modelyard_store::ConversationFilter;
use serde::Deserialize;
use serde_json::Value;

use super::error::{new_id, ServiceError};
use super::llm_configs;
use super::models::{check_config_id, check_model, check_selection};
use crate::app::AppState;
use crate::conversations::advisor;

/// Conversation `id` of the caller's project, unless deleted.
///
/// # Errors
/// `conversation_not_found`; the store's errors.
pub async fn load(app: &AppState, id: &ConversationId) -> Result<ConversationRecord, ServiceError> {
    load_stored(app, id.as_str()).await
}

/// [`load`] for an id the program already holds (from the store or a
/// record), not one from a request.
pub(crate) async fn load_stored(
    app: &AppState,
    id: &str,
) -> Result<ConversationRecord, ServiceError> {
    match app.store.get_conversation(&app.project, id).await? {
        Some(c) if !c.deleted => Ok(c),
        _ => Err(ServiceError::no_conversation(id)),
    }
}

/// Appends and publishes `payloads`, then returns the conversation as the
/// append wrote it (no re-read); with nothing to append, [`load`]s it.
///
/// # Errors
/// `conversation_not_found`; the store's errors.
async fn append_then_record(
    app: &AppState,
    id: &str,
    payloads: Vec<EventPayload>,
) -> Result<ConversationRecord, ServiceError> {
    match app
        .append_and_publish_folded(id, payloads)
        .await?
        .conversation
    {
        Some(c) if !c.deleted => Ok(c),
        Some(_) => Err(ServiceError::no_conversation(id)),
        None => load_stored(app, id).await,
    }
}

/// What `POST /v1/conversations` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewConversation {
    /// Title.
    pub title: Option<String>,
    /// Parent conversation (a subtask).
    pub parent_id: Option<String>,
    /// Selected model.
    pub model: Option<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Reasoning effort (one of `modelyard_core::llm_config::REASONING_EFFORTS`; another value is a 400).
    #[schema(value_type = Option<String>, example = "high")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Offer the advisor tool in turns (default false).
    pub advisor: Option<bool>,
    /// A JSON object.
    pub metadata: Option<Value>,
    /// Default LLM config. Absent: the server default's `system-default`
    /// config on a server with a default (resolved as the server default,
    /// docs/design.md#turn-model), else none.
    pub llm_id: Option<String>,
    /// LLM config per operation.
    pub llm_overrides: Option<BTreeMap<String, String>>,
}

fn operation_invalid(op: &str) -> ServiceError {
    ServiceError::invalid_field(
        "llmOverrides",
        format!("llmOverrides: operation {op:?} must match [a-z][a-z0-9_-]{{0,31}}"),
    )
}

fn check_metadata(metadata: Option<&Value>) -> Result<(), ServiceError> {
    if metadata.is_some_and(|m| !m.is_object()) {
        return Err(ServiceError::invalid_field(
            "metadata",
            "metadata must be a JSON object",
        ));
    }
    Ok(())
}

/// Checks every config id of a conversation's `llmId` / `llmOverrides`
/// (operation names too) before anything is written: reads only.
async fn check_llm_ids(
    app: &AppState,
    llm_id: Option<&str>,
    overrides: &[(&str, Option<&str>)],
) -> Result<(), ServiceError> {
    if let Some(id) = llm_id {
        check_config_id(app, "llmId", id).await?;
    }
    for &(op, id) in overrides {
        if !is_operation_name(op) {
            return Err(operation_invalid(op));
        }
        if let Some(id) = id {
            check_config_id(app, &format!("llmOverrides.{op}"), id).await?;
        }
    }
    Ok(())
}

/// Creates a conversation; a subtask starts with its parent's model.
/// Without `llmId`, on a server with a default (a `default` preset or
/// `defaults.model`), `llmId` names the server default's `system-default`
/// config ([`llm_configs::ensure_server_default`], materialized if need be);
/// without a default it stays `None`.
///
/// # Errors
/// 422s for invalid fields, models, parents and config ids; the store's.
pub async fn create(
    app: &AppState,
    body: NewConversation,
) -> Result<ConversationRecord, ServiceError> {
    check_metadata(body.metadata.as_ref())?;
    let mut model = match &body.model {
        Some(id) => Some(check_model(app, id)?.model),
        None => None,
    };
    if let Some(parent_id) = &body.parent_id {
        let parent = match ConversationId::parse(parent_id) {
            Ok(parent_id) => load(app, &parent_id).await,
            Err(e) => Err(e.into()),
        };
        match parent {
            Ok(parent) => model = model.or(parent.model),
            Err(_) => {
                return Err(ServiceError::invalid_field(
                    "parentId",
                    format!("parentId: no conversation with id {parent_id:?}"),
                ))
            }
        }
    }
    let llm_overrides = body.llm_overrides.unwrap_or_default();
    let ids: Vec<(&str, Option<&str>)> = llm_overrides
        .iter()
        .map(|(op, id)| (op.as_str(), Some(id.as_str())))
        .collect();
    check_llm_ids(app, body.llm_id.as_deref(), &ids).await?;
    // Without `llmId`, the conversation names the server default it was
    // created under (resolved as the server default, not as a choice:
    // docs/design.md#turn-model).
    let llm_id = match body.llm_id {
        Some(id) => Some(id),
        None => llm_configs::ensure_server_default(app)
            .await?
            .map(|row| row.id),
    };
    let id = new_id();
    let payload = EventPayload::ConversationCreated {
        title: body.title,
        parent_id: body.parent_id,
        model,
        cwd: body.cwd,
        reasoning_effort: body.reasoning_effort.map(|e| e.as_str().to_owned()),
        advisor: body.advisor.unwrap_or(false),
        metadata: body
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
        llm_id,
        llm_overrides,
    };
    append_then_record(app, &id, vec![payload]).await
}

/// Most conversations per page, and the default page.
pub const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;

/// A page of conversations, most recently updated first.
#[derive(Debug)]
pub struct Page {
    /// The conversations.
    pub data: Vec<ConversationRecord>,
    /// Cursor of the next page, if the page was full.
    pub next_before: Option<String>,
}

/// Lists conversations (`limit` 1..=200, default 50) before cursor
/// `before` (a `nextBefore`), optionally the children of `parent_id`.
///
/// # Errors
/// `invalid_query` (400) for a limit or cursor out of range; the store's.
pub async fn list(
    app: &AppState,
    limit: Option<u32>,
    before: Option<&str>,
    parent_id: Option<String>,
) -> Result<Page, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ServiceError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let before = match before.map(parse_cursor) {
        Some(Some(cursor)) => Some(cursor),
        Some(None) => {
            return Err(ServiceError::bad_request(
                "invalid_query",
                "before: not a cursor from nextBefore",
            ))
        }
        None => None,
    };
    let filter = ConversationFilter {
        limit,
        before,
        include_deleted: false,
        parent_id,
    };
    let data = app.store.list_conversations(&app.project, &filter).await?;
    let next_before = (data.len() == limit as usize)
        .then(|| data.last().map(|c| format!("{}_{}", c.updated_at_ms, c.id)))
        .flatten();
    Ok(Page { data, next_before })
}

fn parse_cursor(text: &str) -> Option<(i64, String)> {
    let (ms, id) = text.split_once('_')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

fn double<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// What `PATCH /v1/conversations/{id}` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConversationPatch {
    /// New title.
    pub title: Option<String>,
    /// New metadata (a JSON object).
    pub metadata: Option<Value>,
    /// The default LLM config; `null` clears.
    #[serde(default, deserialize_with = "double")]
    pub llm_id: Option<Option<String>>,
    /// Merged into the overrides: a `null` value removes that operation's
    /// override; `null` for the whole map clears them all.
    #[serde(default, deserialize_with = "double")]
    pub llm_overrides: Option<Option<BTreeMap<String, Option<String>>>>,
}

/// Changes title, metadata, `llmId` and `llmOverrides`; every config id is
/// checked before anything is written.
///
/// # Errors
/// `conversation_not_found`; 422s; the store's.
pub async fn patch(
    app: &AppState,
    id: &ConversationId,
    body: ConversationPatch,
) -> Result<ConversationRecord, ServiceError> {
    let id = id.as_str();
    check_metadata(body.metadata.as_ref())?;
    let conversation = load_stored(app, id).await?;
    let empty = BTreeMap::new();
    let override_changes = match &body.llm_overrides {
        Some(Some(changes)) => changes,
        _ => &empty,
    };
    let ids: Vec<(&str, Option<&str>)> = override_changes
        .iter()
        .map(|(op, id)| (op.as_str(), id.as_deref()))
        .collect();
    check_llm_ids(app, body.llm_id.as_ref().and_then(Option::as_deref), &ids).await?;
    let mut payloads = Vec::with_capacity(2);
    if body.title.is_some() || body.metadata.is_some() {
        payloads.push(EventPayload::ConversationUpdated {
            title: body.title,
            metadata: body.metadata,
        });
    }
    let llm_id = body.llm_id.filter(|new| *new != conversation.llm_id);
    let llm_overrides = body
        .llm_overrides
        .map(|changes| {
            let mut merged = conversation.llm_overrides.clone();
            match changes {
                None => merged.clear(),
                Some(changes) => {
                    for (op, config) in changes {
                        match config {
                            Some(config) => merged.insert(op, config),
                            None => merged.remove(&op),
                        };
                    }
                }
            }
            merged
        })
        .filter(|merged| *merged != conversation.llm_overrides);
    if llm_id.is_some() || llm_overrides.is_some() {
        payloads.push(EventPayload::LlmChanged {
            llm_id,
            llm_overrides,
        });
    }
    append_then_record(app, id, payloads).await
}

/// Soft-deletes a conversation.
///
/// # Errors
/// `conversation_not_found`; the store's.
pub async fn delete(app: &AppState, id: &ConversationId) -> Result<(), ServiceError> {
    let id = id.as_str();
    load_stored(app, id).await?;
    app.append_and_publish(id, vec![EventPayload::ConversationDeleted {}])
        .await?;
    Ok(())
}

/// The conversation's messages in order.
///
/// # Errors
/// `conversation_not_found`; the store's.
pub async fn messages(
    app: &AppState,
    id: &ConversationId,
) -> Result<Vec<MessageRecord>, ServiceError> {
    let id = id.as_str();
    load_stored(app, id).await?;
    Ok(app.store.list_messages(&app.project, id).await?)
}

/// The conversation's turns.
///
/// # Errors
/// `conversation_not_found`; the store's.
pub async fn turns(app: &AppState, id: &ConversationId) -> Result<Vec<TurnRecord>, ServiceError> {
    let id = id.as_str();
    load_stored(app, id).await?;
    Ok(app.store.list_turns(&app.project, id).await?)
}

/// Context window (tokens) of the deployment the conversation's next chat
/// turn would go to, resolved as that turn would
/// (docs/design.md#turn-model; a route: the smallest of its targets');
/// `None` when unknown or when no model resolves.
pub async fn context_window(app: &AppState, c: &ConversationRecord) -> Option<u64> {
    super::turn_target::resolve(app, c, "chat", None)
        .await
        .ok()
        .and_then(|t| t.destination.context_window(&app.registry))
}

/// [`context_window`] without reading LLM configs, for lists: of the
/// conversation's selection, else its latest chat model, else
/// `defaults.model`.
pub fn context_window_now(app: &AppState, c: &ConversationRecord) -> Option<u64> {
    let model = c.model.as_deref().or(c.latest_model_id.as_deref()).or(app
        .config
        .defaults
        .model
        .as_deref())?;
    app.destination(Some(model))
        .ok()?
        .context_window(&app.registry)
}

/// A model selection after a change.
#[derive(Debug)]
pub struct ModelSelection {
    /// The conversation.
    pub conversation: ConversationRecord,
    /// False when the id did not resolve now (its provider offline, the
    /// model not listed yet): stored anyway, resolved again by each turn.
    pub verified: bool,
}

/// Selects `model` for the conversation; `None` and `""` clear it. A
/// well-formed id that does not resolve now is stored unverified
/// ([`super::models::check_selection`]).
///
/// # Errors
/// `conversation_not_found`; 422 `invalid_model_id` (malformed, with
/// suggestions), `model_not_found` (ambiguous), `provider_disabled`; the
/// store's.
pub async fn select_model(
    app: &AppState,
    id: &ConversationId,
    model: Option<String>,
) -> Result<ModelSelection, ServiceError> {
    let id = id.as_str();
    let conversation = load_stored(app, id).await?;
    let (payload, verified) = match model.filter(|m| !m.is_empty()) {
        None => (
            EventPayload::ModelCleared {
                previous: conversation.model.clone(),
                source: SelectionSource::Api,
            },
            true,
        ),
        Some(model) => {
            let checked = check_selection(app, &model)?;
            (
                EventPayload::ModelSelected {
                    model: checked.model,
                    previous: conversation.model.clone(),
                    source: SelectionSource::Api,
                    verified: (!checked.verified).then_some(false),
                },
                checked.verified,
            )
        }
    };
    Ok(ModelSelection {
        conversation: append_then_record(app, id, vec![payload]).await?,
        verified,
    })
}

/// A conversation's settings and the advisor's model.
#[derive(Debug)]
pub struct Settings {
    /// The conversation.
    pub conversation: ConversationRecord,
    /// The model the advisor tool would consult now.
    pub advisor_model: Option<String>,
    /// Why no advisor model resolves.
    pub advisor_error: Option<String>,
}

/// The settings of conversation `id`.
///
/// # Errors
/// `conversation_not_found`; the store's.
pub async fn settings(app: &AppState, id: &ConversationId) -> Result<Settings, ServiceError> {
    let conversation = load(app, id).await?;
    Ok(settings_of(app, conversation).await)
}

/// [`settings`] of a loaded conversation.
async fn settings_of(app: &AppState, conversation: ConversationRecord) -> Settings {
    let (advisor_model, advisor_error) = match advisor::resolve(app, &conversation).await {
        Ok(a) => (Some(a.destination.model_id()), None),
        Err(reason) => (None, Some(reason)),
    };
    Settings {
        conversation,
        advisor_model,
        advisor_error,
    }
}

/// A settings change: `Some(None)` clears a setting, `None` leaves it.
#[derive(Debug, Default, utoipa::ToSchema)]
#[schema(as = SettingsPatch, rename_all = "camelCase")]
pub struct SettingsChange {
    /// Working directory.
    pub cwd: Option<Option<String>>,
    /// Reasoning effort.
    #[schema(value_type = Option<String>, example = "high")]
    pub reasoning_effort: Option<Option<ReasoningEffort>>,
    /// The advisor tool on or off.
    pub advisor: Option<bool>,
}

impl SettingsChange {
    /// Parses `{cwd?, reasoningEffort?, advisor?}` (`null` clears).
    ///
    /// # Errors
    /// `bad_request` for a non-object; `invalid_field` for a value.
    pub fn parse(body: &Value) -> Result<Self, ServiceError> {
        let Some(object) = body.as_object() else {
            return Err(ServiceError::bad_request(
                "invalid_body",
                "expected a JSON object",
            ));
        };
        let mut change = SettingsChange::default();
        for (key, value) in object {
            if key == "advisor" {
                match value {
                    Value::Bool(on) => change.advisor = Some(*on),
                    _ => {
                        return Err(ServiceError::invalid_field(
                            "advisor",
                            "advisor must be true or false",
                        ))
                    }
                }
                continue;
            }
            let parsed = match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => {
                    return Err(ServiceError::invalid_field(
                        key.as_str(),
                        format!("{key} must be a string or null"),
                    ))
                }
            };
            match key.as_str() {
                "cwd" => change.cwd = Some(parsed),
                "reasoningEffort" => {
                    let effort = match parsed.as_deref() {
                        None => None,
                        Some(text) => Some(ReasoningEffort::parse(text).ok_or_else(|| {
                            ServiceError::invalid_field(
                                "reasoningEffort",
                                format!("reasoningEffort {}", ReasoningEffort::invalid(text)),
                            )
                        })?),
                    };
                    change.reasoning_effort = Some(effort)
                }
                other => {
                    return Err(ServiceError::invalid_field(
                        other,
                        format!(
                        "unknown setting {other:?}; settings are cwd, reasoningEffort and advisor"
                    ),
                    ))
                }
            }
        }
        Ok(change)
    }
}

/// Changes settings; enabling the advisor needs a model for it.
///
/// # Errors
/// `conversation_not_found`; `invalid_field` (advisor); the store's.
pub async fn change_settings(
    app: &AppState,
    id: &ConversationId,
    change: SettingsChange,
) -> Result<Settings, ServiceError> {
    let id = id.as_str();
    let conversation = load_stored(app, id).await?;
    if change.advisor == Some(true) {
        if let Err(reason) = advisor::resolve(app, &conversation).await {
            return Err(ServiceError::invalid_field(
                "advisor",
                format!("cannot enable the advisor: {reason}"),
            ));
        }
    }
    if change.cwd.is_some() || change.reasoning_effort.is_some() || change.advisor.is_some() {
        let payload = EventPayload::SettingsChanged {
            cwd: change.cwd,
            reasoning_effort: change
                .reasoning_effort
                .map(|e| e.map(|e| e.as_str().to_owned())),
            advisor: change.advisor,
        };
        let conversation = append_then_record(app, id, vec![payload]).await?;
        return Ok(settings_of(app, conversation).await);
    }
    Ok(settings_of(app, load_stored(app, id).await?).await)
}

mod history;

pub use history::{model_history, ModelChange, ModelHistoryEntry};
