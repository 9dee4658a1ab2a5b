//! From the raw file to the typed [`Config`]: one function per section,
//! called in file order, so the first error found is the one reported.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::defaults::defaults;
use super::providers::providers;
use super::raw::{
    RawConfig, RawLimits, RawSecurity, RawServer, RawStorage, RawTelemetry, RawTurns,
};
use super::{
    Config, ConfigError, ContentPolicy, ContextStrategy, LimitsConfig, RetentionConfig,
    SecurityConfig, ServerConfig, StorageConfig, TelemetryConfig, TurnsConfig, DEFAULT_LISTEN,
    DEFAULT_SHUTDOWN_TIMEOUT_MS,
};

/// Validates `raw` (read from `source_name`, the file at `path` if any).
pub(super) fn validate(
    raw: RawConfig,
    source_name: &str,
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let server = server(raw.server, source_name)?;
    let storage = storage(raw.storage, source_name, env)?;
    let providers = providers(raw.providers, source_name)?;
    let defaults = defaults(raw.defaults, &providers, source_name)?;
    let turns = turns(raw.turns, source_name)?;
    let limits = limits(raw.limits, source_name)?;
    let security = security(raw.security);
    let routing = super::routing::routing(raw.routing, source_name)?;
    let routes = super::routing::routes(raw.routes, &providers, source_name)?;
    let cluster = super::cluster::cluster(raw.cluster, &storage, source_name)?;
    let telemetry = telemetry(raw.telemetry, source_name)?;
    let prices = super::prices::prices(raw.prices, &providers, source_name)?;
    Ok(Config {
        source: path.map(Path::to_owned),
        server,
        storage,
        providers,
        defaults,
        turns,
        limits,
        security,
        routing,
        routes,
        cluster,
        telemetry,
        prices,
    })
}

/// `[telemetry]`.
fn telemetry(raw: RawTelemetry, source_name: &str) -> Result<TelemetryConfig, ConfigError> {
    let err = error_in(source_name);
    let metrics_listen = match raw.metrics_listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            err(
                "telemetry.metrics_listen".into(),
                format!("{text:?} is not an address like 127.0.0.1:9464"),
            )
        })?),
    };
    let defaults = TelemetryConfig::default();
    let otlp_allow_remote = raw.otlp_allow_remote.unwrap_or(defaults.otlp_allow_remote);
    let otlp_endpoint = match raw.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            otlp_endpoint(text, otlp_allow_remote)
                .map_err(|reason| err("telemetry.otlp_endpoint".into(), reason))?,
        ),
    };
    let service_name = match raw.service_name.as_deref().map(str::trim) {
        None => defaults.service_name,
        Some(name)
            if !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control) =>
        {
            name.to_owned()
        }
        Some(name) => {
            return Err(err(
                "telemetry.service_name".into(),
                format!("{name:?} must be 1-255 characters without control characters"),
            ))
        }
    };
    Ok(TelemetryConfig {
        metrics: raw.metrics.unwrap_or(defaults.metrics),
        metrics_listen,
        per_project_metrics: raw
            .per_project_metrics
            .unwrap_or(defaults.per_project_metrics),
        access_log: raw.access_log.unwrap_or(defaults.access_log),
        otlp_endpoint,
        otlp_allow_remote,
        service_name,
        capture_content: raw.capture_content.unwrap_or(defaults.capture_content),
    })
}

