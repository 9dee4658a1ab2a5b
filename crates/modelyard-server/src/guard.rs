//! Browser-facing checks on every request, before routing and auth: the
//! defences against DNS rebinding and cross-site requests from a web page
//! the user happens to visit (the gateway often runs on a developer's
//! machine, where any page can send requests to `127.0.0.1`).
//!
//! 1. **Host.** Without API keys (open mode) the `Host` must be a loopback
//!    name or address (`localhost`, `127.0.0.0/8`, `[::1]`) or the configured
//!    listen address, else 421 Misdirected Request: a page on
//!    `evil.example` whose DNS was rebound to `127.0.0.1` still sends
//!    `Host: evil.example`. With keys, `server.allowed_hosts` decides
//!    (default: any host).
//!    In open mode a request a proxy forwarded for a non-loopback client
//!    (`X-Forwarded-For`, `X-Real-IP`, `Forwarded: for=`) gets 403: a local
//!    reverse proxy must not publish an open server (a page cannot add those
//!    headers cross-site without a preflight, which is refused).
//! 2. **Origin.** A request carrying an `Origin` other than the server's own
//!    (the same host and port as its `Host` or `X-Forwarded-Host`; the scheme
//!    is not compared, so a TLS-terminating proxy works) gets 403 unless the
//!    origin is listed in
//!    `server.cors_origins`. Listed origins get CORS headers, and their
//!    preflights (`OPTIONS` with `Access-Control-Request-Method`) are
//!    answered here; other preflights get 403.
//! 3. **Content type.** `POST`, `PUT` and `PATCH` under `/v1/` with a body
//!    need `Content-Type: application/json` (parameters such as `charset`
//!    allowed), else 415: an HTML form or a `text/plain` `fetch` — the
//!    requests a browser sends cross-site without a preflight — never
//!    reaches a handler, let alone a provider. A body-less request without
//!    a content type (e.g. a cancel) passes.
//!
//! `/health` skips all three. Errors use the OpenAI envelope on
//! `/v1/chat/completions` and `/v1/models`, Anthropic's error shape on
//! `/v1/messages…`, problem+json elsewhere.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{AnthropicError, OpenAiError, Problem};

/// Methods a preflight may be granted.
const CORS_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
/// Request headers a preflight may be granted.
/// (`x-api-key`, `anthropic-version`, `anthropic-beta` and
/// `anthropic-dangerous-direct-browser-access`: what an Anthropic SDK sends
/// from a browser.)
const CORS_HEADERS: &str = "authorization, content-type, accept, last-event-id, x-api-key, \
     anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access";
/// How long a browser may cache a preflight answer, seconds.
const CORS_MAX_AGE: &str = "600";

/// The middleware (a layer around the whole router, UI included).
pub async fn middleware(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let cors_origin = match check(&app, &request) {
        Ok(cors_origin) => cors_origin,
        Err(refused) => return refused,
    };
    let mut response = next.run(request).await;
    add_cors(response.headers_mut(), cors_origin.as_deref());
    response
}

