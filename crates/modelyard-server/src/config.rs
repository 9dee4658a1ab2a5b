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

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use modelyard_core::llm_config::{is_operation_name, ProviderOptions};
use modelyard_core::ProviderName;
use modelyard_upstream::{ProviderKind, Timeouts};
use serde::Deserialize;
use url::Url;

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

/// `[turns]`: tools in conversation turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Default for TurnsConfig {
    fn default() -> Self {
        Self {
            max_tool_steps: 8,
            advisor_max_uses: 3,
            advisor_max_tokens: 1024,
            tool_output_buffer_bytes: 64 * 1024,
            sweep_interval_ms: 30_000,
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
    /// `openai`, `llama-cpp`, `llama-swap`, `vllm`, `ollama`, `openrouter` or `deepseek`.
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    turns: RawTurns,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    security: RawSecurity,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_n: Option<i64>,
    max_output_tokens: Option<i64>,
    max_messages: Option<i64>,
    max_tools: Option<i64>,
    header_read_timeout_ms: Option<i64>,
    max_streams: Option<i64>,
    max_streams_per_key: Option<i64>,
    max_sse_event_bytes: Option<i64>,
    max_streams_per_project: Option<i64>,
    body_read_timeout_ms: Option<i64>,
    max_connections: Option<i64>,
    max_concurrent_requests: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    allow_custom_base_urls: Option<bool>,
    #[serde(default)]
    base_url_allowlist: Vec<String>,
    redact_secrets: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTurns {
    max_tool_steps: Option<i64>,
    advisor_max_uses: Option<i64>,
    advisor_max_tokens: Option<i64>,
    tool_output_buffer_bytes: Option<i64>,
    sweep_interval_ms: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    cors_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    shutdown_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: Option<String>,
    data_dir: Option<PathBuf>,
    call_log: Option<bool>,
    content: Option<String>,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age_days: Option<i64>,
    max_calls: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    model: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    presets: BTreeMap<String, RawPreset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreset {
    version: Option<i64>,
    model: Option<String>,
    display_name: Option<String>,
    system_prompt: Option<String>,
    #[serde(default)]
    provider_options: RawProviderOptions,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProviderOptions {
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<i64>,
    reasoning_effort: Option<String>,
    stop: Option<Vec<String>>,
    seed: Option<i64>,
    extra: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    kind: String,
    #[serde(default = "yes")]
    enabled: bool,
    base_url: Option<String>,
    proxy_url: Option<String>,
    probe_interval_ms: Option<u64>,
    #[serde(default)]
    set_params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    strip_params: Vec<String>,
    api_key_env: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    models: Vec<RawModel>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    probe_ms: Option<u64>,
    connect_ms: Option<u64>,
    first_token_ms: Option<u64>,
    idle_ms: Option<u64>,
    total_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    context_window: Option<u64>,
    display_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// Request fields that routing owns and `set_params` / `strip_params` may not touch.
const RESERVED_PARAMS: [&str; 4] = ["model", "messages", "stream", "stream_options"];

/// `https://App.example.com/` → `https://app.example.com`; `None` unless it
/// is `http(s)://host[:port]` (no userinfo, path, query or wildcard).
fn normalize_origin(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin.trim()).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && !origin.contains('*');
    let host = url.host_str().filter(|_| plain)?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// A `Host` value as written in `server.allowed_hosts`, lowercased; `None`
/// if it is not `host[:port]`.
fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    ok.then_some(host)
}

/// Environment overrides: variable → (section, key, is_bool).
const ENV_OVERRIDES: [(&str, &str, &str, bool); 8] = [
    ("MODELYARD_SERVER_LISTEN", "server", "listen", false),
    (
        "MODELYARD_SERVER_MAX_BODY_BYTES",
        "server",
        "max_body_bytes",
        false,
    ),
    ("MODELYARD_STORAGE_URL", "storage", "url", false),
    ("MODELYARD_STORAGE_DATA_DIR", "storage", "data_dir", false),
    ("MODELYARD_STORAGE_CALL_LOG", "storage", "call_log", true),
    ("MODELYARD_STORAGE_CONTENT", "storage", "content", false),
    ("MODELYARD_DEFAULTS_MODEL", "defaults", "model", false),
    ("MODELYARD_DEFAULTS_PROVIDER", "defaults", "provider", false),
];

/// Headers that carry credentials and so may not be written in the file.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "api-key",
    "x-api-key",
    "proxy-authorization",
];

impl Config {
    /// Finds the config file: `explicit` (from `--config`), else
    /// `MODELYARD_CONFIG`, else `./modelyard.toml` when it exists.
    pub fn locate(
        explicit: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_owned());
        }
        if let Some(path) = env("MODELYARD_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let local = PathBuf::from("modelyard.toml");
        local.exists().then_some(local)
    }

    /// Loads the file at `path` (or only defaults when `None`), applies the
    /// environment overrides read through `env`, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or variable, the key and the reason.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (source_name, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    source_name: path.display().to_string(),
                    key: String::new(),
                    reason: format!("cannot read: {e}"),
                })?;
                (path.display().to_string(), text)
            }
            None => ("<defaults>".to_owned(), String::new()),
        };
        Self::from_toml(&text, &source_name, path, env)
    }

    /// Parses and validates TOML text; `source_name` labels errors.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_toml(
        text: &str,
        source_name: &str,
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err("", e.message().to_owned() + &line_of(text, e.span()))
        })?;
        for (var, section, key, is_bool) in ENV_OVERRIDES {
            let Some(value) = env(var) else { continue };
            let env_err = |reason: String| ConfigError {
                source_name: format!("environment variable {var}"),
                key: format!("{section}.{key}"),
                reason,
            };
            let value = if is_bool {
                match value.as_str() {
                    "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
                    "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
                    other => return Err(env_err(format!("expected true or false, got {other:?}"))),
                }
            } else if key == "max_body_bytes" {
                toml::Value::Integer(
                    value
                        .parse()
                        .map_err(|_| env_err(format!("expected a number, got {value:?}")))?,
                )
            } else {
                toml::Value::String(value)
            };
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key.to_owned(), value);
                }
                _ => return Err(err(section, "must be a table".into())),
            }
        }
        let raw: RawConfig = serde_path_to_error::deserialize(table)
            .map_err(|e| err(&e.path().to_string(), e.inner().message().to_owned()))?;
        validate(raw, source_name, path, env)
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => format!(
            " (line {})",
            text[..span.start.min(text.len())].lines().count().max(1)
        ),
        None => String::new(),
    }
}

fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(xdg) = env("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(xdg).join("modelyard");
    }
    match env("HOME").filter(|p| !p.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/modelyard"),
        None => PathBuf::from(".modelyard"),
    }
}

fn validate(
    raw: RawConfig,
    source_name: &str,
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let err = |key: String, reason: String| ConfigError {
        source_name: source_name.to_owned(),
        key,
        reason,
    };
    let listen_text = raw
        .server
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        err(
            "server.listen".into(),
            format!("{listen_text:?} is not an address like 127.0.0.1:4000"),
        )
    })?;
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(32 * 1024 * 1024);
    if max_body_bytes < 1024 {
        return Err(err(
            "server.max_body_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    let cors_origins = raw
        .server
        .cors_origins
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, origin)| {
            normalize_origin(origin)
                .ok_or_else(|| err(format!("server.cors_origins[{i}]"), format!("{origin:?} is not an origin like https://app.example.com or http://localhost:5173 (scheme http or https, host, optional port, no path; `*` is not allowed)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allowed_hosts = raw
        .server
        .allowed_hosts
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            normalize_host(host).ok_or_else(|| {
                err(
                    format!("server.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host like gateway.example.com, gateway.example.com:4000 or 10.0.0.5"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shutdown_timeout_ms = raw
        .server
        .shutdown_timeout_ms
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS);
    if shutdown_timeout_ms > 3_600_000 {
        return Err(err(
            "server.shutdown_timeout_ms".into(),
            format!("must be between 0 and 3600000, got {shutdown_timeout_ms}"),
        ));
    }

    let data_dir = raw
        .storage
        .data_dir
        .unwrap_or_else(|| default_data_dir(env));
    let url = match raw.storage.url {
        Some(url) => {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(err(
                    "storage.url".into(),
                    "must start with sqlite: or postgres://".into(),
                ));
            }
            url
        }
        None => format!("sqlite://{}", data_dir.join("modelyard.db").display()),
    };

    let content = match raw.storage.content.as_deref() {
        None | Some("full") => ContentPolicy::Full,
        Some("metadata") => ContentPolicy::Metadata,
        Some(other) => {
            return Err(err(
                "storage.content".into(),
                format!("must be \"full\" or \"metadata\", got {other:?}"),
            ))
        }
    };
    let retention_limit = |field: &str, value: Option<i64>| match value {
        Some(v) if v < 1 => Err(err(
            format!("storage.retention.{field}"),
            format!("must be at least 1, got {v}"),
        )),
        _ => Ok(value),
    };
    let max_age_days = retention_limit("max_age_days", raw.storage.retention.max_age_days)?
        .map(|days| {
            u32::try_from(days).map_err(|_| {
                err(
                    "storage.retention.max_age_days".into(),
                    format!("{days} is too large"),
                )
            })
        })
        .transpose()?;
    let max_calls =
        retention_limit("max_calls", raw.storage.retention.max_calls)?.map(|n| n.unsigned_abs());
    let retention = RetentionConfig {
        max_age_days,
        max_calls,
    };

    let mut providers: Vec<ProviderConfig> = Vec::with_capacity(raw.providers.len());
    for (i, p) in raw.providers.into_iter().enumerate() {
        let key = |field: &str| format!("providers[{i}].{field}");
        let name =
            ProviderName::new(p.name.clone()).map_err(|e| err(key("name"), e.to_string()))?;
        if providers.iter().any(|other| other.name == name) {
            return Err(err(
                key("name"),
                format!("duplicate provider name {:?}", p.name),
            ));
        }
        let kind: ProviderKind = p
            .kind
            .parse()
            .map_err(|e: modelyard_upstream::kind::UnknownKind| err(key("kind"), e.to_string()))?;
        let base_text = match (&p.base_url, kind.default_base_url()) {
            (Some(url), _) => url.clone(),
            (None, Some(default)) => default.to_owned(),
            (None, None) => {
                return Err(err(key("base_url"), format!("is required for kind {kind}")))
            }
        };
        let base_url = Url::parse(&base_text)
            .map_err(|e| err(key("base_url"), format!("{base_text:?} is not a URL: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
            return Err(err(
                key("base_url"),
                "must be an http:// or https:// URL with a host".into(),
            ));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            return Err(err(
                key("base_url"),
                "must not contain credentials; use api_key_env".into(),
            ));
        }
        if base_url.query().is_some() {
            return Err(err(
                key("base_url"),
                "must not contain a query string".into(),
            ));
        }
        if let Some(var) = &p.api_key_env {
            let valid = !var.is_empty()
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !var.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(err(key("api_key_env"), format!("{var:?} is not an environment variable name (the key itself never goes in the file)")));
            }
        }
        for header in p.headers.keys() {
            if SECRET_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                return Err(err(
                    format!("providers[{i}].headers.{header}"),
                    "credentials may not be written in the config; use api_key_env".into(),
                ));
            }
        }
        let proxy_url = match &p.proxy_url {
            None => None,
            Some(text) => {
                let url = Url::parse(text)
                    .map_err(|e| err(key("proxy_url"), format!("{text:?} is not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(err(
                        key("proxy_url"),
                        "must be an http:// or https:// proxy URL".into(),
                    ));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(err(key("proxy_url"), "must not contain credentials".into()));
                }
                Some(url)
            }
        };
        let mut set_params = serde_json::Map::new();
        for (param, value) in p.set_params {
            if RESERVED_PARAMS.contains(&param.as_str()) {
                return Err(err(
                    format!("providers[{i}].set_params.{param}"),
                    "is set by routing and cannot be overridden".into(),
                ));
            }
            let value = serde_json::to_value(&value)
                .map_err(|e| err(format!("providers[{i}].set_params.{param}"), e.to_string()))?;
            set_params.insert(param, value);
        }
        for (j, param) in p.strip_params.iter().enumerate() {
            if RESERVED_PARAMS.contains(&param.as_str()) {
                return Err(err(
                    key(&format!("strip_params[{j}]")),
                    format!("{param:?} is needed by routing and cannot be stripped"),
                ));
            }
        }
        let probe_interval_ms = p.probe_interval_ms.unwrap_or(30_000);
        if probe_interval_ms < 1_000 {
            return Err(err(
                key("probe_interval_ms"),
                "must be at least 1000".into(),
            ));
        }
        let defaults = Timeouts::default();
        let timeouts = Timeouts {
            probe_ms: p.timeouts.probe_ms.unwrap_or(defaults.probe_ms),
            connect_ms: p.timeouts.connect_ms.unwrap_or(defaults.connect_ms),
            first_token_ms: p.timeouts.first_token_ms.unwrap_or(defaults.first_token_ms),
            idle_ms: p.timeouts.idle_ms.unwrap_or(defaults.idle_ms),
            total_ms: p.timeouts.total_ms.unwrap_or(defaults.total_ms),
        };
        for (field, value) in [
            ("probe_ms", timeouts.probe_ms),
            ("connect_ms", timeouts.connect_ms),
            ("first_token_ms", timeouts.first_token_ms),
            ("idle_ms", timeouts.idle_ms),
            ("total_ms", timeouts.total_ms),
        ] {
            if value == 0 {
                return Err(err(
                    key(&format!("timeouts.{field}")),
                    "must be greater than 0".into(),
                ));
            }
        }
        let mut models: Vec<ModelConfig> = Vec::with_capacity(p.models.len());
        for (j, m) in p.models.into_iter().enumerate() {
            if m.id.is_empty() {
                return Err(err(
                    key(&format!("models[{j}].id")),
                    "must not be empty".into(),
                ));
            }
            if models.iter().any(|other| other.id == m.id) {
                return Err(err(
                    key(&format!("models[{j}].id")),
                    format!("duplicate model {:?}", m.id),
                ));
            }
            if m.context_window == Some(0) {
                return Err(err(
                    key(&format!("models[{j}].context_window")),
                    "must be greater than 0".into(),
                ));
            }
            models.push(ModelConfig {
                id: m.id,
                context_window: m.context_window,
                display_name: m.display_name,
            });
        }
        providers.push(ProviderConfig {
            name,
            kind,
            enabled: p.enabled,
            base_url,
            proxy_url,
            probe_interval_ms,
            set_params,
            strip_params: p.strip_params,
            api_key_env: p.api_key_env,
            headers: p.headers,
            timeouts,
            models,
        });
    }

    if let Some(provider) = &raw.defaults.provider {
        if !providers.iter().any(|p| p.name.as_str() == provider) {
            return Err(err(
                "defaults.provider".into(),
                format!("no provider named {provider:?}"),
            ));
        }
    }
    if let Some(model) = &raw.defaults.model {
        if model.is_empty() {
            return Err(err("defaults.model".into(), "must not be empty".into()));
        }
    }
    let mut presets = BTreeMap::new();
    for (name, p) in raw.defaults.presets {
        let key = |field: &str| format!("defaults.presets.{name}.{field}");
        if !is_operation_name(&name) {
            return Err(err(
                format!("defaults.presets.{name}"),
                "a preset is named `default` or after an operation ([a-z][a-z0-9_-]{0,31})".into(),
            ));
        }
        let version = match p.version {
            None => {
                return Err(err(
                    key("version"),
                    "is required (an integer ≥ 1; bump it when the preset changes)".into(),
                ))
            }
            Some(v) if v < 1 => {
                return Err(err(key("version"), format!("must be at least 1, got {v}")))
            }
            Some(v) => {
                u32::try_from(v).map_err(|_| err(key("version"), format!("{v} is too large")))?
            }
        };
        let model = match p.model {
            None => return Err(err(key("model"), "is required (a model id)".into())),
            Some(m) if m.is_empty() => return Err(err(key("model"), "must not be empty".into())),
            Some(m) => m,
        };
        if p.display_name.as_deref() == Some("") {
            return Err(err(key("display_name"), "must not be empty".into()));
        }
        let raw_options = p.provider_options;
        let extra = match raw_options.extra {
            None => None,
            Some(table) => Some(
                serde_json::to_value(&table)
                    .map_err(|e| err(key("provider_options.extra"), e.to_string()))?,
            ),
        };
        let provider_options = ProviderOptions {
            temperature: raw_options.temperature,
            top_p: raw_options.top_p,
            max_tokens: raw_options.max_tokens,
            reasoning_effort: raw_options.reasoning_effort,
            stop: raw_options.stop,
            seed: raw_options.seed,
            extra,
        };
        if let Err(invalid) = provider_options.validate() {
            return Err(err(
                key(&format!("provider_options.{}", invalid.field.snake())),
                invalid.reason,
            ));
        }
        presets.insert(
            name,
            PresetConfig {
                version,
                model,
                display_name: p.display_name,
                system_prompt: p.system_prompt,
                provider_options,
            },
        );
    }
    if presets.contains_key(DEFAULT_PRESET) && raw.defaults.model.is_some() {
        return Err(err(
            "defaults.model".into(),
            "conflicts with [defaults.presets.default], which sets the server default; keep one"
                .into(),
        ));
    }

    let defaults = TurnsConfig::default();
    let in_range = |field: &str, value: Option<i64>, min: i64, max: i64, default: i64| {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(err(
                format!("turns.{field}"),
                format!("must be between {min} and {max}, got {v}"),
            ))
        }
    };
    let turns = TurnsConfig {
        max_tool_steps: in_range("max_tool_steps", raw.turns.max_tool_steps, 1, 64, 8)? as u32,
        advisor_max_uses: in_range("advisor_max_uses", raw.turns.advisor_max_uses, 0, 32, 3)?
            as u32,
        advisor_max_tokens: in_range(
            "advisor_max_tokens",
            raw.turns.advisor_max_tokens,
            1,
            1_000_000,
            1024,
        )? as u32,
        tool_output_buffer_bytes: in_range(
            "tool_output_buffer_bytes",
            raw.turns.tool_output_buffer_bytes,
            1024,
            64 * 1024 * 1024,
            defaults.tool_output_buffer_bytes as i64,
        )? as usize,
        sweep_interval_ms: in_range(
            "sweep_interval_ms",
            raw.turns.sweep_interval_ms,
            100,
            86_400_000,
            defaults.sweep_interval_ms as i64,
        )? as u64,
    };

    let d = LimitsConfig::default();
    let limit = |field: &str, value: Option<i64>, min: i64, max: i64, default: i64| {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(err(
                format!("limits.{field}"),
                format!("must be between {min} and {max}, got {v}"),
            ))
        }
    };
    let limits = LimitsConfig {
        max_n: limit("max_n", raw.limits.max_n, 1, 128, d.max_n.into())? as u32,
        max_output_tokens: limit(
            "max_output_tokens",
            raw.limits.max_output_tokens,
            1,
            10_000_000,
            d.max_output_tokens.into(),
        )? as u32,
        max_messages: limit(
            "max_messages",
            raw.limits.max_messages,
            1,
            1_000_000,
            d.max_messages.into(),
        )? as u32,
        max_tools: limit(
            "max_tools",
            raw.limits.max_tools,
            0,
            10_000,
            d.max_tools.into(),
        )? as u32,
        header_read_timeout_ms: limit(
            "header_read_timeout_ms",
            raw.limits.header_read_timeout_ms,
            100,
            600_000,
            d.header_read_timeout_ms as i64,
        )? as u64,
        max_streams: limit(
            "max_streams",
            raw.limits.max_streams,
            1,
            1_000_000,
            d.max_streams.into(),
        )? as u32,
        max_streams_per_key: limit(
            "max_streams_per_key",
            raw.limits.max_streams_per_key,
            1,
            1_000_000,
            d.max_streams_per_key.into(),
        )? as u32,
        max_sse_event_bytes: limit(
            "max_sse_event_bytes",
            raw.limits.max_sse_event_bytes,
            1024,
            1 << 30,
            d.max_sse_event_bytes as i64,
        )? as usize,
        max_streams_per_project: limit(
            "max_streams_per_project",
            raw.limits.max_streams_per_project,
            1,
            1_000_000,
            d.max_streams_per_project.into(),
        )? as u32,
        body_read_timeout_ms: limit(
            "body_read_timeout_ms",
            raw.limits.body_read_timeout_ms,
            100,
            3_600_000,
            d.body_read_timeout_ms as i64,
        )? as u64,
        max_connections: limit(
            "max_connections",
            raw.limits.max_connections,
            1,
            1_000_000,
            d.max_connections.into(),
        )? as u32,
        max_concurrent_requests: limit(
            "max_concurrent_requests",
            raw.limits.max_concurrent_requests,
            1,
            1_000_000,
            d.max_concurrent_requests.into(),
        )? as u32,
    };
    let security = SecurityConfig {
        allow_custom_base_urls: raw.security.allow_custom_base_urls.unwrap_or(false),
        base_url_allowlist: raw.security.base_url_allowlist,
        redact_secrets: raw.security.redact_secrets.unwrap_or(false),
    };

    Ok(Config {
        source: path.map(Path::to_owned),
        server: ServerConfig {
            listen,
            max_body_bytes,
            cors_origins,
            allowed_hosts,
            shutdown_timeout_ms,
        },
        storage: StorageConfig {
            url,
            data_dir,
            call_log: raw.storage.call_log.unwrap_or(true),
            content,
            retention,
        },
        providers,
        defaults: DefaultsConfig {
            model: raw.defaults.model,
            provider: raw.defaults.provider,
            presets,
        },
        turns,
        limits,
        security,
    })
}

#[cfg(test)]
mod tests;
