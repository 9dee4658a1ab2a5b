//! The streamed answer: upstream OpenAI SSE in, Anthropic's named events
//! out ([`super::events`]).
//!
//! `message_start` and a `ping` go out at once; then each upstream network
//! chunk is decoded ([`SseDecoder`], one event at most
//! `limits.max_sse_event_bytes`), accumulated for the call log
//! ([`StreamAccumulator`], which also bounds the answer) and translated.
//! Upstream keep-alive comments become `ping` events. `[DONE]` ends the
//! message (`message_delta` with usage, `message_stop`) and records the
//! call; a fault — the upstream drops, times out, sends malformed data, an
//! in-band error or an oversized event — writes one `error` event, records
//! the call with the error and ends the stream. Dropping the body (client
//! gone) drops the upstream response, which cancels the generation, and
//! records the call as cut short.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::Stream;
use modelyard_upstream::openai::{ChunkKind, StreamAccumulator};
use modelyard_upstream::sse::SseDecoder;
use modelyard_upstream::UpstreamResponse;

use super::error::mid_stream_kind;
use super::events::{ping, StreamTranslator};
use crate::clock::now_ms;
use crate::gateway::call::{CallDraft, CLIENT_GONE};
use crate::service::llm_call::LlmCallError;

struct StreamState {
    upstream: UpstreamResponse,
    decoder: SseDecoder,
    acc: StreamAccumulator,
    translator: StreamTranslator,
    provider: String,
    /// The composite id (what the accumulator writes into chunks; unused).
    model_id: String,
    draft: Option<CallDraft>,
    first_token_at_ms: Option<i64>,
    /// Data events decoded so far.
    events: u64,
    /// `message_start` and the first `ping`, until sent.
    head: Option<Vec<u8>>,
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
    Continue,
    Done,
}

impl StreamState {
    fn fail(&mut self, out: &mut Vec<u8>, error: LlmCallError) {
        let message = error.to_string();
        self.translator
            .error(out, mid_stream_kind(&error), &message);
        if let Some(draft) = self.draft.take() {
            draft.fail(self.acc.summary(), self.first_token_at_ms, message);
        }
    }

    /// Translates every complete event in the decoder into `out`.
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
            if event.data.as_ref() == b"[DONE]" {
                let summary = self.acc.summary();
                self.translator.finish(out, &summary.usage);
                if self.translator.dropped_deltas > 0 {
                    tracing::warn!(
                        provider = %self.provider,
                        dropped = self.translator.dropped_deltas,
                        "interleaved tool-call deltas could not be streamed as Anthropic events"
                    );
                }
                if let Some(draft) = self.draft.take() {
                    draft.complete(summary, self.first_token_at_ms);
                }
                return Step::Done;
            }
            match self.acc.accept(&event.data, &self.model_id) {
                Ok(ChunkKind::Forward(_)) => {
                    if self.first_token_at_ms.is_none() && self.acc.has_output() {
                        self.first_token_at_ms = Some(now_ms());
                    }
                    if let Err(reason) = self.translator.chunk(out, &event.data) {
                        let error = LlmCallError::malformed(&self.provider, &reason);
                        self.fail(out, error);
                        return Step::Done;
                    }
                }
                Ok(ChunkKind::UsageOnly(_)) => {}
                Ok(ChunkKind::Error(error)) => {
                    let error = LlmCallError::mid_stream(&self.provider, &error);
                    self.fail(out, error);
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
        if let Some(head) = self.head.take() {
            return Some(Bytes::from(head));
        }
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
                        // Keep-alive comments (no data event, nothing
                        // pending): a `ping`, so idle timeouts between the
                        // client and us see the stream is alive.
                        Step::Continue
                            if self.events == events_before
                                && !chunk.is_empty()
                                && !self.decoder.has_partial_event() =>
                        {
                            ping(&mut out);
                            return Some(Bytes::from(out));
                        }
                        Step::Continue => {}
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

/// What the stream needs besides the upstream response and the draft.
pub(crate) struct StreamSetup {
    /// The message id (`msg_…`).
    pub(crate) message_id: String,
    /// `model` as the client sent it.
    pub(crate) client_model: String,
    /// The composite id.
    pub(crate) model_id: String,
    /// The provider's name (for messages).
    pub(crate) provider: String,
    /// The client's `stop_sequences`.
    pub(crate) stop_sequences: Vec<String>,
    /// `limits.max_sse_event_bytes`.
    pub(crate) max_event_bytes: usize,
}

/// The client body of a streamed Messages answer.
pub(crate) fn translate(
    upstream: UpstreamResponse,
    draft: CallDraft,
    setup: StreamSetup,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let translator = StreamTranslator::new(setup.stop_sequences);
    let mut head = Vec::new();
    translator.start(&mut head, &setup.message_id, &setup.client_model);
    let state = StreamState {
        upstream,
        decoder: SseDecoder::with_max_event_bytes(setup.max_event_bytes),
        acc: StreamAccumulator::default(),
        translator,
        provider: setup.provider,
        model_id: setup.model_id,
        draft: Some(draft),
        first_token_at_ms: None,
        events: 0,
        head: Some(head),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let chunk = state.next_output().await?;
        Some((Ok(chunk), state))
    })
}
