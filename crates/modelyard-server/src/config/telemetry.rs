//! `[telemetry]`: metrics, the access log and OpenTelemetry traces.

use std::net::SocketAddr;

use super::raw::RawTelemetry;
use super::validate::error_in;
use super::ConfigError;

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

/// `[telemetry]`.
pub(super) fn telemetry(
    raw: RawTelemetry,
    source_name: &str,
) -> Result<TelemetryConfig, ConfigError> {
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
