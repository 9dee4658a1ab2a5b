//! OpenAI stream chunks → Anthropic's named SSE events (Anthropic API
//! reference, "Streaming Messages"), as a pure state machine:
//!
//! ```text
//! message_start        {"type":"message_start","message":{…,"content":[],"stop_reason":null,…}}
//! ping                 {"type":"ping"}
//! content_block_start  {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}
//! content_block_delta  {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"…"}}
//! content_block_stop   {"type":"content_block_stop","index":0}
//! content_block_start  {…,"index":1,"content_block":{"type":"tool_use","id":"…","name":"…","input":{}}}
//! content_block_delta  {…,"index":1,"delta":{"type":"input_json_delta","partial_json":"…"}}
//! content_block_stop   {"type":"content_block_stop","index":1}
//! message_delta        {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{…}}
//! message_stop         {"type":"message_stop"}
//! ```
//!
//! or, when the upstream fails after the start, one `error` event
//! (`{"type":"error","error":{"type":"api_error","message":"…"}}`) and no
//! `message_stop`, so a client can tell a cut answer from a complete one.
//!
//! Blocks are strictly sequential (one open at a time): text opens a text
//! block, a tool call's first delta (with its name) a `tool_use` block whose
//! argument text streams as `input_json_delta`; anything else closes the
//! open block first. Upstreams stream tool calls one after another; an
//! argument delta for a tool call whose block already closed (interleaved
//! parallel calls) cannot be sent and is left out of the stream (the call
//! log keeps it). Usage arrives after the finish reason in OpenAI streams,
//! so `message_start` carries zero counts and `message_delta` the real ones
//! (input, output and cached tokens). Reasoning deltas are not sent.

use std::borrow::Cow;

use modelyard_core::Usage;
use modelyard_upstream::openai::MAX_TOOL_CALL_INDEX;
use serde::Deserialize;
use serde_json::{json, Value};

use super::response::{stop_reason, tool_use_id, usage};

/// Appends one named event: `event: <name>\ndata: <json>\n\n`.
pub(crate) fn write_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Appends a `ping` event (Anthropic's keep-alive).
pub(crate) fn ping(out: &mut Vec<u8>) {
    write_event(out, "ping", &json!({"type": "ping"}));
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// vLLM: the stop string that ended the answer.
    #[serde(default)]
    stop_reason: Option<Value>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
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

/// Where one upstream tool call (by its `index`) stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Tool {
    /// No delta yet.
    #[default]
    Unseen,
    /// Its id came, but neither a name nor arguments yet.
    Seen(String),
    /// Its block is open.
    Open,
    /// Its block closed.
    Closed,
}

/// The open content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    Tool { upstream: usize, block: usize },
}

/// The translation of one streamed answer.
#[derive(Debug)]
pub(crate) struct StreamTranslator {
    stop_sequences: Vec<String>,
    next_block: usize,
    open: Option<Open>,
    tools: Vec<Tool>,
    has_tool_use: bool,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    /// Argument deltas left out (their block had closed).
    pub(crate) dropped_deltas: u64,
}

impl StreamTranslator {
    /// A translator for a request with these `stop_sequences`.
    pub(crate) fn new(stop_sequences: Vec<String>) -> Self {
        Self {
            stop_sequences,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            has_tool_use: false,
            finish_reason: None,
            matched_stop: None,
            dropped_deltas: 0,
        }
    }

    /// `message_start` (empty content, zero usage) and a `ping`.
    pub(crate) fn start(&self, out: &mut Vec<u8>, id: &str, model: &str) {
        let message = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        write_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        ping(out);
    }

    /// Translates one chunk's JSON (already accepted by the call log's
    /// accumulator) into events.
    ///
    /// # Errors
    /// A message when `data` is not a chunk or a tool call's index is over
    /// [`MAX_TOOL_CALL_INDEX`] (nothing is written then).
    pub(crate) fn chunk(&mut self, out: &mut Vec<u8>, data: &[u8]) -> Result<(), String> {
        let chunk: Chunk<'_> = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    self.text(out, &text);
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    if call.index > MAX_TOOL_CALL_INDEX {
                        return Err(format!(
                            "tool call index {} is over the limit of {MAX_TOOL_CALL_INDEX}",
                            call.index
                        ));
                    }
                    self.tool_call(out, call);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            if let Some(Value::String(stop)) = choice.stop_reason {
                self.matched_stop = Some(stop);
            }
        }
        Ok(())
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Value) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// Closes the open block, if any.
    fn close(&mut self, out: &mut Vec<u8>) {
        let index = match self.open.take() {
            None => return,
            Some(Open::Text(index)) => index,
            Some(Open::Tool { upstream, block }) => {
                self.tools[upstream] = Tool::Closed;
                block
            }
        };
        write_event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        let index = match self.open {
            Some(Open::Text(index)) => index,
            _ => {
                let index = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Some(Open::Text(index));
                index
            }
        };
        write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: ToolCallDelta<'_>) {
        let upstream = call.index;
        if self.tools.len() <= upstream {
            self.tools.resize(upstream + 1, Tool::Unseen);
        }
        let (name, arguments) = match call.function {
            Some(f) => (f.name, f.arguments.filter(|a| !a.is_empty())),
            None => (None, None),
        };
        let block = match std::mem::take(&mut self.tools[upstream]) {
            Tool::Open => match self.open {
                Some(Open::Tool { block, .. }) => {
                    self.tools[upstream] = Tool::Open;
                    block
                }
                // Not reached: an open tool is the open block.
                _ => {
                    self.tools[upstream] = Tool::Closed;
                    return;
                }
            },
            Tool::Closed => {
                self.tools[upstream] = Tool::Closed;
                if arguments.is_some() {
                    self.dropped_deltas += 1;
                }
                return;
            }
            state @ (Tool::Unseen | Tool::Seen(_)) => {
                let earlier_id = match state {
                    Tool::Seen(id) => Some(id),
                    _ => None,
                };
                let id = call
                    .id
                    .map(Cow::into_owned)
                    .filter(|id| !id.is_empty())
                    .or(earlier_id);
                if name.is_none() && arguments.is_none() {
                    self.tools[upstream] = match id {
                        Some(id) => Tool::Seen(id),
                        None => Tool::Unseen,
                    };
                    return;
                }
                let block = self.open_block(
                    out,
                    json!({
                        "type": "tool_use",
                        "id": id.unwrap_or_else(tool_use_id),
                        "name": name.as_deref().unwrap_or_default(),
                        "input": {},
                    }),
                );
                self.tools[upstream] = Tool::Open;
                self.open = Some(Open::Tool { upstream, block });
                self.has_tool_use = true;
                block
            }
        };
        if let Some(arguments) = arguments {
            write_event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            );
        }
    }

    /// The end of a complete answer: closes the open block, then
    /// `message_delta` (stop reason, `usage`) and `message_stop`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, reported: &Usage) {
        self.close(out);
        let (stop_reason, stop_sequence) = stop_reason(
            self.finish_reason.as_deref(),
            self.has_tool_use,
            self.matched_stop.as_deref(),
            &self.stop_sequences,
        );
        write_event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage(reported),
            }),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// The end of a failed answer: one `error` event of `kind` (Anthropic's
    /// error type).
    pub(crate) fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        write_event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
    }
}

#[cfg(test)]
mod tests;
