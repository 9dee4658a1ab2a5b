//! The record of one gateway request, from its first attempt to its finish.
//! Whatever way the request ends — success, upstream error, timeout, client
//! gone — exactly one session is handed to the recorder, with one call per
//! attempt (retries and fallbacks first, then the one that answered or
//! failed last).

use modelyard_core::llm_config::ConfigSnapshot;
use modelyard_upstream::openai::{AnswerSummary, RewrittenCompletion};
use modelyard_upstream::UpstreamResponse;

use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::{CallRecord, Recorder};
use crate::registry::Target;
use crate::service::llm_call::{LlmCall, LlmCallError};
use crate::service::routed::{self, Plan, RoutedError};

/// Message recorded when the client goes away before the answer ends.
pub(crate) const CLIENT_GONE: &str = "client disconnected before the response completed";

/// An in-progress request record: its attempts, recorded once when it
/// finishes or when the draft is dropped (the client went away).
#[derive(Debug)]
pub(crate) struct CallDraft {
    inner: Option<Draft>,
}

#[derive(Debug)]
struct Draft {
    recorder: Recorder,
    project: modelyard_store::ProjectId,
    /// The attempt in flight (or the one that answered).
    current: Option<LlmCall>,
    /// Finished attempts, in order.
    earlier: Vec<CallRecord>,
    /// The request's `x-request-id`, stored on its session.
    request_id: Option<String>,
    /// The request's hold on its budgets and rate limits, settled with
    /// what its calls spent when it is recorded.
    admission: Option<crate::quota::Admission>,
    /// The caller's API key id, stored on its session.
    key_id: Option<String>,
    /// Prices the request's calls when its admission is settled.
    pricing: std::sync::Arc<crate::pricing::Pricing>,
    /// The LLM config snapshot the request ran with, stored on its session.
    config: Option<ConfigSnapshot>,
}

impl CallDraft {
    /// Starts a record (before the first attempt is sent) of the request
    /// with `request_id`.
    pub(crate) fn start(app: &AppState, request_id: Option<String>) -> Self {
        Self {
            inner: Some(Draft {
                recorder: app.recorder.clone(),
                project: app.project.clone(),
                current: None,
                earlier: Vec::new(),
                request_id,
                admission: app.take_admission(),
                key_id: app.key_id.clone(),
                pricing: std::sync::Arc::clone(&app.pricing),
                config: None,
            }),
        }
    }

    /// The same draft, its session recording `config` (the LLM config the
    /// request named, `x-modelyard-llm`).
    #[must_use]
    pub(crate) fn with_config(mut self, config: Option<ConfigSnapshot>) -> Self {
        if let Some(draft) = self.inner.as_mut() {
            draft.config = config;
        }
        self
    }

    /// Sends the request by `plan` ([`routed::send`]): on success the call
    /// that answered is this draft's current one.
    ///
    /// # Errors
    /// As [`routed::send`].
    pub(crate) async fn send(
        &mut self,
        plan: &mut Plan,
        build: &mut (dyn FnMut(&Target) -> Result<LlmCall, LlmCallError> + Send),
    ) -> Result<UpstreamResponse, RoutedError> {
        match self.inner.as_mut() {
            Some(draft) => routed::send(plan, &mut draft.current, &mut draft.earlier, build).await,
            None => Err(RoutedError::Call(finished())),
        }
    }

    /// The call that answered.
    pub(crate) fn call(&self) -> Option<&LlmCall> {
        self.inner.as_ref()?.current.as_ref()
    }

    /// Reads a non-streamed answer ([`LlmCall::read_body`]).
    ///
    /// # Errors
    /// As [`LlmCall::read_body`].
    pub(crate) async fn read_body(
        &mut self,
        upstream: UpstreamResponse,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        match self.inner.as_mut().and_then(|d| d.current.as_mut()) {
            Some(call) => call.read_body(upstream).await,
            None => Err(finished()),
        }
    }

    /// Reads a non-streamed Messages answer of a native provider
    /// ([`LlmCall::read_message`]), `model` set to `client_model`.
    ///
    /// # Errors
    /// As [`LlmCall::read_message`].
    pub(crate) async fn read_message(
        &mut self,
        upstream: UpstreamResponse,
        client_model: &str,
    ) -> Result<RewrittenCompletion, LlmCallError> {
        match self.inner.as_mut().and_then(|d| d.current.as_mut()) {
            Some(call) => call.read_message(upstream, client_model).await,
            None => Err(finished()),
        }
    }

    /// Finishes successfully.
    pub(crate) fn complete(mut self, summary: AnswerSummary, first_token_at_ms: Option<i64>) {
        if let Some(draft) = self.inner.take() {
            draft.finish(summary, first_token_at_ms, None);
        }
    }

    /// Finishes with an error (of the current call; when every attempt
    /// failed before answering, their records already say why).
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
/// state; this is the error should that ever change.
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
        let client_gone = error.as_deref() == Some(CLIENT_GONE);
        let project = self.project.clone();
        let mut earlier = std::mem::take(&mut self.earlier);
        let last = match self.current.take() {
            Some(mut call) => {
                call.set_first_token_at_ms(first_token_at_ms);
                call.observe(&summary, error.is_some(), completed_at_ms);
                Last::Call(Box::new((call, summary, error)))
            }
            None => match earlier.pop() {
                Some(record) => Last::Record(Box::new(record)),
                // No attempt was made: nothing to record.
                None => return,
            },
        };
        let request_id = self.request_id.take();
        let admission = self.admission.take();
        if admission.is_none() {
            // No limits apply: nothing to settle.
        } else if client_gone {
            crate::quota::settle(admission, &self.pricing, crate::quota::Spent::ClientGone);
        } else {
            let mut spent: Vec<(String, modelyard_core::Usage)> = earlier
                .iter()
                .map(|r| (r.model_id.clone(), r.summary.usage))
                .collect();
            spent.push(match &last {
                Last::Call(last) => (
                    last.0.target().resolution.model_id.to_string(),
                    last.1.usage,
                ),
                Last::Record(record) => (record.model_id.clone(), record.summary.usage),
            });
            let calls: Vec<crate::quota::CallUsage<'_>> = spent
                .iter()
                .map(|(model_id, usage)| crate::quota::CallUsage {
                    model_id,
                    usage: *usage,
                })
                .collect();
            crate::quota::settle(admission, &self.pricing, crate::quota::Spent::Calls(&calls));
        }
        let key_id = self.key_id.take();
        let config = self.config.take();
        // Copying the request body happens in the writer task.
        let bytes = earlier.iter().map(|r| r.request_json.len()).sum::<usize>()
            + match &last {
                Last::Call(last) => {
                    last.0.request().len() + crate::recorder::summary_bytes(&last.1)
                }
                Last::Record(record) => record.request_json.len(),
            };
        self.recorder.record_with(&project, bytes, move || {
            let last = match last {
                Last::Call(last) => {
                    let (call, summary, error) = *last;
                    call.record_at(summary, error, completed_at_ms)
                }
                Last::Record(record) => *record,
            };
            let mut session = CallRecord::session_of(earlier, last);
            session.session.request_id = request_id;
            session.session.key_id = key_id;
            session.session.config = config;
            session
        });
    }
}

enum Last {
    Call(Box<(LlmCall, AnswerSummary, Option<String>)>),
    Record(Box<CallRecord>),
}
