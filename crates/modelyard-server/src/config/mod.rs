//! Configuration: one typed struct, loaded once at start-up.
//!
//! Sources, later ones winning: built-in defaults, the TOML file
//! (`--config`, else `MODELYARD_CONFIG`, else `./modelyard.toml` if present),
//! then environment overrides `MODELYARD_<SECTION>_<KEY>` for the scalar keys
//! of `[server]`, `[storage]` and `[defaults]` (for example
//! `MODELYARD_SERVER_LISTEN=127.0.0.1:4100`). Unknown keys are errors; every
//! error names the file (or variable), the key path and the reason.
//!
//! Secrets are never in the file: a provider names the environment variable
//! that holds its key (`api_key_env`).
//!
//! `[defaults.presets.<name>]` are the server's default LLM configs (`default`
//! for every operation, or an operation's name); each has a `version`, and
//! each version is materialized once as a `system-default` config.
//!
//! Files: `raw.rs` (the file's serde shape), `load.rs` (finding and reading
//! the file, environment overrides), `validate.rs` (raw → typed, one function
//! per section), `providers.rs` and `defaults.rs` (the `[[providers]]` and
//! `[defaults]` sections), `prices.rs` (`[[prices]]`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use modelyard_core::llm_config::ProviderOptions;
use modelyard_core::ProviderName;
use modelyard_upstream::{ProviderKind, Timeouts};
use url::Url;

mod cluster;
mod defaults;
mod load;
mod prices;
mod providers;
mod raw;
mod routing;
mod validate;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[[providers]]`, in file order.
    pub providers: Vec<ProviderConfig>,
    /// `[defaults]`.
    pub defaults: DefaultsConfig,
    /// `[turns]`.
    pub turns: TurnsConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[security]`.
    pub security: SecurityConfig,
    /// `[routing]`: retries, back-off and cooldowns of every model call.
    pub routing: RoutingConfig,
    /// `[[routes]]`: named model ids that stand for several deployments,
    /// in file order.
    pub routes: Vec<RouteConfig>,
    /// `[cluster]`: present when several replicas share the database.
    pub cluster: Option<ClusterConfig>,
    /// `[telemetry]`: metrics and the access log.
    pub telemetry: TelemetryConfig,
    /// `[[prices]]`: what deployments' tokens cost, in file order.
    pub prices: Vec<PriceConfig>,
}

/// One `[[prices]]` entry: `model` (an exact composite id `provider/model`,
/// or a glob where `*` matches any text, e.g. `deepseek/*`) and its rates
/// in USD per million tokens (`input_per_mtok`, `cached_input_per_mtok`,
/// `output_per_mtok`, `reasoning_per_mtok`; `currency` may only be
/// `"USD"`). The most specific matching entry prices a call
/// ([`crate::pricing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceConfig {
    /// The exact id or glob.
    pub model: String,
    /// The rates.
    pub price: modelyard_core::cost::Price,
    /// [`modelyard_core::cost::Price::version`] of this entry: which prices
    /// priced a call.
    pub version: String,
}

/// `[cluster]`: this server is one of several replicas on one PostgreSQL
/// database. Running turns are owned by lease (docs/design.md#replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This replica's name (`replica_id`, default `<host name>-<pid>`):
    /// the owner recorded on the turns it runs.
    pub replica_id: String,
    /// NATS server for live events between replicas (`nats_url`,
    /// `MODELYARD_CLUSTER_NATS_URL`): token deltas of a turn reach
    /// subscribers on every replica, persisted events are announced. Without
    /// it (or while it is down) replicas read each other's persisted events
    /// from the store.
    pub nats_url: Option<String>,
    /// How long a turn's lease lasts without renewal, ms (`turn_lease_ms`,
    /// default 10 000, 1 000..=600 000); the owner renews it every third
    /// of that (at most every second). A turn whose lease ran out is
    /// closed as interrupted by any replica's sweeper.
    pub turn_lease_ms: u64,
}

