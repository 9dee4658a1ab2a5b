//! Extractors whose rejections are our problem documents, each with a
//! `code`: `invalid_json` (syntax), `invalid_body` (the JSON does not fit
//! the body's shape), `missing_content_type`, `unreadable_body` (including
//! over the body limit, which the limits middleware answers with its 413),
//! and `invalid_query`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use super::ApiError;
use crate::error::Problem;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

fn json_problem(rejection: JsonRejection) -> ApiError {
    let code = match &rejection {
        JsonRejection::JsonSyntaxError(_) => "invalid_json",
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::MissingJsonContentType(_) => "missing_content_type",
        _ => "unreadable_body",
    };
    ApiError(Problem::bad_request(rejection.body_text()).with("code", code))
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Every body of the API is a JSON object; serde would also read a
        // struct from an array (`[null, null]` as its first two fields).
        let Json(raw) = Json::<Box<RawValue>>::from_request(req, state)
            .await
            .map_err(json_problem)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        match Json::<T>::from_bytes(raw.get().as_bytes()) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// 400 `invalid_body` for a body that is JSON but not an object.
fn not_an_object() -> ApiError {
    ApiError(Problem::bad_request("the body must be a JSON object").with("code", "invalid_body"))
}

/// An optional JSON body of type `T`: no body (no JSON content type) or
/// `null` is `T::default()`.
#[derive(Debug)]
pub struct ApiJsonOrDefault<T>(pub T);

impl<T, S> FromRequest<S> for ApiJsonOrDefault<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(Value::Null)) | Err(JsonRejection::MissingJsonContentType(_)) => {
                Ok(ApiJsonOrDefault(T::default()))
            }
            Ok(Json(value)) if !value.is_object() => Err(not_an_object()),
            Ok(Json(value)) => serde_json::from_value(value)
                .map(ApiJsonOrDefault)
                .map_err(|e| {
                    ApiError(
                        Problem::bad_request(format!("invalid body: {e}"))
                            .with("code", "invalid_body"),
                    )
                }),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// A query string of type `T`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_problem(rejection)),
        }
    }
}

fn query_problem(rejection: QueryRejection) -> ApiError {
    ApiError(Problem::bad_request(rejection.body_text()).with("code", "invalid_query"))
}
