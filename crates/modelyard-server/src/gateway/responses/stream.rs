//! The streamed answers: typed Responses events ([`super::events`]) from
//! either source.
//!
//! - [`stateless`]: upstream OpenAI SSE in. Each network chunk is decoded
//!   ([`SseDecoder`], one event at most `limits.max_sse_event_bytes`),
//!   accumulated for the call log ([`StreamAccumulator`], which also bounds
//!   the answer), and what the accumulator gained — text, a tool call's
//!   start, its argument text — is written as events. `[DONE]` ends the
//!   response (`response.completed` with usage) and records the call; a
//!   fault (the upstream drops, times out, sends malformed data, an in-band
//!   error or an oversized event) ends it with `response.failed` and
//!   records the error. Dropping the body (client gone) drops the upstream
//!   response, which cancels the generation, and records the call as cut
//!   short.
//! - [`stored`]: a turn's feed in: its live `text.delta` /
//!   `tool_call.started` / `tool_call.delta` events become events; when the
//!   run ends the response is read back from the store and sent as
//!   `response.completed` (or `.failed` / `.incomplete`). The client going
//!   away does not stop the turn (it is a conversation's, like any other).

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::Stream;
use modelyard_upstream::openai::{ChunkKind, StreamAccumulator};
use modelyard_upstream::sse::SseDecoder;
use modelyard_upstream::UpstreamResponse;
use serde_json::Value;
use tokio::sync::mpsc;

use super::events::EventWriter;
use super::request::Echo;
use super::response::ResponseObject;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::gateway::call::{CallDraft, CLIENT_GONE};
use crate::service::llm_call::LlmCallError;
use crate::service::replay::FeedItem;

/// A call id for a tool call the upstream sent without one.
pub(crate) fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::now_v7().simple())
}

/// What the stateless stream needs besides the upstream response and the
/// draft.
pub(crate) struct StatelessSetup {
    /// The response so far (in progress, its request's fields echoed).
    pub(crate) response: ResponseObject,
    /// The composite id.
    pub(crate) model_id: String,
    /// The provider's name (for messages).
    pub(crate) provider: String,
    /// `limits.max_sse_event_bytes`.
    pub(crate) max_event_bytes: usize,
}

struct StatelessState {
    upstream: UpstreamResponse,
    decoder: SseDecoder,
    acc: StreamAccumulator,
    writer: EventWriter,
    response: ResponseObject,
    provider: String,
    model_id: String,
    draft: Option<CallDraft>,
    first_token_at_ms: Option<i64>,
    /// Text bytes written so far.
    text_sent: usize,
    /// Per upstream tool call: its call id and argument bytes written.
    calls: Vec<(String, usize)>,
    /// `response.created` / `response.in_progress`, until sent.
    head: Option<Vec<u8>>,
}

impl Drop for StatelessState {
    fn drop(&mut self) {
        if let Some(draft) = self.draft.take() {
            draft.fail(
                self.acc.summary(),
                self.first_token_at_ms,
                CLIENT_GONE.to_owned(),
            );
        }
    }
}

impl StatelessState {
    /// Writes what the accumulator gained since the last call.
    fn progress(&mut self, out: &mut Vec<u8>) {
        let text = self.acc.text();
        if text.len() > self.text_sent {
            self.writer.text(out, &text[self.text_sent..]);
            self.text_sent = text.len();
        }
        for index in 0..self.acc.tool_call_count() {
            let Some((id, name, arguments)) = self.acc.tool_call(index) else {
                continue;
            };
            if index >= self.calls.len() {
                if name.is_empty() {
                    break; // announced once its name is known
                }
                let call_id = if id.is_empty() {
                    new_call_id()
                } else {
                    id.to_owned()
                };
                self.writer.call_started(out, &call_id, name);
                self.calls.push((call_id, 0));
            }
            let (call_id, sent) = &mut self.calls[index];
            if arguments.len() > *sent {
                self.writer.call_delta(out, call_id, &arguments[*sent..]);
                *sent = arguments.len();
            }
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: LlmCallError) {
        let message = error.to_string();
        let summary = self.acc.summary();
        self.response.output = self.writer.output();
        self.response.fail(message.clone(), &summary.usage);
        self.writer.finish(out, &self.response);
        if let Some(draft) = self.draft.take() {
            draft.fail(summary, self.first_token_at_ms, message);
        }
    }

    /// Writes every complete event in the decoder; true when the stream
    /// is over.
    fn drain_events(&mut self, out: &mut Vec<u8>) -> bool {
        loop {
            let event = match self.decoder.try_next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return false,
                Err(too_large) => {
                    let error = LlmCallError::event_too_large(&self.provider, too_large);
                    self.fail(out, error);
                    return true;
                }
            };
            if event.data.as_ref() == b"[DONE]" {
                let summary = self.acc.summary();
                self.response.output = self.writer.output();
                self.response
                    .complete(summary.finish_reason.as_deref(), &summary.usage);
                self.writer.finish(out, &self.response);
                if self.writer.dropped_deltas > 0 {
                    tracing::warn!(
                        provider = %self.provider,
                        dropped = self.writer.dropped_deltas,
                        "interleaved tool-call deltas could not be streamed as Responses events"
                    );
                }
                if let Some(draft) = self.draft.take() {
                    draft.complete(summary, self.first_token_at_ms);
                }
                return true;
            }
            match self.acc.accept(&event.data, &self.model_id) {
                Ok(ChunkKind::Forward(_)) => {
                    if self.first_token_at_ms.is_none() && self.acc.has_output() {
                        self.first_token_at_ms = Some(now_ms());
                    }
                    self.progress(out);
                }
                Ok(ChunkKind::UsageOnly(_)) => {}
                Ok(ChunkKind::Error(error)) => {
                    let error = LlmCallError::mid_stream(&self.provider, &error);
                    self.fail(out, error);
                    return true;
                }
                Err(reason) => {
                    let error = LlmCallError::malformed(&self.provider, &reason);
                    self.fail(out, error);
                    return true;
                }
            }
        }
    }

