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
//! per section, calling the section files), and one file per larger section
//! with its typed struct and its validation: `providers.rs`
//! (`[[providers]]`), `defaults.rs` (`[defaults]`), `routing.rs`
//! (`[routing]`, `[[routes]]`), `turns.rs`, `limits.rs`, `telemetry.rs`,
//! `cluster.rs` and `prices.rs` (`[[prices]]`). `[server]`, `[storage]` and
//! `[security]` are here.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

mod cluster;
mod defaults;
mod limits;
mod load;
mod prices;
mod providers;
mod raw;
mod routing;
mod telemetry;
mod turns;
mod validate;

pub use cluster::ClusterConfig;
pub use defaults::{DefaultsConfig, PresetConfig, DEFAULT_PRESET};
pub use limits::LimitsConfig;
pub use prices::PriceConfig;
pub use providers::{ModelConfig, ProviderConfig};
pub use routing::{Affinity, RetryOn, RouteConfig, RouteTarget, RoutingConfig, Strategy};
pub use telemetry::{TelemetryConfig, DEFAULT_SERVICE_NAME};
pub use turns::{ContextStrategy, TurnsConfig};

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
