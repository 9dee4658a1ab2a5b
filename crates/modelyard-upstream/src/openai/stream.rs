//! A streamed completion — chat chunks (`choices[].delta`) or legacy
//! completion chunks (`choices[].text`) — what each chunk is, and the
//! accumulated answer for the call log.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use modelyard_core::Usage;

use super::completion::{AnswerSummary, WireUsage};
use super::request::span_of;

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<ChunkDelta<'a>>,
    /// A legacy completion chunk's text (`choices[].text`).
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// What one streamed chunk turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// A normal chunk: forward `body` (model rewritten).
    Forward(Vec<u8>),
    /// The usage-only chunk (`choices: []` with `usage`): forward `body` only
    /// if the client asked for usage.
    UsageOnly(Vec<u8>),
    /// An in-band error object (`{"error": ...}`); its JSON text.
    Error(String),
}

/// What [`StreamAccumulator::accept_into`] found a chunk to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// A normal chunk: written, to be forwarded.
    Chunk,
    /// The usage-only chunk (`choices: []` with `usage`): written, to be
    /// forwarded only if the client asked for usage.
    UsageOnly,
    /// An in-band error object (`{"error": ...}`); its JSON text. Nothing
    /// was written.
    Error(String),
}

/// `model` as the JSON string literal (quoted and escaped) that a
/// rewritten body or chunk carries in its `model`.
pub fn model_json(model: &str) -> String {
    serde_json::Value::String(model.to_owned()).to_string()
}

/// Highest `tool_calls[].index` accepted in a streamed chunk (tool calls are
/// kept in a vector indexed by it; a higher index is a malformed stream, not
/// an allocation).
pub const MAX_TOOL_CALL_INDEX: usize = 128;

/// Most bytes of text, reasoning, tool call ids, names and arguments one
/// streamed answer may accumulate (64 MiB, as much as a non-streamed answer
/// may be); beyond it the stream is malformed, so a provider that streams
/// forever cannot exhaust memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Accumulates a streamed answer (choice 0) for the call log.
#[derive(Debug)]
pub struct StreamAccumulator {
    text: String,
    reasoning: String,
    tool_calls: Vec<ToolCallAcc>,
    finish_reason: Option<String>,
    usage: Usage,
    /// Bytes accumulated so far, and the cap.
    bytes: usize,
    max_bytes: usize,
}

impl Default for StreamAccumulator {
    fn default() -> Self {
        Self::with_max_answer_bytes(MAX_ANSWER_BYTES)
    }
}

#[derive(Debug, Default)]
struct ToolCallAcc {
    id: String,
    name: String,
    arguments: String,
}

