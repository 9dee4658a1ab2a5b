//! Input items of a Responses request turned into chat-completions
//! messages ([`chat_messages`]) and into what a conversation stores
//! ([`stored_input`]).

use serde_json::{json, Value};

use super::{invalid, Item, RequestError, Role};

/// Input items as chat-completions messages, in order: messages by role
/// (`developer` as `system`), consecutive `function_call`s as one assistant
/// message's `tool_calls` (joined to the assistant message right before
/// them), each `function_call_output` as a `tool` message.
pub(crate) fn chat_messages(items: &[Item]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Message { role, content } => {
                let role = match role {
                    Role::User => "user",
                    Role::System | Role::Developer => "system",
                    Role::Assistant => "assistant",
                };
                out.push(json!({"role": role, "content": content}));
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                let call = json!({"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}});
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                            Some(calls) => calls.push(call),
                            None => last["tool_calls"] = json!([call]),
                        }
                    }
                    _ => out.push(json!({"role": "assistant", "content": null,
                                         "tool_calls": [call]})),
                }
            }
            Item::FunctionCallOutput { call_id, output } => {
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
        }
    }
    out
}

/// What a stored response runs, from its input items.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoredInput {
    /// A new turn.
    Start {
        /// `system` / `developer` messages' text: joined with the
        /// `instructions` into the run's system prompt (not persisted).
        system: Vec<String>,
        /// The items before the last, as chat messages to import.
        history: Vec<Value>,
        /// The last item: the user's message.
        content: Value,
    },
    /// `function_call_output` items: `(call_id, output)`.
    Resume(Vec<(String, String)>),
}

/// Splits the input of a stored response: only `function_call_output`
/// items (they answer the previous response's calls), or items that end
/// with a user message.
///
/// # Errors
/// A 400 about `input` otherwise.
pub(crate) fn stored_input(items: &[Item]) -> Result<StoredInput, RequestError> {
    if items
        .iter()
        .any(|i| matches!(i, Item::FunctionCallOutput { .. }))
    {
        let mut outputs = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::FunctionCallOutput { call_id, output } => {
                    outputs.push((call_id.clone(), output.clone()));
                }
                _ => {
                    return Err(invalid(
                        "input",
                        "input: with function_call_output items, a stored response's input \
                         holds only function_call_output items (one per call of the previous \
                         response)",
                    ))
                }
            }
        }
        return Ok(StoredInput::Resume(outputs));
    }
    let Some((
        Item::Message {
            role: Role::User,
            content,
        },
        earlier,
    )) = items.split_last()
    else {
        return Err(invalid(
            "input",
            "input: the last item must be a user message (or send function_call_output items)",
        ));
    };
    let mut system = Vec::new();
    let mut rest = Vec::with_capacity(earlier.len());
    for item in earlier {
        match item {
            Item::Message {
                role: Role::System | Role::Developer,
                content,
            } => system.push(content.as_str().unwrap_or_default().to_owned()),
            other => rest.push(other.clone()),
        }
    }
    Ok(StoredInput::Start {
        system,
        history: chat_messages(&rest),
        content: content.clone(),
    })
}