/// `[telemetry]`: the Prometheus metrics (`GET /metrics`), the access
/// log and OpenTelemetry traces ([`crate::traces`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Whether metrics are recorded (`metrics`, default true). Off, every
    /// recording call returns at once and `/metrics` answers only the
    /// scrape-time gauges.
    pub metrics: bool,
    /// A second listener that serves only `GET /metrics`, without auth
    /// (`metrics_listen`, e.g. `127.0.0.1:9464`; default none: `/metrics`
    /// is served on the main listener to admin keys only).
    pub metrics_listen: Option<SocketAddr>,
    /// Whether request and token metrics carry a `project` label
    /// (`per_project_metrics`, default false: one series per project adds
    /// up with many projects).
    pub per_project_metrics: bool,
    /// Whether one `modelyard::access` line is logged per request at INFO
    /// (`access_log`, default true).
    pub access_log: bool,
    /// Where spans are exported over OTLP/HTTP (protobuf): the collector's
    /// base URL, e.g. `http://127.0.0.1:4318`, to which `/v1/traces` is
    /// appended unless the path already ends with it (`otlp_endpoint`,
    /// default none: no spans are made). Its host must be loopback unless
    /// `otlp_allow_remote` is set.
    pub otlp_endpoint: Option<url::Url>,
    /// Whether `otlp_endpoint` may name a host that is not loopback
    /// (`otlp_allow_remote`, default false: spans carry model names, token
    /// counts and the caller's route, so sending them off the machine is a
    /// choice).
    pub otlp_allow_remote: bool,
    /// The `service.name` resource attribute of exported spans
    /// (`service_name`, default `modelyard`).
    pub service_name: String,
    /// Whether spans carry prompt and completion text
    /// (`gen_ai.input.messages` / `gen_ai.output.messages`;
    /// `capture_content`, default false).
    pub capture_content: bool,
}

/// The default `[telemetry] service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "modelyard";

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            metrics_listen: None,
            per_project_metrics: false,
            access_log: true,
            otlp_endpoint: None,
            otlp_allow_remote: false,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            capture_content: false,
        }
    }
}

/// `[routing]`: how a model call is retried and when a deployment (one
/// `provider/model`) is cooled down. Terms follow LiteLLM's router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Extra attempts after a retryable failure, before the first byte
    /// reaches the client (`retries`, default 2, 0..=10); each fallback
    /// gets as many again.
    pub retries: u32,
    /// Which failures are retried (`retry_on`, default `["connect",
    /// "timeout", 429, 500, 502, 503, 504]`).
    pub retry_on: RetryOn,
    /// Base of the exponential back-off with full jitter before retrying
    /// the same deployment, ms (`backoff_ms`, default 100, 0..=60 000).
    pub backoff_ms: u64,
    /// Longest upstream `Retry-After` waited for, ms (`max_retry_after_ms`,
    /// default 10 000); a longer one sends the request to another
    /// deployment, else fails with it.
    pub max_retry_after_ms: u64,
    /// Failures of one deployment within `cooldown_window_ms` that cool it
    /// down (`cooldown_failures`, default 3, 1..=1 000).
    pub cooldown_failures: u32,
    /// Window in which failures are counted, ms (`cooldown_window_ms`,
    /// default 60 000).
    pub cooldown_window_ms: u64,
    /// How long a cooled-down deployment is skipped, ms (`cooldown_ms`,
    /// default 30 000), or the upstream's `Retry-After` if longer.
    pub cooldown_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            retries: 2,
            retry_on: RetryOn::default(),
            backoff_ms: 100,
            max_retry_after_ms: 10_000,
            cooldown_failures: 3,
            cooldown_window_ms: 60_000,
            cooldown_ms: 30_000,
        }
    }
}

/// `routing.retry_on`: the failure classes that are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// `"connect"`: the connection could not be made or broke before an
    /// answer.
    pub connect: bool,
    /// `"timeout"`: no answer within the provider's deadlines.
    pub timeout: bool,
    /// Upstream HTTP statuses (e.g. 429, 503).
    pub statuses: Vec<u16>,
}

impl Default for RetryOn {
    fn default() -> Self {
        Self {
            connect: true,
            timeout: true,
            statuses: vec![429, 500, 502, 503, 504],
        }
    }
}

/// One `[[routes]]` entry: a model id clients send like any other, standing
/// for several deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The id clients send (`name`); never `<provider>/…`.
    pub name: String,
    /// Its deployments, composite `provider/model` ids, with weights.
    pub targets: Vec<RouteTarget>,
    /// How a deployment is picked (`strategy`, default `least-busy`).
    pub strategy: Strategy,
    /// Whether a conversation stays on the deployment that served its last
    /// turn (`affinity`, default `conversation`).
    pub affinity: Affinity,
    /// Tried in order once every target failed (`fallbacks`): deployments
    /// or other routes.
    pub fallbacks: Vec<String>,
}

/// A route's deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// Composite `provider/model` id.
    pub model: String,
    /// Share for the `weighted` strategy (`weight`, default 1, 1..=1 000).
    pub weight: u32,
}

/// A route's load-balancing strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `round-robin`: in turn.
    RoundRobin,
    /// `weighted`: in proportion to the targets' weights (smooth weighted
    /// round-robin, so the shares hold exactly over any window).
    Weighted,
    /// `least-busy`: the target with the fewest requests in flight.
    LeastBusy,
    /// `lowest-latency`: the lowest moving average of time to first token.
    LowestLatency,
}

