//! Error responses, one shape per surface:
//!
//! - OpenAI-compatible endpoints (`/v1/chat/completions`, `/v1/models`)
//!   answer with OpenAI's error envelope
//!   `{"error": {"message", "type", "param", "code"}}` ([`OpenAiError`]).
//! - The Anthropic Messages front (`/v1/messages`, `/v1/messages/…`)
//!   answers with Anthropic's error shape
//!   `{"type": "error", "error": {"type", "message"}}` ([`AnthropicError`]).
//! - Modelyard's own API answers with RFC 9457 `application/problem+json`
//!   `{"type", "title", "status", "detail", "code"}` ([`Problem`]); `code`
//!   is stable and machine-readable (a service error's own code, else one
//!   named after the status).
//!
//! Handlers return these types; nothing else builds error bodies.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Whether `path` is an OpenAI-compatible endpoint, whose errors use the
/// OpenAI envelope (everything else answers problem documents): chat, the
/// model list, the pass-throughs (embeddings, rerank, legacy completions)
/// and the Responses API (`/v1/responses`, `/v1/responses/{id}`).
pub fn is_openai_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions"
            | "/v1/models"
            | "/v1/embeddings"
            | "/v1/rerank"
            | "/v1/reranking"
            | "/v1/completions"
            | "/v1/responses"
    ) || path.starts_with("/v1/responses/")
}

/// Whether `path` belongs to the Anthropic Messages front
/// (`/v1/messages` and everything under it), whose errors use Anthropic's
/// shape ([`AnthropicError`]). Checked before [`is_openai_path`].
pub fn is_anthropic_path(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// An error in Anthropic's shape (Anthropic API reference, "Errors"):
/// `{"type": "error", "error": {"type": <kind>, "message": <text>}}`, the
/// kind named after the status ([`AnthropicError::kind_for`]).
#[derive(Debug, Clone)]
pub struct AnthropicError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.type`: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `request_too_large`,
    /// `rate_limit_error`, `api_error` or `overloaded_error`.
    pub kind: &'static str,
    /// `error.message`.
    pub message: String,
    /// A `Retry-After` header to send (a cap reached, an upstream 429).
    pub retry_after: Option<String>,
}

impl AnthropicError {
    /// An error whose kind follows from `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: Self::kind_for(status),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Anthropic's error type for an HTTP status: 401
    /// `authentication_error`, 403 `permission_error`, 404
    /// `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`,
    /// 529 `overloaded_error`, any other 4xx `invalid_request_error`, any
    /// other 5xx `api_error`.
    pub fn kind_for(status: StatusCode) -> &'static str {
        match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// The error as JSON.
    pub fn body(&self) -> Value {
        serde_json::to_value(AnthropicErrorBody {
            kind: "error",
            error: AnthropicErrorDetail {
                kind: self.kind,
                message: self.message.clone(),
            },
        })
        .unwrap_or(Value::Null)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// An error in OpenAI's envelope.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// `type`, e.g. `invalid_request_error`, `not_found_error`, `upstream_error`.
    pub kind: String,
    /// `param`: the request field at fault, if any.
    pub param: Option<&'static str>,
    /// `code`: a machine-readable code, if any.
    pub code: Option<Value>,
    /// A `Retry-After` header to pass on (from an upstream 429 or 503).
    pub retry_after: Option<String>,
}

impl OpenAiError {
    /// An error with no `param` or `code`.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: kind.to_owned(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// Sets `param`.
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// Sets `code`.
    pub fn code(mut self, code: impl Into<Value>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The envelope as JSON.
    pub fn body(&self) -> Value {
        serde_json::to_value(OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind.clone(),
                param: self.param,
                code: self.code.clone(),
            },
        })
        .unwrap_or(Value::Null)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(value) = self
            .retry_after
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short, stable summary (`title`).
    pub title: &'static str,
    /// What exactly went wrong (`detail`).
    pub detail: String,
    /// Extension members (RFC 9457 §3.2), e.g. `suggestions`.
    pub extensions: serde_json::Map<String, Value>,
}

impl Problem {
    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub(crate) fn new(status: StatusCode, title: &'static str, detail: String) -> Self {
        Self {
            status,
            title,
            detail,
            extensions: serde_json::Map::new(),
        }
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found", detail.into())
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", detail.into())
    }

    /// 409 Conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", detail.into())
    }

    /// 422 Unprocessable Content.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Content",
            detail.into(),
        )
    }

    /// 502 Bad Gateway: the provider failed a server-side call.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "Bad Gateway", detail.into())
    }

    /// 500, for store failures; the detail is logged, not shown.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "the server failed to complete the request; see its log".into(),
        )
    }
}

/// The `code` of a problem document built without one: a stable name of
/// its status.
fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "body_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        429 => "too_many_requests",
        502 => "upstream_error",
        503 => "unavailable",
        504 => "upstream_timeout",
        _ => "internal_error",
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let code = match self.extensions.remove("code") {
            Some(Value::String(code)) => code,
            Some(other) => other.to_string(),
            None => default_code(self.status).to_owned(),
        };
        let body = ProblemBody {
            kind: "about:blank",
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail,
            code,
            extensions: self.extensions,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// The body a [`Problem`] writes (`application/problem+json`, RFC 9457
/// §3), also its schema in the OpenAPI document: the members every problem
/// has, then extension members such as `field`, `suggestions`,
/// `conversations`, `pending` or `sessionId`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Short summary of the status (`Not Found`, ...).
    #[schema(value_type = String)]
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What exactly went wrong.
    pub detail: String,
    /// Stable, machine-readable error code (`conversation_not_found`,
    /// `invalid_body`, ...; else one named after the status).
    pub code: String,
    /// Extension members.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, Value>,
}

/// `error` of [`OpenAiErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    /// Human-readable message.
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `upstream_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if any.
    #[schema(value_type = Option<String>)]
    pub param: Option<&'static str>,
    /// A machine-readable code (a string or an upstream's number), if any.
    pub code: Option<Value>,
}

/// OpenAI's error envelope, the body an [`OpenAiError`] writes (also its
/// schema in the OpenAPI document).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = OpenAiError)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiErrorDetail,
}

/// `error` of [`AnthropicErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AnthropicErrorDetail {
    /// [`AnthropicError::kind_for`] the status.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// Anthropic's error shape, the body an [`AnthropicError`] writes (also its
/// schema in the OpenAPI document).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = AnthropicError)]
pub struct AnthropicErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The error.
    pub error: AnthropicErrorDetail,
}
