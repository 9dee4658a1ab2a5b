//! A streamed message: Anthropic's named SSE events (Anthropic API
//! reference, "Streaming Messages"), read one at a time for the call log.
//!
//! ```text
//! message_start        {"type":"message_start","message":{"id","model",…,"usage":{"input_tokens","cache_read_input_tokens","cache_creation_input_tokens","output_tokens"}}}
//! content_block_start  {"type":"content_block_start","index":i,"content_block":{"type":"text"|"thinking"|"tool_use",…}}
//! content_block_delta  {"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text"}|{"type":"thinking_delta","thinking"}|{"type":"input_json_delta","partial_json"}}
//! content_block_stop   {"type":"content_block_stop","index":i}
//! message_delta        {"type":"message_delta","delta":{"stop_reason",…},"usage":{"output_tokens",…}}
//! message_stop         {"type":"message_stop"}
//! ping                 {"type":"ping"}
//! error                {"type":"error","error":{"type","message"}}
//! ```
//!
//! The event's kind is read from its data's `type` (the `event:` line
//! says the same). Only the first `message_start`'s `message.model` is
//! rewritten; every other event's data is returned as it came. Usage counts
//! in `message_delta` are cumulative and replace those of
//! `message_start`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::message::tool_call;
use super::WireUsage;
use crate::openai::request::{span_of, splice};
use crate::openai::{AnswerSummary, MAX_ANSWER_BYTES, MAX_TOOL_CALL_INDEX};

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<StartMessage<'a>>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// What one event turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageEvent<'a> {
    /// Forward `data` (the first `message_start` with `model` rewritten).
    Forward(Cow<'a, [u8]>),
    /// `message_stop`: forward `data`; the message is complete.
    Stop(Cow<'a, [u8]>),
    /// An `error` event: forward `data`; the stream failed with the
    /// `error` member's JSON (the second field).
    Error(Cow<'a, [u8]>, String),
}

/// One `tool_use` block so far.
#[derive(Debug, Default)]
struct ToolUse {
    id: String,
    name: String,
    input: String,
}

/// Accumulates a streamed message for the call log.
#[derive(Debug)]
pub struct MessagesAccumulator {
    text: String,
    reasoning: String,
    /// `tool_use` blocks by content block index (at most
    /// [`MAX_TOOL_CALL_INDEX`] + 1 slots).
    tools: Vec<Option<ToolUse>>,
    stop_reason: Option<String>,
    usage: WireUsage,
    started: bool,
    bytes: usize,
    max_bytes: usize,
}

impl Default for MessagesAccumulator {
    fn default() -> Self {
        Self {
            text: String::new(),
            reasoning: String::new(),
            tools: Vec::new(),
            stop_reason: None,
            usage: WireUsage::default(),
            started: false,
            bytes: 0,
            max_bytes: MAX_ANSWER_BYTES,
        }
    }
}

impl MessagesAccumulator {
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

    fn tool(&mut self, index: usize) -> Result<&mut ToolUse, String> {
        if index > MAX_TOOL_CALL_INDEX {
            return Err(format!(
                "content block index {index} is over the limit of {MAX_TOOL_CALL_INDEX}"
            ));
        }
        if self.tools.len() <= index {
            self.tools.resize_with(index + 1, || None);
        }
        Ok(self.tools[index].get_or_insert_with(ToolUse::default))
    }

    /// Reads one event's data, accumulates it, and says what it is; the
    /// first `message_start` comes back with `message.model` set to
    /// `client_model`.
    ///
    /// # Errors
    /// A message when the data is not a JSON object, a content block index
    /// is over [`MAX_TOOL_CALL_INDEX`] for a `tool_use` block, or the
    /// answer grows over [`MAX_ANSWER_BYTES`].
    pub fn accept<'a>(
        &mut self,
        data: &'a [u8],
        client_model: &str,
    ) -> Result<MessageEvent<'a>, String> {
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        let raw: RawEvent<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let kind = raw.kind.as_deref().unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(message) = raw.message {
                    if let Some(usage) = message.usage {
                        self.usage.merge(usage);
                    }
                    if !self.started {
                        self.started = true;
                        if let Some(model) = message.model {
                            let model_json = crate::openai::model_json(client_model);
                            let spliced = splice(data, vec![(span_of(text, model), model_json)]);
                            return Ok(MessageEvent::Forward(Cow::Owned(spliced)));
                        }
                    }
                }
            }
            "content_block_start" => {
                let index = raw.index.unwrap_or(0);
                if let Some(block) = raw.content_block {
                    match block.kind.as_deref() {
                        Some("tool_use") => {
                            let id = block.id.unwrap_or_default();
                            let name = block.name.unwrap_or_default();
                            self.grow(id.len() + name.len())?;
                            let tool = self.tool(index)?;
                            tool.id.push_str(&id);
                            tool.name.push_str(&name);
                        }
                        Some("text") => {
                            if let Some(start) = block.text.filter(|t| !t.is_empty()) {
                                self.grow(start.len())?;
                                self.text.push_str(&start);
                            }
                        }
                        _ => {}
                    }
                }
            }
            "content_block_delta" => {
                let index = raw.index.unwrap_or(0);
                if let Some(delta) = raw.delta {
                    if let Some(piece) = delta.text {
                        self.grow(piece.len())?;
                        self.text.push_str(&piece);
                    }
                    if let Some(piece) = delta.thinking {
                        self.grow(piece.len())?;
                        self.reasoning.push_str(&piece);
                    }
                    if let Some(piece) = delta.partial_json {
                        self.grow(piece.len())?;
                        self.tool(index)?.input.push_str(&piece);
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = raw.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = raw.usage {
                    self.usage.merge(usage);
                }
            }
            "message_stop" => return Ok(MessageEvent::Stop(Cow::Borrowed(data))),
            "error" => {
                #[derive(Deserialize)]
                struct ErrorEvent<'b> {
                    #[serde(borrow, default)]
                    error: Option<&'b RawValue>,
                }
                let error = serde_json::from_str::<ErrorEvent<'_>>(text)
                    .ok()
                    .and_then(|e| e.error)
                    .map_or_else(|| text.to_owned(), |e| e.get().to_owned());
                return Ok(MessageEvent::Error(Cow::Borrowed(data), error));
            }
            _ => {}
        }
        Ok(MessageEvent::Forward(Cow::Borrowed(data)))
    }

    /// Whether any text, thinking or tool use has arrived.
    pub fn has_output(&self) -> bool {
        !self.text.is_empty()
            || !self.reasoning.is_empty()
            || self.tools.iter().any(Option::is_some)
    }

    /// The answer so far, in the call log's terms (see the
    /// [module docs](super)).
    pub fn summary(&self) -> AnswerSummary {
        let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
        let calls: Vec<serde_json::Value> = self
            .tools
            .iter()
            .flatten()
            .map(|t| tool_call(&t.id, &t.name, &t.input))
            .collect();
        AnswerSummary {
            text: non_empty(&self.text),
            reasoning: non_empty(&self.reasoning),
            tool_calls: (!calls.is_empty()).then_some(serde_json::Value::Array(calls)),
            finish_reason: self.stop_reason.clone(),
            usage: self.usage.usage(),
        }
    }
}
