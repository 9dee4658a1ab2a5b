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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::providers::ProviderDetailDto;
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

/// A model's price (see the module docs); the rates are USD per million
/// tokens, `null` when not set.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceDto {
    /// Uncached input tokens, USD / Mtok.
    pub input_per_mtok: Option<f64>,
    /// Input tokens read from the provider's cache, USD / Mtok.
    pub cached_input_per_mtok: Option<f64>,
    /// Output tokens, USD / Mtok.
    pub output_per_mtok: Option<f64>,
    /// Reasoning tokens, USD / Mtok.
    pub reasoning_per_mtok: Option<f64>,
    /// Where the price came from: `config`, `provider` or `none`.
    #[schema(value_type = String)]
    pub source: &'static str,
    /// Version of the price entry used (12 hex digits).
    pub version: Option<String>,
    /// True for an unpriced local model: its calls cost 0.
    pub free: bool,
}

impl PriceDto {
    /// The price that `applied` says applies.
    pub fn new(applied: &crate::pricing::AppliedPrice) -> Self {
        let p = applied.price.as_ref();
        PriceDto {
            input_per_mtok: p.map(|p| p.input_per_mtok),
            cached_input_per_mtok: p.and_then(|p| p.cached_input_per_mtok),
            output_per_mtok: p.map(|p| p.output_per_mtok),
            reasoning_per_mtok: p.and_then(|p| p.reasoning_per_mtok),
            source: applied.source.as_str(),
            version: applied.version.clone(),
            free: applied.price.is_none() && applied.free,
        }
    }
}

/// One catalog model (see the module docs).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDto {
    /// Composite id, `provider/model`.
    pub id: String,
    /// The provider's name.
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// Name shown in pickers.
    pub display_name: String,
    /// Context window, tokens.
    pub context_window: Option<u64>,
    /// Where the context window came from: `config` or `provider`.
    #[schema(value_type = Option<String>)]
    pub context_window_source: Option<&'static str>,
    /// The provider endpoint and field that reported it (`/props n_ctx`).
    #[schema(value_type = Option<String>)]
    pub context_window_from: Option<&'static str>,
    /// Whether it is in memory; `null` when the host does not say.
    pub loaded: Option<bool>,
    /// The host's state of the model (`loaded`, `unloaded`, ...).
    #[schema(value_type = String)]
    pub state: &'static str,
    /// How long the host keeps it loaded while idle, seconds.
    pub ttl_seconds: Option<u64>,
    /// Whether the host loads and unloads it on request.
    pub loadable: bool,
    /// Whether it is among the project's favorites.
    pub favorite: bool,
    /// Whether its provider is online.
    pub online: bool,
    /// End of its cooldown (RFC 3339) while routing skips it.
    pub cooling_down_until: Option<String>,
    /// `embedding` on models their provider says only embed; absent
    /// otherwise.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub kind: Option<&'static str>,
    /// The price that applies to its calls.
    pub price: PriceDto,
}

impl ModelDto {
    /// `model` of `provider` as the catalog shows it; `online`: whether
    /// the provider is, `favorites`: the project's favorite ids.
    pub fn new(
        app: &AppState,
        provider: &Provider,
        model: &CatalogModel,
        online: bool,
        favorites: &[String],
    ) -> Self {
        let id = format!("{}/{}", provider.name(), model.model);
        let favorite = favorites.contains(&id);
        let cooling = app.router.cooling_until(&id, crate::clock::now_ms());
        let price = PriceDto::new(
            &app.pricing
                .price_with(&id, Some(provider), model.listed_price),
        );
        ModelDto {
            provider: provider.name().to_owned(),
            model: model.model.clone(),
            display_name: model.display_name.clone(),
            context_window: model.context_window,
            context_window_source: model.context_window_source.map(|s| s.as_str()),
            context_window_from: model.context_window_from,
            loaded: model.loaded,
            state: model.state.as_str(),
            ttl_seconds: model.ttl_seconds,
            loadable: model.host_loads,
            favorite,
            online,
            cooling_down_until: cooling.map(crate::clock::rfc3339),
            kind: model.embedding.then_some("embedding"),
            price,
            id,
        }
    }
}

/// One target of a route (see the module docs).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTargetDto {
    /// The deployment's composite id, `provider/model`.
    pub id: String,
    /// Its share under the `weighted` strategy.
    pub weight: u32,
    /// `available`, `cooling-down`, `offline`, `disabled` or
    /// `unknown-model`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// End of its cooldown (RFC 3339), if it is cooling down.
    pub cooling_down_until: Option<String>,
    /// Its context window, tokens, when known.
    pub context_window: Option<u64>,
    /// The last error routing saw from it.
    pub last_error: Option<String>,
}