/// The checks, borrowing the request: the listed CORS origin to answer
/// with, or the refusal.
// The refusal is the response itself, built once per refused request.
#[allow(clippy::result_large_err)]
fn check(app: &AppState, request: &Request) -> Result<Option<String>, Response> {
    let path = request.uri().path();
    let headers = request.headers();
    let host = host_of(request);
    let config = &app.config.server;
    let host_ok = if app.auth.required() {
        config.allowed_hosts.is_empty()
            || host.is_some_and(|h| host_allowed(h, &config.allowed_hosts))
    } else {
        host.is_some_and(|h| is_loopback_host(h) || is_listen_host(h, config.listen.ip()))
    };
    if !host_ok {
        tracing::debug!(host = ?host, %path, "refused: Host not accepted");
        return Err(refuse(
            path,
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "this server does not answer for Host {:?}: {}",
                host.unwrap_or_default(),
                if app.auth.required() {
                    "it is not in server.allowed_hosts"
                } else {
                    "without API keys only loopback hosts (localhost, 127.0.0.1, [::1]) are served"
                }
            ),
        ));
    }

    if !app.auth.required() {
        if let Some(client) = remote_forwarded_client(headers) {
            tracing::debug!(%client, %path, "refused: open mode behind a proxy");
            return Err(refuse(
                path,
                StatusCode::FORBIDDEN,
                "remote_client_in_open_mode",
                format!(
                    "this server has no API keys, so it serves only clients on this machine; \
                     a proxy forwarded this request for {client:?}. Create a key first \
                     (`modelyard keys create --role admin`)"
                ),
            ));
        }
    }

    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let mut cors_origin = None;
    if let Some(origin) = origin {
        let listed = config
            .cors_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')));
        let preflight = request.method() == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            return Err(if listed {
                preflight_answer(&origin)
            } else {
                refuse(
                    path,
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    format!("origin {origin:?} is not in server.cors_origins"),
                )
            });
        }
        // Behind a reverse proxy that rewrites `Host`, the public name is in
        // `X-Forwarded-Host`; a page cannot set that header cross-site
        // without a preflight, which is refused above.
        let forwarded = headers
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next());
        let own = host.is_some_and(|h| same_origin(&origin, h))
            || forwarded.is_some_and(|h| same_origin(&origin, h.trim()));
        if listed {
            cors_origin = Some(origin);
        } else if !own {
            tracing::debug!(%origin, %path, "refused: cross-site Origin");
            return Err(refuse(
                path,
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "cross-site request from origin {origin:?} refused; list it in \
                     server.cors_origins to allow it"
                ),
            ));
        }
    }

    if matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) && path.starts_with("/v1/")
        && !json_or_bodyless(request.headers())
    {
        let mut response = refuse(
            path,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request bodies must be JSON: send Content-Type: application/json".into(),
        );
        add_cors(response.headers_mut(), cors_origin.as_deref());
        return Err(response);
    }
    Ok(cors_origin)
}

/// The first client a proxy says it forwarded for (`X-Forwarded-For`,
/// `X-Real-IP`, `Forwarded: for=`) that is not a loopback address (an
/// unparseable or obfuscated one counts as remote).
fn remote_forwarded_client(headers: &HeaderMap) -> Option<String> {
    let mut clients: Vec<String> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().unwrap_or("?");
        clients.extend(text.split(',').map(|c| c.trim().to_owned()));
    }
    for value in headers.get_all("x-real-ip") {
        clients.push(value.to_str().unwrap_or("?").trim().to_owned());
    }
    for value in headers.get_all(header::FORWARDED) {
        let text = value.to_str().unwrap_or("for=?");
        for pair in text.split([',', ';']) {
            if let Some((name, client)) = pair.trim().split_once('=') {
                if name.trim().eq_ignore_ascii_case("for") {
                    clients.push(client.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    clients.into_iter().find(|client| {
        // `1.2.3.4`, `1.2.3.4:5`, `[::1]`, `[::1]:5`.
        let bare = match client.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None if client.matches(':').count() == 1 => client.split(':').next().unwrap_or(""),
            None => client.as_str(),
        };
        !bare
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
    })
}

/// The `Host` header, else the request target's authority.
fn host_of(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

/// `Host` split into lowercase name (brackets kept for IPv6, trailing dot
/// dropped) and port.
fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => (
                host[..=end].to_owned(),
                host[end + 1..]
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok()),
            ),
            None => (host.clone(), None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => (name.to_owned(), port.parse().ok()),
            _ => (host.clone(), None),
        }
    };
    (name.trim_end_matches('.').to_owned(), port)
}

fn host_ip(name: &str) -> Option<IpAddr> {
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, any port.
pub fn is_loopback_host(host: &str) -> bool {
    let (name, _) = split_host(host);
    name == "localhost" || host_ip(&name).is_some_and(|ip| ip.is_loopback())
}

fn is_listen_host(host: &str, listen: IpAddr) -> bool {
    let (name, _) = split_host(host);
    !listen.is_unspecified() && host_ip(&name) == Some(listen.to_canonical())
}

/// Whether `host` matches an entry of `server.allowed_hosts` (an entry
/// without a port matches any port).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let (name, port) = split_host(host);
    allowed.iter().any(|entry| {
        let (entry_name, entry_port) = split_host(entry);
        entry_name == name && (entry_port.is_none() || entry_port == port)
    })
}

/// Whether `origin` names the same host and port as `host` (the port of a
/// `Host` without one is the origin scheme's default).
fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let (Some(origin_host), Some(origin_port)) = (url.host_str(), url.port_or_known_default())
    else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let (name, port) = split_host(host);
    origin_host.eq_ignore_ascii_case(&name) && port.unwrap_or(origin_port) == origin_port
}

