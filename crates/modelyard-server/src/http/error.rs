//! [`ApiError`]: a [`ServiceError`] (or an already-shaped [`Problem`]) as an
//! RFC 9457 problem document. The only place a service error becomes HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Problem;
use crate::service::error::ServiceError;

/// The error of Modelyard's API handlers.
#[derive(Debug)]
pub struct ApiError(pub Problem);

impl From<ServiceError> for Problem {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        let problem = match err {
            ServiceError::NotFound { message, .. } => Problem::not_found(message),
            ServiceError::Conflict { message, .. } => Problem::conflict(message),
            ServiceError::ArenaPickPending {
                message,
                turn_id,
                run_id,
            } => Problem::conflict(message)
                .with("turnId", turn_id)
                .with("runId", run_id),
            ServiceError::InUse {
                message,
                conversations,
            } => Problem::conflict(message).with("conversations", conversations),
            ServiceError::Invalid { field, reason, .. } => {
                let problem = Problem::unprocessable(reason);
                match field {
                    Some(field) => problem.with("field", field),
                    None => problem,
                }
            }
            ServiceError::BadRequest { message, .. } => Problem::bad_request(message),
            ServiceError::NoModel(message) => Problem::unprocessable(message),
            ServiceError::UnknownModel {
                field,
                message,
                suggestions,
            } => {
                let problem = Problem::unprocessable(message).with("suggestions", suggestions);
                match field {
                    Some(field) => problem.with("field", field),
                    None => problem,
                }
            }
            ServiceError::InvalidModelId {
                message,
                suggestions,
            } => Problem::unprocessable(message).with("suggestions", suggestions),
            err @ ServiceError::ContextLengthExceeded {
                estimated_tokens,
                context_window,
                output_reserve_tokens,
            } => Problem::unprocessable(err.to_string())
                .with("estimatedTokens", estimated_tokens)
                .with("contextWindow", context_window)
                .with("outputReserveTokens", output_reserve_tokens),
            ServiceError::ToolResultsMissing { missing, message } => {
                Problem::unprocessable(message).with("pending", json!(missing))
            }
            ServiceError::Upstream {
                message,
                session_id,
            } => {
                let problem = Problem::bad_gateway(message);
                match session_id {
                    Some(id) => problem.with("sessionId", id),
                    None => problem,
                }
            }
            err @ ServiceError::Unavailable => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                err.to_string(),
            ),
            ServiceError::Store(err) => Problem::internal(err),
        };
        problem.with("code", code)
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        ApiError(err.into())
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError(problem)
    }
}

impl From<modelyard_store::StoreError> for ApiError {
    fn from(err: modelyard_store::StoreError) -> Self {
        ServiceError::from(err).into()
    }
}

impl From<modelyard_core::IdError> for ApiError {
    fn from(err: modelyard_core::IdError) -> Self {
        ServiceError::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// A store error as a problem document (see [`ServiceError`]'s `From`).
pub fn store_problem(err: modelyard_store::StoreError) -> Problem {
    ServiceError::from(err).into()
}
