//! The `Response` object (OpenAI API reference, "The response object";
//! openai-python `openai/types/responses/response.py`):
//!
//! ```json
//! {"id": "resp_…", "object": "response", "created_at": 1741476542, "status": "completed",
//!  "model": "<as sent>", "output": [
//!    {"type": "message", "id": "msg_…", "role": "assistant", "status": "completed",
//!     "content": [{"type": "output_text", "text": "…", "annotations": [], "logprobs": []}]},
//!    {"type": "function_call", "id": "fc_…", "call_id": "…", "name": "…",
//!     "arguments": "{…}", "status": "completed"}],
//!  "usage": {"input_tokens": n, "input_tokens_details": {"cached_tokens": n},
//!            "output_tokens": n, "output_tokens_details": {"reasoning_tokens": n},
//!            "total_tokens": n},
//!  "error": null, "incomplete_details": null, "instructions": …, "tools": […], …}
//! ```
//!
//! Output item ids are derived from the response id and the item's place
//! (`msg_<base>_<index>`, `fc_<base>_<index>`), so a streamed response and
//! the same response read back later agree.

use modelyard_core::Usage;
use serde::Serialize;
use serde_json::Value;

use super::request::Echo;

/// One output text part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The text.
    pub(crate) text: String,
    /// Always empty.
    pub(crate) annotations: Vec<Value>,
    /// Always empty.
    pub(crate) logprobs: Vec<Value>,
}

impl OutputText {
    /// A text part.
    pub(crate) fn new(text: String) -> Self {
        Self {
            kind: "output_text",
            text,
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

/// One output item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum OutputItem {
    /// Answer text.
    Message {
        /// `msg_…`.
        id: String,
        /// Always `assistant`.
        role: &'static str,
        /// `in_progress`, `completed` or `incomplete`.
        status: &'static str,
        /// One text part (none while a streamed item opens).
        content: Vec<OutputText>,
    },
    /// A call of one of the client's functions.
    FunctionCall {
        /// `fc_…`.
        id: String,
        /// The call id the client answers with `function_call_output`.
        call_id: String,
        /// The function.
        name: String,
        /// The arguments (JSON text as the model wrote it).
        arguments: String,
        /// `in_progress` or `completed`.
        status: &'static str,
    },
}

impl OutputItem {
    /// A message item with `text`.
    pub(crate) fn message(id: String, text: String) -> Self {
        OutputItem::Message {
            id,
            role: "assistant",
            status: "completed",
            content: vec![OutputText::new(text)],
        }
    }
}

/// The id of output item `index` of response `response_id`: `msg_…` for a
/// message, `fc_…` for a function call.
pub(crate) fn item_id(response_id: &str, message: bool, index: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    let prefix = if message { "msg" } else { "fc" };
    format!("{prefix}_{base}_{index}")
}

/// `input_tokens_details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct InputTokensDetails {
    /// Prompt tokens read from the cache (part of `input_tokens`).
    pub(crate) cached_tokens: u64,
}

/// `output_tokens_details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OutputTokensDetails {
    /// Reasoning tokens (part of `output_tokens`).
    pub(crate) reasoning_tokens: u64,
}

/// `usage`, in tokens. A count the upstream did not report is 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ResponseUsage {
    /// Prompt tokens (cached ones included, as OpenAI counts them).
    pub(crate) input_tokens: u64,
    /// Of which cached.
    pub(crate) input_tokens_details: InputTokensDetails,
    /// Completion tokens.
    pub(crate) output_tokens: u64,
    /// Of which reasoning.
    pub(crate) output_tokens_details: OutputTokensDetails,
    /// Input plus output (the upstream's total when it sent one).
    pub(crate) total_tokens: u64,
}

impl From<&Usage> for ResponseUsage {
    fn from(u: &Usage) -> Self {
        let input = u.prompt_tokens.unwrap_or(0);
        let output = u.completion_tokens.unwrap_or(0);
        Self {
            input_tokens: input,
            input_tokens_details: InputTokensDetails {
                cached_tokens: u.cached_prompt_tokens.unwrap_or(0),
            },
            output_tokens: output,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: u.reasoning_tokens.unwrap_or(0),
            },
            total_tokens: u.total_tokens.unwrap_or(input.saturating_add(output)),
        }
    }
}

/// `error` of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ResponseError {
    /// `server_error`, or `rate_limit_exceeded` for a 429.
    pub(crate) code: &'static str,
    /// What went wrong.
    pub(crate) message: String,
}

/// `incomplete_details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct IncompleteDetails {
    /// `max_output_tokens` (the answer hit the limit) or `interrupted`.
    pub(crate) reason: &'static str,
}

/// `conversation`: the Modelyard conversation a stored response belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ConversationRef {
    /// The conversation id (`/v1/conversations/{id}`).
    pub(crate) id: String,
}

/// `text` (the output format: always plain text here).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TextConfig {
    /// `{"type": "text"}`.
    pub(crate) format: Value,
}

