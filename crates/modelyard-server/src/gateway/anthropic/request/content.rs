//! Content blocks checked and turned into OpenAI messages: user and
//! assistant turns, tool results, the system text and function tools.

use serde_json::{json, Map, Value};

use super::wire::Content;
use super::RequestError;

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

pub(super) fn invalid(at: &str, what: &str) -> RequestError {
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
pub(super) fn user_messages(
    content: &Content,
    at: &str,
    out: &mut Vec<Value>,
) -> Result<(), RequestError> {
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
pub(super) fn assistant_message(content: &Content, at: &str) -> Result<Value, RequestError> {
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
pub(super) fn system_text(system: &Content) -> Result<String, RequestError> {
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
pub(super) fn function_tools(tools: &[Value]) -> Result<Vec<Value>, RequestError> {
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
