//! `/v1/keys`: the API keys of the caller's project (role `admin`), over
//! [`crate::service::keys`].
//!
//! - `GET /v1/keys` → `{data: [{id, projectId, name, role, prefix,
//!   createdAt, revokedAt}]}`, newest first; never a secret.
//! - `POST /v1/keys` `{name?, role, limits?}` → 201 with the same fields plus `key`,
//!   the secret, shown only in this answer.
//! - `PATCH /v1/keys/{id}` `{limits}` → 200 with the key and its `limits`
//!   (the budgets and rate limits of [`crate::service::usage_limits`]:
//!   absent fields stay, `null` removes a limit); `POST /v1/keys` takes
//!   `limits` too. 404 (`key_not_found`) for another project's key.
//! - `DELETE /v1/keys/{id}` → 204; the key stops working at once on this
//!   server, its open event streams end (within
//!   [`crate::auth::KEY_COUNT_INTERVAL`] on other servers). 404
//!   (`key_not_found`) for another project's key; 409 (`last_admin_key`)
//!   for the project's last active admin key (create another admin key
//!   first). Keys stay required after any revoke.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use modelyard_store::{ApiKeyRow, LimitSubject};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::http::{ApiError, ApiJson};
use crate::service::keys;
use crate::service::usage_limits::{self, LimitsPatch, LimitsView};

/// A key as JSON.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyDto {
    id: String,
    project_id: String,
    name: String,
    /// `read`, `member` or `admin`.
    #[schema(value_type = String)]
    role: modelyard_store::Role,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
    /// The secret: only when just created.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The key's budgets and rate limits: in the answers of `POST` (when
    /// given) and `PATCH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsView>,
}

impl From<&ApiKeyRow> for KeyDto {
    fn from(k: &ApiKeyRow) -> Self {
        KeyDto {
            id: k.id.clone(),
            project_id: k.project_id.clone(),
            name: k.name.clone(),
            role: k.role,
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at_ms),
            revoked_at: k.revoked_at_ms.map(rfc3339),
            key: None,
            limits: None,
        }
    }
}

/// `{data: [key]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    data: Vec<KeyDto>,
}

/// `GET /v1/keys`.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    responses((status = 200, description = "OK", body = KeyList))
)]
pub async fn list(Scoped(app): Scoped) -> Result<Json<KeyList>, ApiError> {
    let keys = keys::list(&app.store, &app.project).await?;
    Ok(Json(KeyList {
        data: keys.iter().map(KeyDto::from).collect(),
    }))
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: Option<String>,
    role: String,
    /// The key's budgets and rate limits.
    limits: Option<LimitsPatch>,
}

/// `POST /v1/keys`.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = CreateBody,
    responses((status = 201, description = "Created; `key` is the secret, shown only here", body = KeyDto))
)]
pub async fn create(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<KeyDto>), ApiError> {
    let role = keys::parse_role(&body.role)?;
    // Checked before the key exists.
    if let Some(patch) = &body.limits {
        patch.apply(Default::default())?;
    }
    let created = keys::create(&app.store, &app.project, body.name, role).await?;
    app.auth.created();
    let mut dto = KeyDto::from(&created.row);
    if let Some(patch) = &body.limits {
        let subject = LimitSubject::Key(created.row.id.clone());
        let limits = usage_limits::change(&app.store, &app.project, &subject, patch, true).await?;
        dto.limits = Some(LimitsView::from(&limits));
    }
    dto.key = Some(created.secret);
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Body of `PATCH /v1/keys/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// Changes to the key's limits: absent fields stay, `null` removes one.
    limits: Option<LimitsPatch>,
}

/// `PATCH /v1/keys/{id}`.
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    request_body = PatchBody,
    responses((status = 200, description = "The key with its limits", body = KeyDto))
)]
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<KeyDto>, ApiError> {
    let row = keys::find(&app.store, &app.project, &id).await?;
    let subject = LimitSubject::Key(id);
    let limits = match &body.limits {
        Some(patch) => {
            usage_limits::change(&app.store, &app.project, &subject, patch, false).await?
        }
        None => usage_limits::get(&app.store, &app.project, &subject).await?,
    };
    app.quotas.forget(&subject);
    let mut dto = KeyDto::from(&row);
    dto.limits = Some(LimitsView::from(&limits));
    Ok(Json(dto))
}

/// `DELETE /v1/keys/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Done; no body"))
)]
pub async fn revoke(Scoped(app): Scoped, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    keys::revoke(&app.store, &app.project, &id).await?;
    app.auth.revoked(&id);
    Ok(StatusCode::NO_CONTENT)
}
