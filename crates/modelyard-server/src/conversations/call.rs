//! One streamed model call made for a running turn (a chat step or an
//! advisor consultation), through the one LLM call path
//! ([`crate::service::llm_call`]): send the request, decode the SSE stream
//! into a [`StreamAccumulator`], report progress after every chunk,
//! checkpoint the text, and stop when the turn is cancelled (the upstream
//! request is dropped, which closes its connection).

use modelyard_upstream::openai::StreamAccumulator;
use serde_json::Value;

use super::live::LiveTurn;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::CallRecord;
use crate::registry::Target;
use crate::routing::Destination;
use crate::service::llm_call::{LlmCall, LlmCallError, Purpose};
use crate::service::routed::{self, Plan};

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
    /// The deployment that answered (composite id); the destination's id
    /// when none did.
    pub model_id: String,
    /// When the first attempt was sent, unix ms.
    pub sent_at_ms: i64,
    /// The records of every attempt, in order (retries and fallbacks
    /// before the one that answered).
    pub records: Vec<CallRecord>,
}

/// Sends `body` (a chat completion request with `stream: true`, see
/// [`crate::service::llm_call::compose`]; `model` is set per attempt) to
/// `destination` as a call of `operation` — retried, balanced and falling
/// back by [`crate::service::routed`], with the conversation as the affinity
/// key — and reads the answer, calling `on_chunk` after every accepted
/// chunk. With `checkpoint`, the answer text is saved to the turn row at
/// most every [`CHECKPOINT_EVERY`] (for crash recovery). Returns when the
/// stream ends, fails, or the turn is cancelled (checked while waiting).
pub async fn stream_call(
    app: &AppState,
    live: &LiveTurn,
    destination: &Destination,
    operation: &str,
    body: Value,
    checkpoint: bool,
    on_chunk: &mut (dyn FnMut(&StreamAccumulator) + Send),
) -> StreamedCall {
    let purpose = Purpose::conversation(operation, &live.conversation_id, Some(&live.turn_id));
    let mut plan = Plan::new(app, destination.clone(), Some(&live.conversation_id));
    let mut current: Option<LlmCall> = None;
    let mut records: Vec<CallRecord> = Vec::new();
    let mut acc = StreamAccumulator::default();
    let mut checkpoints = Checkpoints::new(checkpoint);
    let mut on_chunk = |acc: &StreamAccumulator| {
        on_chunk(acc);
        checkpoints.maybe(app, live, acc);
    };
    let started_at_ms = now_ms();
    let read = async {
        let mut build = |target: &Target| -> Result<LlmCall, LlmCallError> {
            Ok(LlmCall::new(target, purpose.clone(), &body))
        };
        let upstream = routed::send(&mut plan, &mut current, &mut records, &mut build)
            .await
            .map_err(|e| e.to_string())?;
        let Some(call) = current.as_mut() else {
            return Err("the call was not made".to_owned());
        };
        call.read_stream(
            upstream,
            app.config.limits.max_sse_event_bytes,
            &mut acc,
            &mut on_chunk,
        )
        .await
        .map_err(|e| e.to_string())
    };
    let end = tokio::select! {
        read = read => match read {
            Ok(()) => CallEnd::Done,
            Err(error) => CallEnd::Failed(error),
        },
        () = live.cancel.cancelled() => {
            if live.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                CallEnd::Interrupted
            } else {
                CallEnd::Cancelled
            }
        }
    };
    let sent_at_ms = records
        .first()
        .map(|r| r.sent_at_ms)
        .or(current.as_ref().map(LlmCall::sent_at_ms))
        .unwrap_or(started_at_ms);
    let model_id = match &current {
        Some(call) => call.target().resolution.model_id.to_string(),
        None => destination.model_id(),
    };
    if let Some(call) = current {
        let error = match &end {
            CallEnd::Done => None,
            CallEnd::Failed(e) => Some(e.clone()),
            CallEnd::Cancelled => Some("turn cancelled".to_owned()),
            CallEnd::Interrupted => Some("server shut down during the turn".to_owned()),
        };
        records.push(call.record(acc.summary(), error));
    }
    StreamedCall {
        acc,
        end,
        model_id,
        sent_at_ms,
        records,
    }
}

/// The checkpoints of a call's text. The write runs beside the stream (one
/// at a time), so a slow or locked database never holds up the turn's
/// tokens.
struct Checkpoints {
    on: bool,
    last: tokio::time::Instant,
    len: usize,
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl Checkpoints {
    fn new(on: bool) -> Self {
        Self {
            on,
            last: tokio::time::Instant::now(),
            len: 0,
            writing: None,
        }
    }

    fn maybe(&mut self, app: &AppState, live: &LiveTurn, acc: &StreamAccumulator) {
        if !self.on
            || acc.text().len() == self.len
            || self.last.elapsed() < CHECKPOINT_EVERY
            || matches!(&self.writing, Some(task) if !task.is_finished())
        {
            return;
        }
        self.len = acc.text().len();
        self.last = tokio::time::Instant::now();
        let text = if app.config.security.redact_secrets {
            crate::redact::redact(acc.text()).into_owned()
        } else {
            acc.text().to_owned()
        };
        let (store, project, turn_id) =
            (app.store.clone(), app.project.clone(), live.turn_id.clone());
        self.writing = Some(tokio::spawn(async move {
            if let Err(err) = store
                .checkpoint_turn(&project, &turn_id, &text, now_ms())
                .await
            {
                tracing::warn!(turn = %turn_id, error = %err, "cannot checkpoint turn");
            }
        }));
    }
}