impl StreamAccumulator {
    /// An accumulator that refuses answers longer than `max_bytes`.
    pub fn with_max_answer_bytes(max_bytes: usize) -> Self {
        Self {
            text: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: Usage::default(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Counts `len` more accumulated bytes.
    fn grow(&mut self, len: usize) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.max_bytes {
            return Err(format!(
                "the answer is larger than {} bytes",
                self.max_bytes
            ));
        }
        Ok(())
    }

    /// Reads one chunk's JSON, accumulates it, and returns what to do with it,
    /// with `model` rewritten to `client_model`.
    ///
    /// # Errors
    /// A message when the data is not a JSON object (malformed SSE payload),
    /// a tool call's `index` is over [`MAX_TOOL_CALL_INDEX`], or the answer
    /// grows over its cap ([`MAX_ANSWER_BYTES`] by default).
    pub fn accept(&mut self, data: &[u8], client_model: &str) -> Result<ChunkKind, String> {
        let model_json = model_json(client_model);
        let mut body = Vec::with_capacity(data.len() + model_json.len());
        Ok(match self.accept_into(data, &model_json, &mut body)? {
            Accepted::Chunk => ChunkKind::Forward(body),
            Accepted::UsageOnly => ChunkKind::UsageOnly(body),
            Accepted::Error(error) => ChunkKind::Error(error),
        })
    }

    /// [`Self::accept`] that writes the chunk's JSON, `model` set to
    /// `client_model_json` (a JSON string literal: [`model_json`], made
    /// once per stream), onto the end of `out` instead of a new buffer: no
    /// allocation per chunk for the rewrite. Nothing is written for
    /// [`Accepted::Error`] or an error.
    ///
    /// # Errors
    /// As [`Self::accept`].
    pub fn accept_into(
        &mut self,
        data: &[u8],
        client_model_json: &str,
        out: &mut Vec<u8>,
    ) -> Result<Accepted, String> {
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        let raw: RawChunk<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(error) = raw.error.filter(|e| e.get() != "null") {
            return Ok(Accepted::Error(error.get().to_owned()));
        }
        if let Some(usage) = raw.usage {
            self.usage = Usage::from(usage);
        }
        let choices = raw.choices.unwrap_or_default();
        let usage_only = choices.is_empty() && raw.usage.is_some();
        for choice in choices.into_iter().filter(|c| c.index == 0) {
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            if let Some(text) = choice.text {
                self.grow(text.len())?;
                self.text.push_str(&text);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(content) = delta.content {
                self.grow(content.len())?;
                self.text.push_str(&content);
            }
            if let Some(reasoning) = delta.reasoning_content {
                self.grow(reasoning.len())?;
                self.reasoning.push_str(&reasoning);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                if call.index > MAX_TOOL_CALL_INDEX {
                    return Err(format!(
                        "tool call index {} is over the limit of {MAX_TOOL_CALL_INDEX}",
                        call.index
                    ));
                }
                if self.tool_calls.len() <= call.index {
                    self.tool_calls
                        .resize_with(call.index + 1, ToolCallAcc::default);
                }
                let added = call.id.as_ref().map_or(0, |id| id.len())
                    + call.function.as_ref().map_or(0, |f| {
                        f.name.as_ref().map_or(0, |n| n.len())
                            + f.arguments.as_ref().map_or(0, |a| a.len())
                    });
                self.grow(added)?;
                let acc = &mut self.tool_calls[call.index];
                if let Some(id) = call.id {
                    acc.id.push_str(&id);
                }
                if let Some(function) = call.function {
                    if let Some(name) = function.name {
                        acc.name.push_str(&name);
                    }
                    if let Some(arguments) = function.arguments {
                        acc.arguments.push_str(&arguments);
                    }
                }
            }
        }
        match raw.model {
            // A `null` model has a span too: it is replaced.
            Some(model) => {
                let span = span_of(text, model);
                out.extend_from_slice(&data[..span.start]);
                out.extend_from_slice(client_model_json.as_bytes());
                out.extend_from_slice(&data[span.end..]);
            }
            None => out.extend_from_slice(data),
        }
        Ok(if usage_only {
            Accepted::UsageOnly
        } else {
            Accepted::Chunk
        })
    }

    /// The answer text accumulated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The reasoning text accumulated so far.
    pub fn reasoning(&self) -> &str {
        &self.reasoning
    }

    /// Number of tool calls (choice 0) begun so far.
    pub fn tool_call_count(&self) -> usize {
        self.tool_calls.len()
    }

    /// Tool call `index` so far: `(id, function name, arguments)`, each as
    /// accumulated from the deltas (possibly still empty or partial).
    pub fn tool_call(&self, index: usize) -> Option<(&str, &str, &str)> {
        self.tool_calls
            .get(index)
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
    }

    /// Whether any content, reasoning or tool call has arrived.
    pub fn has_output(&self) -> bool {
        !self.text.is_empty() || !self.reasoning.is_empty() || !self.tool_calls.is_empty()
    }

    /// The answer so far.
    pub fn summary(&self) -> AnswerSummary {
        let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
        let tool_calls = (!self.tool_calls.is_empty()).then(|| {
            serde_json::Value::Array(
                self.tool_calls
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}
                        })
                    })
                    .collect(),
            )
        });
        AnswerSummary {
            text: non_empty(&self.text),
            reasoning: non_empty(&self.reasoning),
            tool_calls,
            finish_reason: self.finish_reason.clone(),
            usage: self.usage,
        }
    }
}
