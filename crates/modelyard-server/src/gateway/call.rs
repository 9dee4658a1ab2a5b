//! The record of one gateway call, from send to finish. Whatever way the
//! request ends — success, upstream error, timeout, client gone — exactly
//! one session with one call is handed to the recorder.

use modelyard_upstream::openai::{AnswerSummary, RewrittenCompletion};
use modelyard_upstream::UpstreamResponse;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::Recorder;
use crate::service::llm_call::{LlmCall, LlmCallError};

/// Message recorded when the client goes away before the answer ends.
pub(crate) const CLIENT_GONE: &str = "client disconnected before the response completed";

/// An in-progress call record: the call, recorded once when it finishes or
/// when the draft is dropped (the client went away).
#[derive(Debug)]
pub(crate) struct CallDraft {
    inner: Option<Draft>,
}

#[derive(Debug)]
struct Draft {
    recorder: Recorder,
    project: modelyard_store::ProjectId,
    call: LlmCall,
}

impl CallDraft {
    /// Starts a record of `call` (before it is sent).
    pub(crate) fn start(app: &AppState, call: LlmCall) -> Self {
        Self {
            inner: Some(Draft {
                recorder: app.recorder.clone(),
                project: app.project.clone(),
                call,
            }),
        }
    }

    /// Sends the call ([`LlmCall::send`]).
    ///
    /// # Errors
    /// As [`LlmCall::send`].
    pub(crate) async fn send(&mut self) -> Result<UpstreamResponse, LlmCallError> {
        match self.inner.as_mut() {
            Some(draft) => draft.call.send().await,
            None => Err(finished()),
        }
    }

    /// Reads a non-streamed answer ([`LlmCall::read_body`]).
    ///
    /// # Errors
    /// As [`LlmCall::read_body`].
    pub(crate) async fn read_body(
        &self,
        upstream: UpstreamResponse,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        match self.inner.as_ref() {
            Some(draft) => draft.call.read_body(upstream).await,
            None => Err(finished()),
        }
    }

    /// Finishes successfully.
    pub(crate) fn complete(mut self, summary: AnswerSummary, first_token_at_ms: Option<i64>) {
        if let Some(draft) = self.inner.take() {
            draft.finish(summary, first_token_at_ms, None);
        }
    }

    /// Finishes with an error.
    pub(crate) fn fail(
        mut self,
        summary: AnswerSummary,
        first_token_at_ms: Option<i64>,
        error: String,
    ) {
        if let Some(draft) = self.inner.take() {
            draft.finish(summary, first_token_at_ms, Some(error));
        }
    }
}

/// A draft is finished only by consuming it, so an open one always has its
/// call; this is the error should that ever change.
fn finished() -> LlmCallError {
    LlmCallError::Closed("the call was already recorded".into())
}

impl Drop for CallDraft {
    fn drop(&mut self) {
        if let Some(draft) = self.inner.take() {
            draft.finish(AnswerSummary::default(), None, Some(CLIENT_GONE.to_owned()));
        }
    }
}

impl Draft {
    fn finish(
        mut self,
        summary: AnswerSummary,
        first_token_at_ms: Option<i64>,
        error: Option<String>,
    ) {
        let completed_at_ms = now_ms();
        self.call.set_first_token_at_ms(first_token_at_ms);
        let project = self.project.clone();
        // Copying the request body happens in the writer task.
        let bytes = self.call.request().len() + crate::recorder::summary_bytes(&summary);
        let call = self.call;
        self.recorder.record_with(&project, bytes, move || {
            call.record_at(summary, error, completed_at_ms)
                .into_session()
        });
    }
}
