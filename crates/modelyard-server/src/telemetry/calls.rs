//! Model calls: what one call records ([`CallObservation`]) through the
//! handles of its operation and deployment, resolved once and cached
//! ([`Metrics::call_handles`]).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::histogram::Histogram;

use super::labels::{fixed, label, operation_index, Labels, OPERATIONS};
use super::Metrics;

/// One model call as metrics see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallObservation {
    /// From send to the end of the answer (or the failure), seconds.
    pub duration_secs: f64,
    /// From send to the first output, seconds, when there was output.
    pub ttft_secs: Option<f64>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Reasoning tokens (part of the completion tokens).
    pub reasoning_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_input_tokens: u64,
    /// Whether it was streamed (time per output token is measured only
    /// then).
    pub stream: bool,
    /// `None` on success; else the upstream's HTTP status (or `None` inside
    /// `Some` when it never answered one).
    pub error: Option<Option<u16>>,
}

/// The pre-resolved handles of one (operation, deployment).
#[derive(Debug)]
pub struct CallHandles {
    metrics: Arc<Metrics>,
    labels: Labels<4>,
    duration: Histogram,
    ttft: Histogram,
    tpot: Histogram,
    /// input, output, reasoning, cached_input.
    tokens: [Histogram; 4],
}

impl CallHandles {
    /// Records one finished call (success or failure). Tokens are
    /// recorded for successful calls only; time per output token for
    /// successful streamed calls with more than one output token.
    pub fn observe(&self, call: &CallObservation) {
        let Some(status) = call.error else {
            self.duration.observe(call.duration_secs);
            if let Some(ttft) = call.ttft_secs {
                self.ttft.observe(ttft);
                if call.stream && call.output_tokens > 1 {
                    let per_token =
                        (call.duration_secs - ttft).max(0.0) / (call.output_tokens - 1) as f64;
                    self.tpot.observe(per_token);
                }
            }
            let [input, output, reasoning, cached] = &self.tokens;
            input.observe(call.input_tokens as f64);
            output.observe(call.output_tokens as f64);
            if call.reasoning_tokens > 0 {
                reasoning.observe(call.reasoning_tokens as f64);
            }
            if call.cached_input_tokens > 0 {
                cached.observe(call.cached_input_tokens as f64);
            }
            return;
        };
        // Failures are rare: their `error_type` series are looked up then.
        let error_type = match status {
            Some(status) => Cow::Owned(status.to_string()),
            None => Cow::Borrowed("_OTHER"),
        };
        let [op, provider, model, _] = self.labels.0.clone();
        self.metrics
            .call_duration
            .get_or_create(&Labels([
                op,
                provider,
                model,
                ("error_type", Some(error_type)),
            ]))
            .observe(call.duration_secs);
    }
}

/// Per deployment: handles per operation, made on first use.
#[derive(Debug, Default)]
pub(super) struct DeploymentEntry {
    ops: [OnceLock<Arc<CallHandles>>; OPERATIONS.len()],
}

impl Metrics {
    /// The handles of calls of `operation` to `deployment` (a resolved
    /// `provider/model`) of `provider`; `None` when recording is off.
    pub fn call_handles(
        self: &Arc<Self>,
        operation: &str,
        deployment: &str,
        provider: &str,
    ) -> Option<Arc<CallHandles>> {
        if !self.enabled {
            return None;
        }
        let entry = {
            let read = self.deployments.read().unwrap_or_else(|e| e.into_inner());
            read.get(deployment).cloned()
        };
        let entry = match entry {
            Some(entry) => entry,
            None => {
                let mut write = self.deployments.write().unwrap_or_else(|e| e.into_inner());
                Arc::clone(write.entry(Box::from(deployment)).or_default())
            }
        };
        let index = operation_index(operation);
        let handles = entry.ops[index].get_or_init(|| {
            let model = deployment
                .split_once('/')
                .map_or(deployment, |(_, model)| model);
            let labels = Labels([
                ("modelyard_operation", fixed(OPERATIONS[index])),
                ("gen_ai_provider_name", label(provider)),
                ("gen_ai_request_model", label(model)),
                ("error_type", None),
            ]);
            let [op, p, m, _] = labels.0.clone();
            let three = Labels([op.clone(), p.clone(), m.clone()]);
            let token = |kind: &str| {
                self.tokens
                    .get_or_create(&Labels([
                        ("gen_ai_operation_name", fixed("chat")),
                        op.clone(),
                        p.clone(),
                        m.clone(),
                        ("gen_ai_token_type", label(kind)),
                    ]))
                    .clone()
            };
            Arc::new(CallHandles {
                metrics: Arc::clone(self),
                duration: self.call_duration.get_or_create(&labels).clone(),
                ttft: self.ttft.get_or_create(&three).clone(),
                tpot: self.tpot.get_or_create(&three).clone(),
                tokens: [
                    token("input"),
                    token("output"),
                    token("reasoning"),
                    token("cached_input"),
                ],
                labels,
            })
        });
        Some(Arc::clone(handles))
    }
}