/// A `Response` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ResponseObject {
    /// `resp_…`.
    pub(crate) id: String,
    /// Always `response`.
    pub(crate) object: &'static str,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// `in_progress`, `completed`, `failed`, `cancelled` or `incomplete`.
    pub(crate) status: &'static str,
    /// Set when `status` is `failed`.
    pub(crate) error: Option<ResponseError>,
    /// Set when `status` is `incomplete`.
    pub(crate) incomplete_details: Option<IncompleteDetails>,
    /// The request's `instructions`.
    pub(crate) instructions: Option<String>,
    /// The request's `max_output_tokens`.
    pub(crate) max_output_tokens: Option<u64>,
    /// `model` as the client sent it (or the one that served).
    pub(crate) model: String,
    /// The output items.
    pub(crate) output: Vec<OutputItem>,
    /// The request's `parallel_tool_calls` (default true).
    pub(crate) parallel_tool_calls: bool,
    /// The request's `previous_response_id`.
    pub(crate) previous_response_id: Option<String>,
    /// The request's `temperature`.
    pub(crate) temperature: Option<f64>,
    /// The request's `top_p`.
    pub(crate) top_p: Option<f64>,
    /// The request's `tool_choice` (`"auto"` when not sent).
    pub(crate) tool_choice: Value,
    /// The request's function tools.
    pub(crate) tools: Vec<Value>,
    /// Whether the response is stored (readable by id, continuable).
    pub(crate) store: bool,
    /// The request's `metadata` (`{}`).
    pub(crate) metadata: Value,
    /// The request's `user`.
    pub(crate) user: Option<String>,
    /// Always plain text.
    pub(crate) text: TextConfig,
    /// Always `disabled`.
    pub(crate) truncation: &'static str,
    /// Token counts, once the response ended.
    pub(crate) usage: Option<ResponseUsage>,
    /// The conversation of a stored response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) conversation: Option<ConversationRef>,
}

impl ResponseObject {
    /// A response in progress, echoing the request's fields.
    pub(crate) fn new(id: String, created_at_ms: i64, model: String, echo: &Echo) -> Self {
        Self {
            id,
            object: "response",
            created_at: created_at_ms.div_euclid(1000),
            status: "in_progress",
            error: None,
            incomplete_details: None,
            instructions: echo.instructions.clone(),
            max_output_tokens: echo.max_output_tokens,
            model,
            output: Vec::new(),
            parallel_tool_calls: echo.parallel_tool_calls,
            previous_response_id: echo.previous_response_id.clone(),
            temperature: echo.temperature,
            top_p: echo.top_p,
            tool_choice: echo.tool_choice.clone(),
            tools: echo.tools.clone(),
            store: true,
            metadata: echo.metadata.clone(),
            user: echo.user.clone(),
            text: TextConfig {
                format: serde_json::json!({"type": "text"}),
            },
            truncation: "disabled",
            usage: None,
            conversation: None,
        }
    }

    /// Ends the response: `completed`, or `incomplete` with reason
    /// `max_output_tokens` when the upstream stopped at the length limit.
    pub(crate) fn complete(&mut self, finish_reason: Option<&str>, usage: &Usage) {
        if finish_reason == Some("length") {
            self.status = "incomplete";
            self.incomplete_details = Some(IncompleteDetails {
                reason: "max_output_tokens",
            });
        } else {
            self.status = "completed";
        }
        self.usage = Some(usage.into());
    }

    /// Ends the response as `failed` with `message`.
    pub(crate) fn fail(&mut self, message: String, usage: &Usage) {
        self.status = "failed";
        self.error = Some(ResponseError {
            code: "server_error",
            message,
        });
        self.usage = Some(usage.into());
    }
}

/// A stateless response id (`resp_` and 32 hex digits).
pub(crate) fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_counts_cached_tokens_inside_input_tokens() {
        let usage = Usage {
            prompt_tokens: Some(30),
            completion_tokens: Some(7),
            reasoning_tokens: Some(2),
            cached_prompt_tokens: Some(12),
            total_tokens: None,
            ..Usage::default()
        };
        assert_eq!(
            serde_json::to_value(ResponseUsage::from(&usage)).unwrap(),
            json!({"input_tokens": 30, "input_tokens_details": {"cached_tokens": 12},
                   "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
                   "total_tokens": 37})
        );
        assert_eq!(ResponseUsage::from(&Usage::default()).total_tokens, 0);
    }

    #[test]
    fn a_length_stop_is_incomplete() {
        let mut r = ResponseObject::new("resp_1".into(), 1_500, "m".into(), &Echo::default());
        assert_eq!(r.created_at, 1);
        r.complete(Some("length"), &Usage::default());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(
            v["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(v["object"], "response");
        assert!(v.get("conversation").is_none());
    }

    #[test]
    fn item_ids_derive_from_the_response_id() {
        assert_eq!(item_id("resp_abc", true, 0), "msg_abc_0");
        assert_eq!(item_id("resp_abc", false, 2), "fc_abc_2");
    }
}
