//! The metric families of a server: their buckets, names, help texts and
//! registration ([`Metrics::new`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::labels::Labels;
use super::Metrics;
use crate::config::TelemetryConfig;

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

pub(super) type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

fn histograms<const N: usize>(make: fn() -> Histogram) -> HistogramFamily<N> {
    Family::new_with_constructor(make)
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
}