impl Strategy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastBusy => "least-busy",
            Strategy::LowestLatency => "lowest-latency",
        }
    }
}

/// Route affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// `none`: every request is balanced on its own.
    None,
    /// `conversation`: turns of a conversation (gateway: requests with the
    /// same `user` or `x-modelyard-affinity`) go to the deployment that
    /// served the previous one while it is healthy.
    Conversation,
}

/// `[limits]`: caps checked before anything is forwarded or streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest `n` (choices) a chat completion may ask for (`max_n`, default 8).
    pub max_n: u32,
    /// Largest `max_tokens` / `max_completion_tokens` (`max_output_tokens`,
    /// default 131 072 tokens).
    pub max_output_tokens: u32,
    /// Most messages in one request (`max_messages`, default 2 048).
    pub max_messages: u32,
    /// Most tools in one request (`max_tools`, default 128).
    pub max_tools: u32,
    /// Time a client has to send its request headers (`header_read_timeout_ms`,
    /// default 10 000 ms).
    pub header_read_timeout_ms: u64,
    /// Open SSE responses (streamed completions and event streams) in total
    /// (`max_streams`, default 1 024); beyond it a fast 429.
    pub max_streams: u32,
    /// Open SSE responses per API key, or per client address without keys
    /// (`max_streams_per_key`, default 64); beyond it a fast 429.
    pub max_streams_per_key: u32,
    /// Longest single SSE event accepted from an upstream, bytes
    /// (`max_sse_event_bytes`, default 8 MiB, 1 KiB..=1 GiB); a longer event
    /// (or a line that never ends) ends the stream with an error and closes
    /// the upstream connection.
    pub max_sse_event_bytes: usize,
    /// Open SSE responses per project, all its keys together
    /// (`max_streams_per_project`, default 256); beyond it a fast 429.
    pub max_streams_per_project: u32,
    /// Time a client has to send a request's whole body once its head is in
    /// (`body_read_timeout_ms`, default 30 000 ms); past it the connection
    /// is closed.
    pub body_read_timeout_ms: u64,
    /// Open client connections (`max_connections`, default 4 096); past it a
    /// new connection is accepted and closed at once.
    pub max_connections: u32,
    /// Non-streamed requests and background turns in flight at once
    /// (`max_concurrent_requests`, default 1 024); beyond it a fast 429.
    pub max_concurrent_requests: u32,
    /// Output tokens reserved against a token budget or `tokens_per_minute`
    /// for a request that names no `max_tokens` / `max_completion_tokens` /
    /// `max_output_tokens`, and for a conversation turn
    /// (`budget_reserve_tokens`, default 4 096, 0..=10 000 000); settled to
    /// the actual usage when the call ends ([`crate::quota`]).
    pub budget_reserve_tokens: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_n: 8,
            max_output_tokens: 131_072,
            max_messages: 2_048,
            max_tools: 128,
            header_read_timeout_ms: 10_000,
            max_streams: 1_024,
            max_streams_per_key: 64,
            max_sse_event_bytes: modelyard_upstream::sse::DEFAULT_MAX_EVENT_BYTES,
            max_streams_per_project: 256,
            body_read_timeout_ms: 30_000,
            max_connections: 4_096,
            max_concurrent_requests: 1_024,
            budget_reserve_tokens: 4_096,
        }
    }
}

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityConfig {
    /// Whether LLM configs may name a `baseUrl` that is not a configured
    /// provider's (`allow_custom_base_urls`, default false). Calls to such a
    /// URL only connect to addresses `base_url_allowlist` allows, checked
    /// after DNS resolution at connect time.
    pub allow_custom_base_urls: bool,
    /// Hosts (`models.internal`, `*.corp.example`) and CIDRs
    /// (`10.0.0.0/8`, `fd00::/8`) custom base URLs may reach
    /// (`base_url_allowlist`). Link-local and cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254) are refused whatever it says.
    pub base_url_allowlist: Vec<String>,
    /// Whether stored prompt and response text is scanned for common secret
    /// shapes (API keys, bearer tokens, private keys), which are replaced by
    /// `[REDACTED]` before they are written (`redact_secrets`, default false).
    pub redact_secrets: bool,
}

