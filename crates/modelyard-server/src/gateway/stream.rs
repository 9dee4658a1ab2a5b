//! Streaming pass-through: upstream SSE in, client SSE out.
//!
//! Each upstream network chunk is decoded into events; every event's JSON
//! gets its `model` rewritten and is forwarded in one output chunk per
//! upstream chunk. The usage-only chunk that Modelyard asked for is dropped
//! unless the client asked for it too. Faults are never silent: an upstream
//! that drops, times out, sends malformed data or an in-band `{"error": ...}`
//! produces one `data: {"error": ...}` event and the stream ends without
//! `[DONE]`; so does an event longer than `limits.max_sse_event_bytes` (a
//! line that never ends), which also closes the upstream connection.
//! Dropping the body (client gone) drops the upstream response,
//! which closes that connection and cancels the generation.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::Stream;
use modelyard_upstream::openai::{model_json, Accepted, StreamAccumulator};
use modelyard_upstream::sse::SseDecoder;
use modelyard_upstream::UpstreamResponse;
use serde_json::json;

use super::call::{CallDraft, CLIENT_GONE};
use crate::clock::now_ms;
use crate::service::llm_call::LlmCallError;

struct StreamState {
    upstream: UpstreamResponse,
    decoder: SseDecoder,
    acc: StreamAccumulator,
    /// The model id the client sent, as a JSON string literal: every
    /// chunk's `model` is set to it.
    client_model_json: String,
    provider: String,
    forward_usage: bool,
    draft: Option<CallDraft>,
    first_token_at_ms: Option<i64>,
    /// Events decoded so far (data events, whether forwarded or not).
    events: u64,
}

impl Drop for StreamState {
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
    /// Keep reading.
    Continue,
    /// The stream ended (with `[DONE]` or an error event already written).
    Done,
}

impl StreamState {
    fn error_event(&mut self, out: &mut Vec<u8>, error: LlmCallError) {
        let (kind, message) = (error.kind(), error.to_string());
        let body =
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(body.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        if let Some(draft) = self.draft.take() {
            draft.fail(self.acc.summary(), self.first_token_at_ms, message);
        }
    }

    /// Forwards every complete event in the decoder into `out`.
    fn drain_events(&mut self, out: &mut Vec<u8>) -> Step {
        loop {
            let event = match self.decoder.try_next_event() {
                Ok(Some(event)) => event,
                Ok(None) => return Step::Continue,
                Err(too_large) => {
                    // Ending the stream drops the upstream response, which
                    // closes its connection.
                    let error = LlmCallError::event_too_large(&self.provider, too_large);
                    self.error_event(out, error);
                    return Step::Done;
                }
            };
            self.events += 1;
            if event.data.as_ref() == b"[DONE]" {
                out.extend_from_slice(b"data: [DONE]\n\n");
                if let Some(draft) = self.draft.take() {
                    draft.complete(self.acc.summary(), self.first_token_at_ms);
                }
                return Step::Done;
            }
            // The event is written straight into `out`, and taken back
            // when it is not forwarded.
            let mark = out.len();
            out.extend_from_slice(b"data: ");
            let accepted = self
                .acc
                .accept_into(&event.data, &self.client_model_json, out);
            let forwarded = match &accepted {
                Ok(Accepted::Chunk) => true,
                Ok(Accepted::UsageOnly) => self.forward_usage,
                Ok(Accepted::Error(_)) | Err(_) => false,
            };
            if forwarded {
                out.extend_from_slice(b"\n\n");
            } else {
                out.truncate(mark);
            }
            match accepted {
                Ok(Accepted::Chunk) => {
                    if self.first_token_at_ms.is_none() && self.acc.has_output() {
                        self.first_token_at_ms = Some(now_ms());
                    }
                }
                Ok(Accepted::UsageOnly) => {}
                Ok(Accepted::Error(error)) => {
                    let error = LlmCallError::mid_stream(&self.provider, &error);
                    self.error_event(out, error);
                    return Step::Done;
                }
                Err(reason) => {
                    let error = LlmCallError::malformed(&self.provider, &reason);
                    self.error_event(out, error);
                    return Step::Done;
                }
            }
        }
    }

    /// Produces the next output chunk, or `None` when the stream is over.
    async fn next_output(&mut self) -> Option<Bytes> {
        self.draft.as_ref()?;
        let mut out = Vec::new();
        loop {
            if let Step::Done = self.drain_events(&mut out) {
                return Some(Bytes::from(out));
            }
            if !out.is_empty() {
                return Some(Bytes::from(out));
            }
            match self.upstream.next_chunk().await {
                Ok(Some(chunk)) => {
                    self.decoder.push(&chunk);
                    // What this chunk forwards is about its own size.
                    out.reserve(chunk.len() + 64);
                    // A chunk that completed no data event and left nothing
                    // pending was keep-alive comments (or blank / `id:`-only
                    // blocks): pass one keep-alive on, so idle timeouts
                    // between the client and us see the stream is alive.
                    let events_before = self.events;
                    match self.drain_events(&mut out) {
                        Step::Done => return Some(Bytes::from(out)),
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
                    let error =
                        LlmCallError::closed(&self.provider, self.decoder.has_partial_event());
                    self.error_event(&mut out, error);
                    return Some(Bytes::from(out));
                }
                Err(err) => {
                    self.error_event(&mut out, LlmCallError::Upstream(err));
                    return Some(Bytes::from(out));
                }
            }
        }
    }
}

/// The client body for a streamed answer; one upstream event may be at most
/// `max_event_bytes` long.
pub(crate) fn proxy(
    upstream: UpstreamResponse,
    draft: CallDraft,
    provider: String,
    client_model: String,
    client_include_usage: bool,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = StreamState {
        upstream,
        decoder: SseDecoder::with_max_event_bytes(max_event_bytes),
        acc: StreamAccumulator::default(),
        client_model_json: model_json(&client_model),
        provider,
        forward_usage: client_include_usage,
        draft: Some(draft),
        first_token_at_ms: None,
        events: 0,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let chunk = state.next_output().await?;
        Some((Ok(chunk), state))
    })
}
