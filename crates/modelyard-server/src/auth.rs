//! Who is calling: API keys, their project and role, and the per-route
//! access rules.
//!
//! - Without any active API key the server runs open: every request acts
//!   for the `default` project with the `admin` role, whatever key it sends
//!   (SDKs always send one) — allowed only while it listens on a loopback
//!   address (`app::start` refuses other addresses).
//! - Once a key exists, every route except `/health` needs
//!   `Authorization: Bearer <key>`: a missing, unknown or revoked key is a
//!   401, a role below the route's ([`required_role`]) a 403. The key's
//!   project scopes every store call, so another project's resources are 404.
//!
//! Keys look like `mk_<40 hex>`; the store keeps their SHA-256 (hex) and the
//! first 11 characters as a prefix. Lookups are cached for
//! [`KEY_CACHE_TTL`] (a revoke through this server clears the cache at once;
//! on other replicas it takes effect within that time).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use modelyard_store::{ApiKeyRow, ProjectId, Role, Store};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::{OpenAiError, Problem};

/// The identity a request counts against for per-key limits: the API key's
/// id, or `addr:<client ip>` when the server runs without keys. Inserted into
/// the request's extensions by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerId(pub String);

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The project every store call of the request is scoped to.
    pub project: ProjectId,
    /// The key's role (`admin` when the server runs without keys).
    pub role: Role,
    /// The key, if one was used.
    pub key_id: Option<String>,
}

/// How long a key lookup is reused.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// How often the server re-counts active keys (a key created by the CLI
/// next to a running server switches it to authenticated mode within this).
pub const KEY_COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// The key registry of a running server.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    required: AtomicBool,
    cache: Mutex<HashMap<String, (Option<ApiKeyRow>, Instant)>>,
}

/// A newly generated key: the secret (shown once), its prefix and hash.
#[derive(Debug)]
pub struct NewKey {
    /// `mk_<40 hex>`.
    pub secret: String,
    /// The first 11 characters.
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
}

/// Generates a key from 160 random bits (two UUIDv4s, from the OS RNG).
pub fn generate_key() -> NewKey {
    let random = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let secret = format!("mk_{}", &random[..40]);
    NewKey {
        prefix: secret[..11].to_owned(),
        hash: hash_key(&secret),
        secret,
    }
}

