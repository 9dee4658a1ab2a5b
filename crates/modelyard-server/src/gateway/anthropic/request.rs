//! An Anthropic Messages request → an OpenAI chat-completions request.
//!
//! Input: the body of `POST /v1/messages` (Anthropic API reference,
//! "Messages": `model`, `max_tokens` (required), `messages`, `system`,
//! `stop_sequences`, `temperature`, `top_p`, `top_k`, `tools`,
//! `tool_choice`, `metadata`, `stream`). Output: the parts of an OpenAI
//! request (OpenAI API reference, "Create chat completion") that
//! [`crate::service::llm_call::compose`] puts together with the upstream
//! model name.
//!
//! Messages, in order:
//! - `system` (a string or text blocks, joined by a blank line) → the first
//!   `system` message;
//! - a user message's `text` / `image` (base64 → a `data:` URL, or a URL)
//!   blocks → one `user` message (a plain string when it is one text);
//!   each `tool_result` block → a `tool` message with its `tool_use_id` as
//!   `tool_call_id` and its text, in the block's position (text before it
//!   is flushed as a user message first; images inside a result follow in
//!   the next user message, since OpenAI tool messages hold only text);
//! - an assistant message's `text` blocks (joined by a newline) and
//!   `tool_use` blocks → one `assistant` message with `content` and
//!   `tool_calls` (`input` serialized as the `arguments` string);
//! - `thinking` / `redacted_thinking` blocks are dropped (chat completions
//!   has no field for them); a `document` block with a `text` source is
//!   text; any other block type is a 400.
//!
//! Fields: `max_tokens` → `max_tokens`, `stop_sequences` → `stop`,
//! `temperature` / `top_p` as they are, `top_k` as an extra field (llama.cpp
//! and vLLM read it), `metadata.user_id` → `user`, `tools[]` (`name`,
//! `description`, `input_schema`) → function tools, `tool_choice` `auto` /
//! `any` / `tool` / `none` → `"auto"` / `"required"` / the named function /
//! `"none"`, and `disable_parallel_tool_use` → `parallel_tool_calls:
//! false`. Server tools (a `type` other than `custom`, e.g.
//! `web_search_20250305`) cannot run here and are left out. Other fields
//! (`thinking`, `service_tier`, …) are ignored. The `[limits]` caps apply:
//! `max_output_tokens`, `max_messages`, `max_tools`.
//!
//! Files: `wire.rs` (the request as it is read), `content.rs` (content
//! blocks checked and turned into OpenAI messages, system text and tools).

use serde_json::{json, Map, Value};

use crate::config::LimitsConfig;

mod content;
mod wire;

use content::{assistant_message, function_tools, invalid, system_text, user_messages};
use wire::{MessagesRequest, Role, ToolChoice};

/// A request the client got wrong (a 400 `invalid_request_error`); the
/// message names the field (`messages.0.content.1.id`, Anthropic's own
/// dotted style).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RequestError(pub(crate) String);

/// What the front sends upstream: everything but the upstream model name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamRequest {
    /// `model` as the client sent it (`None`: the server's default).
    pub(crate) model: Option<String>,
    /// Whether to stream.
    pub(crate) stream: bool,
    /// Request fields other than `model`, `messages`, `stream`.
    pub(crate) options: Map<String, Value>,
    /// OpenAI chat messages.
    pub(crate) messages: Vec<Value>,
}

/// A translated request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Translated {
    /// The OpenAI request.
    pub(crate) upstream: UpstreamRequest,
    /// The client's `stop_sequences` (to tell `stop_sequence` from
    /// `end_turn` when the upstream says which one matched).
    pub(crate) stop_sequences: Vec<String>,
}

/// Translates a `POST /v1/messages` body.
///
/// # Errors
/// [`RequestError`] naming the field: not JSON, a wrong type, a missing
/// `max_tokens` or `messages`, a block that cannot be translated, a cap of
/// `limits` exceeded.
pub(crate) fn translate(body: &[u8], limits: &LimitsConfig) -> Result<Translated, RequestError> {
    // (serde would read a struct from an array too.)
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(RequestError(
            "the body is not a valid Messages request: it must be a JSON object".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let request: MessagesRequest = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            RequestError(format!("the body is not a valid Messages request: {inner}"))
        } else {
            RequestError(format!("{path}: {inner}"))
        }
    })?;
    let max_tokens = request
        .max_tokens
        .ok_or_else(|| invalid("max_tokens", "Field required"))?;
    if max_tokens == 0 {
        return Err(invalid("max_tokens", "must be at least 1"));
    }
    if max_tokens > u64::from(limits.max_output_tokens) {
        return Err(invalid(
            "max_tokens",
            &format!(
                "is {max_tokens}; this server allows at most {} output tokens \
                 (limits.max_output_tokens)",
                limits.max_output_tokens
            ),
        ));
    }
    let input = request
        .messages
        .ok_or_else(|| invalid("messages", "Field required"))?;
    if input.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    if input.len() > limits.max_messages as usize {
        return Err(invalid(
            "messages",
            &format!(
                "has {} entries; this server allows at most {} (limits.max_messages)",
                input.len(),
                limits.max_messages
            ),
        ));
    }

    let mut messages = Vec::with_capacity(input.len() + 1);
    if let Some(system) = &request.system {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for (i, message) in input.iter().enumerate() {
        let at = format!("messages.{i}");
        match message.role {
            Role::User => user_messages(&message.content, &at, &mut messages)?,
            Role::Assistant => messages.push(assistant_message(&message.content, &at)?),
        }
    }

    let mut options = Map::new();
    options.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = request.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(k) = request.top_k {
        options.insert("top_k".into(), json!(k));
    }
    let stop_sequences = request.stop_sequences.unwrap_or_default();
    if !stop_sequences.is_empty() {
        options.insert("stop".into(), json!(stop_sequences));
    }
    let tools = function_tools(request.tools.as_deref().unwrap_or_default())?;
    if tools.len() > limits.max_tools as usize {
        return Err(invalid(
            "tools",
            &format!(
                "has {} entries; this server allows at most {} (limits.max_tools)",
                tools.len(),
                limits.max_tools
            ),
        ));
    }
    if !tools.is_empty() {
        options.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = request.tool_choice {
            let (choice, no_parallel) = match choice {
                ToolChoice::Auto {
                    disable_parallel_tool_use,
                } => (json!("auto"), disable_parallel_tool_use),
                ToolChoice::Any {
                    disable_parallel_tool_use,
                } => (json!("required"), disable_parallel_tool_use),
                ToolChoice::Tool {
                    name,
                    disable_parallel_tool_use,
                } => (
                    json!({"type": "function", "function": {"name": name}}),
                    disable_parallel_tool_use,
                ),
                ToolChoice::None => (json!("none"), None),
            };
            options.insert("tool_choice".into(), choice);
            if no_parallel == Some(true) {
                options.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    if let Some(user) = request.metadata.and_then(|m| m.user_id) {
        options.insert("user".into(), json!(user));
    }
    Ok(Translated {
        upstream: UpstreamRequest {
            model: request.model.filter(|m| !m.is_empty()),
            stream: request.stream.unwrap_or(false),
            options,
            messages,
        },
        stop_sequences,
    })
}

#[cfg(test)]
mod tests;
