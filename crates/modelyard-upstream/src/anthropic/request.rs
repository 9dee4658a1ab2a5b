//! A Messages request's routing fields, read without building the body:
//! `model` (with its byte range, to splice the upstream name in), `stream`,
//! the counts the `[limits]` caps look at, and `metadata.user_id` (a
//! route's affinity key).

use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::openai::request::{
    array_len, count_member, is_null, present, routed_body, span_of, ArrayLen,
};
use crate::openai::RequestError;

/// The fields of a Messages request the gateway acts on.
#[derive(Debug, Clone)]
pub struct MessagesRequestHead {
    /// `model`, if present and not `null`.
    pub model: Option<String>,
    /// Byte range of the `model` value in the body.
    model_span: Option<Range<usize>>,
    /// Offset just after the opening `{`.
    object_start: usize,
    /// `stream` (default false).
    pub stream: bool,
    /// `max_tokens`, if present and not `null` (large values saturate).
    pub max_tokens: Option<u64>,
    /// How many entries `messages` has.
    pub message_count: usize,
    /// How many entries `tools` has, if present and not `null`.
    pub tool_count: Option<usize>,
    /// `metadata.user_id`, when it is a string.
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_tokens: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "array_len")]
    messages: Option<ArrayLen>,
    #[serde(default, deserialize_with = "array_len")]
    tools: Option<ArrayLen>,
    #[serde(borrow, default, deserialize_with = "present")]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

impl MessagesRequestHead {
    /// Reads the head of a Messages request (or of a count-tokens request,
    /// which has the same fields but `max_tokens` and `stream`).
    ///
    /// # Errors
    /// [`RequestError`] naming the field at fault: not a JSON object,
    /// `model` not a string, `stream` not a boolean, `max_tokens` not a
    /// non-negative integer, `messages` missing or not an array, `tools`
    /// not an array.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let text = std::str::from_utf8(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let raw: RawHead<'_> =
            serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let object_start = text
            .find('{')
            .map(|i| i + 1)
            .ok_or_else(|| RequestError::NotJson("expected an object".into()))?;
        let model_span = raw.model.map(|value| span_of(text, value));
        let model = match is_null(raw.model) {
            None => None,
            Some(value) => Some(serde_json::from_str::<String>(value.get()).map_err(|_| {
                RequestError::FieldType {
                    field: "model",
                    expected: "a string",
                }
            })?),
        };
        let stream = match is_null(raw.stream) {
            None => false,
            Some(value) => {
                serde_json::from_str(value.get()).map_err(|_| RequestError::FieldType {
                    field: "stream",
                    expected: "a boolean",
                })?
            }
        };
        let message_count = match raw.messages {
            None | Some(ArrayLen::Null) => return Err(RequestError::Missing("messages")),
            Some(ArrayLen::NotArray) => {
                return Err(RequestError::FieldType {
                    field: "messages",
                    expected: "an array of messages",
                })
            }
            Some(ArrayLen::Len(len)) => len,
        };
        let tool_count = match raw.tools {
            None | Some(ArrayLen::Null) => None,
            Some(ArrayLen::NotArray) => {
                return Err(RequestError::FieldType {
                    field: "tools",
                    expected: "an array of tools",
                })
            }
            Some(ArrayLen::Len(len)) => Some(len),
        };
        let max_tokens = count_member(raw.max_tokens, "max_tokens")?;
        // Any other shape of `metadata` is the upstream's to judge.
        let user_id = is_null(raw.metadata)
            .and_then(|m| serde_json::from_str::<Metadata>(m.get()).ok())
            .and_then(|m| m.user_id)
            .and_then(|u| u.as_str().map(str::to_owned));
        Ok(Self {
            model,
            model_span,
            object_start,
            stream,
            max_tokens,
            message_count,
            tool_count,
            user_id,
        })
    }

    /// The body to send upstream: `model` set to `upstream_model` (spliced
    /// into its byte range, or added first when the client sent none).
    /// Every other byte is kept.
    pub fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        routed_body(
            body,
            self.object_start,
            self.model_span.as_ref(),
            upstream_model,
            None,
        )
    }
}
