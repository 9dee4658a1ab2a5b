//! An OpenAI chat completion → an Anthropic message (Anthropic API
//! reference, "Messages", the response object):
//!
//! ```json
//! {"id": "msg_…", "type": "message", "role": "assistant", "model": "<as sent>",
//!  "content": [{"type": "text", "text": "…"},
//!              {"type": "tool_use", "id": "…", "name": "…", "input": {…}}],
//!  "stop_reason": "end_turn" | "max_tokens" | "stop_sequence" | "tool_use" | "refusal",
//!  "stop_sequence": null | "<the one that matched>",
//!  "usage": {"input_tokens": n, "output_tokens": n, "cache_read_input_tokens": n}}
//! ```
//!
//! Built from the call log's [`AnswerSummary`] of choice 0 (text, tool
//! calls, finish reason, usage), so the record and the answer agree.
//! Reasoning text is not returned (Anthropic's `thinking` blocks carry a
//! signature no OpenAI upstream makes).

use modelyard_core::Usage;
use modelyard_upstream::openai::AnswerSummary;
use serde::Deserialize;
use serde_json::{json, Value};

/// A new message id, `msg_` and 32 hex digits.
pub(crate) fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// A tool-use id for a tool call the upstream sent without one.
pub(crate) fn tool_use_id() -> String {
    format!("toolu_{}", uuid::Uuid::new_v4().simple())
}

/// Anthropic's `stop_reason` and `stop_sequence` for an OpenAI
/// `finish_reason`: `length` → `max_tokens`, `tool_calls` /
/// `function_call` → `tool_use`, `content_filter` → `refusal`; `stop` (or
/// none) → `stop_sequence` when the upstream said which of the client's
/// `stop_sequences` matched (vLLM's `stop_reason`), else `end_turn` — or
/// `tool_use` when the answer holds tool calls anyway.
pub(crate) fn stop_reason(
    finish_reason: Option<&str>,
    has_tool_use: bool,
    matched_stop: Option<&str>,
    stop_sequences: &[String],
) -> (&'static str, Option<String>) {
    match finish_reason {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        Some("content_filter") => ("refusal", None),
        _ if has_tool_use => ("tool_use", None),
        _ => match matched_stop.filter(|m| stop_sequences.iter().any(|s| s == m)) {
            Some(matched) => ("stop_sequence", Some(matched.to_owned())),
            None => ("end_turn", None),
        },
    }
}

/// Anthropic's `usage` for OpenAI usage: `input_tokens` are the prompt
/// tokens not read from the cache (OpenAI's `prompt_tokens` include
/// `cached_tokens`, Anthropic's `input_tokens` do not), `output_tokens` the
/// completion tokens, `cache_read_input_tokens` the cached ones and
/// `cache_creation_input_tokens` those written to the cache (when
/// reported). A count the upstream did not report is 0 (the SDKs need a
/// number).
pub(crate) fn usage(usage: &Usage) -> Value {
    let cached = usage.cached_prompt_tokens;
    let created = usage.cache_creation_tokens;
    let input = usage.prompt_tokens.map_or(0, |p| {
        p.saturating_sub(cached.unwrap_or(0))
            .saturating_sub(created.unwrap_or(0))
    });
    let mut out = json!({
        "input_tokens": input,
        "output_tokens": usage.completion_tokens.unwrap_or(0),
    });
    if let Some(cached) = cached {
        out["cache_read_input_tokens"] = json!(cached);
    }
    if let Some(created) = created {
        out["cache_creation_input_tokens"] = json!(created);
    }
    out
}

/// A tool call's `arguments` as the `input` object: `{}` when empty; the
/// object when it is one; otherwise (a model that wrote broken JSON) the
/// text kept as `{"_raw_arguments": "…"}` so nothing is lost.
pub(crate) fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"_raw_arguments": arguments}),
    }
}

/// The content blocks of an answer: its text (when not empty), then its
/// tool calls as `tool_use` blocks.
fn content(summary: &AnswerSummary) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(text) = summary.text.as_deref().filter(|t| !t.is_empty()) {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in summary
        .tool_calls
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(tool_use_id, str::to_owned);
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        blocks.push(json!({
            "type": "tool_use", "id": id, "name": name, "input": tool_input(arguments),
        }));
    }
    blocks
}

