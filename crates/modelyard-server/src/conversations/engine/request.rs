//! The upstream request of a turn step: the config's options and system
//! prompt, the conversation's messages as OpenAI chat messages, and the
//! compaction summary in place of the messages it covers.

use modelyard_core::conversation::MessageRole;
use modelyard_core::conversation::{MessageRecord, Part};
use modelyard_core::llm_config::ReasoningEffort;
use modelyard_store::LlmConfigRow;
use serde_json::{json, Map, Value};

/// Settings one run takes from the request that started (or resumed) it —
/// the Responses front's `instructions`, `temperature`, `top_p`,
/// `max_output_tokens`, `tool_choice` — and that are not persisted: the
/// next run does not inherit them (OpenAI API reference, "Create a model
/// response": `instructions` are not carried over with
/// `previous_response_id`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOverrides {
    /// The run's system prompt, in place of the LLM config's.
    pub instructions: Option<String>,
    /// OpenAI chat-completions fields (snake_case: `temperature`,
    /// `max_tokens`, `tool_choice`, …) over the config's provider options.
    pub options: Map<String, Value>,
    /// The `x-request-id` of the request that started (or resumed) the
    /// run, recorded on the run's LLM session so a complaint about a turn
    /// leads to its calls.
    pub request_id: Option<String>,
}

/// The upstream request of a turn step: the config's provider options
/// (snake_case OpenAI fields, `extra` merged at the top level), the
/// conversation's reasoning effort setting over them, the run's
/// [`RunOverrides`] options over both, the run's `instructions` or else the
/// config's system prompt as the first message, then the conversation's messages
/// ([`openai_messages`]) — after a compaction, one system message
/// `Summary of the earlier conversation: …` in place of the messages it
/// covers ([`compacted`]); `tools` when there are any; routing's own fields
/// (`model`, `messages`, `stream`, `stream_options`) last, so nothing
/// overrides them.
pub fn request_body(
    messages: &[MessageRecord],
    config: Option<&LlmConfigRow>,
    reasoning_effort: Option<ReasoningEffort>,
    summary: Option<(i64, &str)>,
    tools: &[Value],
    overrides: &RunOverrides,
) -> Value {
    let mut body = Map::new();
    if let Some(config) = config {
        config.fields.provider_options.apply_to(&mut body);
    }
    if let Some(effort) = reasoning_effort {
        body.insert("reasoning_effort".into(), json!(effort.as_str()));
    }
    for (key, value) in &overrides.options {
        body.insert(key.clone(), value.clone());
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools.to_vec()));
    }
    let system = overrides
        .instructions
        .as_deref()
        .or_else(|| config.and_then(|c| c.fields.system_prompt.as_deref()))
        .map(|prompt| json!({"role": "system", "content": prompt}));
    let (summary_message, rest) = compacted(messages, summary);
    let messages: Vec<Value> = system
        .into_iter()
        .chain(summary_message)
        .chain(openai_messages(rest))
        .collect();
    // `model` is each attempt's deployment's, set by `LlmCall::new`.
    crate::service::llm_call::compose("", body, messages, true)
}

/// Text that stands in for the result of a tool call that never got one
/// (the turn failed, was cancelled or interrupted first).
pub const NO_TOOL_RESULT: &str = "(no result: the turn ended before this tool answered)";

/// The stored messages as OpenAI chat messages: user content as is;
/// assistant text with `tool_calls`; tool results as `role: tool` with
/// `tool_call_id`. Reasoning is not sent back. A tool call without a result
/// gets a [`NO_TOOL_RESULT`] one, and a tool result without its call is
/// left out, so the history always satisfies the tool-call protocol.
pub fn openai_messages(messages: &[MessageRecord]) -> Vec<Value> {
    let answered: std::collections::HashSet<&str> = messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    let mut called: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role {
            MessageRole::Assistant => {
                let text: String = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<(&str, &str, &str)> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                        } => Some((id.as_str(), name.as_str(), arguments.as_str())),
                        _ => None,
                    })
                    .collect();
                if calls.is_empty() {
                    out.push(json!({"role": "assistant", "content": text}));
                    continue;
                }
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .map(|(id, name, arguments)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": arguments}})
                    })
                    .collect();
                out.push(json!({
                    "role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { Value::String(text) },
                    "tool_calls": tool_calls,
                }));
                for (id, _, _) in calls {
                    called.insert(id);
                    if !answered.contains(id) {
                        out.push(
                            json!({"role": "tool", "tool_call_id": id, "content": NO_TOOL_RESULT}),
                        );
                    }
                }
            }
            MessageRole::Tool => {
                let id = m.parts.iter().find_map(|p| match p {
                    Part::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
                    _ => None,
                });
                if let Some(id) = id.filter(|id| called.contains(id)) {
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": m.content}));
                }
            }
            MessageRole::User => out.push(json!({"role": "user", "content": m.content})),
        }
    }
    out
}

/// The summary system message (when the conversation was compacted through
/// seq `through`) and the messages after it (tool results whose call the
/// summary covers are dropped with it).
pub fn compacted<'a>(
    messages: &'a [MessageRecord],
    summary: Option<(i64, &str)>,
) -> (Option<Value>, &'a [MessageRecord]) {
    match summary {
        None => (None, messages),
        Some((through, text)) => {
            let mut start = messages.partition_point(|m| m.seq <= through);
            while messages
                .get(start)
                .is_some_and(|m| m.role == MessageRole::Tool)
            {
                start += 1;
            }
            (
                Some(json!({
                    "role": "system",
                    "content": format!("Summary of the earlier conversation: {text}"),
                })),
                &messages[start..],
            )
        }
    }
}
