//! The catalog: `GET /v1/catalog[?includeOffline=true]`.
//!
//! ```text
//! {
//!   "favorites": [model],          // in favorite order; only models of online providers
//!   "providers": [{                // config order
//!     ...provider (see providers.rs),
//!     "models": [model]            // offline/disabled providers: [] unless includeOffline
//!   }],
//!   "routes": [route]              // [[routes]], config order
//! }
//! model = {id, provider, model, displayName, contextWindow (tokens | null),
//!          contextWindowSource ("config" | "provider" | null),
//!          contextWindowFrom (e.g. "/props n_ctx" | null), loaded (bool | null),
//!          favorite, online, coolingDownUntil (RFC 3339 | null),
//!          type: "embedding" (only on models their provider says only
//!          embed: Ollama's capabilities),
//!          price: {inputPerMtok, cachedInputPerMtok, outputPerMtok,
//!                  reasoningPerMtok (USD per million tokens; null when not
//!                  set), source ("config" | "provider" | "none"),
//!                  version (12 hex digits | null),
//!                  free (true: an unpriced local model, costs 0)}}
//! route = {id, strategy, affinity, fallbacks: [id], favorite,
//!          online (some target can serve), contextWindow (the smallest known
//!          of its targets' | null),
//!          targets: [{id, weight, status ("available" | "cooling-down" |
//!                     "offline" | "disabled" | "unknown-model"),
//!                     coolingDownUntil, contextWindow, lastError}]}
//! ```
//! A favorited model also stays in its provider group. Favorites of an
//! offline provider are hidden from `favorites`, never deleted.

use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::http::ApiQuery;
use crate::registry::{CatalogModel, Provider, ProviderStatus};

/// Query of `GET /v1/catalog`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatalogQuery {
    /// Include the models of offline and disabled providers, flagged `online: false`.
    #[serde(default)]
    include_offline: bool,
}

/// One catalog model as JSON.
pub fn model_json(
    app: &AppState,
    provider: &Provider,
    model: &CatalogModel,
    online: bool,
    favorites: &[String],
) -> Value {
    let id = format!("{}/{}", provider.name(), model.model);
    let favorite = favorites.contains(&id);
    let cooling = app.router.cooling_until(&id, crate::clock::now_ms());
    let mut entry = json!({
        "id": id,
        "provider": provider.name(),
        "model": model.model,
        "displayName": model.display_name,
        "contextWindow": model.context_window,
        "contextWindowSource": model.context_window_source.map(|s| s.as_str()),
        "contextWindowFrom": model.context_window_from,
        "loaded": model.loaded,
        "state": model.state.as_str(),
        "ttlSeconds": model.ttl_seconds,
        "loadable": model.host_loads,
        "favorite": favorite,
        "online": online,
        "coolingDownUntil": cooling.map(crate::clock::rfc3339),
    });
    if model.embedding {
        entry["type"] = json!("embedding");
    }
    entry["price"] = price_json(
        &app.pricing
            .price_with(&id, Some(provider), model.listed_price),
    );
    entry
}

/// A model's `price` (see the module docs).
pub fn price_json(applied: &crate::pricing::AppliedPrice) -> Value {
    let p = applied.price.as_ref();
    json!({
        "inputPerMtok": p.map(|p| p.input_per_mtok),
        "cachedInputPerMtok": p.and_then(|p| p.cached_input_per_mtok),
        "outputPerMtok": p.map(|p| p.output_per_mtok),
        "reasoningPerMtok": p.and_then(|p| p.reasoning_per_mtok),
        "source": applied.source.as_str(),
        "version": applied.version,
        "free": applied.price.is_none() && applied.free,
    })
}

