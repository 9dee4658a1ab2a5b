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

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::LimitsConfig;

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

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    messages: Option<Vec<InputMessage>>,
    #[serde(default)]
    system: Option<Content>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: Role,
    content: Content,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

/// A string, or an array of content blocks (each block is checked by
/// [`block`], which names the block at fault).
#[derive(Debug)]
enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut blocks = Vec::new();
                while let Some(block) = seq.next_element::<Value>()? {
                    blocks.push(block);
                }
                Ok(Content::Blocks(blocks))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// One content block, checked.
#[derive(Debug, PartialEq)]
enum Block<'a> {
    Text(&'a str),
    /// An image as the URL OpenAI's `image_url` takes.
    Image(String),
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        text: String,
        images: Vec<String>,
    },
    /// Dropped (`thinking`, `redacted_thinking`).
    Skipped,
}

fn invalid(at: &str, what: &str) -> RequestError {
    RequestError(format!("{at}: {what}"))
}

fn str_field<'a>(
    block: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, RequestError> {
    match block.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(&format!("{at}.{key}"), "must be a string")),
        None => Err(invalid(&format!("{at}.{key}"), "Field required")),
    }
}

/// An `image` block's `source` as a URL: `base64` → `data:<media_type>;base64,<data>`,
/// `url` → the URL.
fn image_url(block: &Map<String, Value>, at: &str) -> Result<String, RequestError> {
    let at = format!("{at}.source");
    let Some(Value::Object(source)) = block.get("source") else {
        return Err(invalid(&at, "Field required (an object)"));
    };
    match str_field(source, "type", &at)? {
        "base64" => {
            let media_type = str_field(source, "media_type", &at)?;
            let data = str_field(source, "data", &at)?;
            Ok(format!("data:{media_type};base64,{data}"))
        }
        "url" => Ok(str_field(source, "url", &at)?.to_owned()),
        other => Err(invalid(
            &format!("{at}.type"),
            &format!("image source type `{other}` is not supported (base64, url)"),
        )),
    }
}

/// Reads block `value` at `at` (`messages.0.content.1`).
fn block<'a>(value: &'a Value, at: &str) -> Result<Block<'a>, RequestError> {
    let Value::Object(map) = value else {
        return Err(invalid(at, "a content block must be an object"));
    };
    match str_field(map, "type", at)? {
        "text" => Ok(Block::Text(str_field(map, "text", at)?)),
        "image" => Ok(Block::Image(image_url(map, at)?)),
        "document" => {
            let source = map.get("source").and_then(Value::as_object);
            match source.and_then(|s| Some((s.get("type")?.as_str()?, s.get("data")?.as_str()?))) {
                Some(("text", data)) => Ok(Block::Text(data)),
                _ => Err(invalid(
                    at,
                    "only `document` blocks with a `text` source are supported",
                )),
            }
        }
        "tool_use" => {
            let input = map.get("input").unwrap_or(&Value::Null);
            if !(input.is_object() || input.is_null()) {
                return Err(invalid(&format!("{at}.input"), "must be an object"));
            }
            Ok(Block::ToolUse {
                id: str_field(map, "id", at)?,
                name: str_field(map, "name", at)?,
                input,
            })
        }
        "tool_result" => {
            let tool_use_id = str_field(map, "tool_use_id", at)?;
            let (mut text, mut images) = (String::new(), Vec::new());
            match map.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(inner)) => {
                    for (i, value) in inner.iter().enumerate() {
                        match block(value, &format!("{at}.content.{i}"))? {
                            Block::Text(t) => {
                                if !text.is_empty() {
                                    text.push('\n');
                                }
                                text.push_str(t);
                            }
                            Block::Image(url) => images.push(url),
                            Block::Skipped => {}
                            _ => {
                                return Err(invalid(
                                    &format!("{at}.content.{i}"),
                                    "a tool result holds only text and image blocks",
                                ))
                            }
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        &format!("{at}.content"),
                        "must be a string or an array of content blocks",
                    ))
                }
            }
            Ok(Block::ToolResult {
                tool_use_id,
                text,
                images,
            })
        }
        "thinking" | "redacted_thinking" => Ok(Block::Skipped),
        other => Err(invalid(
            &format!("{at}.type"),
            &format!(
                "content block type `{other}` is not supported (text, image, document with a \
                 text source, tool_use, tool_result, thinking)"
            ),
        )),
    }
}