/// `[turns]`: tools in conversation turns and how a turn fits the model's
/// context window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnsConfig {
    /// Most model calls in one turn while the model keeps calling tools
    /// (`max_tool_steps`, default 8, 1..=64); the turn fails past it.
    pub max_tool_steps: u32,
    /// Advisor consultations allowed per turn (`advisor_max_uses`, default
    /// 3, 0..=32); a call beyond it gets a tool error result.
    pub advisor_max_uses: u32,
    /// `max_tokens` of an advisor call whose LLM config sets none
    /// (`advisor_max_tokens`, default 1024).
    pub advisor_max_tokens: u32,
    /// Bytes of streamed text one tool call keeps in the turn's transient
    /// buffer for reconnecting clients (`tool_output_buffer_bytes`, default
    /// 64 KiB, at least 1024); older text is replaced by a marker counting
    /// the omitted bytes. The tool's persisted result always has all of it.
    pub tool_output_buffer_bytes: usize,
    /// How often the sweeper closes turns that are `running` in the store
    /// but run nowhere in this process (`sweep_interval_ms`, default 30 000,
    /// 100..=86 400 000); also done once at start-up.
    pub sweep_interval_ms: u64,
    /// What a turn does when the conversation's history no longer fits the
    /// serving deployment's context window (`context_strategy`, default
    /// `compact`); see [`ContextStrategy`]. Nothing is done while the
    /// window is unknown.
    pub context_strategy: ContextStrategy,
    /// With `compact`: the share of the window (minus the output reserve)
    /// past which a turn compacts the conversation before its model call
    /// (`compact_at`, default 0.8, 0.1..=1.0).
    pub compact_at: f64,
    /// Tokens of the context window kept free for the answer when the
    /// request sets no `max_tokens` (`output_reserve_tokens`, default 1024,
    /// 1..=1 000 000).
    pub output_reserve_tokens: u32,
}

/// `[turns] context_strategy`: how a turn keeps its prompt within the
/// serving deployment's context window minus the output reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextStrategy {
    /// `compact` (default): past `compact_at` of the budget, run the
    /// conversation's `compaction` operation (recorded as a normal
    /// `conversation.compacted` event); if the prompt still does not fit,
    /// truncate.
    #[default]
    Compact,
    /// `truncate`: drop the oldest whole messages from the request (never
    /// an assistant tool call without its results; always keeping the
    /// system prompt and the last user message). Nothing is persisted.
    Truncate,
    /// `error`: refuse the turn (422 `context_length_exceeded` with the
    /// numbers at its start; `turn.failed` at a later tool step).
    Error,
}

impl ContextStrategy {
    /// `compact`, `truncate` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextStrategy::Compact => "compact",
            ContextStrategy::Truncate => "truncate",
            ContextStrategy::Error => "error",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ContextStrategy::Compact,
            ContextStrategy::Truncate,
            ContextStrategy::Error,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl Default for TurnsConfig {
    fn default() -> Self {
        Self {
            max_tool_steps: 8,
            advisor_max_uses: 3,
            advisor_max_tokens: 1024,
            tool_output_buffer_bytes: 64 * 1024,
            sweep_interval_ms: 30_000,
            context_strategy: ContextStrategy::Compact,
            compact_at: 0.8,
            output_reserve_tokens: 1024,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Listen address (`listen`, default `127.0.0.1:4000`).
    pub listen: SocketAddr,
    /// Largest accepted request body, bytes (`max_body_bytes`, default 32 MiB).
    pub max_body_bytes: usize,
    /// Browser origins other than the server's own that may call the API
    /// (`cors_origins`, default none): `scheme://host[:port]`, lowercase, no
    /// trailing slash. Their requests pass the `Origin` check and get CORS
    /// headers; preflights are answered for them only.
    pub cors_origins: Vec<String>,
    /// `Host` values accepted once API keys exist (`allowed_hosts`, default
    /// empty: any host): `name`, `name:port`, an IP or `[v6]`, lowercase.
    /// Without keys only loopback names and the listen address are accepted.
    pub allowed_hosts: Vec<String>,
    /// How long a shutdown may take after the first SIGTERM / Ctrl-C
    /// (`shutdown_timeout_ms`, default 30 000, 0..=3 600 000): open streams
    /// end, running turns close `interrupted`, the call log drains; past
    /// it the process exits anyway (exit code 1).
    pub shutdown_timeout_ms: u64,
}

/// Default of `server.shutdown_timeout_ms`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Database URL (`url`): `sqlite://PATH` or `postgres://...`; default
    /// `sqlite://<data_dir>/modelyard.db`.
    pub url: String,
    /// Data directory (`data_dir`; default `$XDG_DATA_HOME/modelyard` or
    /// `~/.local/share/modelyard`).
    pub data_dir: PathBuf,
    /// Whether gateway calls are recorded (`call_log`, default true). Records
    /// are written asynchronously after the response: a crash can lose the
    /// last few hundred milliseconds of call rows, never a proxied token.
    pub call_log: bool,
    /// What a call record keeps (`content`, default `full`).
    pub content: ContentPolicy,
    /// `[storage.retention]`: how long call records are kept.
    pub retention: RetentionConfig,
}

/// What a call record keeps (`storage.content`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentPolicy {
    /// Everything: request, response, reasoning and tool calls (`full`).
    #[default]
    Full,
    /// No message text: the request without its `messages` (replaced by
    /// `messagesOmitted`, their count), no response, reasoning or tool
    /// calls; usage, timings, status and error stay (`metadata`).
    Metadata,
}

/// `[storage.retention]`: both limits optional, applied across all projects
/// at start-up and every 10 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionConfig {
    /// Calls older than this many days are deleted (`max_age_days`, ≥ 1).
    pub max_age_days: Option<u32>,
    /// Per project, calls beyond the newest this many are deleted (`max_calls`, ≥ 1).
    pub max_calls: Option<u64>,
}