/// `telemetry.otlp_endpoint`: an `http` / `https` URL without userinfo,
/// query or fragment, whose host is loopback unless `allow_remote`; the
/// path gets `/v1/traces` unless it ends with it already.
fn otlp_endpoint(text: &str, allow_remote: bool) -> Result<url::Url, String> {
    let mut url = url::Url::parse(text)
        .map_err(|e| format!("{text:?} is not a URL like http://127.0.0.1:4318 ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{text:?}: the scheme must be http or https (OTLP/HTTP)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("{text:?} has no host")),
    };
    if !loopback && !allow_remote {
        return Err(format!(
            "{text:?} is not a loopback address; set telemetry.otlp_allow_remote = true to \
             send spans to another host"
        ));
    }
    if !url.path().ends_with("/v1/traces") {
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// The error builder of one source: `err(key, reason)`.
pub(super) fn error_in(source_name: &str) -> impl Fn(String, String) -> ConfigError + '_ {
    move |key, reason| ConfigError {
        source_name: source_name.to_owned(),
        key,
        reason,
    }
}

/// `[server]`.
fn server(raw: RawServer, source_name: &str) -> Result<ServerConfig, ConfigError> {
    let err = error_in(source_name);
    let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        err(
            "server.listen".into(),
            format!("{listen_text:?} is not an address like 127.0.0.1:4000"),
        )
    })?;
    let max_body_bytes = raw.max_body_bytes.unwrap_or(32 * 1024 * 1024);
    if max_body_bytes < 1024 {
        return Err(err(
            "server.max_body_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    let cors_origins = raw
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
        .shutdown_timeout_ms
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS);
    if shutdown_timeout_ms > 3_600_000 {
        return Err(err(
            "server.shutdown_timeout_ms".into(),
            format!("must be between 0 and 3600000, got {shutdown_timeout_ms}"),
        ));
    }
    Ok(ServerConfig {
        listen,
        max_body_bytes,
        cors_origins,
        allowed_hosts,
        shutdown_timeout_ms,
    })
}

/// `[storage]`, with `[storage.retention]`.
fn storage(
    raw: RawStorage,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StorageConfig, ConfigError> {
    let err = error_in(source_name);
    let data_dir = raw.data_dir.unwrap_or_else(|| default_data_dir(env));
    let url = match raw.url {
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

    let content = match raw.content.as_deref() {
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
    let max_age_days = retention_limit("max_age_days", raw.retention.max_age_days)?
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
        retention_limit("max_calls", raw.retention.max_calls)?.map(|n| n.unsigned_abs());
    let retention = RetentionConfig {
        max_age_days,
        max_calls,
    };
    Ok(StorageConfig {
        url,
        data_dir,
        call_log: raw.call_log.unwrap_or(true),
        content,
        retention,
    })
}

/// `[turns]`.
fn turns(raw: RawTurns, source_name: &str) -> Result<TurnsConfig, ConfigError> {
    let err = error_in(source_name);
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
    Ok(TurnsConfig {
        max_tool_steps: in_range("max_tool_steps", raw.max_tool_steps, 1, 64, 8)? as u32,
        advisor_max_uses: in_range("advisor_max_uses", raw.advisor_max_uses, 0, 32, 3)? as u32,
        advisor_max_tokens: in_range(
            "advisor_max_tokens",
            raw.advisor_max_tokens,
            1,
            1_000_000,
            1024,
        )? as u32,
        tool_output_buffer_bytes: in_range(
            "tool_output_buffer_bytes",
            raw.tool_output_buffer_bytes,
            1024,
            64 * 1024 * 1024,
            defaults.tool_output_buffer_bytes as i64,
        )? as usize,
        sweep_interval_ms: in_range(
            "sweep_interval_ms",
            raw.sweep_interval_ms,
            100,
            86_400_000,
            defaults.sweep_interval_ms as i64,
        )? as u64,
        context_strategy: match raw.context_strategy.as_deref() {
            None => defaults.context_strategy,
            Some(text) => ContextStrategy::parse(text).ok_or_else(|| {
                err(
                    "turns.context_strategy".to_owned(),
                    format!("must be \"compact\", \"truncate\" or \"error\", got {text:?}"),
                )
            })?,
        },
        compact_at: match raw.compact_at {
            None => defaults.compact_at,
            Some(v) if (0.1..=1.0).contains(&v) => v,
            Some(v) => {
                return Err(err(
                    "turns.compact_at".to_owned(),
                    format!("must be between 0.1 and 1.0, got {v}"),
                ))
            }
        },
        output_reserve_tokens: in_range(
            "output_reserve_tokens",
            raw.output_reserve_tokens,
            1,
            1_000_000,
            defaults.output_reserve_tokens.into(),
        )? as u32,
    })
}

/// `[limits]`.
fn limits(raw: RawLimits, source_name: &str) -> Result<LimitsConfig, ConfigError> {
    let err = error_in(source_name);
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
    Ok(LimitsConfig {
        max_n: limit("max_n", raw.max_n, 1, 128, d.max_n.into())? as u32,
        max_output_tokens: limit(
            "max_output_tokens",
            raw.max_output_tokens,
            1,
            10_000_000,
            d.max_output_tokens.into(),
        )? as u32,
        max_messages: limit(
            "max_messages",
            raw.max_messages,
            1,
            1_000_000,
            d.max_messages.into(),
        )? as u32,
        max_tools: limit("max_tools", raw.max_tools, 0, 10_000, d.max_tools.into())? as u32,
        header_read_timeout_ms: limit(
            "header_read_timeout_ms",
            raw.header_read_timeout_ms,
            100,
            600_000,
            d.header_read_timeout_ms as i64,
        )? as u64,
        max_streams: limit(
            "max_streams",
            raw.max_streams,
            1,
            1_000_000,
            d.max_streams.into(),
        )? as u32,
        max_streams_per_key: limit(
            "max_streams_per_key",
            raw.max_streams_per_key,
            1,
            1_000_000,
            d.max_streams_per_key.into(),
        )? as u32,
        max_sse_event_bytes: limit(
            "max_sse_event_bytes",
            raw.max_sse_event_bytes,
            1024,
            1 << 30,
            d.max_sse_event_bytes as i64,
        )? as usize,
        max_streams_per_project: limit(
            "max_streams_per_project",
            raw.max_streams_per_project,
            1,
            1_000_000,
            d.max_streams_per_project.into(),
        )? as u32,
        body_read_timeout_ms: limit(
            "body_read_timeout_ms",
            raw.body_read_timeout_ms,
            100,
            3_600_000,
            d.body_read_timeout_ms as i64,
        )? as u64,
        max_connections: limit(
            "max_connections",
            raw.max_connections,
            1,
            1_000_000,
            d.max_connections.into(),
        )? as u32,
        max_concurrent_requests: limit(
            "max_concurrent_requests",
            raw.max_concurrent_requests,
            1,
            1_000_000,
            d.max_concurrent_requests.into(),
        )? as u32,
        budget_reserve_tokens: limit(
            "budget_reserve_tokens",
            raw.budget_reserve_tokens,
            0,
            10_000_000,
            d.budget_reserve_tokens.into(),
        )? as u32,
    })
}

/// `[security]`.
fn security(raw: RawSecurity) -> SecurityConfig {
    SecurityConfig {
        allow_custom_base_urls: raw.allow_custom_base_urls.unwrap_or(false),
        base_url_allowlist: raw.base_url_allowlist,
        redact_secrets: raw.redact_secrets.unwrap_or(false),
    }
}

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

/// `$XDG_DATA_HOME/modelyard`, else `$HOME/.local/share/modelyard`, else
/// `.modelyard`.
fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(xdg) = env("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(xdg).join("modelyard");
    }
    match env("HOME").filter(|p| !p.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/modelyard"),
        None => PathBuf::from(".modelyard"),
    }
}