/// A route's catalog entry (see the module docs).
pub fn route_json(app: &AppState, route: &crate::routing::Route, favorites: &[String]) -> Value {
    let now = crate::clock::now_ms();
    let mut smallest: Option<u64> = None;
    let mut online = false;
    let targets: Vec<Value> = route
        .config
        .targets
        .iter()
        .map(|t| {
            let (provider_name, model) = t.model.split_once('/').unwrap_or((&t.model, ""));
            let provider = app.registry.provider(provider_name);
            let state = provider.map(|p| p.state());
            let entry = state
                .as_ref()
                .and_then(|s| s.catalog.iter().find(|m| m.model == model).cloned());
            let window = entry.as_ref().and_then(|m| m.context_window);
            if let Some(w) = window {
                smallest = Some(smallest.map_or(w, |s| s.min(w)));
            }
            let cooling = app.router.cooling_until(&t.model, now);
            let status = match state.as_ref().map(|s| s.status) {
                Some(ProviderStatus::Disabled) | None => "disabled",
                Some(ProviderStatus::Offline) => "offline",
                _ if app.registry.resolve(Some(&t.model)).is_err() => "unknown-model",
                _ if cooling.is_some() => "cooling-down",
                _ => "available",
            };
            online |= status == "available";
            json!({
                "id": t.model,
                "weight": t.weight,
                "status": status,
                "coolingDownUntil": cooling.map(crate::clock::rfc3339),
                "contextWindow": window,
                "lastError": app.router.health(&t.model).last_error(),
            })
        })
        .collect();
    json!({
        "id": route.config.name,
        "strategy": route.config.strategy.as_str(),
        "affinity": match route.config.affinity {
            crate::config::Affinity::None => "none",
            crate::config::Affinity::Conversation => "conversation",
        },
        "fallbacks": route.config.fallbacks,
        "favorite": favorites.contains(&route.config.name),
        "online": online,
        "contextWindow": smallest,
        "targets": targets,
    })
}

/// `GET /v1/catalog`.
#[utoipa::path(
    get,
    path = "/v1/catalog",
    tag = "models",
    params(CatalogQuery),
    responses((status = 200, description = "`{favorites: [model], providers: [provider with models], routes: [route]}` (see the module docs of `api::catalog`)", body = Object))
)]
pub async fn catalog(Scoped(app): Scoped, ApiQuery(query): ApiQuery<CatalogQuery>) -> Response {
    let favorites = match crate::service::favorites::ids(&app).await {
        Ok(f) => f,
        Err(err) => return crate::http::ApiError::from(err).into_response(),
    };
    let mut key = std::hash::DefaultHasher::new();
    app.registry.snapshot_key(&mut key);
    std::hash::Hash::hash(&favorites, &mut key);
    std::hash::Hash::hash(&query.include_offline, &mut key);
    std::hash::Hash::hash(&app.router.epoch(crate::clock::now_ms()), &mut key);
    let name = if query.include_offline {
        "catalog-all"
    } else {
        "catalog"
    };
    let body = app
        .registry
        .rendered
        .get_or_render(name, std::hash::Hasher::finish(&key), || {
            render(&app, &favorites, query.include_offline)
        });
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Renders the catalog document (see the module docs).
fn render(app: &AppState, favorites: &[String], include_offline: bool) -> bytes::Bytes {
    let mut groups = Vec::with_capacity(app.registry.providers().len());
    // Favorites in their order, filled from the online groups below.
    let mut favorite_entries: Vec<Option<Value>> = vec![None; favorites.len()];
    for provider in app.registry.providers() {
        let state = provider.state();
        let online = state.status == ProviderStatus::Online;
        let mut group = super::providers::provider_json(app, provider, &state);
        let mut models = Vec::new();
        for model in state.catalog.iter() {
            let entry = model_json(app, provider, model, online, favorites);
            if online {
                if let Some(i) = favorites.iter().position(|f| *f == entry["id"]) {
                    favorite_entries[i] = Some(entry.clone());
                }
            }
            if online || include_offline {
                models.push(entry);
            }
        }
        group["models"] = Value::Array(models);
        groups.push(group);
    }
    let routes: Vec<Value> = app
        .router
        .routes()
        .iter()
        .map(|route| route_json(app, route, favorites))
        .collect();
    // A favorite route is listed among the favorites while it can serve.
    for (i, id) in favorites.iter().enumerate() {
        if let Some(route) = routes
            .iter()
            .find(|r| r["id"] == **id && r["online"] == true)
        {
            favorite_entries[i] = Some(route.clone());
        }
    }
    let favorites: Vec<Value> = favorite_entries.into_iter().flatten().collect();
    bytes::Bytes::from(
        json!({"favorites": favorites, "providers": groups, "routes": routes}).to_string(),
    )
}
