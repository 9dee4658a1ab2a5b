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
use crate::service::llm_call::{LlmCall, Purpose};

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
    /// The call (request, status, times).
    pub call: LlmCall,
}

impl StreamedCall {
    /// Send time, unix ms.
    pub fn sent_at_ms(&self) -> i64 {
        self.call.sent_at_ms()
    }

    /// The call-log record of this call.
    pub fn record(&self) -> CallRecord {
        let error = match &self.end {
            CallEnd::Done => None,
            CallEnd::Failed(e) => Some(e.clone()),
            CallEnd::Cancelled => Some("turn cancelled".to_owned()),
            CallEnd::Interrupted => Some("server shut down during the turn".to_owned()),
        };
        self.call.record(self.acc.summary(), error)
    }
}

/// Sends `body` (a chat completion request with `stream: true`, see
/// [`crate::service::llm_call::compose`]) to `target` as a call of
/// `operation` and reads the answer, calling `on_chunk` after every accepted
/// chunk. With `checkpoint`, the answer text is saved to the turn row at
/// most every [`CHECKPOINT_EVERY`] (for crash recovery). Returns when the
/// stream ends, fails, or the turn is cancelled (checked while waiting).
pub async fn stream_call(
    app: &AppState,
    live: &LiveTurn,
    target: &Target,
    operation: &str,
    body: Value,
    checkpoint: bool,
    on_chunk: &mut (dyn FnMut(&StreamAccumulator) + Send),
) -> StreamedCall {
    let purpose = Purpose::conversation(operation, &live.conversation_id, Some(&live.turn_id));
    let mut call = LlmCall::new(target, purpose, body);
    let mut acc = StreamAccumulator::default();
    let mut checkpoints = Checkpoints::new(checkpoint);
    let mut on_chunk = |acc: &StreamAccumulator| {
        on_chunk(acc);
        checkpoints.maybe(app, live, acc);
    };
    let read = async {
        let upstream = call.send().await?;
        call.read_stream(
            upstream,
            app.config.limits.max_sse_event_bytes,
            &mut acc,
            &mut on_chunk,
        )
        .await
    };
    let end = tokio::select! {
        read = read => match read {
            Ok(()) => CallEnd::Done,
            Err(error) => CallEnd::Failed(error.to_string()),
        },
        () = live.cancel.cancelled() => {
            if live.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                CallEnd::Interrupted
            } else {
                CallEnd::Cancelled
            }
        }
    };
    StreamedCall { acc, end, call }
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
