//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4), built
//! on `prometheus-client`.
//!
//! Names follow the OpenTelemetry GenAI semantic conventions where they
//! exist, written Prometheus-style (dots → underscores, the unit as a
//! suffix): `gen_ai_client_operation_duration_seconds`,
//! `gen_ai_client_token_usage` (label `gen_ai_token_type`: `input`,
//! `output`, plus `reasoning` and `cached_input`),
//! `gen_ai_server_time_to_first_token_seconds` and
//! `gen_ai_server_time_per_output_token_seconds`. Modelyard's own are
//! `modelyard_*`.
//!
//! Cardinality is bounded: labels are route patterns of the route table,
//! configured provider names, deployments and routes that resolved (never a
//! model string a client invented), operation names from a fixed list,
//! HTTP methods and statuses; `project` only with
//! `[telemetry] per_project_metrics = true`.
//!
//! The hot path: a call's handles (one histogram per token type, duration,
//! TTFT, TPOT) are resolved once per deployment and operation and cached;
//! recording is atomic adds. Nothing is recorded per token. With
//! `[telemetry] metrics = false` every recording function returns at once.
//! Gauges read from other parts (providers, streams, turns, the call log)
//! are set when `/metrics` is scraped ([`Metrics::encode`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::config::TelemetryConfig;

/// `Content-Type` of `/metrics`: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Operation names metrics label (`modelyard_operation`); any other is
/// `other`, so the label stays bounded.
const OPERATIONS: [&str; 7] = [
    "gateway",
    "messages",
    "chat",
    "advisor",
    "title",
    "compaction",
    "other",
];

fn operation_index(operation: &str) -> usize {
    OPERATIONS
        .iter()
        .position(|o| *o == operation)
        .unwrap_or(OPERATIONS.len() - 1)
}

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A label set whose members are written in order, `None` values left out.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Labels<const N: usize>([(&'static str, Option<Cow<'static, str>>); N]);

