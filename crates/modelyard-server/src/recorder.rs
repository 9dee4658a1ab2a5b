//! The call recorder: gateway handlers hand finished call records to a
//! bounded channel; one background task writes them to the store in batches
//! (one transaction per batch; once a record arrives the task waits
//! [`BATCH_LINGER`] for more, so that batches are large under load). A
//! proxied token never waits for the database. The queue is bounded in
//! records ([`QUEUE_CAPACITY`]) and in bytes of request / response text
//! ([`QUEUE_BYTES`]); a record that does not fit is dropped and counted,
//! never blocking the request.
//!
//! A batch that fails to write is tried again ([`WRITE_ATTEMPTS`] tries in
//! all, [`RETRY_FIRST`] doubling between them) while the error may pass (the
//! store down or locked); then its records are dropped and counted as
//! failed. Drops and failures are logged at most once per second and shown
//! on `GET /health` ([`Recorder::stats`]).
//!
//! Durability: records are written after the response ends; a crash loses
//! at most what was still queued. Shutdown drains the queue.
//!
//! With `storage.content = "metadata"` the writer task strips message text
//! from every record before it is written (see [`strip_content`]).
//!
//! Costs: the writer task prices every call whose cost the caller left
//! unset ([`NewLlmCall::cost`] without a source) from its model id and usage
//! ([`crate::pricing::Pricing`]), so the request's path does no pricing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use modelyard_store::{NewLlmCall, NewLlmSession, ProjectId, RecordedSession, Store, UsageRow};
use modelyard_upstream::openai::AnswerSummary;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::config::ContentPolicy;
use crate::pricing::{usage_of_row, Pricing};

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
    /// Attempt number within its request, from 1.
    pub attempt: u32,
    /// The route the request named, `None` for one deployment.
    pub route: Option<String>,
}

fn tokens(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl CallRecord {
    /// The session (new UUIDv7 id) holding this one call.
    pub fn into_session(self) -> RecordedSession {
        Self::session_of(Vec::new(), self)
    }

    /// The session (new UUIDv7 id) of one request: its `earlier` attempts
    /// (retries, fallbacks) in order, then `last`; the session's operation,
    /// conversation and turn are `last`'s.
    pub fn session_of(earlier: Vec<CallRecord>, last: CallRecord) -> RecordedSession {
        let session_id = uuid::Uuid::now_v7().to_string();
        let session = NewLlmSession {
            id: session_id.clone(),
            operation: last.operation.clone(),
            parent_session_id: None,
            conversation_id: last.conversation_id.clone(),
            turn_id: last.turn_id.clone(),
            created_at_ms: earlier.first().map_or(last.sent_at_ms, |c| c.sent_at_ms),
            request_id: None,
            key_id: None,
            config: None,
        };
        let mut calls = Vec::with_capacity(earlier.len() + 1);
        calls.extend(earlier.into_iter().map(|c| c.into_call(&session_id)));
        calls.push(last.into_call(&session_id));
        RecordedSession { session, calls }
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
                cache_creation_tokens: tokens(usage.cache_creation_tokens),
                total_tokens: tokens(usage.total_tokens),
            },
            sent_at_ms: self.sent_at_ms,
            first_token_at_ms: self.first_token_at_ms,
            completed_at_ms: Some(self.completed_at_ms),
            http_status: self.http_status.map(i32::from),
            error: self.error,
            attempt: i32::try_from(self.attempt).unwrap_or(i32::MAX),
            route: self.route,
            cost: modelyard_store::CallCost::default(),
        }
    }
}

/// Queue capacity, in sessions.
pub const QUEUE_CAPACITY: usize = 8_192;
/// Queue capacity, in bytes of request and response text (64 MiB): past
/// it, records are dropped like on a full queue.
pub const QUEUE_BYTES: u64 = 64 * 1024 * 1024;
/// Most sessions written per transaction.
pub const MAX_BATCH: usize = 256;
/// How long the writer waits, once a record has arrived, for more before it
/// writes them in one transaction (unless [`MAX_BATCH`] are already
/// there). Under load one transaction then carries dozens of sessions
/// instead of a few: the call log's CPU per call is mostly what each
/// commit writes (the WAL pages of two tables and their indexes), so
/// fewer, larger commits cost less per call. A record reaches the database
/// at most this much later; like Kafka's `linger.ms`.
pub const BATCH_LINGER: Duration = Duration::from_millis(10);
/// Tries to write one batch, the first included.
pub const WRITE_ATTEMPTS: u32 = 5;
/// Wait before the second try of a batch; doubles after each failure.
pub const RETRY_FIRST: Duration = Duration::from_millis(250);

