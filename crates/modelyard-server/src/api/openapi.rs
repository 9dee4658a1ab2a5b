//! `GET /openapi.json`: the OpenAPI 3.1 document of every route
//! ([`crate::http::openapi`]), public — it describes the API's shape and
//! holds no project data.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::http::openapi::document_json(),
    )
        .into_response()
}
