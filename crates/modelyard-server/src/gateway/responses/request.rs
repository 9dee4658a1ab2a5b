//! A Responses API request (OpenAI API reference, "Create a model
//! response", `POST /v1/responses`; the wire types are the openai-python
//! SDK's `openai/types/responses/response_create_params.py` and
//! `response_input_item_param.py`), read into typed parts.
//!
//! Read: `model`, `input` (a string — one user message — or a list of
//! items), `instructions`, `tools`, `tool_choice`, `temperature`, `top_p`,
//! `max_output_tokens`, `parallel_tool_calls`, `previous_response_id`,
//! `store` (default true), `stream`, `metadata`, `user`. Other fields
//! (`reasoning`, `text`, `include`, `truncation`, …) are ignored.
//!
//! Input items: `message` (the `type` may be left out) with role `user`,
//! `system`, `developer` or `assistant` and a string or a list of
//! `input_text` / `output_text` / `input_image` (a URL) parts;
//! `function_call` (`call_id`, `name`, `arguments`); `function_call_output`
//! (`call_id`, `output` text or text parts); `reasoning` items are dropped.
//! Anything else is a 400 naming the item (`input[2].type`).
//!
//! Tools: `{type: "function", name, description, parameters}` become chat
//! function tools; other tool types (hosted tools such as `web_search`)
//! cannot run here and are left out. `tool_choice` `auto` / `none` /
//! `required` / `{type: "function", name}` map to the chat forms. The
//! `[limits]` caps apply: `max_output_tokens`, `max_messages` (input
//! items), `max_tools`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::LimitsConfig;

/// A request the client got wrong: a 400 `invalid_request_error` whose
/// `param` names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RequestError {
    /// What is wrong.
    pub(crate) message: String,
    /// The top-level field at fault (`input`, `tools`, …).
    pub(crate) param: &'static str,
}

fn invalid(param: &'static str, message: impl Into<String>) -> RequestError {
    RequestError {
        message: message.into(),
        param,
    }
}

/// Who wrote an input message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// The user.
    User,
    /// System text (sent upstream as a `system` message).
    System,
    /// Developer text (sent upstream as a `system` message: few chat
    /// templates know the `developer` role).
    Developer,
    /// An earlier answer.
    Assistant,
}

/// One input item, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A message; `content` is chat-completions content (a string, or
    /// `text` / `image_url` parts for a user message).
    Message {
        /// Its role.
        role: Role,
        /// The content.
        content: Value,
    },
    /// A call the model made earlier.
    FunctionCall {
        /// The call id.
        call_id: String,
        /// The function.
        name: String,
        /// The arguments (JSON text).
        arguments: String,
    },
    /// The client's result of a call.
    FunctionCallOutput {
        /// The call it answers.
        call_id: String,
        /// The result text.
        output: String,
    },
}

/// A read request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResponsesRequest {
    /// `model` (`None`: the conversation's or the server's default).
    pub(crate) model: Option<String>,
    /// The input items.
    pub(crate) items: Vec<Item>,
    /// `instructions`: the system prompt of this response only.
    pub(crate) instructions: Option<String>,
    /// Chat-completions function tools.
    pub(crate) tools: Vec<Value>,
    /// Chat-completions fields: `temperature`, `top_p`, `max_tokens`,
    /// `tool_choice` (only with tools), `parallel_tool_calls`.
    pub(crate) options: Map<String, Value>,
    /// `previous_response_id`.
    pub(crate) previous_response_id: Option<String>,
    /// `store` (default true).
    pub(crate) store: bool,
    /// `stream`.
    pub(crate) stream: bool,
    /// `metadata` (an object).
    pub(crate) metadata: Option<Value>,
    /// `user`: the affinity key of a stateless request, sent upstream.
    pub(crate) user: Option<String>,
    /// What the answer echoes back.
    pub(crate) echo: Echo,
}

/// The request fields a `Response` object repeats, as the client sent
/// them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Echo {
    /// `instructions`.
    pub(crate) instructions: Option<String>,
    /// `tools` (the function tools, in the Responses shape).
    pub(crate) tools: Vec<Value>,
    /// `tool_choice` (`"auto"` when not sent).
    pub(crate) tool_choice: Value,
    /// `temperature`.
    pub(crate) temperature: Option<f64>,
    /// `top_p`.
    pub(crate) top_p: Option<f64>,
    /// `max_output_tokens`.
    pub(crate) max_output_tokens: Option<u64>,
    /// `parallel_tool_calls` (default true).
    pub(crate) parallel_tool_calls: bool,
    /// `metadata` (`{}` when not sent).
    pub(crate) metadata: Value,
    /// `user`.
    pub(crate) user: Option<String>,
    /// `previous_response_id`.
    pub(crate) previous_response_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    user: Option<String>,
}

