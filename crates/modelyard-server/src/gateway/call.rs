//! The record of one gateway call, from send to finish. Whatever way the
//! request ends — success, upstream error, timeout, client gone — exactly
//! one session with one call is handed to the recorder.

use axum::body::Bytes;
use modelyard_upstream::openai::AnswerSummary;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::{CallRecord, Recorder};
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
    project: modelyard_store::ProjectId,
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
                project: app.project.clone(),
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

impl Draft {
    fn finish(
        self,
        status: Option<u16>,
        summary: AnswerSummary,
        first_token_at_ms: Option<i64>,
        error: Option<String>,
    ) {
        let completed_at_ms = now_ms();
        let recorder = self.recorder.clone();
        let project = self.project.clone();
        // Copying the request body happens in the writer task.
        let bytes = self.request.len() + crate::recorder::summary_bytes(&summary);
        recorder.record_with(&project, bytes, move || {
            CallRecord {
                operation: "gateway".to_owned(),
                conversation_id: None,
                turn_id: None,
                model_id: self.model_id,
                provider: self.provider,
                upstream_model: self.upstream_model,
                stream: self.stream,
                request_json: String::from_utf8_lossy(&self.request).into_owned(),
                summary,
                sent_at_ms: self.sent_at_ms,
                first_token_at_ms,
                completed_at_ms,
                http_status: status,
                error,
            }
            .into_session()
        });
    }
}
