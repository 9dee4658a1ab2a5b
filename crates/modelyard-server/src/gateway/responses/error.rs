//! Why a Responses request failed, in OpenAI's error envelope
//! (`{"error": {"message", "type", "param", "code"}}`,
//! [`OpenAiError`]): request errors are 400 `invalid_request_error` naming
//! the field; use-case errors keep their status (a 422 is OpenAI's 400) and
//! stable code; routing and upstream errors are the chat front's
//! ([`crate::gateway::routed_error`]).

use axum::http::StatusCode;

use crate::error::{OpenAiError, Problem};
use crate::service::error::ServiceError;

use super::request::RequestError;

/// A request the client got wrong: 400 `invalid_request_error` with the
/// field as `param`.
pub(crate) fn bad_request(err: RequestError) -> OpenAiError {
    OpenAiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        err.message,
    )
    .param(err.param)
}

/// A use-case error: its status (422 → 400, as OpenAI answers invalid
/// requests) and code; 4xx are `invalid_request_error`, 5xx `server_error`.
/// `param` names the request field the error is about, when known.
pub(crate) fn service(err: ServiceError, param: Option<&'static str>) -> OpenAiError {
    let code = err.code();
    let problem = Problem::from(err);
    let status = match problem.status {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        status => status,
    };
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let error = OpenAiError::new(status, kind, problem.detail).code(code);
    match param {
        Some(param) => error.param(param),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_keep_status_and_code_in_the_envelope() {
        let e = service(
            ServiceError::not_found("response", "resp_x", "No response found with id 'resp_x'."),
            Some("previous_response_id"),
        );
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {
                "message": "No response found with id 'resp_x'.",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "response_not_found",
            }})
        );
        let e = service(ServiceError::invalid_field("tools", "tools: bad"), None);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
