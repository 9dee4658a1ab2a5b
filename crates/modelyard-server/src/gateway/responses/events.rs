//! A streamed answer as the Responses API's typed SSE events (OpenAI API
//! reference, "Streaming events"; openai-python
//! `openai/types/responses/response_stream_event.py`), as a pure state
//! machine. Every event is `event: <type>\ndata: <json>\n\n` and carries a
//! `sequence_number` counting from 0:
//!
//! ```text
//! response.created                  {response: {status: "in_progress", output: []}}
//! response.in_progress              {response: …}
//! response.output_item.added        {output_index, item: {type: "message", status: "in_progress", content: []}}
//! response.content_part.added       {item_id, output_index, content_index: 0, part: {type: "output_text", text: ""}}
//! response.output_text.delta        {item_id, output_index, content_index: 0, delta}
//! response.output_text.done         {…, text}
//! response.content_part.done        {…, part}
//! response.output_item.done         {output_index, item}
//! response.output_item.added        {output_index, item: {type: "function_call", arguments: "", …}}
//! response.function_call_arguments.delta  {item_id, output_index, delta}
//! response.function_call_arguments.done   {item_id, output_index, arguments}
//! response.output_item.done         {output_index, item}
//! response.completed | response.incomplete | response.failed  {response}
//! ```
//!
//! Items are sequential (one open at a time): text opens a message item, a
//! tool call a `function_call` item; anything else closes the open item
//! first. Argument deltas of a call whose item already closed (interleaved
//! parallel calls) are left out of the stream (the final response and the
//! call log keep them). The writer is fed abstract deltas — text, a call's
//! start, a call's argument text — by the stateless stream (from OpenAI
//! chunks) and by the stored one (from a turn's live events) alike.

use serde::Serialize;
use serde_json::{json, Value};

use super::response::{item_id, OutputItem, OutputText, ResponseObject};

/// Appends one event: `event: <type>\ndata: <json>\n\n`.
fn write(out: &mut Vec<u8>, kind: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// One item streamed so far.
#[derive(Debug, Clone, PartialEq)]
enum Streamed {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// The events of one streamed response.
#[derive(Debug)]
pub(crate) struct EventWriter {
    response_id: String,
    next_sequence: u64,
    items: Vec<Streamed>,
    /// Index of the open item in `items`.
    open: Option<usize>,
    /// Argument deltas left out (their item had closed).
    pub(crate) dropped_deltas: u64,
}

impl EventWriter {
    /// A writer for response `response_id`.
    pub(crate) fn new(response_id: &str) -> Self {
        Self {
            response_id: response_id.to_owned(),
            next_sequence: 0,
            items: Vec::new(),
            open: None,
            dropped_deltas: 0,
        }
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.next_sequence);
        self.next_sequence += 1;
        write(out, kind, &data);
    }

    fn response_event(&mut self, out: &mut Vec<u8>, kind: &str, response: &ResponseObject) {
        let data = json!({"response": to_value(response)});
        self.event(out, kind, data);
    }

    /// `response.created` and `response.in_progress` with `response` (in
    /// progress, no output).
    pub(crate) fn start(&mut self, out: &mut Vec<u8>, response: &ResponseObject) {
        self.response_event(out, "response.created", response);
        self.response_event(out, "response.in_progress", response);
    }

    /// The item at `index` as the final response lists it.
    fn item(&self, index: usize, status: &'static str) -> OutputItem {
        match &self.items[index] {
            Streamed::Text { id, text } => OutputItem::Message {
                id: id.clone(),
                role: "assistant",
                status,
                content: if status == "in_progress" {
                    Vec::new()
                } else {
                    vec![OutputText::new(text.clone())]
                },
            },
            Streamed::Call {
                id,
                call_id,
                name,
                arguments,
            } => OutputItem::FunctionCall {
                id: id.clone(),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: if status == "in_progress" {
                    String::new()
                } else {
                    arguments.clone()
                },
                status,
            },
        }
    }

    fn open_item(&mut self, out: &mut Vec<u8>, item: Streamed) -> usize {
        self.close(out);
        let index = self.items.len();
        self.items.push(item);
        self.open = Some(index);
        let added = to_value(&self.item(index, "in_progress"));
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        index
    }

    /// Closes the open item, if any.
    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.open.take() else {
            return;
        };
        match self.items[index].clone() {
            Streamed::Text { id, text } => {
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": to_value(&OutputText::new(text))}),
                );
            }
            Streamed::Call { id, arguments, .. } => {
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": arguments}),
                );
            }
        }
        let done = to_value(&self.item(index, "completed"));
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
    }

    /// Answer text.
    pub(crate) fn text(&mut self, out: &mut Vec<u8>, delta: &str) {
        if delta.is_empty() {
            return;
        }
        let index = match self.open {
            Some(index) if matches!(self.items[index], Streamed::Text { .. }) => index,
            _ => {
                let id = item_id(&self.response_id, true, self.items.len());
                let index = self.open_item(
                    out,
                    Streamed::Text {
                        id: id.clone(),
                        text: String::new(),
                    },
                );
                self.event(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": to_value(&OutputText::new(String::new()))}),
                );
                index
            }
        };
        let Streamed::Text { id, text } = &mut self.items[index] else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "delta": delta, "logprobs": []}),
        );
    }

    /// A tool call's start (its id and name known).
    pub(crate) fn call_started(&mut self, out: &mut Vec<u8>, call_id: &str, name: &str) {
        if self.call_index(call_id).is_some() {
            return;
        }
        let id = item_id(&self.response_id, false, self.items.len());
        self.open_item(
            out,
            Streamed::Call {
                id,
                call_id: call_id.to_owned(),
                name: name.to_owned(),
                arguments: String::new(),
            },
        );
    }

    fn call_index(&self, call_id: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|item| matches!(item, Streamed::Call { call_id: c, .. } if c == call_id))
    }

    /// Argument text of call `call_id` (started before).
    pub(crate) fn call_delta(&mut self, out: &mut Vec<u8>, call_id: &str, delta: &str) {
        if delta.is_empty() {
            return;
        }
        let index = match self.call_index(call_id) {
            Some(index) if self.open == Some(index) => index,
            Some(_) => {
                self.dropped_deltas += 1;
                return;
            }
            None => {
                self.call_started(out, call_id, "");
                self.items.len() - 1
            }
        };
        let Streamed::Call { id, arguments, .. } = &mut self.items[index] else {
            return;
        };
        arguments.push_str(delta);
        let id = id.clone();
        self.event(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": delta}),
        );
    }

    /// The streamed items as the final response lists them.
    pub(crate) fn output(&self) -> Vec<OutputItem> {
        (0..self.items.len())
            .map(|i| self.item(i, "completed"))
            .collect()
    }

    /// The end: closes the open item; items of `response.output` past the
    /// streamed ones (the stream missed their deltas) go out as
    /// `output_item.added` / `.done`; then `response.completed`,
    /// `response.incomplete` or `response.failed` (by `response.status`).
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, response: &ResponseObject) {
        self.close(out);
        for (index, item) in response.output.iter().enumerate().skip(self.items.len()) {
            let item = to_value(item);
            self.event(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.event(
                out,
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            );
        }
        let kind = match response.status {
            "failed" => "response.failed",
            "incomplete" => "response.incomplete",
            _ => "response.completed",
        };
        self.response_event(out, kind, response);
    }

    /// An `error` event (a failure outside any response, e.g. the stream
    /// could not go on).
    pub(crate) fn error(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        self.event(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
    }
}

fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
