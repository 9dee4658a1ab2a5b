//! From the raw file to the typed [`Config`]: one function per section,
//! called in file order, so the first error found is the one reported.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::defaults::defaults;
use super::providers::providers;
use super::raw::{RawConfig, RawSecurity, RawServer, RawStorage};
use super::{
    Config, ConfigError, ContentPolicy, RetentionConfig, SecurityConfig, ServerConfig,
    StorageConfig, DEFAULT_LISTEN, DEFAULT_SHUTDOWN_TIMEOUT_MS,
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
    let turns = super::turns::turns(raw.turns, source_name)?;
    let limits = super::limits::limits(raw.limits, source_name)?;
    let security = security(raw.security);
    let routing = super::routing::routing(raw.routing, source_name)?;
    let routes = super::routing::routes(raw.routes, &providers, source_name)?;
    let cluster = super::cluster::cluster(raw.cluster, &storage, source_name)?;
    let telemetry = super::telemetry::telemetry(raw.telemetry, source_name)?;
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
