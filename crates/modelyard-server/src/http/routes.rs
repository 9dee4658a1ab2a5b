//! The route table: one row per endpoint with its method, path, the role it
//! needs and its handler. [`crate::app::router`] is built from it and the
//! auth middleware looks the role up in it ([`required_role`]), so a route
//! cannot exist without an access rule, nor a rule without a route.

use std::sync::LazyLock;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use modelyard_store::Role;

use crate::api::conversations as conv;
use crate::app::AppState;
use crate::{api, gateway};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key (`/health`).
    Public,
    /// A key with at least this role.
    Role(Role),
}

/// One endpoint.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path as axum matches it (`/v1/conversations/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match method.as_str() {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    };
    Route {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every endpoint of the server except the web UI's static files.
pub fn table() -> Vec<Route> {
    use Access::{Public, Role as R};
    use Method as M;
    let (read, member, admin) = (R(Role::Read), R(Role::Member), R(Role::Admin));
    vec![
        route(M::GET, "/health", Public, api::health::health),
        // The API's shape, no data: public so that tools and SDK generators
        // can read the security scheme before they hold a key.
        route(M::GET, "/openapi.json", Public, api::openapi::openapi_json),
        // Prometheus metrics (also on `telemetry.metrics_listen`, without auth).
        route(M::GET, "/metrics", admin, api::metrics::metrics),
        // OpenAI-compatible gateway.
        route(
            M::POST,
            "/v1/chat/completions",
            member,
            gateway::chat_completions,
        ),
        // One prompt, several models, side by side.
        route(M::POST, "/v1/arena", member, api::arena::arena),
        route(M::GET, "/v1/arena/stats", read, api::arena::stats),
        route(
            M::POST,
            "/v1/arena/{run_id}/pick",
            member,
            api::arena::pick_standalone,
        ),
        route(M::GET, "/v1/models", read, gateway::list_models),
        route(M::POST, "/v1/embeddings", member, gateway::embeddings),
        route(M::POST, "/v1/rerank", member, gateway::rerank),
        route(M::POST, "/v1/reranking", member, gateway::rerank),
        route(M::POST, "/v1/completions", member, gateway::completions),
        // Anthropic Messages front.
        route(
            M::POST,
            "/v1/messages",
            member,
            gateway::anthropic::messages,
        ),
        route(
            M::POST,
            "/v1/messages/count_tokens",
            member,
            gateway::anthropic::count_tokens,
        ),
        // OpenAI Responses front (stored responses are conversation turns).
        route(M::POST, "/v1/responses", member, gateway::responses::create),
        route(M::GET, "/v1/responses/{id}", read, gateway::responses::get),
        // Call log, sessions, usage.
        route(M::GET, "/v1/calls", read, api::calls::list),
        route(M::GET, "/v1/calls/{id}", read, api::calls::show),
        route(M::GET, "/v1/llm-calls/{id}", read, api::calls::show),
        route(M::GET, "/v1/llm-sessions", read, api::sessions::list),
        route(M::GET, "/v1/llm-sessions/{id}", read, api::sessions::show),
        route(M::GET, "/v1/usage", read, api::sessions::usage),
        // Models and providers.
        route(M::GET, "/v1/catalog", read, api::catalog::catalog),
        route(M::GET, "/v1/providers", read, api::providers::list),
        route(M::GET, "/v1/providers/{name}", read, api::providers::show),
        route(
            M::POST,
            "/v1/providers/{name}/refresh",
            member,
            api::providers::refresh,
        ),
        route(
            M::POST,
            "/v1/providers/{name}/models/{model}/load",
            admin,
            api::providers::load,
        ),
        route(
            M::POST,
            "/v1/providers/{name}/models/{model}/unload",
            admin,
            api::providers::unload,
        ),
        route(M::GET, "/v1/favorites", read, api::favorites::list),
        route(M::PUT, "/v1/favorites", member, api::favorites::replace),
        route(M::POST, "/v1/favorites", member, api::favorites::add),
        route(
            M::DELETE,
            "/v1/favorites/{*model_id}",
            member,
            api::favorites::remove,
        ),
        // LLM configs.
        route(M::GET, "/v1/llms", read, api::llms::list),
        route(M::POST, "/v1/llms", admin, api::llms::create),
        route(M::GET, "/v1/llms/{id}", read, api::llms::show),
        route(M::PATCH, "/v1/llms/{id}", admin, api::llms::patch),
        route(M::DELETE, "/v1/llms/{id}", admin, api::llms::delete),
        route(M::POST, "/v1/llms/{id}/copy", admin, api::llms::copy),
        route(M::GET, "/v1/llms/{id}/versions", read, api::llms::versions),
        // API keys.
        route(M::GET, "/v1/keys", admin, api::keys::list),
        route(M::POST, "/v1/keys", admin, api::keys::create),
        route(M::PATCH, "/v1/keys/{id}", admin, api::keys::patch),
        route(M::DELETE, "/v1/keys/{id}", admin, api::keys::revoke),
        // Budgets and rate limits of a project (a key's are on the key).
        route(
            M::GET,
            "/v1/projects/{id}/limits",
            admin,
            api::limits::get_project,
        ),
        route(
            M::PUT,
            "/v1/projects/{id}/limits",
            admin,
            api::limits::put_project,
        ),
        // Conversations.
        route(M::GET, "/v1/conversations", read, conv::list),
        route(M::POST, "/v1/conversations", member, conv::create),
        route(M::GET, "/v1/conversations/{id}", read, conv::show),
        route(M::PATCH, "/v1/conversations/{id}", member, conv::patch),
        route(M::DELETE, "/v1/conversations/{id}", member, conv::delete),
        route(
            M::GET,
            "/v1/conversations/{id}/messages",
            read,
            conv::messages,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/messages",
            member,
            api::imports::import,
        ),
        route(
            M::GET,
            "/v1/conversations/{id}/model",
            read,
            conv::get_model,
        ),
        route(
            M::PUT,
            "/v1/conversations/{id}/model",
            member,
            conv::put_model,
        ),
        route(
            M::GET,
            "/v1/conversations/{id}/settings",
            read,
            conv::get_settings,
        ),
        route(
            M::PATCH,
            "/v1/conversations/{id}/settings",
            member,
            conv::patch_settings,
        ),
        route(
            M::GET,
            "/v1/conversations/{id}/model-history",
            read,
            conv::model_history,
        ),
        route(M::GET, "/v1/conversations/{id}/turns", read, conv::turns),
        route(
            M::POST,
            "/v1/conversations/{id}/turns",
            member,
            conv::start_turn,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/turns/{turn_id}/cancel",
            member,
            conv::cancel_turn,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/turns/{turn_id}/tool-results",
            member,
            conv::tool_results,
        ),
        route(M::GET, "/v1/conversations/{id}/events", read, conv::events),
        // The arena inside a conversation, and its pick.
        route(
            M::POST,
            "/v1/conversations/{id}/arena",
            member,
            api::arena::conversation_arena,
        ),
        route(
            M::GET,
            "/v1/conversations/{id}/arena/{run_id}",
            read,
            api::arena::get_run,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/arena/{run_id}/pick",
            member,
            api::arena::pick,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/title",
            member,
            api::operations::title,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/compact",
            member,
            api::operations::compact,
        ),
        route(
            M::POST,
            "/v1/conversations/{id}/warm",
            member,
            api::operations::warm,
        ),
    ]
}

/// The routes that call models, where a key's and its project's budgets
/// and rate limits apply ([`crate::http::quota`]): the OpenAI, Anthropic
/// and Responses fronts, the pass-throughs, conversation turns (a start,
/// or a resume with tool results) and arena runs (standalone or in a
/// conversation).
pub fn metered(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && matches!(
            path,
            "/v1/chat/completions"
                | "/v1/embeddings"
                | "/v1/rerank"
                | "/v1/reranking"
                | "/v1/completions"
                | "/v1/messages"
                | "/v1/responses"
                | "/v1/conversations/{id}/turns"
                | "/v1/conversations/{id}/turns/{turn_id}/tool-results"
                | "/v1/conversations/{id}/title"
                | "/v1/conversations/{id}/compact"
                | "/v1/conversations/{id}/warm"
                | "/v1/arena"
                | "/v1/conversations/{id}/arena"
        )
}

/// The table as a router (rows of one path share its method router).
pub fn router() -> Router<AppState> {
    table().into_iter().fold(Router::new(), |router, row| {
        router.route(row.path, row.handler)
    })
}

/// `(method, path, access)` of every row, built once.
static RULES: LazyLock<Vec<(Method, &'static str, Access)>> = LazyLock::new(|| {
    table()
        .into_iter()
        .map(|row| (row.method, row.path, row.access))
        .collect()
});

