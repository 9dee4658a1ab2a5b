//! A call's outcome: its metrics and span ([`LlmCall::observe`]) and its
//! call-log record ([`LlmCall::record`]).

use std::borrow::Cow;
use std::sync::Arc;

use modelyard_upstream::openai::AnswerSummary;

use super::{LlmCall, LlmCallError};
use crate::clock::now_ms;
use crate::recorder::CallRecord;

impl LlmCall {
    /// Sets the metrics handles its record is counted into
    /// ([`Self::observe`]).
    pub fn set_metrics(&mut self, handles: Option<Arc<crate::telemetry::CallHandles>>) {
        self.metrics = handles;
    }

    /// Starts this call's span with `traces` (nothing when tracing is off):
    /// a child of the current context's span; the request carries its
    /// `traceparent`, [`Self::observe`] ends it.
    pub fn trace(&mut self, traces: &crate::traces::Traces, deployment: &str) {
        if !traces.enabled() {
            return;
        }
        self.span = traces.call_span(crate::traces::CallStart {
            operation_name: self.endpoint.operation_name(),
            purpose: &self.purpose.operation,
            model: self.target.resolution.model_id.model(),
            provider: self.target.provider.name(),
            base_url: &self.target.provider.config.base_url,
            deployment,
            attempt: self.attempt,
            route: self.route.as_deref(),
            conversation_id: self.purpose.conversation_id.as_deref(),
            request: &self.request,
        });
    }

    /// Counts this call, finished at `completed_at_ms` with `summary`
    /// (`failed`: it ended with an error), into its metrics handles, if
    /// any. [`Self::record`] does this; a caller that builds its record
    /// later with [`Self::record_at`] calls it when the call ends.
    pub fn observe(&self, summary: &AnswerSummary, failed: bool, completed_at_ms: i64) {
        if let Some(span) = &self.span {
            let error_type = self
                .status
                .filter(|s| !(200..300).contains(s))
                .map(|s| Cow::Owned(s.to_string()))
                .unwrap_or(Cow::Borrowed("_OTHER"));
            span.end(&crate::traces::CallEnd {
                input_tokens: summary.usage.prompt_tokens,
                output_tokens: summary.usage.completion_tokens,
                finish_reason: summary.finish_reason.as_deref(),
                text: summary.text.as_deref(),
                // An error type noted when it happened (`timeout`, …) stays.
                error_type: failed.then_some(error_type.as_ref()),
            });
        }
        let Some(handles) = &self.metrics else {
            return;
        };
        let usage = &summary.usage;
        let secs = |ms: i64| ms.max(0) as f64 / 1000.0;
        handles.observe(&crate::telemetry::CallObservation {
            duration_secs: secs(completed_at_ms - self.sent_at_ms),
            ttft_secs: self.first_token_at_ms.map(|at| secs(at - self.sent_at_ms)),
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
            reasoning_tokens: usage.reasoning_tokens.unwrap_or(0),
            cached_input_tokens: usage.cached_prompt_tokens.unwrap_or(0),
            stream: self.stream,
            error: failed.then_some(self.status.filter(|s| !(200..300).contains(s))),
        });
    }

    /// The call-log record of this call, finished now with `summary` and
    /// `error`.
    pub fn record(&self, summary: AnswerSummary, error: Option<String>) -> CallRecord {
        let completed_at_ms = now_ms();
        self.observe(&summary, error.is_some(), completed_at_ms);
        self.record_at(summary, error, completed_at_ms)
    }

    /// [`Self::record`] finished at `completed_at_ms` (for a record built
    /// later, off the hot path; not counted in metrics: see
    /// [`Self::observe`]).
    pub fn record_at(
        &self,
        summary: AnswerSummary,
        error: Option<String>,
        completed_at_ms: i64,
    ) -> CallRecord {
        CallRecord {
            operation: self.purpose.operation.clone().into_owned(),
            conversation_id: self.purpose.conversation_id.clone(),
            turn_id: self.purpose.turn_id.clone(),
            model_id: self.target.resolution.model_id.to_string(),
            provider: self.target.provider.name().to_owned(),
            upstream_model: self.target.resolution.model_id.model().to_owned(),
            stream: self.stream,
            request_json: String::from_utf8_lossy(&self.request).into_owned(),
            summary,
            sent_at_ms: self.sent_at_ms,
            first_token_at_ms: self.first_token_at_ms,
            completed_at_ms,
            http_status: self.status,
            error,
            attempt: self.attempt,
            route: self.route.as_deref().map(str::to_owned),
        }
    }

    /// Sends a non-streamed request and reads its answer: the summary (or
    /// why there is none) and the call's record.
    pub async fn complete(mut self) -> (Result<AnswerSummary, LlmCallError>, CallRecord) {
        let outcome = match self.send().await {
            Ok(upstream) => self.read_body(upstream).await.map(|r| r.summary),
            Err(error) => Err(error),
        };
        let record = match &outcome {
            Ok(summary) => self.record(summary.clone(), None),
            Err(error) => self.record(AnswerSummary::default(), Some(error.to_string())),
        };
        (outcome, record)
    }
}