fn str_field<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, RequestError> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid("input", format!("{at}.{key}: must be a string"))),
        None => Err(invalid("input", format!("{at}.{key}: required"))),
    }
}

/// A message's content as chat content: a string as is; parts as `text` /
/// `image_url` parts (one text part as a plain string). Images only in
/// user messages.
fn content(value: &Value, role: Role, at: &str) -> Result<Value, RequestError> {
    let parts = match value {
        Value::String(s) => return Ok(Value::String(s.clone())),
        Value::Array(parts) => parts,
        _ => {
            return Err(invalid(
                "input",
                format!("{at}.content: must be a string or a list of content parts"),
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let Value::Object(part) = part else {
            return Err(invalid("input", format!("{at}: must be an object")));
        };
        match str_field(part, "type", &at)? {
            "input_text" | "output_text" | "text" => {
                out.push(json!({"type": "text", "text": str_field(part, "text", &at)?}));
            }
            "input_image" if role == Role::User => match part.get("image_url") {
                Some(Value::String(url)) => {
                    let mut image = json!({"url": url});
                    if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                        image["detail"] = detail.clone();
                    }
                    out.push(json!({"type": "image_url", "image_url": image}));
                }
                _ => {
                    return Err(invalid(
                        "input",
                        format!("{at}.image_url: required (file ids are not supported)"),
                    ))
                }
            },
            other => {
                return Err(invalid(
                    "input",
                    format!(
                        "{at}.type: content part type `{other}` is not supported here \
                         (input_text, output_text, input_image in user messages)"
                    ),
                ))
            }
        }
    }
    match out.as_slice() {
        [one] if one["type"] == "text" => Ok(one["text"].clone()),
        // Assistant and system content is text only: the parts joined.
        _ if role != Role::User => Ok(Value::String(
            out.iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
        )),
        _ => Ok(Value::Array(out)),
    }
}

/// A `function_call_output`'s `output`: text, or text parts joined.
fn output_text(value: Option<&Value>, at: &str) -> Result<String, RequestError> {
    match value {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("text").and_then(Value::as_str) {
                    Some(t) => text.push_str(t),
                    None => {
                        return Err(invalid(
                            "input",
                            format!("{at}.output: only text parts are supported"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            "input",
            format!("{at}.output: required (a string or text parts)"),
        )),
    }
}

/// One input item, or `None` for one that is dropped (`reasoning`).
fn item(value: &Value, at: &str) -> Result<Option<Item>, RequestError> {
    let Value::Object(map) = value else {
        return Err(invalid("input", format!("{at}: must be an object")));
    };
    let kind = match map.get("type") {
        None => "message",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(invalid("input", format!("{at}.type: must be a string"))),
    };
    match kind {
        "message" => {
            let role: Role = match map.get("role").cloned().map(serde_json::from_value) {
                Some(Ok(role)) => role,
                _ => {
                    return Err(invalid(
                        "input",
                        format!("{at}.role: must be user, system, developer or assistant"),
                    ))
                }
            };
            let content = content(map.get("content").unwrap_or(&Value::Null), role, at)?;
            Ok(Some(Item::Message { role, content }))
        }
        "function_call" => Ok(Some(Item::FunctionCall {
            call_id: str_field(map, "call_id", at)?.to_owned(),
            name: str_field(map, "name", at)?.to_owned(),
            arguments: str_field(map, "arguments", at)?.to_owned(),
        })),
        "function_call_output" => Ok(Some(Item::FunctionCallOutput {
            call_id: str_field(map, "call_id", at)?.to_owned(),
            output: output_text(map.get("output"), at)?,
        })),
        "reasoning" => Ok(None),
        other => Err(invalid(
            "input",
            format!(
                "{at}.type: input item type `{other}` is not supported here (message, \
                 function_call, function_call_output, reasoning)"
            ),
        )),
    }
}

/// A Responses function tool as a chat-completions tool; `None` for other
/// tool types (hosted tools, which cannot run here).
fn function_tool(tool: &Value, i: usize) -> Result<Option<Value>, RequestError> {
    let Value::Object(map) = tool else {
        return Err(invalid("tools", format!("tools[{i}]: must be an object")));
    };
    if map.get("type").and_then(Value::as_str) != Some("function") {
        return Ok(None);
    }
    let name = match map.get("name") {
        Some(Value::String(name)) => name,
        _ => {
            return Err(invalid(
                "tools",
                format!("tools[{i}].name: required (a string)"),
            ))
        }
    };
    let mut function = json!({"name": name});
    for key in ["description", "parameters", "strict"] {
        if let Some(value) = map.get(key).filter(|v| !v.is_null()) {
            function[key] = value.clone();
        }
    }
    Ok(Some(json!({"type": "function", "function": function})))
}

/// `tool_choice` in the chat form, or `None` to leave it out.
fn tool_choice(choice: &Value) -> Result<Option<Value>, RequestError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(Some(choice.clone()))
        }
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("function") => {
            match map.get("name").and_then(Value::as_str) {
                Some(name) => Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                )),
                None => Err(invalid("tool_choice", "tool_choice.name: required")),
            }
        }
        Value::Null => Ok(None),
        _ => Err(invalid(
            "tool_choice",
            "tool_choice: must be auto, none, required or {\"type\": \"function\", \"name\": …}",
        )),
    }
}