/// The table's own `&'static` copy of a matched route path (metrics
/// label it without copying); `None` when no row has it.
pub fn pattern(path: &str) -> Option<&'static str> {
    RULES
        .iter()
        .find(|(_, p, _)| *p == path)
        .map(|(_, p, _)| *p)
}

/// Who may call `method` `path` (a matched route path); `None`: no such
/// route.
pub fn access(method: &Method, path: &str) -> Option<Access> {
    RULES
        .iter()
        .find(|(m, p, _)| p == &path && m == method)
        .map(|(_, _, access)| *access)
}

/// The methods the table has rows for on `path` (a matched route path), in
/// table order; empty for an unknown path.
pub fn methods(path: &str) -> Vec<&'static str> {
    RULES
        .iter()
        .filter(|(_, p, _)| *p == path)
        .map(|(method, _, _)| method_name(method))
        .collect()
}

/// The role a route needs; `None` for public routes and unknown ones.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    match access(method, path)? {
        Access::Role(role) => Some(role),
        Access::Public => None,
    }
}

/// `(method, path, role)` of every route that needs a key.
pub fn access_rules() -> Vec<(&'static str, &'static str, Role)> {
    RULES
        .iter()
        .filter_map(|(method, path, access)| match access {
            Access::Role(role) => Some((method_name(method), *path, *role)),
            Access::Public => None,
        })
        .collect()
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "DELETE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_one_method_and_path() {
        let rules = &*RULES;
        for (i, (method, path, _)) in rules.iter().enumerate() {
            assert!(
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()),
                "{method} {path}: a method the table maps"
            );
            assert!(
                !rules[..i].iter().any(|(m, p, _)| m == method && p == path),
                "{method} {path} appears twice"
            );
        }
        assert!(rules.len() > 40);
    }

    #[test]
    fn only_health_and_openapi_are_public_and_gets_are_read() {
        for (method, path, access) in RULES.iter() {
            let public = ["/health", "/openapi.json"].contains(path);
            assert_eq!(*access == Access::Public, public, "{path}");
            if *method == Method::GET
                && !public
                && *path != "/metrics"
                && !path.starts_with("/v1/keys")
                && !path.starts_with("/v1/projects")
            {
                assert_eq!(*access, Access::Role(Role::Read), "GET {path}");
            }
        }
        assert_eq!(access(&Method::GET, "/nope"), None);
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Admin));
        assert_eq!(
            required_role(&Method::DELETE, "/v1/keys/{id}"),
            Some(Role::Admin)
        );
        assert_eq!(
            required_role(&Method::GET, "/v1/projects/{id}/limits"),
            Some(Role::Admin)
        );
    }

    #[test]
    fn every_metered_route_is_a_row() {
        for path in [
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/responses",
            "/v1/conversations/{id}/turns",
        ] {
            assert!(metered(&Method::POST, path), "{path}");
            assert!(access(&Method::POST, path).is_some(), "{path}");
        }
        assert!(!metered(&Method::GET, "/v1/conversations/{id}/turns"));
        assert!(!metered(&Method::POST, "/v1/conversations"));
    }
}
