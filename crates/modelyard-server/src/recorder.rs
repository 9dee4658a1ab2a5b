//! The call recorder: gateway handlers hand finished call records to a
//! bounded channel; one background task writes them to the store in batches
//! (one transaction per batch). A proxied token never waits for the
//! database. When the channel is full the record is dropped and counted
//! (logged at most once per second), never blocking the request.
//!
//! Durability: records are written after the response ends; a crash loses
//! at most what was still queued. Shutdown drains the queue.
//!
//! With `storage.content = "metadata"` the writer task strips message text
//! from every record before it is written (see [`strip_content`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use modelyard_store::{NewLlmCall, NewLlmSession, ProjectId, RecordedSession, Store, UsageRow};
use modelyard_upstream::openai::AnswerSummary;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::config::ContentPolicy;

/// One finished LLM call, as every caller (gateway, turns, title,
/// compaction) describes it; [`CallRecord::into_session`] turns it into the
/// stored session with its one call.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Operation (`gateway`, `chat`, `title`, ...).
    pub operation: String,
    /// Conversation, for conversation operations.
    pub conversation_id: Option<String>,
    /// Turn, for turns.
    pub turn_id: Option<String>,
    /// Composite model id.
    pub model_id: String,
    /// Provider name.
    pub provider: String,
    /// Upstream model name.
    pub upstream_model: String,
    /// Whether the call streamed.
    pub stream: bool,
    /// The request body as sent upstream.
    pub request_json: String,
    /// What came back.
    pub summary: AnswerSummary,
    /// Send time, unix ms.
    pub sent_at_ms: i64,
    /// First output token, unix ms (streams only).
    pub first_token_at_ms: Option<i64>,
    /// End time, unix ms.
    pub completed_at_ms: i64,
    /// The upstream's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// The error, `None` for success.
    pub error: Option<String>,
}

fn tokens(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl CallRecord {
    /// The session (new UUIDv7 id) holding this one call.
    pub fn into_session(self) -> RecordedSession {
        let session_id = uuid::Uuid::now_v7().to_string();
        let session = NewLlmSession {
            id: session_id.clone(),
            operation: self.operation.clone(),
            parent_session_id: None,
            conversation_id: self.conversation_id.clone(),
            turn_id: self.turn_id.clone(),
            created_at_ms: self.sent_at_ms,
        };
        RecordedSession {
            session,
            calls: vec![self.into_call(&session_id)],
        }
    }

    /// The call row (new UUIDv7 id) in session `session_id`; the session's
    /// own fields (operation, conversation, turn) are the caller's.
    pub fn into_call(self, session_id: &str) -> NewLlmCall {
        let usage = self.summary.usage;
        NewLlmCall {
            id: uuid::Uuid::now_v7().to_string(),
            session_id: session_id.to_owned(),
            model_id: self.model_id,
            provider: self.provider,
            upstream_model: self.upstream_model,
            stream: self.stream,
            request_json: self.request_json,
            response_text: self.summary.text,
            reasoning_text: self.summary.reasoning,
            tool_calls_json: self.summary.tool_calls.map(|v| v.to_string()),
            finish_reason: self.summary.finish_reason,
            usage: UsageRow {
                prompt_tokens: tokens(usage.prompt_tokens),
                completion_tokens: tokens(usage.completion_tokens),
                reasoning_tokens: tokens(usage.reasoning_tokens),
                cached_prompt_tokens: tokens(usage.cached_prompt_tokens),
                total_tokens: tokens(usage.total_tokens),
            },
            sent_at_ms: self.sent_at_ms,
            first_token_at_ms: self.first_token_at_ms,
            completed_at_ms: Some(self.completed_at_ms),
            http_status: self.http_status.map(i32::from),
            error: self.error,
        }
    }
}

/// Queue capacity, in sessions.
pub const QUEUE_CAPACITY: usize = 8_192;
/// Most sessions written per transaction.
pub const MAX_BATCH: usize = 256;

/// Handle to the recorder. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Pending>>,
    dropped: Arc<AtomicU64>,
    last_drop_log_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl Recorder {
    /// A recorder that discards everything (`storage.call_log = false`).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::default(),
            last_drop_log_ms: Arc::default(),
        }
    }

    /// Starts the writer task, which applies `content` (and, with `redact`,
    /// the secret redaction of [`crate::redact`]) to every record before
    /// writing it under the record's project.
    pub fn spawn(store: Store, content: ContentPolicy, redact: bool) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(write_loop(store, content, redact, rx));
        let recorder = Self {
            tx: Some(tx),
            dropped: Arc::default(),
            last_drop_log_ms: Arc::default(),
        };
        (recorder, task)
    }

    /// Queues a session of `project` for writing; never waits.
    pub fn record(&self, project: &ProjectId, session: RecordedSession) {
        self.send(Pending::Ready(project.clone(), Box::new(session)));
    }

    /// Queues a session that the writer task builds: copying bodies and
    /// serializing happen there, off the request's path. Never waits.
    pub fn record_with(
        &self,
        project: &ProjectId,
        build: impl FnOnce() -> RecordedSession + Send + 'static,
    ) {
        self.send(Pending::Build(project.clone(), Box::new(build)));
    }

    fn send(&self, pending: Pending) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(pending).is_err() {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = now_ms();
            let last = self.last_drop_log_ms.load(Ordering::Relaxed);
            if now - last >= 1_000 {
                self.last_drop_log_ms.store(now, Ordering::Relaxed);
                tracing::warn!(
                    dropped_total = total,
                    "call log queue full or closed; call records dropped"
                );
            }
        }
    }

    /// Records dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A queued record: ready, or built by the writer task.
