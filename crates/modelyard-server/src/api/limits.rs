//! `/v1/projects/{id}/limits`: the budgets and rate limits of the caller's
//! project, all its keys together (role `admin`), over
//! [`crate::service::usage_limits`]. A key's own limits are set with
//! `POST /v1/keys` / `PATCH /v1/keys/{id}` ([`super::keys`]).
//!
//! - `GET /v1/projects/{id}/limits` → `{maxCostUsd, maxTokens, period,
//!   requestsPerMinute, tokensPerMinute, maxConcurrent}` (`null`: no
//!   limit).
//! - `PUT /v1/projects/{id}/limits` with that object → the limits now
//!   (replaced: an absent field is no limit; `{}` removes them all). 422
//!   `invalid_field` naming the field for a negative value, an unknown
//!   period, a budget without a period or a period without a budget.
//!
//! Another project's id is 404 (`project_not_found`). This server applies
//! a change at once; other replicas within
//! [`crate::quota::LIMITS_TTL`].

use crate::auth::Scoped;
use crate::http::{ApiError, ApiJson};
use crate::service::usage_limits::{self, LimitsPatch, LimitsView};
use axum::extract::Path;
use axum::Json;

/// `GET /v1/projects/{id}/limits`.
#[utoipa::path(
    get,
    path = "/v1/projects/{id}/limits",
    tag = "keys",
    params(("id" = String, Path, description = "Project id (the caller's)")),
    responses((status = 200, description = "The project's limits; `null`: no limit", body = LimitsView))
)]
pub async fn get_project(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<LimitsView>, ApiError> {
    let subject = usage_limits::project_subject(&app.project, &id)?;
    let limits = usage_limits::get(&app.store, &app.project, &subject).await?;
    Ok(Json(LimitsView::from(&limits)))
}

/// `PUT /v1/projects/{id}/limits`.
#[utoipa::path(
    put,
    path = "/v1/projects/{id}/limits",
    tag = "keys",
    params(("id" = String, Path, description = "Project id (the caller's)")),
    request_body = LimitsPatch,
    responses((status = 200, description = "The project's limits now", body = LimitsView))
)]
pub async fn put_project(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LimitsPatch>,
) -> Result<Json<LimitsView>, ApiError> {
    let subject = usage_limits::project_subject(&app.project, &id)?;
    let limits = usage_limits::change(&app.store, &app.project, &subject, &body, true).await?;
    app.quotas.forget(&subject);
    Ok(Json(LimitsView::from(&limits)))
}
