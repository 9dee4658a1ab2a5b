//! Why an LLM call did not produce an answer ([`LlmCallError`]) and how an
//! upstream's non-2xx answer reads ([`UpstreamStatus`], [`status_message`]).

use modelyard_upstream::openai::upstream_error_message;
use modelyard_upstream::sse::EventTooLarge;
use modelyard_upstream::UpstreamError;
use serde_json::Value;

use super::MAX_ERROR_CHARS;

/// Why a call did not produce an answer. Messages name the provider.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmCallError {
    /// The request body is not a JSON object (a client's, with param rules
    /// to apply).
    #[error("{0}")]
    InvalidRequest(String),
    /// The provider is disabled (it has no client).
    #[error("provider '{provider}' is disabled")]
    Disabled {
        /// Provider name.
        provider: String,
    },
    /// The provider (kind `anthropic`) speaks only Anthropic's Messages
    /// API and the call is not a Messages call; nothing was sent.
    #[error("provider '{provider}' speaks only the Anthropic Messages API; use POST /v1/messages")]
    MessagesOnly {
        /// Provider name.
        provider: String,
    },
    /// Connecting or sending failed, or no answer came in time.
    #[error(transparent)]
    Send(UpstreamError),
    /// Reading the answer failed (connection, deadline, size).
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The provider answered a non-2xx status.
    #[error("{}", .0.message)]
    Status(Box<UpstreamStatus>),
    /// A streamed request was answered with another content type.
    #[error(
        "provider '{provider}' answered a streaming request with content type \
         {content_type:?} instead of text/event-stream"
    )]
    NotEventStream {
        /// Provider name.
        provider: String,
        /// What it sent.
        content_type: String,
    },
    /// A success status whose body (or stream event) is an error object.
    #[error("{message}")]
    InBand {
        /// The whole message.
        message: String,
        /// The upstream's `error.code`.
        code: Option<Value>,
    },
    /// An answer that cannot be read: not JSON, malformed stream data, an
    /// event over the size cap.
    #[error("{0}")]
    Invalid(String),
    /// The stream ended before `[DONE]`.
    #[error("{0}")]
    Closed(String),
}

/// An upstream non-2xx answer, read.
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    /// Its status.
    pub status: u16,
    /// The whole message (see [`status_message`]).
    pub message: String,
    /// The upstream's `error.type`.
    pub kind: Option<String>,
    /// The upstream's `error.code`.
    pub code: Option<Value>,
    /// The upstream's `Retry-After`.
    pub retry_after: Option<String>,
}

impl LlmCallError {
    /// Its `error.type` in traces: the upstream's status, or what went
    /// wrong in a few words (`timeout`, `unreachable`, …).
    pub fn error_type(&self) -> &'static str {
        match self {
            LlmCallError::InvalidRequest(_) => "invalid_request",
            LlmCallError::Disabled { .. } => "provider_disabled",
            LlmCallError::MessagesOnly { .. } => "messages_api_only",
            LlmCallError::Send(UpstreamError::Timeout { .. })
            | LlmCallError::Upstream(UpstreamError::Timeout { .. }) => "timeout",
            LlmCallError::Send(_) => "unreachable",
            LlmCallError::Upstream(_) => "read_failed",
            LlmCallError::Status(_) => "http_status",
            LlmCallError::NotEventStream { .. } => "not_event_stream",
            LlmCallError::InBand { .. } => "upstream_error",
            LlmCallError::Invalid(_) => "invalid_answer",
            LlmCallError::Closed(_) => "closed_early",
        }
    }

    /// The upstream's HTTP status, when this error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmCallError::Status(answer) => Some(answer.status),
            _ => None,
        }
    }

    /// Whether a deadline expired.
    pub fn is_timeout(&self) -> bool {
        matches!(self, LlmCallError::Send(e) | LlmCallError::Upstream(e) if e.is_timeout())
    }

    /// The OpenAI error `type` a front reports for it.
    pub fn kind(&self) -> &str {
        match self {
            LlmCallError::InvalidRequest(_) | LlmCallError::MessagesOnly { .. } => {
                "invalid_request_error"
            }
            LlmCallError::Disabled { .. } => "provider_disabled",
            LlmCallError::Send(e) | LlmCallError::Upstream(e) if e.is_timeout() => {
                "upstream_timeout"
            }
            LlmCallError::Send(_) => "upstream_unreachable",
            LlmCallError::Upstream(_) | LlmCallError::InBand { .. } | LlmCallError::Closed(_) => {
                "upstream_error"
            }
            LlmCallError::Status(answer) => match answer.status {
                300..=399 | 401 | 403 => "upstream_error",
                _ => answer.kind.as_deref().unwrap_or("upstream_error"),
            },
            LlmCallError::NotEventStream { .. } | LlmCallError::Invalid(_) => {
                "upstream_invalid_response"
            }
        }
    }

    /// An error event mid-stream (`{"error": …}` in an SSE event).
    pub fn mid_stream(provider: &str, error_json: &str) -> Self {
        let (message, _, code) = upstream_error_message(error_json.as_bytes(), MAX_ERROR_CHARS);
        LlmCallError::InBand {
            message: format!("provider '{provider}' reported an error mid-stream: {message}"),
            code,
        }
    }

    /// Stream data that is not a chunk.
    pub fn malformed(provider: &str, reason: &str) -> Self {
        LlmCallError::Invalid(format!(
            "provider '{provider}' sent malformed stream data: {reason}"
        ))
    }

    /// One SSE event over `limits.max_sse_event_bytes`.
    pub fn event_too_large(provider: &str, err: EventTooLarge) -> Self {
        LlmCallError::Invalid(format!(
            "provider '{provider}' sent an SSE event larger than {} bytes \
             (limits.max_sse_event_bytes); the stream was closed",
            err.max_event_bytes
        ))
    }

    /// The body ended before `[DONE]` (`partial`: inside an event).
    pub fn closed(provider: &str, partial: bool) -> Self {
        LlmCallError::Closed(if partial {
            format!("provider '{provider}' ended the stream in the middle of an event")
        } else {
            format!("provider '{provider}' closed the stream before [DONE]")
        })
    }
}

/// The message of an upstream non-2xx answer:
/// - `401` / `403`: the provider refused *Modelyard's* credentials, not the
///   client's (an SDK must not tell its user that their key is bad);
/// - `3xx`: redirects are never followed (credentials stay with the
///   provider's origin);
/// - anything else: the upstream's message.
pub fn status_message(provider: &str, status: u16, message: &str) -> String {
    match status {
        401 | 403 => format!(
            "provider '{provider}' rejected the server's credentials (HTTP {status}: \
             {message}); this is the provider's key in Modelyard's configuration, not \
             the key of this request"
        ),
        300..=399 => format!(
            "provider '{provider}' answered HTTP {status}: {message} (a redirect; \
             redirects are not followed)"
        ),
        _ => format!("provider '{provider}' answered HTTP {status}: {message}"),
    }
}
