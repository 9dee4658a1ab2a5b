//! Favorites, stored per project and ordered: list, replace, add, remove.
//! Ids are validated before anything is written: composite ids as given, a
//! bare id becomes the composite id it resolves to, a model the catalog has
//! never seen is refused with suggestions; ids already in the list pass
//! even while their provider is offline.

use modelyard_core::{ModelRef, ProviderName};
use modelyard_store::FavoriteRow;

use super::error::ServiceError;
use super::models::unknown_model;
use crate::app::AppState;
use crate::clock::now_ms;

/// The project's favorites in order.
///
/// # Errors
/// The store's.
pub async fn list(app: &AppState) -> Result<Vec<FavoriteRow>, ServiceError> {
    Ok(app.store.list_favorites(&app.project).await?)
}

/// The project's favorite ids in order.
///
/// # Errors
/// The store's.
pub async fn ids(app: &AppState) -> Result<Vec<String>, ServiceError> {
    Ok(list(app).await?.into_iter().map(|r| r.model_id).collect())
}

/// Checks a model id for the favorites list and returns it as stored.
fn validate(app: &AppState, id: &str, existing: &[String]) -> Result<String, ServiceError> {
    // A route is favorited by its name.
    if existing.iter().any(|e| e == id) || app.router.route(id).is_some() {
        return Ok(id.to_owned());
    }
    let parsed = ModelRef::parse(id, |p| app.registry.provider(p).is_some()).map_err(|e| {
        ServiceError::Invalid {
            code: "invalid_model_id",
            field: None,
            reason: format!("invalid model id: {e}"),
        }
    })?;
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
                return Err(unknown_model(app, id, detail));
            }
        },
    };
    if existing.contains(&composite) || app.registry.has_seen(&composite) {
        Ok(composite)
    } else {
        Err(unknown_model(
            app,
            &composite,
            format!("the catalog has never seen model {composite:?}"),
        ))
    }
}

/// Replaces the ordered list; every id is validated first.
///
/// # Errors
/// 422s (`model_not_found`, `invalid_model_id`, `invalid_field` for a
/// repeated id); the store's.
pub async fn replace(
    app: &AppState,
    favorites: &[String],
) -> Result<Vec<FavoriteRow>, ServiceError> {
    let existing = ids(app).await?;
    let mut checked = Vec::with_capacity(favorites.len());
    for id in favorites {
        let id = validate(app, id, &existing)?;
        if checked.contains(&id) {
            return Err(ServiceError::invalid_field(
                "favorites",
                format!("model {id:?} appears twice in favorites"),
            ));
        }
        checked.push(id);
    }
    Ok(app
        .store
        .replace_favorites(&app.project, &checked, now_ms())
        .await?)
}

/// Appends one; `true` when it was added (not already there).
///
/// # Errors
/// 422s; the store's.
pub async fn add(app: &AppState, model_id: &str) -> Result<(Vec<FavoriteRow>, bool), ServiceError> {
    let existing = ids(app).await?;
    let id = validate(app, model_id, &existing)?;
    Ok(app.store.add_favorite(&app.project, &id, now_ms()).await?)
}

/// Removes one.
///
/// # Errors
/// `favorite_not_found`; the store's.
pub async fn remove(app: &AppState, model_id: &str) -> Result<(), ServiceError> {
    if app.store.remove_favorite(&app.project, model_id).await? {
        Ok(())
    } else {
        Err(ServiceError::not_found(
            "favorite",
            model_id,
            format!("model {model_id:?} is not a favorite"),
        ))
    }
}