enum Pending {
    Ready(ProjectId, Box<RecordedSession>),
    Build(ProjectId, Box<dyn FnOnce() -> RecordedSession + Send>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pending::Ready(..) => "Pending::Ready",
            Pending::Build(..) => "Pending::Build",
        })
    }
}

async fn write_loop(
    store: Store,
    content: ContentPolicy,
    redact: bool,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<RecordedSession> = Vec::with_capacity(MAX_BATCH);
    let mut batch_project: Option<ProjectId> = None;
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        for p in pending.drain(..) {
            let (project, mut session) = match p {
                Pending::Ready(project, session) => (project, *session),
                Pending::Build(project, build) => (project, build()),
            };
            if content == ContentPolicy::Metadata {
                session.calls.iter_mut().for_each(strip_content);
            } else if redact {
                session.calls.iter_mut().for_each(redact_call);
            }
            // One transaction per run of sessions of the same project.
            if batch_project.as_ref().is_some_and(|p| *p != project) {
                flush(&store, batch_project.as_ref(), &mut batch).await;
            }
            batch_project = Some(project);
            batch.push(session);
        }
        flush(&store, batch_project.as_ref(), &mut batch).await;
    }
}

async fn flush(store: &Store, project: Option<&ProjectId>, batch: &mut Vec<RecordedSession>) {
    if let (Some(project), false) = (project, batch.is_empty()) {
        if let Err(err) = store.record_sessions(project, batch).await {
            tracing::error!(error = %err, sessions = batch.len(), "failed to write call records");
        }
    }
    batch.clear();
}

/// Replaces common secret shapes in a call's stored text
/// (`[security] redact_secrets`; see [`crate::redact`]).
fn redact_call(call: &mut NewLlmCall) {
    call.request_json = crate::redact::redact(&call.request_json).into_owned();
    for text in [
        &mut call.response_text,
        &mut call.reasoning_text,
        &mut call.tool_calls_json,
        &mut call.error,
    ]
    .into_iter()
    .flatten()
    {
        if let std::borrow::Cow::Owned(clean) = crate::redact::redact(text) {
            *text = clean;
        }
    }
}

/// Removes the message text of `call` (content policy `metadata`): the
/// request keeps its top-level parameters but `messages` becomes
/// `"messagesOmitted": <count>`; response, reasoning and tool calls become
/// NULL. Usage, timings, status and error stay. A request that is not a JSON
/// object is replaced by `{}`.
pub fn strip_content(call: &mut NewLlmCall) {
    let stripped = match serde_json::from_str::<serde_json::Value>(&call.request_json) {
        Ok(serde_json::Value::Object(mut request)) => {
            if let Some(messages) = request.remove("messages") {
                let count = messages.as_array().map_or(0, Vec::len);
                request.insert("messagesOmitted".to_owned(), count.into());
            }
            serde_json::Value::Object(request).to_string()
        }
        _ => "{}".to_owned(),
    };
    call.request_json = stripped;
    call.response_text = None;
    call.reasoning_text = None;
    call.tool_calls_json = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_content_keeps_parameters_and_usage() {
        let mut call = NewLlmCall {
            id: "c".into(),
            session_id: "s".into(),
            model_id: "p/m".into(),
            provider: "p".into(),
            upstream_model: "m".into(),
            stream: true,
            request_json: r#"{"model":"p/m","temperature":0.5,"messages":[{"role":"user","content":"secret"},{"role":"assistant","content":"x"}]}"#.into(),
            response_text: Some("secret answer".into()),
            reasoning_text: Some("thinking".into()),
            tool_calls_json: Some("[]".into()),
            finish_reason: Some("stop".into()),
            usage: modelyard_store::UsageRow {
                total_tokens: Some(7),
                ..Default::default()
            },
            sent_at_ms: 1,
            first_token_at_ms: Some(2),
            completed_at_ms: Some(3),
            http_status: Some(200),
            error: None,
        };
        strip_content(&mut call);
        let request: serde_json::Value = serde_json::from_str(&call.request_json).unwrap();
        assert_eq!(
            request,
            serde_json::json!({"model": "p/m", "temperature": 0.5, "messagesOmitted": 2})
        );
        assert!(!call.request_json.contains("secret"));
        assert_eq!(call.response_text, None);
        assert_eq!(call.reasoning_text, None);
        assert_eq!(call.tool_calls_json, None);
        assert_eq!(call.usage.total_tokens, Some(7));
        assert_eq!(call.finish_reason.as_deref(), Some("stop"));

        call.request_json = "not json secret".into();
        strip_content(&mut call);
        assert_eq!(call.request_json, "{}");
    }
}
