//! A conversation's model history: every selection change and every
//! turn's resolved model, oldest first.

use modelyard_core::conversation::{EventPayload, ResolvedFrom, SelectionSource};
use modelyard_core::ids::ConversationId;
use serde::Serialize;

use crate::app::AppState;
use crate::clock::rfc3339;
use crate::service::error::ServiceError;

/// One entry of a conversation's model history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelHistoryEntry {
    /// What changed.
    #[serde(flatten)]
    pub change: ModelChange,
    /// Seq of the event.
    pub seq: i64,
    /// Time of the event (RFC 3339).
    pub at: String,
}

/// A change of a conversation's model: `{kind: "selected" | "cleared" |
/// "turn", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ModelChange {
    /// The selection was set (at creation, by the API, by a turn override).
    #[serde(rename_all = "camelCase")]
    Selected {
        /// The new selection.
        model: String,
        /// The selection before.
        previous: Option<String>,
        /// Who set it.
        source: SelectionSource,
        /// `false` when the id did not resolve when it was selected
        /// (absent when it did).
        #[serde(skip_serializing_if = "Option::is_none")]
        verified: Option<bool>,
    },
    /// The selection was cleared.
    #[serde(rename_all = "camelCase")]
    Cleared {
        /// Always `None` (`null`): no selection.
        model: Option<String>,
        /// The selection before.
        previous: Option<String>,
        /// Who cleared it.
        source: SelectionSource,
    },
    /// A turn started with a resolved model.
    #[serde(rename_all = "camelCase")]
    Turn {
        /// The turn.
        turn_id: String,
        /// Its operation.
        operation: String,
        /// The resolved model id.
        model: String,
        /// Why that model.
        resolved_from: ResolvedFrom,
        /// The LLM config that supplied options, if any.
        llm_id: Option<String>,
    },
}

/// Every selection change and every turn's resolved model, oldest first.
///
/// # Errors
/// `conversation_not_found`; the store's.
pub async fn model_history(
    app: &AppState,
    id: &ConversationId,
) -> Result<Vec<ModelHistoryEntry>, ServiceError> {
    let id = id.as_str();
    super::load_stored(app, id).await?;
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let events = app
            .store
            .events_after(&app.project, id, after, 1000)
            .await?;
        let done = events.len() < 1000;
        for e in &events {
            after = e.seq;
            let change = match &e.payload {
                EventPayload::ConversationCreated {
                    model: Some(model),
                    parent_id,
                    ..
                } => ModelChange::Selected {
                    model: model.clone(),
                    previous: None,
                    source: if parent_id.is_some() {
                        SelectionSource::Parent
                    } else {
                        SelectionSource::Api
                    },
                    verified: None,
                },
                EventPayload::ModelSelected {
                    model,
                    previous,
                    source,
                    verified,
                } => ModelChange::Selected {
                    model: model.clone(),
                    previous: previous.clone(),
                    source: *source,
                    verified: *verified,
                },
                EventPayload::ModelCleared { previous, source } => ModelChange::Cleared {
                    model: None,
                    previous: previous.clone(),
                    source: *source,
                },
                EventPayload::TurnStarted {
                    turn_id,
                    operation,
                    model_id,
                    resolved_from,
                    llm_config_id,
                    ..
                } => ModelChange::Turn {
                    turn_id: turn_id.clone(),
                    operation: operation.clone(),
                    model: model_id.clone(),
                    resolved_from: *resolved_from,
                    llm_id: llm_config_id.clone(),
                },
                _ => continue,
            };
            entries.push(ModelHistoryEntry {
                change,
                seq: e.seq,
                at: rfc3339(e.at_ms),
            });
        }
        if done {
            break;
        }
    }
    Ok(entries)
}