/// vLLM's `choices[0].stop_reason`: the stop string that ended the answer.
pub(crate) fn matched_stop(completion: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Completion {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        stop_reason: Option<Value>,
    }
    let completion: Completion = serde_json::from_slice(completion).ok()?;
    match completion.choices.into_iter().next()?.stop_reason? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The Anthropic message for an answer.
pub(crate) fn message(
    id: &str,
    model: &str,
    summary: &AnswerSummary,
    matched_stop: Option<&str>,
    stop_sequences: &[String],
) -> Value {
    let content = content(summary);
    let has_tool_use = content.iter().any(|b| b["type"] == "tool_use");
    let (stop_reason, stop_sequence) = stop_reason(
        summary.finish_reason.as_deref(),
        has_tool_use,
        matched_stop,
        stop_sequences,
    );
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(&summary.usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(text: Option<&str>, tool_calls: Option<Value>, finish: &str) -> AnswerSummary {
        AnswerSummary {
            text: text.map(str::to_owned),
            reasoning: None,
            tool_calls,
            finish_reason: Some(finish.to_owned()),
            usage: Usage {
                prompt_tokens: Some(30),
                completion_tokens: Some(7),
                reasoning_tokens: None,
                cached_prompt_tokens: Some(12),
                total_tokens: Some(37),
                ..Usage::default()
            },
        }
    }

    #[test]
    fn a_text_answer_is_one_text_block_with_end_turn_and_usage() {
        let message = message(
            "msg_1",
            "mock/echo",
            &summary(Some("hi there"), None, "stop"),
            None,
            &[],
        );
        assert_eq!(
            message,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "mock/echo",
                "content": [{"type": "text", "text": "hi there"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 18, "output_tokens": 7, "cache_read_input_tokens": 12},
            })
        );
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_with_parsed_input() {
        let calls = json!([
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "", "type": "function", "function": {"name": "noop", "arguments": ""}},
        ]);
        let message = message(
            "m",
            "x",
            &summary(Some("Let me check."), Some(calls), "tool_calls"),
            None,
            &[],
        );
        let content = message["content"].as_array().unwrap();
        assert_eq!(content.len(), 3);
        assert_eq!(content[0], json!({"type": "text", "text": "Let me check."}));
        assert_eq!(
            content[1],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather",
                   "input": {"city": "Paris"}})
        );
        assert_eq!(content[2]["name"], "noop");
        assert_eq!(content[2]["input"], json!({}));
        assert!(content[2]["id"].as_str().unwrap().starts_with("toolu_"));
        assert_eq!(message["stop_reason"], "tool_use");
    }

    #[test]
    fn an_empty_answer_has_no_blocks() {
        let message = message("m", "x", &summary(Some(""), None, "length"), None, &[]);
        assert_eq!(message["content"], json!([]));
        assert_eq!(message["stop_reason"], "max_tokens");
    }

    #[test]
    fn stop_reasons() {
        let stops = vec!["END".to_owned()];
        assert_eq!(
            stop_reason(Some("stop"), false, None, &stops),
            ("end_turn", None)
        );
        assert_eq!(stop_reason(None, false, None, &[]), ("end_turn", None));
        assert_eq!(
            stop_reason(Some("length"), false, None, &[]),
            ("max_tokens", None)
        );
        assert_eq!(
            stop_reason(Some("tool_calls"), true, None, &[]),
            ("tool_use", None)
        );
        assert_eq!(
            stop_reason(Some("function_call"), false, None, &[]),
            ("tool_use", None)
        );
        assert_eq!(
            stop_reason(Some("stop"), true, None, &[]),
            ("tool_use", None)
        );
        assert_eq!(
            stop_reason(Some("content_filter"), false, None, &[]),
            ("refusal", None)
        );
        assert_eq!(
            stop_reason(Some("stop"), false, Some("END"), &stops),
            ("stop_sequence", Some("END".to_owned()))
        );
        // A stop string the client did not ask for (an EOS token's text).
        assert_eq!(
            stop_reason(Some("stop"), false, Some("</s>"), &stops),
            ("end_turn", None)
        );
        assert_eq!(
            stop_reason(Some("length"), false, Some("END"), &stops),
            ("max_tokens", None)
        );
    }

    #[test]
    fn usage_without_cache_or_counts() {
        assert_eq!(
            usage(&Usage::default()),
            json!({"input_tokens": 0, "output_tokens": 0})
        );
        let u = Usage {
            prompt_tokens: Some(5),
            completion_tokens: Some(2),
            ..Usage::default()
        };
        assert_eq!(usage(&u), json!({"input_tokens": 5, "output_tokens": 2}));
        // More cached tokens than prompt tokens (a confused upstream) never underflows.
        let u = Usage {
            prompt_tokens: Some(5),
            cached_prompt_tokens: Some(9),
            ..Usage::default()
        };
        assert_eq!(usage(&u)["input_tokens"], 0);
    }

    #[test]
    fn tool_inputs() {
        assert_eq!(tool_input(""), json!({}));
        assert_eq!(tool_input("  "), json!({}));
        assert_eq!(tool_input(r#"{"a":[1]}"#), json!({"a": [1]}));
        assert_eq!(tool_input("[1]"), json!({"_raw_arguments": "[1]"}));
        assert_eq!(tool_input("{broken"), json!({"_raw_arguments": "{broken"}));
    }

    #[test]
    fn matched_stop_reads_vllm_stop_reason() {
        assert_eq!(
            matched_stop(br#"{"choices":[{"finish_reason":"stop","stop_reason":"END"}]}"#),
            Some("END".to_owned())
        );
        assert_eq!(
            matched_stop(br#"{"choices":[{"stop_reason":128001}]}"#),
            None
        );
        assert_eq!(matched_stop(br#"{"choices":[]}"#), None);
        assert_eq!(matched_stop(b"not json"), None);
    }
}
