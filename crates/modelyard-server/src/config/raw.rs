//! The config file's shape as serde reads it: every key optional (defaults
//! are applied in validation), unknown keys refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) turns: RawTurns,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) security: RawSecurity,
    #[serde(default)]
    pub(super) routing: RawRouting,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) cluster: Option<RawCluster>,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    #[serde(default)]
    pub(super) prices: Vec<RawPrice>,
}

/// One `[[prices]]` entry (USD per million tokens).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    pub(super) model: String,
    pub(super) input_per_mtok: f64,
    pub(super) cached_input_per_mtok: Option<f64>,
    pub(super) output_per_mtok: f64,
    pub(super) reasoning_per_mtok: Option<f64>,
    pub(super) currency: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) nats_url: Option<String>,
    pub(super) replica_id: Option<String>,
    pub(super) turn_lease_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) metrics: Option<bool>,
    pub(super) metrics_listen: Option<String>,
    pub(super) per_project_metrics: Option<bool>,
    pub(super) access_log: Option<bool>,
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_allow_remote: Option<bool>,
    pub(super) service_name: Option<String>,
    pub(super) capture_content: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouting {
    pub(super) retries: Option<i64>,
    pub(super) retry_on: Option<Vec<toml::Value>>,
    pub(super) backoff_ms: Option<i64>,
    pub(super) max_retry_after_ms: Option<i64>,
    pub(super) cooldown_failures: Option<i64>,
    pub(super) cooldown_window_ms: Option<i64>,
    pub(super) cooldown_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    pub(super) targets: Vec<RawRouteTarget>,
    pub(super) strategy: Option<String>,
    pub(super) affinity: Option<String>,
    #[serde(default)]
    pub(super) fallbacks: Vec<String>,
}

/// `"a/m"` or `{ model = "a/m", weight = 2 }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawRouteTarget {
    Id(String),
    Weighted { model: String, weight: Option<i64> },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_n: Option<i64>,
    pub(super) max_output_tokens: Option<i64>,
    pub(super) max_messages: Option<i64>,
    pub(super) max_tools: Option<i64>,
    pub(super) header_read_timeout_ms: Option<i64>,
    pub(super) max_streams: Option<i64>,
    pub(super) max_streams_per_key: Option<i64>,
    pub(super) max_sse_event_bytes: Option<i64>,
    pub(super) max_streams_per_project: Option<i64>,
    pub(super) body_read_timeout_ms: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) max_concurrent_requests: Option<i64>,
    pub(super) budget_reserve_tokens: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    pub(super) allow_custom_base_urls: Option<bool>,
    #[serde(default)]
    pub(super) base_url_allowlist: Vec<String>,
    pub(super) redact_secrets: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTurns {
    pub(super) max_tool_steps: Option<i64>,
    pub(super) advisor_max_uses: Option<i64>,
    pub(super) advisor_max_tokens: Option<i64>,
    pub(super) tool_output_buffer_bytes: Option<i64>,
    pub(super) sweep_interval_ms: Option<i64>,
    pub(super) context_strategy: Option<String>,
    pub(super) compact_at: Option<f64>,
    pub(super) output_reserve_tokens: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) cors_origins: Option<Vec<String>>,
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) shutdown_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) url: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) call_log: Option<bool>,
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) retention: RawRetention,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) max_age_days: Option<i64>,
    pub(super) max_calls: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) model: Option<String>,
    pub(super) provider: Option<String>,
    #[serde(default)]
    pub(super) presets: BTreeMap<String, RawPreset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreset {
    pub(super) version: Option<i64>,
    pub(super) model: Option<String>,
    pub(super) display_name: Option<String>,
    pub(super) system_prompt: Option<String>,
    #[serde(default)]
    pub(super) provider_options: RawProviderOptions,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProviderOptions {
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) max_tokens: Option<i64>,
    pub(super) reasoning_effort: Option<String>,
    pub(super) stop: Option<Vec<String>>,
    pub(super) seed: Option<i64>,
    pub(super) extra: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) name: String,
    pub(super) kind: String,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    pub(super) base_url: Option<String>,
    pub(super) proxy_url: Option<String>,
    pub(super) probe_interval_ms: Option<u64>,
    #[serde(default)]
    pub(super) set_params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub(super) strip_params: Vec<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) messages_api: Option<bool>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) models: Vec<RawModel>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) probe_ms: Option<u64>,
    pub(super) connect_ms: Option<u64>,
    pub(super) first_token_ms: Option<u64>,
    pub(super) idle_ms: Option<u64>,
    pub(super) total_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) id: String,
    pub(super) context_window: Option<u64>,
    pub(super) display_name: Option<String>,
}

pub(super) fn yes() -> bool {
    true
}
