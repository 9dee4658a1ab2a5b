//! The record of one gateway call, from send to finish. Whatever way the
//! request ends — success, upstream error, timeout, client gone — exactly
//! one session with one call is handed to the recorder.

use axum::body::Bytes;
use modelyard_store::{NewLlmCall, NewLlmSession, RecordedSession, UsageRow};
use modelyard_upstream::openai::AnswerSummary;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::Recorder;
use crate::registry::Target;

/// Message recorded when the client goes away before the answer ends.
pub const CLIENT_GONE: &str = "client disconnected before the response completed";

/// An in-progress call record.
#[derive(Debug)]
pub struct CallDraft {
    inner: Option<Draft>,
}

#[derive(Debug)]
struct Draft {
    recorder: Recorder,
    model_id: String,
    provider: String,
    upstream_model: String,
    stream: bool,
    request: Bytes,
    sent_at_ms: i64,
}

impl CallDraft {
    /// Starts a record at send time.
    pub fn start(app: &AppState, target: &Target, stream: bool, request: Bytes) -> Self {
        Self {
            inner: Some(Draft {
                recorder: app.recorder.clone(),
                model_id: target.resolution.model_id.to_string(),
                provider: target.provider.name().to_owned(),
                upstream_model: target.resolution.model_id.model().to_owned(),
                stream,
                request,
                sent_at_ms: now_ms(),
            }),
        }
    }

    /// Finishes successfully.
    pub fn complete(mut self, status: u16, summary: AnswerSummary, first_token_at_ms: Option<i64>) {
        if let Some(draft) = self.inner.take() {
            draft.finish(Some(status), summary, first_token_at_ms, None);
        }
    }

    /// Finishes with an error.
    pub fn fail(
        mut self,
        status: Option<u16>,
        summary: AnswerSummary,
        first_token_at_ms: Option<i64>,
        error: String,
    ) {
        if let Some(draft) = self.inner.take() {
            draft.finish(status, summary, first_token_at_ms, Some(error));
        }
    }
}

impl Drop for CallDraft {
    fn drop(&mut self) {
        if let Some(draft) = self.inner.take() {
            draft.finish(
                None,
                AnswerSummary::default(),
                None,
                Some(CLIENT_GONE.to_owned()),
            );
        }
    }
}

fn tokens(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl Draft {
    fn finish(
        self,
        status: Option<u16>,
        summary: AnswerSummary,
        first_token_at_ms: Option<i64>,
        error: Option<String>,
    ) {
        let recorder = self.recorder.clone();
        let completed_at_ms = now_ms();
        recorder.record_with(move || {
            self.build(status, summary, first_token_at_ms, error, completed_at_ms)
        });
    }

    fn build(
        self,
        status: Option<u16>,
        summary: AnswerSummary,
        first_token_at_ms: Option<i64>,
        error: Option<String>,
        completed_at_ms: i64,
    ) -> RecordedSession {
        let session_id = uuid::Uuid::now_v7().to_string();
        let usage = summary.usage;
        let call = NewLlmCall {
            id: uuid::Uuid::now_v7().to_string(),
            session_id: session_id.clone(),
            model_id: self.model_id,
            provider: self.provider,
            upstream_model: self.upstream_model,
            stream: self.stream,
            request_json: String::from_utf8_lossy(&self.request).into_owned(),
            response_text: summary.text,
            reasoning_text: summary.reasoning,
            tool_calls_json: summary.tool_calls.map(|v| v.to_string()),
            finish_reason: summary.finish_reason,
            usage: UsageRow {
                prompt_tokens: tokens(usage.prompt_tokens),
                completion_tokens: tokens(usage.completion_tokens),
                reasoning_tokens: tokens(usage.reasoning_tokens),
                cached_prompt_tokens: tokens(usage.cached_prompt_tokens),
                total_tokens: tokens(usage.total_tokens),
            },
            sent_at_ms: self.sent_at_ms,
            first_token_at_ms,
            completed_at_ms: Some(completed_at_ms),
            http_status: status.map(i32::from),
            error,
        };
        RecordedSession {
            session: NewLlmSession {
                id: session_id,
                operation: "gateway".to_owned(),
                parent_session_id: None,
                conversation_id: None,
                turn_id: None,
                created_at_ms: self.sent_at_ms,
            },
            calls: vec![call],
        }
    }
}