impl RetentionConfig {
    /// Whether any limit is set.
    pub fn is_configured(&self) -> bool {
        self.max_age_days.is_some() || self.max_calls.is_some()
    }
}

/// `[defaults]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DefaultsConfig {
    /// Model used when a request names none (`model`, a model id).
    pub model: Option<String>,
    /// Provider that bare model ids try first (`provider`; default the first provider).
    pub provider: Option<String>,
    /// `[defaults.presets.<name>]`: the server's default LLM configs, for
    /// every operation (`default`) or one operation (its name). Materialized
    /// as `system-default` configs once per version.
    pub presets: BTreeMap<String, PresetConfig>,
}

impl DefaultsConfig {
    /// The server default model: the `default` preset's, else `model`.
    pub fn default_model(&self) -> Option<&str> {
        self.presets
            .get(DEFAULT_PRESET)
            .map(|p| p.model.as_str())
            .or(self.model.as_deref())
    }
}

/// Name of the preset that applies to every operation.
pub const DEFAULT_PRESET: &str = "default";

/// One `[defaults.presets.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetConfig {
    /// Version (`version`, ≥ 1, required). Bump it when the preset changes:
    /// each version is materialized once, and turns keep the id they used.
    pub version: u32,
    /// Model id (`model`, required).
    pub model: String,
    /// Display name (`display_name`).
    pub display_name: Option<String>,
    /// System prompt (`system_prompt`).
    pub system_prompt: Option<String>,
    /// `[defaults.presets.<name>.provider_options]`.
    pub provider_options: ProviderOptions,
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Unique name, the prefix of composite model ids.
    pub name: ProviderName,
    /// `openai`, `llama-cpp`, `llama-swap`, `vllm`, `ollama`, `openrouter`,
    /// `deepseek`, `lmstudio` or `anthropic`.
    pub kind: ProviderKind,
    /// `false` disables the provider (`enabled`, default true).
    pub enabled: bool,
    /// Server root or API base ending in `/v1` (preset kinds have a default).
    pub base_url: Url,
    /// Forward proxy for this provider only (`proxy_url`).
    pub proxy_url: Option<Url>,
    /// How often the provider is probed, ms (`probe_interval_ms`, default 30 000).
    pub probe_interval_ms: u64,
    /// Top-level request fields set on every request to this provider
    /// (`set_params`, JSON values), overriding the client's.
    pub set_params: serde_json::Map<String, serde_json::Value>,
    /// Top-level request fields removed from every request to this provider
    /// (`strip_params`).
    pub strip_params: Vec<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Whether the provider serves Anthropic's Messages API natively
    /// (`messages_api`, default false; always true for kind `anthropic`):
    /// `POST /v1/messages` requests routed to it are passed through as they
    /// are instead of being translated to chat completions.
    pub messages_api: bool,
    /// Extra request headers (non-secret).
    pub headers: BTreeMap<String, String>,
    /// Timeouts (`[providers.timeouts]`, ms).
    pub timeouts: Timeouts,
    /// Declared models and per-model overrides (`[[providers.models]]`).
    pub models: Vec<ModelConfig>,
}

/// A declared model of a provider, with overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Upstream model name.
    pub id: String,
    /// Context window in tokens; overrides what the provider reports.
    pub context_window: Option<u64>,
    /// Display name for pickers.
    pub display_name: Option<String>,
}

/// A configuration error: where, which key, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file or environment variable at fault.
    pub source_name: String,
    /// Dotted key path (`providers[0].base_url`), empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source_name, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.source_name, self.key, self.reason)
        }
    }
}

#[cfg(test)]
mod tests;
