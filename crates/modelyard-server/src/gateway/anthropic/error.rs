//! Why a Messages request failed, in Anthropic's error shape
//! ([`AnthropicError`]): the same statuses as the OpenAI front
//! ([`crate::gateway`]), with Anthropic's error types.

use axum::http::StatusCode;

use crate::error::AnthropicError;
use crate::registry::RouteError;
use crate::service::llm_call::{LlmCallError, UpstreamStatus};
use crate::service::routed::RoutedError;

use super::request::RequestError;

/// A request the client got wrong: 400 `invalid_request_error`.
pub(crate) fn bad_request(err: RequestError) -> AnthropicError {
    AnthropicError::new(StatusCode::BAD_REQUEST, err.0)
}

/// A model that cannot be routed: no model (400), an invalid id (400), an
/// ambiguous bare id (409), an unknown one (404 `not_found_error`, listing
/// what exists), a disabled provider (503 `api_error`).
pub(crate) fn route(err: RouteError) -> AnthropicError {
    let status = match &err {
        RouteError::NoModel | RouteError::Resolve(modelyard_core::ResolveError::Invalid(_)) => {
            StatusCode::BAD_REQUEST
        }
        RouteError::Resolve(modelyard_core::ResolveError::Ambiguous { .. }) => StatusCode::CONFLICT,
        RouteError::Resolve(_) => StatusCode::NOT_FOUND,
        RouteError::Disabled { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    AnthropicError::new(status, err.to_string())
}

/// No attempt served: the last attempt's error ([`call`]), or 503
/// `overloaded_error` naming each deployment's reason, with `Retry-After`
/// when the soonest recovery is known.
pub(crate) fn routed(err: RoutedError) -> AnthropicError {
    match err {
        RoutedError::Call(err) => call(err),
        unavailable @ RoutedError::Unavailable { .. } => {
            let mut error =
                AnthropicError::new(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string());
            error.kind = "overloaded_error";
            error.retry_after = unavailable.retry_after_secs().map(|s| s.to_string());
            error
        }
    }
}

/// A failed upstream call, as the OpenAI front answers it: an upstream
/// 401/403 (the provider refused *Modelyard's* credentials) and 3xx are 502
/// `api_error`; other statuses pass through with the upstream's message
/// (503 and 529 as `overloaded_error`) and `Retry-After`; a deadline is
/// 504; anything else the provider did wrong 502.
pub(crate) fn call(err: LlmCallError) -> AnthropicError {
    match err {
        LlmCallError::Status(answer) => {
            let UpstreamStatus {
                status,
                message,
                retry_after,
                ..
            } = *answer;
            let mut error = match status {
                300..=399 | 401 | 403 => AnthropicError::new(StatusCode::BAD_GATEWAY, message),
                _ => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    let mut error = AnthropicError::new(status, message);
                    if matches!(status.as_u16(), 503 | 529) {
                        error.kind = "overloaded_error";
                    }
                    error
                }
            };
            error.retry_after = retry_after;
            error
        }
        LlmCallError::InvalidRequest(message) => {
            AnthropicError::new(StatusCode::BAD_REQUEST, message)
        }
        err @ LlmCallError::MessagesOnly { .. } => {
            AnthropicError::new(StatusCode::BAD_REQUEST, err.to_string())
        }
        err @ LlmCallError::Disabled { .. } => {
            AnthropicError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        err if err.is_timeout() => {
            AnthropicError::new(StatusCode::GATEWAY_TIMEOUT, err.to_string())
        }
        other => AnthropicError::new(StatusCode::BAD_GATEWAY, other.to_string()),
    }
}

/// The error type of an `error` event mid-stream: `overloaded_error` for a
/// deadline, else `api_error`.
pub(crate) fn mid_stream_kind(err: &LlmCallError) -> &'static str {
    if err.is_timeout() {
        "overloaded_error"
    } else {
        "api_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<&str>) -> LlmCallError {
        LlmCallError::Status(Box::new(UpstreamStatus {
            status,
            message: format!("provider 'p' answered HTTP {status}: boom"),
            kind: Some("server_error".into()),
            code: None,
            retry_after: retry_after.map(str::to_owned),
        }))
    }

    #[test]
    fn upstream_statuses_map_to_anthropic_types() {
        let e = call(status(500, None));
        assert_eq!((e.status.as_u16(), e.kind), (500, "api_error"));
        let e = call(status(429, Some("3")));
        assert_eq!((e.status.as_u16(), e.kind), (429, "rate_limit_error"));
        assert_eq!(e.retry_after.as_deref(), Some("3"));
        let e = call(status(401, None));
        assert_eq!((e.status.as_u16(), e.kind), (502, "api_error"));
        let e = call(status(302, None));
        assert_eq!((e.status.as_u16(), e.kind), (502, "api_error"));
        let e = call(status(400, None));
        assert_eq!((e.status.as_u16(), e.kind), (400, "invalid_request_error"));
        let e = call(status(404, None));
        assert_eq!((e.status.as_u16(), e.kind), (404, "not_found_error"));
        let e = call(status(529, None));
        assert_eq!((e.status.as_u16(), e.kind), (529, "overloaded_error"));
        let e = call(LlmCallError::Invalid("bad".into()));
        assert_eq!((e.status.as_u16(), e.kind), (502, "api_error"));
        assert_eq!(
            e.body(),
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": "bad"}})
        );
    }

    #[test]
    fn route_errors() {
        let e = route(RouteError::NoModel);
        assert_eq!((e.status.as_u16(), e.kind), (400, "invalid_request_error"));
        let e = route(RouteError::Disabled {
            provider: "p".into(),
            reason: "no key".into(),
        });
        assert_eq!((e.status.as_u16(), e.kind), (503, "api_error"));
    }
}