    /// The next output chunk, or `None` when the stream is over.
    async fn next_output(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(Bytes::from(head));
        }
        self.draft.as_ref()?;
        let mut out = Vec::new();
        loop {
            match self.upstream.next_chunk().await {
                Ok(Some(chunk)) => {
                    self.decoder.push(&chunk);
                    let done = self.drain_events(&mut out);
                    if done || !out.is_empty() {
                        return Some(Bytes::from(out));
                    }
                }
                Ok(None) => {
                    let error =
                        LlmCallError::closed(&self.provider, self.decoder.has_partial_event());
                    self.fail(&mut out, error);
                    return Some(Bytes::from(out));
                }
                Err(err) => {
                    self.fail(&mut out, LlmCallError::Upstream(err));
                    return Some(Bytes::from(out));
                }
            }
        }
    }
}

/// The client body of a streamed stateless response.
pub(crate) fn stateless(
    upstream: UpstreamResponse,
    draft: CallDraft,
    setup: StatelessSetup,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut writer = EventWriter::new(&setup.response.id);
    let mut head = Vec::new();
    writer.start(&mut head, &setup.response);
    let state = StatelessState {
        upstream,
        decoder: SseDecoder::with_max_event_bytes(setup.max_event_bytes),
        acc: StreamAccumulator::default(),
        writer,
        response: setup.response,
        provider: setup.provider,
        model_id: setup.model_id,
        draft: Some(draft),
        first_token_at_ms: None,
        text_sent: 0,
        calls: Vec::new(),
        head: Some(head),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let chunk = state.next_output().await?;
        Some((Ok(chunk), state))
    })
}

/// What the stored stream needs besides the feed.
pub(crate) struct StoredSetup {
    /// App state (the store the run is read back from).
    pub(crate) app: AppState,
    /// The response id.
    pub(crate) response_id: String,
    /// `model` as the response names it.
    pub(crate) model: String,
    /// The request's echoed fields.
    pub(crate) echo: Echo,
}

struct StoredState {
    feed: mpsc::Receiver<FeedItem>,
    writer: EventWriter,
    setup: StoredSetup,
    head: Option<Vec<u8>>,
    done: bool,
}

fn str_of<'a>(data: &'a Value, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl StoredState {
    async fn next_output(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(Bytes::from(head));
        }
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let Some(item) = self.feed.recv().await else {
                // The run ended (or a shutdown): the stored response.
                self.done = true;
                match crate::service::responses::read(&self.setup.app, &self.setup.response_id)
                    .await
                {
                    Ok(run) => {
                        let response = super::stored_response(
                            &run,
                            self.setup.model.clone(),
                            &self.setup.echo,
                        );
                        self.writer.finish(&mut out, &response);
                    }
                    Err(err) => {
                        let error = super::error::service(err, None);
                        self.writer.error(&mut out, "server_error", &error.message);
                    }
                }
                return Some(Bytes::from(out));
            };
            if let FeedItem::Transient { event, .. } = item {
                let data = &event.data;
                match event.event_type {
                    "text.delta" => self.writer.text(&mut out, str_of(data, "delta")),
                    "tool_call.started" => self.writer.call_started(
                        &mut out,
                        str_of(data, "toolCallId"),
                        str_of(data, "name"),
                    ),
                    "tool_call.delta" => self.writer.call_delta(
                        &mut out,
                        str_of(data, "toolCallId"),
                        str_of(data, "delta"),
                    ),
                    _ => {}
                }
            }
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
        }
    }
}

/// The client body of a streamed stored response: `skeleton` is the
/// response in progress.
pub(crate) fn stored(
    feed: mpsc::Receiver<FeedItem>,
    skeleton: ResponseObject,
    setup: StoredSetup,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut writer = EventWriter::new(&setup.response_id);
    let mut head = Vec::new();
    writer.start(&mut head, &skeleton);
    let state = StoredState {
        feed,
        writer,
        setup,
        head: Some(head),
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let chunk = state.next_output().await?;
        Some((Ok(chunk), state))
    })
}
