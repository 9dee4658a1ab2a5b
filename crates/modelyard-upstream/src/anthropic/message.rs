//! A non-streamed message: `model` rewritten for the client, and what the
//! call log keeps of it.
//!
//! Shape (Anthropic API reference, "Messages"): `{id, type: "message",
//! role, model, content: [blocks], stop_reason, stop_sequence, usage}`;
//! blocks `text` (`text`), `thinking` (`thinking`), `tool_use` (`id`,
//! `name`, `input`), others ignored. A success status whose body is
//! `{"type": "error", "error": {...}}` is an error, not a message.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::WireUsage;
use crate::openai::request::{span_of, splice};
use crate::openai::{AnswerSummary, CompletionError, RewrittenCompletion};

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(default)]
    content: Option<Vec<Value>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Rewrites the `model` of a non-streamed Messages answer to
/// `client_model` (by byte range; every other byte is kept) and summarizes
/// it: text blocks joined, thinking blocks as reasoning, `tool_use` blocks
/// as OpenAI-shaped `tool_calls` (`input` serialized as `arguments`), the
/// `stop_reason` as the finish reason, the usage (see the
/// [module docs](super)).
///
/// # Errors
/// [`CompletionError::NotJson`] for a body that is not a JSON object,
/// [`CompletionError::InBand`] (the `error` member's JSON) for an error
/// object.
pub fn rewrite_message(
    body: &[u8],
    client_model: &str,
) -> Result<RewrittenCompletion, CompletionError> {
    let text = std::str::from_utf8(body).map_err(|e| CompletionError::NotJson(e.to_string()))?;
    let raw: RawMessage<'_> =
        serde_json::from_str(text).map_err(|e| CompletionError::NotJson(e.to_string()))?;
    if raw.kind.as_deref() == Some("error") {
        let error = raw.error.map_or("{}", |e| e.get());
        return Err(CompletionError::InBand(error.to_owned()));
    }
    let body = match raw.model {
        Some(model) => {
            let model_json = crate::openai::model_json(client_model);
            splice(text.as_bytes(), vec![(span_of(text, model), model_json)])
        }
        None => text.as_bytes().to_vec(),
    };
    let mut out = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in raw.content.iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => out.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(tool_call(
                block.get("id").and_then(Value::as_str).unwrap_or(""),
                block.get("name").and_then(Value::as_str).unwrap_or(""),
                &block
                    .get("input")
                    .map_or_else(String::new, Value::to_string),
            )),
            _ => {}
        }
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(RewrittenCompletion {
        body,
        summary: AnswerSummary {
            text: non_empty(out),
            reasoning: non_empty(reasoning),
            tool_calls: (!tool_calls.is_empty()).then_some(Value::Array(tool_calls)),
            finish_reason: raw.stop_reason,
            usage: raw.usage.unwrap_or_default().usage(),
        },
    })
}

/// A tool call in the call log's (OpenAI) shape.
pub(super) fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    serde_json::json!({
        "id": id, "type": "function",
        "function": {"name": name, "arguments": arguments}
    })
}