/// The call log's counters since start, as `GET /health` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallLogStats {
    /// Sessions accepted and not yet written (queued or being written).
    pub queued: u64,
    /// Bytes of text those sessions hold.
    pub queued_bytes: u64,
    /// Sessions dropped because the queue was full (records or bytes).
    pub dropped: u64,
    /// Sessions dropped because their batch failed to write after
    /// [`WRITE_ATTEMPTS`] tries.
    pub failed: u64,
}

/// Counters shared by the handle and the writer task.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    queued_bytes: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    last_log_ms: AtomicI64,
}

impl Counters {
    /// Counts `n` sessions lost (`failed` or `dropped`), logging at most
    /// once per second.
    fn lost(&self, n: u64, failed: bool) {
        let counter = if failed { &self.failed } else { &self.dropped };
        counter.fetch_add(n, Ordering::Relaxed);
        let now = now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now - last >= 1_000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = self.dropped.load(Ordering::Relaxed),
                failed_total = self.failed.load(Ordering::Relaxed),
                "call records lost (queue full, or the store failed to write them)"
            );
        }
    }

    /// `n` sessions of `bytes` left the queue (written or lost).
    fn done(&self, n: u64, bytes: u64) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Handle to the recorder. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<(u64, Pending)>>,
    counters: Arc<Counters>,
    max_bytes: u64,
}

impl Recorder {
    /// A recorder that discards everything (`storage.call_log = false`).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            counters: Arc::default(),
            max_bytes: QUEUE_BYTES,
        }
    }

    /// Starts the writer task, which prices every call not priced yet
    /// with `pricing`, applies `content` (and, with `redact`, the secret
    /// redaction of [`crate::redact`]) to every record before writing it
    /// under the record's project.
    pub fn spawn(
        store: Store,
        content: ContentPolicy,
        redact: bool,
        pricing: Arc<Pricing>,
    ) -> (Self, JoinHandle<()>) {
        let (recorder, rx) = Self::with_limits(QUEUE_CAPACITY, QUEUE_BYTES);
        let counters = Arc::clone(&recorder.counters);
        let writer = Writer {
            store,
            content,
            redact,
            pricing: Some(pricing),
        };
        let task = tokio::spawn(write_loop(writer, rx, counters));
        (recorder, task)
    }

    /// A handle whose queue holds `records` sessions and `bytes` of text,
    /// and the queue's receiving end.
    fn with_limits(records: usize, bytes: u64) -> (Self, mpsc::Receiver<(u64, Pending)>) {
        let (tx, rx) = mpsc::channel(records);
        let recorder = Self {
            tx: Some(tx),
            counters: Arc::default(),
            max_bytes: bytes,
        };
        (recorder, rx)
    }

    /// Queues a session of `project` for writing; never waits.
    pub fn record(&self, project: &ProjectId, session: RecordedSession) {
        let bytes = session.calls.iter().map(call_bytes).sum();
        self.send(bytes, Pending::Ready(project.clone(), Box::new(session)));
    }

    /// Queues a session that the writer task builds: copying bodies and
    /// serializing happen there, off the request's path. `bytes` is about
    /// the text the session will hold (request and response), for the
    /// queue's byte bound. Never waits.
    pub fn record_with(
        &self,
        project: &ProjectId,
        bytes: usize,
        build: impl FnOnce() -> RecordedSession + Send + 'static,
    ) {
        self.send(
            bytes as u64,
            Pending::Build(project.clone(), Box::new(build)),
        );
    }

    fn send(&self, bytes: u64, pending: Pending) {
        let Some(tx) = &self.tx else { return };
        let counters = &self.counters;
        let held = counters.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        // One record larger than the whole bound still goes into an empty queue.
        if held > 0 && held + bytes > self.max_bytes {
            counters.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            counters.lost(1, false);
            return;
        }
        counters.queued.fetch_add(1, Ordering::Relaxed);
        if tx.try_send((bytes, pending)).is_err() {
            counters.done(1, bytes);
            counters.lost(1, false);
        }
    }

    /// Records dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// The call log's counters.
    pub fn stats(&self) -> CallLogStats {
        let c = &self.counters;
        CallLogStats {
            queued: c.queued.load(Ordering::Relaxed),
            queued_bytes: c.queued_bytes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// Bytes of text a call holds (request, response, reasoning, tool calls, error).
fn call_bytes(call: &NewLlmCall) -> u64 {
    let optional = [
        &call.response_text,
        &call.reasoning_text,
        &call.tool_calls_json,
        &call.error,
    ]
    .into_iter()
    .flatten()
    .map(String::len)
    .sum::<usize>();
    (call.request_json.len() + optional) as u64
}

/// Bytes of text an answer summary holds, for [`Recorder::record_with`].
pub fn summary_bytes(summary: &AnswerSummary) -> usize {
    summary.text.as_ref().map_or(0, String::len)
        + summary.reasoning.as_ref().map_or(0, String::len)
        + summary
            .tool_calls
            .as_ref()
            .map_or(0, |v| v.to_string().len())
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

/// What the writer task applies to each record, and where it writes.
struct Writer {
    store: Store,
    content: ContentPolicy,
    redact: bool,
    /// `None` leaves costs as the callers set them (tests).
    pricing: Option<Arc<Pricing>>,
}

async fn write_loop(
    writer: Writer,
    mut rx: mpsc::Receiver<(u64, Pending)>,
    counters: Arc<Counters>,
) {
    let Writer {
        store,
        content,
        redact,
        pricing,
    } = writer;
    let mut pending = Vec::with_capacity(MAX_BATCH);
    let mut batch = Batch::default();
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        if pending.len() < MAX_BATCH {
            tokio::time::sleep(BATCH_LINGER).await;
            while pending.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(record) => pending.push(record),
                    Err(_) => break,
                }
            }
        }
        for (bytes, p) in pending.drain(..) {
            let (project, mut session) = match p {
                Pending::Ready(project, session) => (project, *session),
                Pending::Build(project, build) => (project, build()),
            };
            if let Some(pricing) = &pricing {
                for call in &mut session.calls {
                    if call.cost.price_source.is_none() {
                        call.cost = pricing.cost_of(&call.model_id, &usage_of_row(&call.usage));
                    }
                }
            }
            if content == ContentPolicy::Metadata {
                session.calls.iter_mut().for_each(strip_content);
            } else if redact {
                session.calls.iter_mut().for_each(redact_call);
            }
            // One transaction per run of sessions of the same project.
            if batch.project.as_ref().is_some_and(|p| *p != project) {
                batch.flush(&store, &counters).await;
            }
            batch.project = Some(project);
            batch.sessions.push(session);
            batch.bytes += bytes;
        }
        batch.flush(&store, &counters).await;
    }
}