impl<const N: usize> EncodeLabelSet for Labels<N> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, value) in &self.0 {
            if let Some(value) = value {
                use prometheus_client::encoding::EncodeLabel;
                (*name, value.as_ref()).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

/// A label value copied (for names known only at run time).
fn label(value: &str) -> Option<Cow<'static, str>> {
    Some(Cow::Owned(value.to_owned()))
}

/// A label value that needs no copy.
fn fixed(value: &'static str) -> Option<Cow<'static, str>> {
    Some(Cow::Borrowed(value))
}

/// Seconds buckets for request and model-call durations (5 ms … 120 s).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Seconds buckets for time to first token (the GenAI semconv's advice).
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Seconds buckets for time per output token (the GenAI semconv's advice).
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Token-count buckets (the GenAI semconv's advice: powers of 4 up to 4^13).
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Seconds buckets for the gateway's own time (50 µs … 1 s).
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

fn histograms<const N: usize>(make: fn() -> Histogram) -> HistogramFamily<N> {
    Family::new_with_constructor(make)
}

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
struct DeploymentEntry {
    ops: [OnceLock<Arc<CallHandles>>; OPERATIONS.len()],
}

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    per_project: bool,
    registry: Registry,
    scrape: Mutex<()>,
    http_requests: Family<Labels<4>, Counter>,
    http_duration: HistogramFamily<2>,
    call_duration: HistogramFamily<4>,
    tokens: HistogramFamily<5>,
    ttft: HistogramFamily<3>,
    tpot: HistogramFamily<3>,
    attempts: Family<Labels<3>, Counter>,
    retries: Family<Labels<1>, Counter>,
    fallbacks: Family<Labels<1>, Counter>,
    cooldowns: Family<Labels<1>, Counter>,
    overhead: HistogramFamily<1>,
    provider_up: Family<Labels<1>, Gauge>,
    models: Family<Labels<1>, Gauge>,
    open_streams: Gauge,
    running_turns: Gauge,
    queue_depth: Gauge,
    queue_bytes: Gauge,
    dropped: Counter,
    failed: Counter,
    bus: Family<Labels<1>, Gauge>,
    deployments: RwLock<HashMap<Box<str>, Arc<DeploymentEntry>>>,
}

/// What `/metrics` reads from the rest of the server at scrape time.
#[derive(Debug, Default, Clone)]
pub struct ScrapeState {
    /// `(provider, up, models listed)` for each configured provider.
    pub providers: Vec<(String, bool, u64)>,
    /// Open SSE responses.
    pub open_streams: u64,
    /// Turns running in this process.
    pub running_turns: u64,
    /// The call log's counters.
    pub call_log: crate::recorder::CallLogStats,
    /// The events bus mode (`in-process`, `nats`, `nats-disconnected`).
    pub bus_mode: &'static str,
}

impl Metrics {
    /// The metrics of a server with `config`.
    pub fn new(config: &TelemetryConfig) -> Arc<Self> {
        let mut registry = Registry::default();
        let http_requests = Family::<Labels<4>, Counter>::default();
        registry.register(
            "modelyard_http_requests",
            "HTTP requests answered, by route pattern (never the raw path), method and status",
            http_requests.clone(),
        );
        let http_duration = histograms::<2>(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "modelyard_http_request_duration",
            "Time from a request's arrival to its response headers, by route pattern and method",
            Unit::Seconds,
            http_duration.clone(),
        );
        let call_duration = histograms::<4>(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration (OpenTelemetry GenAI semconv): one upstream model call from \
             send to the end of its answer; failed calls carry error_type (HTTP status or _OTHER)",
            Unit::Seconds,
            call_duration.clone(),
        );
        let tokens = histograms::<5>(|| Histogram::new(TOKEN_BUCKETS));
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per model call (OpenTelemetry GenAI semconv), by gen_ai_token_type: input, \
             output, reasoning, cached_input",
            tokens.clone(),
        );
        let ttft = histograms::<3>(|| Histogram::new(TTFT_BUCKETS));
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from sending a model call to its first output (OpenTelemetry GenAI semconv)",
            Unit::Seconds,
            ttft.clone(),
        );
        let tpot = histograms::<3>(|| Histogram::new(TPOT_BUCKETS));
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first of a streamed call (OpenTelemetry GenAI semconv)",
            Unit::Seconds,
            tpot.clone(),
        );
        let attempts = Family::<Labels<3>, Counter>::default();
        registry.register(
            "modelyard_upstream_attempts",
            "Upstream attempts by deployment, provider and status (HTTP status, connect, timeout \
             or disabled)",
            attempts.clone(),
        );
        let retries = Family::<Labels<1>, Counter>::default();
        registry.register(
            "modelyard_upstream_retries",
            "Attempts that retried after a failed one, by the deployment that failed",
            retries.clone(),
        );
        let fallbacks = Family::<Labels<1>, Counter>::default();
        registry.register(
            "modelyard_route_fallbacks",
            "Requests that went on to a route's fallbacks, by requested route",
            fallbacks.clone(),
        );
        let cooldowns = Family::<Labels<1>, Counter>::default();
        registry.register(
            "modelyard_deployment_cooldowns",
            "Cooldowns started, by deployment",
            cooldowns.clone(),
        );
        let overhead = histograms::<1>(|| Histogram::new(OVERHEAD_BUCKETS));
        registry.register_with_unit(
            "modelyard_gateway_overhead",
            "Gateway time not spent waiting on the upstream or on back-off: from the request to \
             the response headers, minus each attempt's wait for upstream headers",
            Unit::Seconds,
            overhead.clone(),
        );
        let provider_up = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "modelyard_provider_up",
            "1 when the provider's last probe succeeded, else 0",
            provider_up.clone(),
        );
        let models = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "modelyard_provider_models",
            "Models the provider listed at its last probe",
            models.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "modelyard_open_streams",
            "Open SSE responses (completions and event feeds)",
            open_streams.clone(),
        );
        let running_turns = Gauge::default();
        registry.register(
            "modelyard_running_turns",
            "Conversation turns running in this process",
            running_turns.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "modelyard_call_log_queued",
            "Call-log records waiting to be written",
            queue_depth.clone(),
        );
        let queue_bytes = Gauge::default();
        registry.register_with_unit(
            "modelyard_call_log_queued",
            "Bytes of call-log records waiting to be written",
            Unit::Bytes,
            queue_bytes.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "modelyard_call_log_dropped",
            "Call-log records dropped (queue full)",
            dropped.clone(),
        );
        let failed = Counter::default();
        registry.register(
            "modelyard_call_log_failed",
            "Call-log records whose batch could not be written",
            failed.clone(),
        );
        let bus = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "modelyard_events_bus",
            "The conversation events bus mode (1 for the mode in use)",
            bus.clone(),
        );
        Arc::new(Self {
            enabled: config.metrics,
            per_project: config.per_project_metrics,
            registry,
            scrape: Mutex::new(()),
            http_requests,
            http_duration,
            call_duration,
            tokens,
            ttft,
            tpot,
            attempts,
            retries,
            fallbacks,
            cooldowns,
            overhead,
            provider_up,
            models,
            open_streams,
            running_turns,
            queue_depth,
            queue_bytes,
            dropped,
            failed,
            bus,
            deployments: RwLock::new(HashMap::new()),
        })
    }

    /// Metrics that record nothing (tests and tools that need a handle).
    pub fn disabled() -> Arc<Self> {
        Self::new(&TelemetryConfig {
            metrics: false,
            ..TelemetryConfig::default()
        })
    }

    /// Whether recording is on (`[telemetry] metrics`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records one answered HTTP request: `route` is the route table's
    /// pattern (or [`UNMATCHED_ROUTE`]), `duration` up to the response
    /// headers; `project` is kept only with `per_project_metrics`.
    pub fn http_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        project: Option<&str>,
        duration: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let project = project.filter(|_| self.per_project).and_then(label);
        self.http_requests
            .get_or_create(&Labels([
                ("route", fixed(route)),
                ("method", fixed(method)),
                ("status", Some(status_text(status))),
                ("project", project),
            ]))
            .inc();
        self.http_duration
            .get_or_create(&Labels([
                ("route", fixed(route)),
                ("method", fixed(method)),
            ]))
            .observe(duration.as_secs_f64());
    }

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

    /// Records one upstream attempt's outcome: `status` is the HTTP status,
    /// or `connect` / `timeout` / `disabled` / `error`.
    pub fn attempt(&self, deployment: &str, provider: &str, status: &str) {
        if !self.enabled {
            return;
        }
        self.attempts
            .get_or_create(&Labels([
                ("deployment", label(deployment)),
                ("gen_ai_provider_name", label(provider)),
                ("status", label(status)),
            ]))
            .inc();
    }

    /// Records a retry after `deployment` failed.
    pub fn retry(&self, deployment: &str) {
        if self.enabled {
            self.retries
                .get_or_create(&Labels([("deployment", label(deployment))]))
                .inc();
        }
    }

    /// Records that a request for `route` went on to a fallback group.
    pub fn fallback(&self, route: &str) {
        if self.enabled {
            self.fallbacks
                .get_or_create(&Labels([("route", label(route))]))
                .inc();
        }
    }

    /// Records a cooldown of `deployment`.
    pub fn cooldown(&self, deployment: &str) {
        if self.enabled {
            self.cooldowns
                .get_or_create(&Labels([("deployment", label(deployment))]))
                .inc();
        }
    }

    /// Records the gateway's own time for one request of `operation`
    /// (`chat_completions`, `messages`).
    pub fn overhead(&self, operation: &'static str, overhead: Duration) {
        if self.enabled {
            self.overhead
                .get_or_create(&Labels([("operation", fixed(operation))]))
                .observe(overhead.as_secs_f64());
        }
    }

    /// The exposition: sets the scrape-time gauges from `state`, then
    /// encodes every metric in the Prometheus text format 0.0.4.
    pub fn encode(&self, state: &ScrapeState) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for (provider, up, models) in &state.providers {
            let labels = Labels([("provider", label(provider))]);
            self.provider_up.get_or_create(&labels).set(i64::from(*up));
            self.models
                .get_or_create(&labels)
                .set(i64::try_from(*models).unwrap_or(i64::MAX));
        }
        self.open_streams.set(gauge(state.open_streams));
        self.running_turns.set(gauge(state.running_turns));
        self.queue_depth.set(gauge(state.call_log.queued));
        self.queue_bytes.set(gauge(state.call_log.queued_bytes));
        // Totals kept by the recorder: the counters catch up to them.
        self.dropped
            .inc_by(state.call_log.dropped.saturating_sub(self.dropped.get()));
        self.failed
            .inc_by(state.call_log.failed.saturating_sub(self.failed.get()));
        self.bus
            .get_or_create(&Labels([("mode", label(state.bus_mode))]))
            .set(1);
        let mut out = String::with_capacity(16 * 1024);
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An HTTP status as a label value, without allocating for the common
/// ones.
pub fn status_text(status: u16) -> Cow<'static, str> {
    const COMMON: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (421, "421"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(s, _)| *s == status) {
        Some((_, text)) => Cow::Borrowed(text),
        None => Cow::Owned(status.to_string()),
    }
}