/// The user parts collected so far as one `user` message (a plain string
/// when they are one text), or nothing.
fn flush_user(parts: &mut Vec<Value>, out: &mut Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    let content = match parts.as_slice() {
        [Value::Object(part)] if part.get("type") == Some(&json!("text")) => {
            part.get("text").cloned().unwrap_or_default()
        }
        _ => Value::Array(std::mem::take(parts)),
    };
    parts.clear();
    out.push(json!({"role": "user", "content": content}));
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn image_part(url: String) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// One user message's blocks → `user` and `tool` messages, in order.
fn user_messages(content: &Content, at: &str, out: &mut Vec<Value>) -> Result<(), RequestError> {
    let blocks = match content {
        Content::Text(text) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (i, value) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{i}");
        match block(value, &at)? {
            Block::Text(text) => parts.push(text_part(text)),
            Block::Image(url) => parts.push(image_part(url)),
            Block::ToolResult {
                tool_use_id,
                text,
                images,
            } => {
                flush_user(&mut parts, out);
                out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}));
                parts.extend(images.into_iter().map(image_part));
            }
            Block::ToolUse { .. } => {
                return Err(invalid(
                    &at,
                    "`tool_use` blocks belong in assistant messages",
                ))
            }
            Block::Skipped => {}
        }
    }
    flush_user(&mut parts, out);
    Ok(())
}

/// One assistant message's blocks → one `assistant` message.
fn assistant_message(content: &Content, at: &str) -> Result<Value, RequestError> {
    let blocks = match content {
        Content::Text(text) => return Ok(json!({"role": "assistant", "content": text})),
        Content::Blocks(blocks) => blocks,
    };
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for (i, value) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{i}");
        match block(value, &at)? {
            Block::Text(t) => match &mut text {
                Some(text) => {
                    text.push('\n');
                    text.push_str(t);
                }
                None => text = Some(t.to_owned()),
            },
            Block::ToolUse { id, name, input } => {
                let arguments = if input.is_null() {
                    "{}".to_owned()
                } else {
                    input.to_string()
                };
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            Block::Skipped => {}
            Block::Image(_) | Block::ToolResult { .. } => {
                return Err(invalid(
                    &at,
                    "assistant messages hold only text, tool_use and thinking blocks",
                ))
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// `system` as one string (text blocks joined by a blank line).
fn system_text(system: &Content) -> Result<String, RequestError> {
    match system {
        Content::Text(text) => Ok(text.clone()),
        Content::Blocks(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, value) in blocks.iter().enumerate() {
                match block(value, &format!("system.{i}"))? {
                    Block::Text(text) => texts.push(text),
                    _ => return Err(invalid(&format!("system.{i}"), "must be a text block")),
                }
            }
            Ok(texts.join("\n\n"))
        }
    }
}

/// `tools[]` → OpenAI function tools (server tools left out).
fn function_tools(tools: &[Value]) -> Result<Vec<Value>, RequestError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools.{i}");
        let Value::Object(map) = tool else {
            return Err(invalid(&at, "a tool must be an object"));
        };
        match map.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            // A server tool (web search, code execution, ...): nothing here
            // can run it.
            Some(_) => continue,
        }
        let name = str_field(map, "name", &at)?;
        let schema = match map.get("input_schema") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(_) => return Err(invalid(&format!("{at}.input_schema"), "must be an object")),
            None => return Err(invalid(&format!("{at}.input_schema"), "Field required")),
        };
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        if let Some(description) = map.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(description));
        }
        function.insert("parameters".into(), schema);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
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
