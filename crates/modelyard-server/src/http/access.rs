//! The outermost layer of every request: the request id, the access log
//! and the HTTP request metrics.
//!
//! - `x-request-id`: a client's value is kept when it is 1–128 visible
//!   ASCII characters (`!`…`~`), else replaced by a new UUIDv7; the request
//!   goes on with the kept or new value in its header (handlers store it on
//!   the call record) and every response carries it, errors included.
//! - One `tracing` event per request, target `modelyard::access`, at INFO:
//!   method, route pattern, status, duration (ms with three decimals, to
//!   the response headers: `duration_ms=4.610`), project, key prefix,
//!   model (when a handler named one) and request id. Off with
//!   `[telemetry] access_log = false`.
//! - `modelyard_http_requests_total` / `modelyard_http_request_duration_seconds`
//!   by route pattern, never the raw path ([`crate::telemetry`]).
//! - With `[telemetry] otlp_endpoint`, the request's server span, which
//!   continues an incoming `traceparent`; the request runs in its context,
//!   so the spans of its upstream attempts are its children
//!   ([`crate::traces`]). It ends with the response headers, or for an
//!   event stream when its body ends.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use modelyard_store::ProjectId;

use crate::app::AppState;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client request id kept, characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Who called, as the auth layer saw it (a response extension).
#[derive(Debug, Clone)]
pub struct SeenCaller {
    /// The caller's project.
    pub project: ProjectId,
    /// The prefix of the key used (`mk_` and 8 characters), if any.
    pub key_prefix: Option<String>,
}

/// The model a handler resolved for a request (a response extension):
/// the deployment that served, or the route or deployment it named.
#[derive(Debug, Clone)]
pub struct SeenModel(pub String);

/// Whether a client's request id is kept: 1–128 visible ASCII characters.
pub fn valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_CHARS
        && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The request's id: the client's when valid, else a new UUIDv7.
pub fn request_id(headers: &axum::http::HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|v| valid_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// A new request id (UUIDv7).
pub fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::now_v7().hyphenated();
    HeaderValue::from_bytes(id.encode_lower(&mut text).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The layer (see the [module docs](self)).
pub async fn middleware(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let method = method_label(request.method());
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => crate::http::routes::pattern(path.as_str()).unwrap_or("ui"),
        None => crate::telemetry::UNMATCHED_ROUTE,
    };
    let span = if app.traces.enabled() {
        app.traces
            .server_span(request.headers(), method, route, id.to_str().unwrap_or(""))
    } else {
        None
    };
    let mut response = match &span {
        Some(cx) => {
            use crate::traces::FutureExt as _;
            next.run(request).with_context(cx.clone()).await
        }
        None => next.run(request).await,
    };
    response.headers_mut().insert(REQUEST_ID, id.clone());
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    if let Some(cx) = span {
        // An event stream's span lasts until its body ends (or the client
        // leaves); any other response's ends with its headers.
        let streamed = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let guard = crate::traces::ServerSpan::new(cx, status);
        if streamed {
            response = response.map(|body| {
                use futures_util::StreamExt as _;
                axum::body::Body::from_stream(body.into_data_stream().map(move |frame| {
                    let _span = &guard;
                    frame
                }))
            });
        }
    }
    let caller = response.extensions().get::<SeenCaller>();
    let project = caller.map(|c| c.project.as_str());
    app.metrics
        .http_request(route, method, status, project, elapsed);
    if app.config.telemetry.access_log {
        let model = response.extensions().get::<SeenModel>();
        tracing::info!(
            target: "modelyard::access",
            method,
            route,
            status,
            duration_ms = %Millis(elapsed),
            project = project.unwrap_or(""),
            key_prefix = caller.and_then(|c| c.key_prefix.as_deref()).unwrap_or(""),
            model = model.map_or("", |m| m.0.as_str()),
            request_id = id.to_str().unwrap_or(""),
            "request"
        );
    }
    response
}

/// A duration in milliseconds with three decimals (to the microsecond),
/// written from integers: `4.610`. The float it replaced printed every
/// digit of its binary value (`0.30453199999999997`).
struct Millis(std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::Millis;
    use std::time::Duration;

    #[test]
    fn a_duration_is_milliseconds_with_three_decimals() {
        let shown = |d: Duration| Millis(d).to_string();
        assert_eq!(shown(Duration::from_nanos(304_532)), "0.304");
        assert_eq!(shown(Duration::from_micros(4_610)), "4.610");
        assert_eq!(shown(Duration::ZERO), "0.000");
        assert_eq!(shown(Duration::from_secs(90)), "90000.000");
    }
}