/// Reads and checks a request body.
///
/// # Errors
/// [`RequestError`] naming the field at fault.
pub(crate) fn parse(body: &[u8], limits: &LimitsConfig) -> Result<ResponsesRequest, RequestError> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("the body is not a valid request: {e}")))?;
    let items = match body.input {
        None | Some(Value::Null) => return Err(invalid("input", "input: required")),
        Some(Value::String(text)) => vec![Item::Message {
            role: Role::User,
            content: Value::String(text),
        }],
        Some(Value::Array(values)) => {
            if values.len() > limits.max_messages as usize {
                return Err(invalid(
                    "input",
                    format!(
                        "input has {} items; this server allows at most {} (limits.max_messages)",
                        values.len(),
                        limits.max_messages
                    ),
                ));
            }
            let mut items = Vec::with_capacity(values.len());
            for (i, value) in values.iter().enumerate() {
                items.extend(item(value, &format!("input[{i}]"))?);
            }
            items
        }
        Some(_) => {
            return Err(invalid(
                "input",
                "input: must be a string or a list of items",
            ))
        }
    };
    if items.is_empty() {
        return Err(invalid("input", "input: at least one item is required"));
    }
    let raw_tools = body.tools.unwrap_or_default();
    let mut tools = Vec::new();
    let mut echoed = Vec::new();
    for (i, tool) in raw_tools.iter().enumerate() {
        if let Some(converted) = function_tool(tool, i)? {
            tools.push(converted);
            echoed.push(tool.clone());
        }
    }
    if tools.len() > limits.max_tools as usize {
        return Err(invalid(
            "tools",
            format!(
                "tools has {} entries; this server allows at most {} (limits.max_tools)",
                tools.len(),
                limits.max_tools
            ),
        ));
    }
    if let Some(max) = body.max_output_tokens {
        if max > u64::from(limits.max_output_tokens) {
            return Err(invalid(
                "max_output_tokens",
                format!(
                    "max_output_tokens is {max}; this server allows at most {} \
                     (limits.max_output_tokens)",
                    limits.max_output_tokens
                ),
            ));
        }
    }
    let mut options = Map::new();
    if let Some(t) = body.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = body.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(max) = body.max_output_tokens {
        options.insert("max_tokens".into(), json!(max));
    }
    let choice = match &body.tool_choice {
        Some(choice) => tool_choice(choice)?,
        None => None,
    };
    if !tools.is_empty() {
        if let Some(choice) = choice {
            options.insert("tool_choice".into(), choice);
        }
        if let Some(parallel) = body.parallel_tool_calls {
            options.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    let metadata = body.metadata.map(Value::Object);
    let echo = Echo {
        instructions: body.instructions.clone(),
        tools: echoed,
        tool_choice: body.tool_choice.unwrap_or_else(|| json!("auto")),
        temperature: body.temperature,
        top_p: body.top_p,
        max_output_tokens: body.max_output_tokens,
        parallel_tool_calls: body.parallel_tool_calls.unwrap_or(true),
        metadata: metadata.clone().unwrap_or_else(|| json!({})),
        user: body.user.clone(),
        previous_response_id: body.previous_response_id.clone(),
    };
    Ok(ResponsesRequest {
        model: body.model.filter(|m| !m.is_empty()),
        items,
        instructions: body.instructions.filter(|i| !i.is_empty()),
        tools,
        options,
        previous_response_id: body.previous_response_id,
        store: body.store.unwrap_or(true),
        stream: body.stream.unwrap_or(false),
        metadata,
        user: body.user,
        echo,
    })
}

/// Input items as chat messages and as the stored transcript.
mod items;
pub(crate) use items::{chat_messages, stored_input, StoredInput};

#[cfg(test)]
mod tests;
