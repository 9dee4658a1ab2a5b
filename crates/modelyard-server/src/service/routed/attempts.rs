//! Sending a request by its [`Plan`], attempt by attempt, recording each
//! failed attempt.

use std::sync::Arc;

use modelyard_upstream::openai::AnswerSummary;
use modelyard_upstream::UpstreamResponse;

use super::{Plan, RoutedError};
use crate::recorder::CallRecord;
use crate::registry::Target;
use crate::service::llm_call::{LlmCall, LlmCallError};

/// Sends a request by `plan`: each attempt's call is built by `build` for
/// its target, held in `current` while it is sent (so a caller that stops
/// waiting can still record it), and moved to `failed` as a record when it
/// fails. Returns the upstream's 2xx answer; `current` then holds its call.
///
/// # Errors
/// [`RoutedError`]: the last error, or why no deployment could serve.
pub async fn send(
    plan: &mut Plan,
    current: &mut Option<LlmCall>,
    failed: &mut Vec<CallRecord>,
    build: &mut (dyn FnMut(&Target) -> Result<LlmCall, LlmCallError> + Send),
) -> Result<UpstreamResponse, RoutedError> {
    let mut failed_last: Option<Arc<str>> = None;
    loop {
        let Some(pick) = plan.next().await else {
            return Err(plan.error());
        };
        if let Some(deployment) = failed_last.take() {
            plan.router.metrics.retry(&deployment);
        }
        let call = current.insert(pick.call(build).map_err(RoutedError::Call)?);
        let sent = std::time::Instant::now();
        let answer = call.send().await;
        plan.upstream_wait += sent.elapsed();
        let metrics = &plan.router.metrics;
        if metrics.enabled() {
            let status = match (&answer, call.status()) {
                (_, Some(status)) => crate::telemetry::status_text(status),
                (Err(LlmCallError::Disabled { .. }), None) => "disabled".into(),
                (Err(error), None) if error.is_timeout() => "timeout".into(),
                (Err(LlmCallError::Send(_)), None) => "connect".into(),
                _ => "error".into(),
            };
            metrics.attempt(&pick.deployment, pick.target.provider.name(), &status);
        }
        match answer {
            Ok(upstream) => {
                plan.succeeded(&pick);
                return Ok(upstream);
            }
            Err(error) => {
                if let Some(call) = current.take() {
                    failed.push(call.record(AnswerSummary::default(), Some(error.to_string())));
                }
                if !plan.failed(&pick, &error) {
                    return Err(RoutedError::Call(error));
                }
                failed_last = Some(Arc::clone(&pick.deployment));
            }
        }
    }
}

/// Sends a non-streamed request by `plan` and reads its answer: the
/// summary (or why there is none) and the records of every attempt.
pub async fn complete(
    mut plan: Plan,
    build: &mut (dyn FnMut(&Target) -> Result<LlmCall, LlmCallError> + Send),
) -> (Result<AnswerSummary, RoutedError>, Vec<CallRecord>) {
    let mut current = None;
    let mut records = Vec::new();
    let outcome = match send(&mut plan, &mut current, &mut records, build).await {
        Ok(upstream) => match current.as_mut() {
            Some(call) => {
                let read = call.read_body(upstream).await;
                match read {
                    Ok(rewritten) => {
                        records.push(call.record(rewritten.summary.clone(), None));
                        Ok(rewritten.summary)
                    }
                    Err(error) => {
                        records
                            .push(call.record(AnswerSummary::default(), Some(error.to_string())));
                        Err(RoutedError::Call(error))
                    }
                }
            }
            None => Err(plan.error()),
        },
        Err(error) => Err(error),
    };
    (outcome, records)
}
