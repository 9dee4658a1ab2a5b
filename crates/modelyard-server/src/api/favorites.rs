//! Favorites, stored server-side per project and ordered:
//! `GET /v1/favorites`, `PUT /v1/favorites` (the whole ordered list),
//! `POST /v1/favorites` (append one), `DELETE /v1/favorites/{modelId}`
//! (the id URL-encoded, or as a trailing path: `/v1/favorites/local/qwen`).
//!
//! A favorite as JSON: `{modelId, position (0-based), createdAt, provider,
//! visible}`; `visible` is false while the provider is not online or no
//! longer lists the model (the favorite is kept and returns by itself).
//! Adding a model the catalog has never seen is a 422 whose `suggestions`
//! lists close ids.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_core::{ModelRef, ProviderName};
use modelyard_store::FavoriteRow;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::{now_ms, rfc3339};
use crate::error::Problem;
use crate::http::ApiJson;

/// The project's favorite ids in order.
pub async fn favorite_ids(app: &AppState) -> Result<Vec<String>, Problem> {
    app.store
        .list_favorites(&app.project)
        .await
        .map(|rows| rows.into_iter().map(|r| r.model_id).collect())
        .map_err(Problem::internal)
}

fn favorites_json(app: &AppState, rows: &[FavoriteRow]) -> Value {
    let data: Vec<Value> = rows
        .iter()
        .map(|row| {
            let split = row.model_id.split_once('/');
            let provider = split.map(|(p, _)| p);
            // Visible exactly when the catalog's `favorites` shows it: the
            // provider is online and still lists the model.
            let visible = split.is_some_and(|(p, model)| {
                app.registry.provider(p).is_some_and(|p| {
                    let state = p.state();
                    state.status == crate::registry::ProviderStatus::Online
                        && state.catalog.iter().any(|m| m.model == model)
                })
            });
            json!({
                "modelId": row.model_id,
                "position": row.position,
                "createdAt": rfc3339(row.created_at_ms),
                "provider": provider,
                "visible": visible,
            })
        })
        .collect();
    json!({ "data": data })
}

pub(crate) use crate::service::models::suggestions;

/// Checks a model id for the favorites list and returns it as stored:
/// composite ids as given; a bare id becomes the composite id it resolves to.
/// Ids already in the list pass even while their provider is offline.
fn validate(app: &AppState, id: &str, existing: &[String]) -> Result<String, Problem> {
    if existing.iter().any(|e| e == id) {
        return Ok(id.to_owned());
    }
    let parsed = ModelRef::parse(id, |p| app.registry.provider(p).is_some())
        .map_err(|e| Problem::unprocessable(format!("invalid model id: {e}")))?;
    let composite = match parsed {
        ModelRef::Composite(model_id) => model_id.to_string(),
        ModelRef::Bare(name) => match app.registry.resolve(Some(&name)) {
            Ok(target) => target.resolution.model_id.to_string(),
            Err(err) => {
                let detail = match id.split_once('/') {
                    Some((prefix, _)) if ProviderName::is_valid(prefix) => {
                        format!("unknown provider {prefix:?} in model id {id:?}")
                    }
                    _ => format!("model {id:?} cannot be added: {err}"),
                };
                return Err(
                    Problem::unprocessable(detail).with("suggestions", suggestions(app, id))
                );
            }
        },
    };
    if existing.contains(&composite) || app.registry.has_seen(&composite) {
        Ok(composite)
    } else {
        Err(
            Problem::unprocessable(format!("the catalog has never seen model {composite:?}"))
                .with("suggestions", suggestions(app, &composite)),
        )
    }
}

/// Body of `PUT /v1/favorites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBody {
    /// The whole ordered list of model ids.
    favorites: Vec<String>,
}

/// Body of `POST /v1/favorites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddBody {
    /// The model id to append.
    model_id: String,
}

/// `GET /v1/favorites`: `{data: [favorite]}`.
pub async fn list(Scoped(app): Scoped) -> Response {
    match app.store.list_favorites(&app.project).await {
        Ok(rows) => Json(favorites_json(&app, &rows)).into_response(),
        Err(err) => Problem::internal(err).into_response(),
    }
}

/// `PUT /v1/favorites`: replaces the ordered list; every id is validated
/// before anything is written.
pub async fn replace(Scoped(app): Scoped, ApiJson(body): ApiJson<ReplaceBody>) -> Response {
    let existing = match favorite_ids(&app).await {
        Ok(e) => e,
        Err(problem) => return problem.into_response(),
    };
    let mut ids = Vec::with_capacity(body.favorites.len());
    for id in &body.favorites {
        match validate(&app, id, &existing) {
            Ok(id) if ids.contains(&id) => {
                return Problem::unprocessable(format!("model {id:?} appears twice in favorites"))
                    .into_response()
            }
            Ok(id) => ids.push(id),
            Err(problem) => return problem.into_response(),
        }
    }
    match app
        .store
        .replace_favorites(&app.project, &ids, now_ms())
        .await
    {
        Ok(rows) => Json(favorites_json(&app, &rows)).into_response(),
        Err(err) => Problem::internal(err).into_response(),
    }
}

/// `POST /v1/favorites`: appends one; 201 when added, 200 when it was
/// already there.
pub async fn add(Scoped(app): Scoped, ApiJson(body): ApiJson<AddBody>) -> Response {
    let existing = match favorite_ids(&app).await {
        Ok(e) => e,
        Err(problem) => return problem.into_response(),
    };
    let id = match validate(&app, &body.model_id, &existing) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    match app.store.add_favorite(&app.project, &id, now_ms()).await {
        Ok((rows, added)) => {
            let status = if added {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(favorites_json(&app, &rows))).into_response()
        }
        Err(err) => Problem::internal(err).into_response(),
    }
}

/// `DELETE /v1/favorites/{modelId}`: 204, or 404 when it was not a favorite.
pub async fn remove(Scoped(app): Scoped, Path(model_id): Path<String>) -> Response {
    match app.store.remove_favorite(&app.project, &model_id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => {
            Problem::not_found(format!("model {model_id:?} is not a favorite")).into_response()
        }
        Err(err) => Problem::internal(err).into_response(),
    }
}
