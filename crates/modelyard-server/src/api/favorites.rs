//! Favorites, stored server-side per project and ordered:
//! `GET /v1/favorites`, `PUT /v1/favorites` (the whole ordered list),
//! `POST /v1/favorites` (append one), `DELETE /v1/favorites/{modelId}`
//! (the id URL-encoded, or as a trailing path: `/v1/favorites/local/qwen`).
//!
//! A favorite as JSON: `{modelId, position (0-based), createdAt, provider,
//! visible}`; `visible` is false while the provider is not online or no
//! longer lists the model (the favorite is kept and returns by itself); a
//! route (`provider: null`) is visible while one of its targets can serve.
//! Adding a model the catalog has never seen is a 422 whose `suggestions`
//! lists close ids. Adapters over [`crate::service::favorites`].

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use modelyard_store::FavoriteRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::dto::List;
use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::http::{ApiError, ApiJson};
use crate::service::favorites;

/// A favorite.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FavoriteDto {
    /// The model id.
    pub model_id: String,
    /// 0-based position in the list.
    pub position: i64,
    /// When it was added.
    pub created_at: String,
    /// The provider part of the id, if it has one.
    pub provider: Option<String>,
    /// Whether the catalog's `favorites` shows it now.
    pub visible: bool,
}

fn favorites_json(app: &AppState, rows: &[FavoriteRow]) -> List<FavoriteDto> {
    let data = rows
        .iter()
        .map(|row| {
            // A route: visible while one of its targets can serve, as the
            // catalog shows it.
            if let Some(route) = app.router.route(&row.model_id) {
                let online = super::catalog::RouteDto::new(app, route, &[]).online;
                return FavoriteDto {
                    model_id: row.model_id.clone(),
                    position: row.position,
                    created_at: rfc3339(row.created_at_ms),
                    provider: None,
                    visible: online,
                };
            }
            let split = row.model_id.split_once('/');
            let provider = split.map(|(p, _)| p.to_owned());
            // Visible exactly when the catalog's `favorites` shows it: the
            // provider is online and still lists the model.
            let visible = split.is_some_and(|(p, model)| {
                app.registry.provider(p).is_some_and(|p| {
                    let state = p.state();
                    state.status == crate::registry::ProviderStatus::Online
                        && state.catalog.iter().any(|m| m.model == model)
                })
            });
            FavoriteDto {
                model_id: row.model_id.clone(),
                position: row.position,
                created_at: rfc3339(row.created_at_ms),
                provider,
                visible,
            }
        })
        .collect();
    List { data }
}

/// Body of `PUT /v1/favorites`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBody {
    /// The whole ordered list of model ids.
    favorites: Vec<String>,
}

/// Body of `POST /v1/favorites`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddBody {
    /// The model id to append.
    model_id: String,
}

/// `GET /v1/favorites`: `{data: [favorite]}`.
#[utoipa::path(
    get,
    path = "/v1/favorites",
    tag = "favorites",
    responses((status = 200, description = "OK", body = List<FavoriteDto>))
)]
pub async fn list(Scoped(app): Scoped) -> Result<Json<List<FavoriteDto>>, ApiError> {
    let rows = favorites::list(&app).await?;
    Ok(Json(favorites_json(&app, &rows)))
}

/// `PUT /v1/favorites`: replaces the ordered list; every id is validated
/// before anything is written.
#[utoipa::path(
    put,
    path = "/v1/favorites",
    tag = "favorites",
    request_body = ReplaceBody,
    responses((status = 200, description = "OK", body = List<FavoriteDto>))
)]
pub async fn replace(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<ReplaceBody>,
) -> Result<Json<List<FavoriteDto>>, ApiError> {
    let rows = favorites::replace(&app, &body.favorites).await?;
    Ok(Json(favorites_json(&app, &rows)))
}

/// `POST /v1/favorites`: appends one; 201 when added, 200 when it was
/// already there.
#[utoipa::path(
    post,
    path = "/v1/favorites",
    tag = "favorites",
    request_body = AddBody,
    responses((status = 201, description = "Added", body = List<FavoriteDto>), (status = 200, description = "Already a favorite", body = List<FavoriteDto>))
)]
pub async fn add(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<(StatusCode, Json<List<FavoriteDto>>), ApiError> {
    let (rows, added) = favorites::add(&app, &body.model_id).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(favorites_json(&app, &rows))))
}

/// `DELETE /v1/favorites/{modelId}`: 204, or 404 when it was not a favorite.
#[utoipa::path(
    delete,
    path = "/v1/favorites/{model_id}",
    tag = "favorites",
    params(("model_id" = String, Path, description = "The model id, URL-encoded (or as a trailing path)")),
    responses((status = 204, description = "Done; no body"))
)]
pub async fn remove(
    Scoped(app): Scoped,
    Path(model_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    favorites::remove(&app, &model_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