/// A route's catalog entry (see the module docs).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteDto {
    /// The route's name, used as a model id.
    pub id: String,
    /// How it picks a target (`[[routes]] strategy`).
    #[schema(value_type = String)]
    pub strategy: &'static str,
    /// `none` or `conversation`.
    #[schema(value_type = String)]
    pub affinity: &'static str,
    /// Routes tried when every target failed, in order.
    pub fallbacks: Vec<String>,
    /// Whether it is among the project's favorites.
    pub favorite: bool,
    /// Whether some target can serve now.
    pub online: bool,
    /// The smallest known context window of its targets, tokens.
    pub context_window: Option<u64>,
    /// Its targets, config order.
    pub targets: Vec<RouteTargetDto>,
}

impl RouteDto {
    /// `route` as the catalog shows it; `favorites`: the project's
    /// favorite ids.
    pub fn new(app: &AppState, route: &crate::routing::Route, favorites: &[String]) -> Self {
        let now = crate::clock::now_ms();
        let mut smallest: Option<u64> = None;
        let mut online = false;
        let targets: Vec<RouteTargetDto> = route
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
                RouteTargetDto {
                    id: t.model.clone(),
                    weight: t.weight,
                    status,
                    cooling_down_until: cooling.map(crate::clock::rfc3339),
                    context_window: window,
                    last_error: app.router.health(&t.model).last_error(),
                }
            })
            .collect();
        RouteDto {
            id: route.config.name.clone(),
            strategy: route.config.strategy.as_str(),
            affinity: match route.config.affinity {
                crate::config::Affinity::None => "none",
                crate::config::Affinity::Conversation => "conversation",
            },
            fallbacks: route.config.fallbacks.clone(),
            favorite: favorites.contains(&route.config.name),
            online,
            context_window: smallest,
            targets,
        }
    }
}

/// One entry of the catalog's `favorites`: a model or a route.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CatalogFavoriteDto {
    /// A model of an online provider.
    Model(Box<ModelDto>),
    /// A route that can serve.
    Route(RouteDto),
}

/// The catalog document (see the module docs).
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogDto {
    /// Favorites in favorite order: models of online providers and routes
    /// that can serve.
    pub favorites: Vec<CatalogFavoriteDto>,
    /// Providers in config order, each with its models.
    pub providers: Vec<ProviderDetailDto>,
    /// Routes in config order.
    pub routes: Vec<RouteDto>,
}

/// `GET /v1/catalog`.
#[utoipa::path(
    get,
    path = "/v1/catalog",
    tag = "models",
    params(CatalogQuery),
    responses((status = 200, description = "`{favorites: [model or route], providers: [provider with models], routes: [route]}` (see the module docs of `api::catalog`)", body = CatalogDto))
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
    let mut favorite_entries: Vec<Option<CatalogFavoriteDto>> = vec![None; favorites.len()];
    for provider in app.registry.providers() {
        let state = provider.state();
        let online = state.status == ProviderStatus::Online;
        let mut models = Vec::new();
        for model in state.catalog.iter() {
            let entry = ModelDto::new(app, provider, model, online, favorites);
            if online {
                if let Some(i) = favorites.iter().position(|f| *f == entry.id) {
                    favorite_entries[i] = Some(CatalogFavoriteDto::Model(Box::new(entry.clone())));
                }
            }
            if online || include_offline {
                models.push(entry);
            }
        }
        groups.push(ProviderDetailDto {
            provider: super::providers::ProviderDto::new(app, provider, &state),
            models,
        });
    }
    let routes: Vec<RouteDto> = app
        .router
        .routes()
        .iter()
        .map(|route| RouteDto::new(app, route, favorites))
        .collect();
    // A favorite route is listed among the favorites while it can serve.
    for (i, id) in favorites.iter().enumerate() {
        if let Some(route) = routes.iter().find(|r| r.id == *id && r.online) {
            favorite_entries[i] = Some(CatalogFavoriteDto::Route(route.clone()));
        }
    }
    let document = CatalogDto {
        favorites: favorite_entries.into_iter().flatten().collect(),
        providers: groups,
        routes,
    };
    // Strings, numbers and booleans only: serializing cannot fail.
    bytes::Bytes::from(serde_json::to_vec(&document).unwrap_or_default())
}
