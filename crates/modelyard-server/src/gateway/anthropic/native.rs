//! The streamed answer of a provider that speaks Messages natively: its
//! named SSE events passed through.
//!
//! Each upstream network chunk is decoded ([`SseDecoder`], one event at
//! most `limits.max_sse_event_bytes`) and every event written back as
//! `event: <name>\ndata: <data>\n\n` — the upstream's own bytes for
//! Anthropic's framing — with its data unchanged except the first
//! `message_start`'s `message.model`, which becomes the id the client sent
//! (as on the translated path). Usage, text, thinking and tool use are
//! accumulated for the call log ([`MessagesAccumulator`]).
//!
//! `message_stop` ends the stream and records the call; an upstream `error`
//! event is passed on and records the call with its message. A fault of
//! ours to report — the upstream ends before `message_stop`, times out,
//! sends malformed data or an oversized event — writes one Anthropic
//! `error` event and records the call with the error. Upstream comments
//! become one `: keep-alive` comment. Dropping the body (client gone) drops
//! the upstream response, which closes its connection (the generation is
//! cancelled), and records the call as cut short.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::Stream;
use modelyard_upstream::anthropic::{MessageEvent, MessagesAccumulator};
use modelyard_upstream::sse::{SseDecoder, SseEvent};
use modelyard_upstream::UpstreamResponse;

use super::error::mid_stream_kind;
use super::events::write_event;
use crate::clock::now_ms;
use crate::gateway::call::{CallDraft, CLIENT_GONE};
use crate::service::llm_call::LlmCallError;

struct NativeState {
    upstream: UpstreamResponse,
    decoder: SseDecoder,
    acc: MessagesAccumulator,
    provider: String,
    client_model: String,
    draft: Option<CallDraft>,
    first_token_at_ms: Option<i64>,
    /// Data events decoded so far.
    events: u64,
}

impl Drop for NativeState {
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

enum Step {
    Continue,
    Done,
}

/// Writes `event` back with `data` as its data (one `data:` line per line).
fn write_raw(out: &mut Vec<u8>, event: &SseEvent, data: &[u8]) {
    if let Some(name) = &event.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

impl NativeState {
    /// Writes our own `error` event and records the call with `error`.
    fn fail(&mut self, out: &mut Vec<u8>, error: LlmCallError) {
        let message = error.to_string();
        write_event(
            out,
            "error",
            &serde_json::json!({
                "type": "error",
                "error": {"type": mid_stream_kind(&error), "message": message},
            }),
        );
        if let Some(draft) = self.draft.take() {
            draft.fail(self.acc.summary(), self.first_token_at_ms, message);
        }
    }

    /// Passes every complete event in the decoder on into `out`.
    fn drain_events(&mut self, out: &mut Vec<u8>) -> Step {
        loop {
            let event = match self.decoder.try_next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return Step::Continue,
                Err(too_large) => {
                    let error = LlmCallError::event_too_large(&self.provider, too_large);
                    self.fail(out, error);
                    return Step::Done;
                }
            };
            self.events += 1;
            let accepted = self.acc.accept(&event.data, &self.client_model);
            if self.first_token_at_ms.is_none() && self.acc.has_output() {
                self.first_token_at_ms = Some(now_ms());
            }
            match accepted {
                Ok(MessageEvent::Forward(data)) => write_raw(out, &event, &data),
                Ok(MessageEvent::Stop(data)) => {
                    write_raw(out, &event, &data);
                    if let Some(draft) = self.draft.take() {
                        draft.complete(self.acc.summary(), self.first_token_at_ms);
                    }
                    return Step::Done;
                }
                Ok(MessageEvent::Error(data, error)) => {
                    write_raw(out, &event, &data);
                    let message = LlmCallError::mid_stream(&self.provider, &error).to_string();
                    if let Some(draft) = self.draft.take() {
                        draft.fail(self.acc.summary(), self.first_token_at_ms, message);
                    }
                    return Step::Done;
                }
                Err(reason) => {
                    let error = LlmCallError::malformed(&self.provider, &reason);
                    self.fail(out, error);
                    return Step::Done;
                }
            }
        }
    }

    /// The next output chunk, or `None` when the stream is over.
    async fn next_output(&mut self) -> Option<Bytes> {
        self.draft.as_ref()?;
        let mut out = Vec::new();
        loop {
            match self.upstream.next_chunk().await {
                Ok(Some(chunk)) => {
                    self.decoder.push(&chunk);
                    let events_before = self.events;
                    match self.drain_events(&mut out) {
                        Step::Done => return Some(Bytes::from(out)),
                        Step::Continue if !out.is_empty() => return Some(Bytes::from(out)),
                        // Comments only: one keep-alive, so idle timeouts
                        // between the client and us see the stream alive.
                        Step::Continue
                            if self.events == events_before
                                && !chunk.is_empty()
                                && !self.decoder.has_partial_event() =>
                        {
                            return Some(Bytes::from_static(b": keep-alive\n\n"));
                        }
                        Step::Continue => {}
                    }
                }
                Ok(None) => {
                    let error = LlmCallError::Closed(format!(
                        "provider '{}' ended the stream before message_stop",
                        self.provider
                    ));
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

/// The client body of a streamed Messages answer from a native provider:
/// `client_model` replaces the upstream's `model` in `message_start`; one
/// upstream event may be at most `max_event_bytes` long.
pub(crate) fn pass_through(
    upstream: UpstreamResponse,
    draft: CallDraft,
    provider: String,
    client_model: String,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = NativeState {
        upstream,
        decoder: SseDecoder::with_max_event_bytes(max_event_bytes),
        acc: MessagesAccumulator::default(),
        provider,
        client_model,
        draft: Some(draft),
        first_token_at_ms: None,
        events: 0,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let chunk = state.next_output().await?;
        Some((Ok(chunk), state))
    })
}