/// A JSON content type, or no body at all (and no content type).
fn json_or_bodyless(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        }),
        None => {
            let chunked = headers.contains_key(header::TRANSFER_ENCODING);
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            !chunked && length.unwrap_or(0) == 0
        }
    }
}

fn add_cors(headers: &mut HeaderMap, origin: Option<&str>) {
    let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn preflight_answer(origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    add_cors(headers, Some(origin));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(CORS_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(CORS_MAX_AGE),
    );
    response
}

fn refuse(path: &str, status: StatusCode, code: &'static str, message: String) -> Response {
    if crate::error::is_anthropic_path(path) {
        AnthropicError::new(status, message).into_response()
    } else if crate::error::is_openai_path(path) {
        OpenAiError::new(status, "invalid_request_error", message)
            .code(code)
            .into_response()
    } else {
        let title = status.canonical_reason().unwrap_or("Refused");
        Problem::new(status, title, message)
            .with("code", code)
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST:4000",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:4000",
            "127.8.9.10:1",
            "[::1]:4000",
            "[::1]",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example:4000",
            "evil.localhost.example",
            "10.0.0.1:4000",
            "0.0.0.0:4000",
            "[::]:4000",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_match_name_and_optional_port() {
        let allowed = vec!["gw.example.com".to_owned(), "10.0.0.5:4000".to_owned()];
        assert!(host_allowed("GW.example.com:443", &allowed));
        assert!(host_allowed("gw.example.com", &allowed));
        assert!(host_allowed("10.0.0.5:4000", &allowed));
        assert!(!host_allowed("10.0.0.5:4001", &allowed));
        assert!(!host_allowed("evil.example", &allowed));
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        assert!(same_origin("http://127.0.0.1:4000", "127.0.0.1:4000"));
        assert!(same_origin("https://gw.example.com", "gw.example.com"));
        assert!(same_origin("http://[::1]:4000", "[::1]:4000"));
        assert!(!same_origin("http://127.0.0.1:4001", "127.0.0.1:4000"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:4000"));
        assert!(!same_origin("null", "127.0.0.1:4000"));
    }

    #[test]
    fn forwarded_clients() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(remote_forwarded_client(&headers(&[])), None);
        assert_eq!(
            remote_forwarded_client(&headers(&[("x-forwarded-for", "127.0.0.1, ::1")])),
            None
        );
        assert_eq!(
            remote_forwarded_client(&headers(&[("forwarded", "for=\"[::1]:5\";proto=http")])),
            None
        );
        assert_eq!(
            remote_forwarded_client(&headers(&[("x-forwarded-for", "127.0.0.1, 203.0.113.7")])),
            Some("203.0.113.7".to_owned())
        );
        assert_eq!(
            remote_forwarded_client(&headers(&[("x-real-ip", "10.1.2.3")])),
            Some("10.1.2.3".to_owned())
        );
        assert_eq!(
            remote_forwarded_client(&headers(&[("forwarded", "for=unknown")])),
            Some("unknown".to_owned())
        );
        assert_eq!(
            remote_forwarded_client(&headers(&[("forwarded", "for=192.0.2.60:4711")])),
            Some("192.0.2.60:4711".to_owned())
        );
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(json_or_bodyless(&h), "no body, no type");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!json_or_bodyless(&h), "a body without a type");
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(json_or_bodyless(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!json_or_bodyless(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(!json_or_bodyless(&h));
    }
}