/// Hex SHA-256 of a key.
pub fn hash_key(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    /// Reads whether any key is active.
    ///
    /// # Errors
    /// The store's error.
    pub async fn load(store: Store) -> Result<Self, modelyard_store::StoreError> {
        let count = store.count_active_api_keys().await?;
        Ok(Self {
            store,
            required: AtomicBool::new(count > 0),
            cache: Mutex::default(),
        })
    }

    /// Whether requests need a key.
    pub fn required(&self) -> bool {
        self.required.load(Ordering::Relaxed)
    }

    /// Re-counts active keys (background task) and forgets cached lookups.
    pub async fn refresh(&self) {
        match self.store.count_active_api_keys().await {
            Ok(count) => self.required.store(count > 0, Ordering::Relaxed),
            Err(err) => tracing::warn!(error = %err, "cannot count API keys"),
        }
    }

    /// Notes a key created or revoked through this server.
    pub fn changed(&self) {
        self.lock().clear();
        self.required.store(true, Ordering::Relaxed);
    }

    /// The active key with this secret, if any.
    async fn lookup(&self, secret: &str) -> Result<Option<ApiKeyRow>, modelyard_store::StoreError> {
        let hash = hash_key(secret);
        if let Some((row, at)) = self.lock().get(&hash) {
            if at.elapsed() < KEY_CACHE_TTL {
                return Ok(row.clone());
            }
        }
        let row = self.store.find_active_api_key(&hash).await?;
        let mut cache = self.lock();
        if cache.len() > 10_000 {
            cache.clear(); // bounded: unknown keys must not grow it forever
        }
        cache.insert(hash, (row.clone(), Instant::now()));
        Ok(row)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<ApiKeyRow>, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The role a route needs: `read` for every GET, `admin` for key management
/// and LLM config changes, `member` for the rest. `None`: the route has no
/// rule (refused).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    ACCESS_RULES
        .iter()
        .find(|(m, p, _)| *p == path && (*m == "*" || *m == method.as_str()))
        .map(|(_, _, role)| *role)
}

/// `(method, route path, role)`; `*` matches any method. Every route of
/// [`crate::app::router`] except `/health` has a rule (a test checks).
pub const ACCESS_RULES: &[(&str, &str, Role)] = &[
    ("POST", "/v1/chat/completions", Role::Member),
    ("GET", "/v1/models", Role::Read),
    ("GET", "/v1/calls", Role::Read),
    ("GET", "/v1/calls/{id}", Role::Read),
    ("GET", "/v1/llm-calls/{id}", Role::Read),
    ("GET", "/v1/llm-sessions", Role::Read),
    ("GET", "/v1/llm-sessions/{id}", Role::Read),
    ("GET", "/v1/usage", Role::Read),
    ("GET", "/v1/catalog", Role::Read),
    ("GET", "/v1/providers", Role::Read),
    ("GET", "/v1/providers/{name}", Role::Read),
    ("POST", "/v1/providers/{name}/refresh", Role::Member),
    ("GET", "/v1/favorites", Role::Read),
    ("PUT", "/v1/favorites", Role::Member),
    ("POST", "/v1/favorites", Role::Member),
    ("DELETE", "/v1/favorites/{*model_id}", Role::Member),
    ("GET", "/v1/llms", Role::Read),
    ("POST", "/v1/llms", Role::Admin),
    ("GET", "/v1/llms/{id}", Role::Read),
    ("PATCH", "/v1/llms/{id}", Role::Admin),
    ("DELETE", "/v1/llms/{id}", Role::Admin),
    ("POST", "/v1/llms/{id}/copy", Role::Admin),
    ("GET", "/v1/keys", Role::Admin),
    ("POST", "/v1/keys", Role::Admin),
    ("DELETE", "/v1/keys/{id}", Role::Admin),
    ("GET", "/v1/conversations", Role::Read),
    ("POST", "/v1/conversations", Role::Member),
    ("GET", "/v1/conversations/{id}", Role::Read),
    ("PATCH", "/v1/conversations/{id}", Role::Member),
    ("DELETE", "/v1/conversations/{id}", Role::Member),
    ("GET", "/v1/conversations/{id}/messages", Role::Read),
    ("POST", "/v1/conversations/{id}/messages", Role::Member),
    ("GET", "/v1/conversations/{id}/model", Role::Read),
    ("PUT", "/v1/conversations/{id}/model", Role::Member),
    ("GET", "/v1/conversations/{id}/settings", Role::Read),
    ("PATCH", "/v1/conversations/{id}/settings", Role::Member),
    ("GET", "/v1/conversations/{id}/model-history", Role::Read),
    ("GET", "/v1/conversations/{id}/turns", Role::Read),
    ("POST", "/v1/conversations/{id}/turns", Role::Member),
    (
        "POST",
        "/v1/conversations/{id}/turns/{turn_id}/cancel",
        Role::Member,
    ),
    (
        "POST",
        "/v1/conversations/{id}/turns/{turn_id}/tool-results",
        Role::Member,
    ),
    ("GET", "/v1/conversations/{id}/events", Role::Read),
    ("POST", "/v1/conversations/{id}/title", Role::Member),
    ("POST", "/v1/conversations/{id}/compact", Role::Member),
];

/// Whether errors of this route use the OpenAI envelope.
fn openai_route(path: &str) -> bool {
    matches!(path, "/v1/chat/completions" | "/v1/models")
}

fn deny(path: &str, status: StatusCode, message: String) -> Response {
    if openai_route(path) {
        let code = if status == StatusCode::UNAUTHORIZED {
            "invalid_api_key"
        } else {
            "insufficient_permissions"
        };
        OpenAiError::new(status, "invalid_request_error", message)
            .code(code)
            .into_response()
    } else {
        let title = if status == StatusCode::UNAUTHORIZED {
            "Unauthorized"
        } else {
            "Forbidden"
        };
        let mut response = Problem::new(status, title, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The auth middleware (a route layer, so the matched route is known):
/// authenticates, checks the route's role, and puts [`Caller`] and
/// [`CallerId`] into the request's extensions.
pub async fn middleware(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if path == "/health" {
        return next.run(request).await;
    }
    let Some(needed) = required_role(request.method(), &path) else {
        tracing::error!(method = %request.method(), %path, "route without an access rule");
        return deny(
            &path,
            StatusCode::FORBIDDEN,
            "this route has no access rule".into(),
        );
    };
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let caller = match bearer {
        // Without keys the server is open (loopback only): clients such as
        // the OpenAI SDKs always send some key, which is then ignored.
        _ if !app.auth.required() => Caller {
            project: ProjectId::default_project(),
            role: Role::Admin,
            key_id: None,
        },
        Some(secret) => match app.auth.lookup(&secret).await {
            Ok(Some(key)) => Caller {
                project: ProjectId::new(key.project_id),
                role: key.role,
                key_id: Some(key.id),
            },
            Ok(None) => {
                return deny(
                    &path,
                    StatusCode::UNAUTHORIZED,
                    "invalid or revoked API key".into(),
                )
            }
            Err(err) => return Problem::internal(err).into_response(),
        },
        None => {
            return deny(
                &path,
                StatusCode::UNAUTHORIZED,
                "an API key is required: send Authorization: Bearer <key>".into(),
            )
        }
    };
    if caller.role < needed {
        return deny(
            &path,
            StatusCode::FORBIDDEN,
            format!(
                "{} {path} needs the {} role; this key has {}",
                request.method(),
                needed.as_str(),
                caller.role.as_str()
            ),
        );
    }
    let id = match &caller.key_id {
        Some(key) => CallerId(format!("key:{key}")),
        None => CallerId(
            match request.extensions().get::<ConnectInfo<SocketAddr>>() {
                Some(ConnectInfo(addr)) => format!("addr:{}", addr.ip()),
                None => "addr:unknown".to_owned(),
            },
        ),
    };
    request.extensions_mut().insert(id);
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The app state scoped to the request's caller: `app.project` is the
/// caller's project. Handlers take `Scoped(app): Scoped` instead of
/// `State(app)`.
#[derive(Debug, Clone)]
pub struct Scoped(pub AppState);

impl FromRequestParts<AppState> for Scoped {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(Scoped(state.scoped(caller.clone()))),
            None => {
                Err(Problem::internal("request without an authenticated caller").into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_router_has_an_access_rule() {
        // Route paths as written in app.rs: `.route("/v1/...",` (one per line
        // or on the next line).
        let source = include_str!("app.rs");
        let mut paths = Vec::new();
        let mut rest = source;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + 7..];
            let start = rest.find('"').unwrap_or(0) + 1;
            let end = start + rest[start..].find('"').unwrap_or(0);
            paths.push(&rest[start..end]);
        }
        assert!(paths.len() > 30, "{paths:?}");
        for path in paths.iter().filter(|p| **p != "/health") {
            assert!(
                ACCESS_RULES.iter().any(|(_, p, _)| p == path),
                "route {path} has no entry in ACCESS_RULES"
            );
        }
        for (_, path, _) in ACCESS_RULES {
            assert!(paths.contains(path), "rule for {path}, which is no route");
        }
    }

    #[test]
    fn keys_are_random_hashed_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("mk_") && a.secret.len() == 43);
        assert_eq!(a.prefix, a.secret[..11]);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret[3..]));
    }
}
