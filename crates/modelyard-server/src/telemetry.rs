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
//!
//! The parts: `labels` (label sets and bounded label values), `families`
//! (the metric families, their buckets and registration), `calls` (the
//! per-call handles and what one model call records).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::TelemetryConfig;

mod calls;
mod families;
mod labels;

pub use calls::{CallHandles, CallObservation};
pub use labels::status_text;

use calls::DeploymentEntry;
use families::HistogramFamily;
use labels::{fixed, label, Labels};

/// `Content-Type` of `/metrics`: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

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