/// Sessions of one project written in one transaction.
#[derive(Default)]
struct Batch {
    project: Option<ProjectId>,
    sessions: Vec<RecordedSession>,
    bytes: u64,
}

impl Batch {
    /// Writes the batch, trying again while the error may pass; counts the
    /// sessions as failed after [`WRITE_ATTEMPTS`] tries.
    async fn flush(&mut self, store: &Store, counters: &Counters) {
        let n = self.sessions.len() as u64;
        if let (Some(project), false) = (&self.project, self.sessions.is_empty()) {
            let mut delay = RETRY_FIRST;
            for attempt in 1..=WRITE_ATTEMPTS {
                let err = match store.record_sessions(project, &self.sessions).await {
                    Ok(()) => break,
                    Err(err) => err,
                };
                // Rows the database refuses stay refused: do not try again.
                let lasting = matches!(
                    err,
                    modelyard_store::StoreError::Duplicate { .. }
                        | modelyard_store::StoreError::MissingReference { .. }
                        | modelyard_store::StoreError::InvalidInput { .. }
                );
                if lasting || attempt == WRITE_ATTEMPTS {
                    tracing::error!(error = %err, sessions = n, attempt, "failed to write call records; dropped");
                    counters.lost(n, true);
                    break;
                }
                tracing::warn!(error = %err, sessions = n, attempt, retry_in_ms = delay.as_millis() as u64, "failed to write call records; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        counters.done(n, self.bytes);
        self.sessions.clear();
        self.bytes = 0;
    }
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

/// Request members that hold content, removed under content policy
/// `metadata`: chat `messages`, embeddings `input`, legacy completion
/// `prompt` (and `suffix`), rerank `query` and `documents` (or `texts`),
/// and a Messages request's top-level `system` (passed through to a
/// provider that speaks Messages natively).
const CONTENT_MEMBERS: &[&str] = &[
    "messages",
    "system",
    "input",
    "prompt",
    "suffix",
    "query",
    "documents",
    "texts",
];

/// Removes the message text of `call` (content policy `metadata`): the
/// request keeps its top-level parameters but each content member
/// ([`CONTENT_MEMBERS`]) becomes `"<member>Omitted": <count>` (an array's
/// length, 1 for anything else: `"messagesOmitted": 2`,
/// `"inputOmitted": 3`); response, reasoning and tool calls become NULL.
/// Usage, timings, status and error stay. A request that is not a JSON
/// object is replaced by `{}`.
pub fn strip_content(call: &mut NewLlmCall) {
    let stripped = match serde_json::from_str::<serde_json::Value>(&call.request_json) {
        Ok(serde_json::Value::Object(mut request)) => {
            for member in CONTENT_MEMBERS {
                if let Some(content) = request.remove(*member) {
                    let count = content.as_array().map_or(1, Vec::len);
                    request.insert(format!("{member}Omitted"), count.into());
                }
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
mod tests;
