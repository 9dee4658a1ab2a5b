//! One streamed model call made for a running turn (a chat step or an
//! advisor consultation): send the request, decode the SSE stream into a
//! [`StreamAccumulator`], report progress after every chunk, checkpoint the
//! text, and stop when the turn is cancelled (the upstream request is
//! dropped, which closes its connection).

use axum::body::Bytes;
use modelyard_upstream::openai::{upstream_error_message, ChunkKind, StreamAccumulator};
use modelyard_upstream::sse::SseDecoder;
use serde_json::Value;

use super::live::LiveTurn;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::CallRecord;
use crate::registry::Target;

/// Longest interval between two checkpoints of a running turn's text.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How a streamed call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    /// `[DONE]` arrived.
    Done,
    /// The provider failed (message for the record).
    Failed(String),
    /// The turn was cancelled.
    Cancelled,
    /// The server is shutting down.
    Interrupted,
}

/// A finished (or stopped) streamed call.
#[derive(Debug)]
pub struct StreamedCall {
    /// What arrived.
    pub acc: StreamAccumulator,
    /// How it ended.
    pub end: CallEnd,
    /// The provider's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Send time, unix ms.
    pub sent_at_ms: i64,
    /// First output, unix ms.
    pub first_token_at_ms: Option<i64>,
    /// The request body as sent.
    pub request_json: String,
}

impl StreamedCall {
    /// The call-log record of this call.
    pub fn record(&self, target: &Target, operation: &str, live: &LiveTurn) -> CallRecord {
        CallRecord {
            operation: operation.to_owned(),
            conversation_id: Some(live.conversation_id.clone()),
            turn_id: Some(live.turn_id.clone()),
            model_id: target.resolution.model_id.to_string(),
            provider: target.provider.name().to_owned(),
            upstream_model: target.resolution.model_id.model().to_owned(),
            stream: true,
            request_json: self.request_json.clone(),
            summary: self.acc.summary(),
            sent_at_ms: self.sent_at_ms,
            first_token_at_ms: self.first_token_at_ms,
            completed_at_ms: now_ms(),
            http_status: self.status,
            error: match &self.end {
                CallEnd::Done => None,
                CallEnd::Failed(e) => Some(e.clone()),
                CallEnd::Cancelled => Some("turn cancelled".to_owned()),
                CallEnd::Interrupted => Some("server shut down during the turn".to_owned()),
            },
        }
    }
}

/// Sends `body` (a chat completion request with `stream: true`) to
/// `target` and reads the answer, calling `on_chunk` after every accepted
/// chunk. With `checkpoint`, the answer text is saved to the turn row at
/// most every [`CHECKPOINT_EVERY`] (for crash recovery). Returns when the
/// stream ends, fails, or the turn is cancelled (checked while waiting).
pub async fn stream_call(
    app: &AppState,
    live: &LiveTurn,
    target: &Target,
    body: &Value,
    checkpoint: bool,
    on_chunk: &mut (dyn FnMut(&StreamAccumulator) + Send),
) -> StreamedCall {
    let request_json = body.to_string();
    let mut call = StreamedCall {
        acc: StreamAccumulator::default(),
        end: CallEnd::Done,
        status: None,
        sent_at_ms: now_ms(),
        first_token_at_ms: None,
        request_json,
    };
    let bytes = Bytes::from(call.request_json.clone());
    let end = tokio::select! {
        end = read_stream(app, live, target, bytes, checkpoint, &mut call, on_chunk) => end,
        () = live.cancel.cancelled() => {
            if live.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                CallEnd::Interrupted
            } else {
                CallEnd::Cancelled
            }
        }
    };
    call.end = end;
    call
}

async fn read_stream(
    app: &AppState,
    live: &LiveTurn,
    target: &Target,
    body: Bytes,
    checkpoint: bool,
    call: &mut StreamedCall,
    on_chunk: &mut (dyn FnMut(&StreamAccumulator) + Send),
) -> CallEnd {
    let provider = target.provider.name();
    let Some(client) = target.provider.client.as_ref() else {
        return CallEnd::Failed(format!("provider '{provider}' is disabled"));
    };
    let mut upstream = match client.chat_completions(body, true).await {
        Ok(upstream) => upstream,
        Err(err) => return CallEnd::Failed(err.to_string()),
    };
    call.status = Some(upstream.status());
    if !(200..300).contains(&upstream.status()) {
        let code = upstream.status();
        let body = upstream.bytes(64 * 1024).await.unwrap_or_default();
        let (message, kind, error_code) = upstream_error_message(&body, 2_000);
        // The same message as the gateway's (401/403: the provider's
        // credentials; 3xx: not followed).
        let error =
            crate::gateway::upstream_status_error(provider, code, message, kind, error_code);
        return CallEnd::Failed(error.message);
    }
    let client_model = target.resolution.model_id.to_string();
    let mut decoder = SseDecoder::with_max_event_bytes(app.config.limits.max_sse_event_bytes);
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut checkpointed_len = 0;
    // The checkpoint write runs beside the stream (one at a time), so a slow
    // or locked database never holds up the turn's tokens.
    let mut checkpointing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let chunk = match upstream.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                return CallEnd::Failed(format!(
                    "provider '{provider}' closed the stream before [DONE]"
                ))
            }
            Err(err) => return CallEnd::Failed(err.to_string()),
        };
        decoder.push(&chunk);
        loop {
            let event = match decoder.try_next_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                // Returning drops the upstream response: its connection closes.
                Err(too_large) => {
                    return CallEnd::Failed(crate::gateway::event_too_large(provider, too_large))
                }
            };
            if event.data.as_ref() == b"[DONE]" {
                return CallEnd::Done;
            }
            match call.acc.accept(&event.data, &client_model) {
                Ok(ChunkKind::Forward(_)) | Ok(ChunkKind::UsageOnly(_)) => {}
                Ok(ChunkKind::Error(error)) => {
                    let (message, _, _) = upstream_error_message(error.as_bytes(), 2_000);
                    return CallEnd::Failed(format!(
                        "provider '{provider}' reported an error mid-stream: {message}"
                    ));
                }
                Err(reason) => {
                    return CallEnd::Failed(format!(
                        "provider '{provider}' sent malformed stream data: {reason}"
                    ))
                }
            }
            if call.first_token_at_ms.is_none() && call.acc.has_output() {
                call.first_token_at_ms = Some(now_ms());
            }
            on_chunk(&call.acc);
        }
        if checkpoint
            && last_checkpoint.elapsed() >= CHECKPOINT_EVERY
            && call.acc.text().len() != checkpointed_len
            && !matches!(&checkpointing, Some(task) if !task.is_finished())
        {
            checkpointed_len = call.acc.text().len();
            last_checkpoint = tokio::time::Instant::now();
            let text = if app.config.security.redact_secrets {
                crate::redact::redact(call.acc.text()).into_owned()
            } else {
                call.acc.text().to_owned()
            };
            let (store, project, turn_id) =
                (app.store.clone(), app.project.clone(), live.turn_id.clone());
            checkpointing = Some(tokio::spawn(async move {
                if let Err(err) = store
                    .checkpoint_turn(&project, &turn_id, &text, now_ms())
                    .await
                {
                    tracing::warn!(turn = %turn_id, error = %err, "cannot checkpoint turn");
                }
            }));
        }
    }
}
