//! Importing messages into a conversation between turns (history from
//! another app, or an example exchange that shows a small model how to
//! call a tool): OpenAI chat messages become one `messages.imported` event.
//!
//! `user` (`content` a string or content parts), `assistant` (`content`
//! text or null, optional `tool_calls` of `type: function`), `tool`
//! (`tool_call_id` answering an earlier call, `content` text). System and
//! developer messages are refused: a conversation's system prompt lives in
//! its LLM config. At most [`MAX_IMPORTED`] messages per request.

use modelyard_core::conversation::MessageRole;
use modelyard_core::ids::ConversationId;
use std::collections::HashMap;

use modelyard_core::conversation::{EventPayload, ImportedMessage, Part};
use serde_json::Value;

use super::conversations::load_stored;
use super::error::{new_id, ServiceError};
use crate::app::AppState;

/// Most messages one import may carry.
pub const MAX_IMPORTED: usize = 1_000;

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    /// Messages imported.
    pub imported: usize,
    /// Seq of the `messages.imported` event.
    pub last_seq: Option<i64>,
}

/// Imports `messages` (OpenAI chat messages) into conversation `id`.
///
/// # Errors
/// 422 naming the first bad message field; `turn_running` (409) while a
/// turn runs; `conversation_not_found`; the store's.
pub async fn import(
    app: &AppState,
    id: &ConversationId,
    messages: &[Value],
) -> Result<Imported, ServiceError> {
    let id = id.as_str();
    if messages.is_empty() || messages.len() > MAX_IMPORTED {
        return Err(ServiceError::invalid_field(
            "messages",
            format!(
                "messages must hold 1 to {MAX_IMPORTED} messages, got {}",
                messages.len()
            ),
        ));
    }
    let conversation = load_stored(app, id).await?;
    if let Some(running) = &conversation.running_turn_id {
        return Err(ServiceError::conflict(
            "turn_running",
            format!("turn {running} is still running; import messages between turns"),
        ));
    }
    // Calls earlier in the conversation that have no result yet.
    let existing = app.store.list_messages(&app.project, id).await?;
    let mut open_calls: HashMap<String, String> = HashMap::new();
    for part in existing.iter().flat_map(|m| &m.parts) {
        match part {
            Part::ToolCall { id, name, .. } => {
                open_calls.insert(id.clone(), name.clone());
            }
            Part::ToolResult { tool_call_id, .. } => {
                open_calls.remove(tool_call_id);
            }
            _ => {}
        }
    }
    let import_id = new_id();
    let mut converted = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let (role, content, parts) = convert(i, m, &mut open_calls)?;
        converted.push(ImportedMessage {
            // Ordered ids: messages of one event are listed by id.
            message_id: format!("{import_id}-{i:04}"),
            role,
            content,
            parts,
        });
    }
    let imported = converted.len();
    let payload = EventPayload::MessagesImported {
        import_id,
        messages: converted,
    };
    let events = app.append_and_publish(id, vec![payload]).await?;
    Ok(Imported {
        imported,
        last_seq: events.last().map(|e| e.seq),
    })
}

/// One OpenAI message → (role, content, parts).
fn convert(
    i: usize,
    m: &Value,
    open_calls: &mut HashMap<String, String>,
) -> Result<(MessageRole, Value, Vec<Part>), ServiceError> {
    let bad = |field: &str, why: &str| {
        ServiceError::invalid_field(
            format!("messages[{i}].{field}"),
            format!("messages[{i}].{field} {why}"),
        )
    };
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    match role {
        "user" => {
            let content = m.get("content").cloned().unwrap_or(Value::Null);
            let ok = match &content {
                Value::String(s) => !s.is_empty(),
                Value::Array(parts) => !parts.is_empty(),
                _ => false,
            };
            if !ok {
                return Err(bad(
                    "content",
                    "must be a non-empty string or array of content parts",
                ));
            }
            Ok((MessageRole::User, content, Vec::new()))
        }
        "assistant" => {
            let text = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(bad("content", "must be a string or null")),
            };
            let mut parts = Vec::new();
            if !text.is_empty() {
                parts.push(Part::Text { text: text.clone() });
            }
            let calls = match m.get("tool_calls") {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(calls)) => calls.as_slice(),
                Some(_) => return Err(bad("tool_calls", "must be an array")),
            };
            for (k, call) in calls.iter().enumerate() {
                let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let arguments = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}");
                if id.is_empty() || name.is_empty() {
                    return Err(bad(
                        &format!("tool_calls[{k}]"),
                        "needs an id and a function.name",
                    ));
                }
                open_calls.insert(id.to_owned(), name.to_owned());
                parts.push(Part::ToolCall {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    arguments: arguments.to_owned(),
                });
            }
            if parts.is_empty() {
                return Err(bad("content", "is empty and there are no tool_calls"));
            }
            Ok((MessageRole::Assistant, Value::String(text), parts))
        }
        "tool" => {
            let call_id = m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(name) = open_calls.remove(call_id) else {
                return Err(bad(
                    "tool_call_id",
                    &format!("{call_id:?} answers no earlier, unanswered tool call"),
                ));
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect(),
                _ => return Err(bad("content", "must be a string or text parts")),
            };
            Ok((
                MessageRole::Tool,
                Value::String(content),
                vec![Part::ToolResult {
                    tool_call_id: call_id.to_owned(),
                    name,
                    is_error: false,
                }],
            ))
        }
        "system" | "developer" => Err(bad(
            "role",
            "system: a conversation's system prompt belongs in its LLM config (systemPrompt)",
        )),
        other => Err(bad(
            "role",
            &format!("must be user, assistant or tool, got {other:?}"),
        )),
    }
}
