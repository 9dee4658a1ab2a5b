//! `/v1/keys`: the API keys of the caller's project (role `admin`).
//!
//! - `GET /v1/keys` → `{data: [{id, projectId, name, role, prefix,
//!   createdAt, revokedAt}]}`, newest first; never a secret.
//! - `POST /v1/keys` `{name?, role}` → 201 with the same fields plus `key`,
//!   the secret, shown only in this answer.
//! - `DELETE /v1/keys/{id}` → 204; the key stops working at once on this
//!   server, its open event streams end (within
//!   [`crate::auth::KEY_COUNT_INTERVAL`] on other servers). 404 for another
//!   project's key; 409 for the project's last active admin key (create
//!   another admin key first). Keys stay required after any revoke.

use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_store::{ApiKeyRow, Revoke, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use super::conversations::store_problem;
use crate::auth::{generate_key, Scoped};
use crate::clock::{now_ms, rfc3339};
use crate::error::Problem;

fn key_json(k: &ApiKeyRow) -> Value {
    json!({
        "id": k.id,
        "projectId": k.project_id,
        "name": k.name,
        "role": k.role,
        "prefix": k.prefix,
        "createdAt": rfc3339(k.created_at_ms),
        "revokedAt": k.revoked_at_ms.map(rfc3339),
    })
}

/// `GET /v1/keys`.
pub async fn list(Scoped(app): Scoped) -> Response {
    match app.store.list_api_keys(&app.project).await {
        Ok(keys) => {
            Json(json!({"data": keys.iter().map(key_json).collect::<Vec<_>>()})).into_response()
        }
        Err(err) => store_problem(err).into_response(),
    }
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: Option<String>,
    role: String,
}

/// `POST /v1/keys`.
pub async fn create(
    Scoped(app): Scoped,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    let Some(role) = Role::parse(&body.role) else {
        return Problem::unprocessable(format!(
            "role must be admin, member or read; got {:?}",
            body.role
        ))
        .with("field", "role")
        .into_response();
    };
    let name = body
        .name
        .unwrap_or_else(|| format!("{} key", role.as_str()));
    if name.is_empty() || name.chars().count() > 100 {
        return Problem::unprocessable("name must be 1 to 100 characters")
            .with("field", "name")
            .into_response();
    }
    match create_key(&app.store, &app.project, &name, role).await {
        Ok((row, secret)) => {
            app.auth.created();
            let mut value = key_json(&row);
            value["key"] = json!(secret);
            (StatusCode::CREATED, Json(value)).into_response()
        }
        Err(err) => store_problem(err).into_response(),
    }
}

/// Creates a key of `project`; returns the stored row and the secret.
///
/// # Errors
/// The store's error.
pub async fn create_key(
    store: &modelyard_store::Store,
    project: &modelyard_store::ProjectId,
    name: &str,
    role: Role,
) -> Result<(ApiKeyRow, String), modelyard_store::StoreError> {
    let key = generate_key();
    let row = ApiKeyRow {
        id: uuid::Uuid::now_v7().to_string(),
        project_id: project.as_str().to_owned(),
        name: name.to_owned(),
        role,
        prefix: key.prefix,
        created_at_ms: now_ms(),
        revoked_at_ms: None,
    };
    store.create_api_key(project, &row, &key.hash).await?;
    Ok((row, key.secret))
}

/// `DELETE /v1/keys/{id}`.
pub async fn revoke(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match app.store.revoke_api_key(&app.project, &id, now_ms()).await {
        Ok(Revoke::Revoked) => {
            app.auth.revoked(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Revoke::NotFound) => {
            Problem::not_found(format!("no active key {id:?} in this project")).into_response()
        }
        Ok(Revoke::LastAdmin) => Problem::conflict(format!(
            "key {id:?} is the last active admin key of this project; create another admin \
             key first (POST /v1/keys with role admin, or `modelyard keys create --role \
             admin`), then revoke this one"
        ))
        .with("code", "last_admin_key")
        .into_response(),
        Err(err) => store_problem(err).into_response(),
    }
}
