//! Who is calling: API keys, their project and role, and the per-route
//! access rules.
//!
//! - Until the first API key is created the server runs open: every request
//!   acts for the `default` project with the `admin` role, whatever key it
//!   sends (SDKs always send one) — allowed only on a loopback address
//!   (`app::start` refuses others) and for loopback `Host`s and same-origin
//!   browsers ([`crate::guard`]).
//! - The first key (over the API or with `modelyard keys create`) sets a flag
//!   in the store ([`Store::keys_required`]); from then on every route except
//!   `/health` needs `Authorization: Bearer <key>` (or `x-api-key: <key>`,
//!   as Anthropic SDKs send it), for good: revoking keys
//!   never reopens the server, and a project's last active admin key cannot
//!   be revoked (409). A missing, unknown or revoked key is a 401, a role
//!   below the route's ([`required_role`]) a 403. The key's project scopes
//!   every store call, so another project's resources are 404. A running
//!   server re-reads the flag every [`KEY_COUNT_INTERVAL`] (false → true
//!   only), so a key made by the CLI next to it takes effect.
//!
//! Keys look like `mk_<40 hex>`; the store keeps their SHA-256 (hex) and the
//! first 11 characters as a prefix. Lookups are cached for
//! [`KEY_CACHE_TTL`] in two bounded maps (existing keys, unknown hashes), so
//! a flood of random keys cannot evict valid ones; a lookup the store does
//! not answer within [`KEY_LOOKUP_TIMEOUT`] is a 503. A revoke through this
//! server takes effect at once; one made elsewhere (the CLI, another
//! replica) within [`KEY_COUNT_INTERVAL`]. Either way the key's open event
//! streams (gateway streams, conversation feeds) end then.

use std::collections::{HashMap, HashSet};
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
use crate::error::{AnthropicError, OpenAiError, Problem};

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
/// How often the server re-reads the store: whether keys are required (a key
/// created by the CLI next to a running server switches it to authenticated
/// mode within this; never back) and which keys were revoked elsewhere (their
/// cached lookups and open streams end within this).
pub const KEY_COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// [`KEY_COUNT_INTERVAL`] with `[cluster]`: a key created or revoked on one
/// replica takes effect on the others within this.
pub const CLUSTER_KEY_INTERVAL: Duration = Duration::from_secs(1);
/// How long a key lookup may wait for the store before the request gets a
/// 503 (the pool's own acquire timeout is far longer).
pub const KEY_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Cached lookups of existing keys, at most.
pub const MAX_CACHED_KEYS: usize = 10_000;
/// Cached lookups of unknown keys, at most (a separate map: a flood of
/// random keys never evicts a valid key).
pub const MAX_CACHED_MISSES: usize = 10_000;
/// How far back each re-read looks for revoked keys (generous, for clock
/// skew between this server and the process that revoked).
const REVOKED_LOOKBACK_MS: i64 = 10 * 60 * 1000;

/// The key registry of a running server.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    required: AtomicBool,
    cache: Mutex<KeyCache>,
    /// Ids of keys revoked while this server ran; open streams of a key
    /// watch it and end when their key is in it.
    revoked: tokio::sync::watch::Sender<HashSet<String>>,
}

/// Why a key could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The store did not answer within [`KEY_LOOKUP_TIMEOUT`].
    #[error("the key store did not answer within {KEY_LOOKUP_TIMEOUT:?}")]
    Timeout,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] modelyard_store::StoreError),
}

/// Key lookups: existing keys and unknown hashes in two bounded maps.
#[derive(Debug, Default)]
struct KeyCache {
    hits: HashMap<String, (ApiKeyRow, Instant)>,
    misses: HashMap<String, Instant>,
}

impl KeyCache {
    /// `Some(answer)` when `hash` was looked up less than [`KEY_CACHE_TTL`] ago.
    fn get(&self, hash: &str, now: Instant) -> Option<Option<ApiKeyRow>> {
        if let Some((row, at)) = self.hits.get(hash) {
            if now.duration_since(*at) < KEY_CACHE_TTL {
                return Some(Some(row.clone()));
            }
        }
        match self.misses.get(hash) {
            Some(at) if now.duration_since(*at) < KEY_CACHE_TTL => Some(None),
            _ => None,
        }
    }

    fn insert(&mut self, hash: String, row: Option<ApiKeyRow>, now: Instant) {
        match row {
            Some(row) => {
                self.misses.remove(&hash);
                if self.hits.len() >= MAX_CACHED_KEYS && !self.hits.contains_key(&hash) {
                    self.hits
                        .retain(|_, (_, at)| now.duration_since(*at) < KEY_CACHE_TTL);
                    if self.hits.len() >= MAX_CACHED_KEYS {
                        self.hits.clear();
                    }
                }
                self.hits.insert(hash, (row, now));
            }
            None => {
                self.hits.remove(&hash);
                if self.misses.len() >= MAX_CACHED_MISSES && !self.misses.contains_key(&hash) {
                    self.misses.clear();
                }
                self.misses.insert(hash, now);
            }
        }
    }

    fn forget_keys(&mut self, ids: &HashSet<String>) {
        self.hits.retain(|_, (row, _)| !ids.contains(&row.id));
    }

    fn clear(&mut self) {
        self.hits.clear();
        self.misses.clear();
    }
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
    /// Reads whether keys are required.
    ///
    /// # Errors
    /// The store's error.
    pub async fn load(store: Store) -> Result<Self, modelyard_store::StoreError> {
        let required = store.keys_required().await?;
        Ok(Self {
            store,
            required: AtomicBool::new(required),
            cache: Mutex::default(),
            revoked: tokio::sync::watch::Sender::new(HashSet::new()),
        })
    }

    /// Whether requests need a key. Once true, never false again.
    pub fn required(&self) -> bool {
        self.required.load(Ordering::Relaxed)
    }

    /// Re-reads the store (background task, every [`KEY_COUNT_INTERVAL`]):
    /// whether keys are now required (only ever false → true), and the keys
    /// revoked by another process, whose cached lookups are dropped and whose
    /// open streams end.
    pub async fn refresh(&self) {
        let store = &self.store;
        if !self.required() {
            match tokio::time::timeout(KEY_LOOKUP_TIMEOUT, store.keys_required()).await {
                Ok(Ok(true)) => self.required.store(true, Ordering::Relaxed),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot read whether keys are required")
                }
                Err(_) => tracing::warn!("reading whether keys are required timed out"),
            }
        }
        let since = crate::clock::now_ms().saturating_sub(REVOKED_LOOKBACK_MS);
        match tokio::time::timeout(KEY_LOOKUP_TIMEOUT, store.api_keys_revoked_since(since)).await {
            Ok(Ok(ids)) => self.note_revoked(ids),
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot read revoked API keys"),
            Err(_) => tracing::warn!("reading revoked API keys timed out"),
        }
    }

    /// Notes a key created through this server: keys are required now.
    pub fn created(&self) {
        self.required.store(true, Ordering::Relaxed);
    }

    /// Notes a key revoked through this server: its lookups and open
    /// streams end at once.
    pub fn revoked(&self, id: &str) {
        self.note_revoked(vec![id.to_owned()]);
    }

    fn note_revoked(&self, ids: Vec<String>) {
        let new: HashSet<String> = {
            let known = self.revoked.borrow();
            ids.into_iter().filter(|id| !known.contains(id)).collect()
        };
        if new.is_empty() {
            return;
        }
        self.lock().forget_keys(&new);
        self.revoked.send_modify(|revoked| revoked.extend(new));
    }

    /// Resolves when key `id` is revoked (by this server, or by another
    /// process and seen by [`Self::refresh`]).
    pub fn until_revoked(&self, id: String) -> impl std::future::Future<Output = ()> + Send {
        let mut revoked = self.revoked.subscribe();
        async move {
            if revoked.wait_for(|ids| ids.contains(&id)).await.is_err() {
                // The server is gone; nothing will revoke the key any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Forgets every cached lookup.
    pub fn clear_cache(&self) {
        self.lock().clear();
    }

    /// The active key with this secret, if any; the store gets
    /// [`KEY_LOOKUP_TIMEOUT`] to answer.
    async fn lookup(&self, secret: &str) -> Result<Option<ApiKeyRow>, LookupError> {
        let hash = hash_key(secret);
        if let Some(answer) = self.lock().get(&hash, Instant::now()) {
            return Ok(answer);
        }
        let row = tokio::time::timeout(KEY_LOOKUP_TIMEOUT, self.store.find_active_api_key(&hash))
            .await
            .map_err(|_| LookupError::Timeout)??;
        // A key revoked while its lookup ran is not cached as active.
        let row = row.filter(|r| !self.revoked.borrow().contains(&r.id));
        self.lock().insert(hash, row.clone(), Instant::now());
        Ok(row)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The role a route needs (the route table, [`crate::http::routes`]):
/// `read` for every GET, `admin` for key management and LLM config changes,
/// `member` for the rest. `None`: a public route, or none at all.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    crate::http::routes::required_role(method, path)
}

/// 405 for a method the route table has no row for on a known path, in
/// the path's error shape, with `Allow` (before any key check: the answer
/// is the same for every caller).
fn method_not_allowed(path: &str, method: &Method, allowed: &[&str]) -> Response {
    let status = StatusCode::METHOD_NOT_ALLOWED;
    let message = format!(
        "{method} is not allowed on {path}; allowed: {}",
        allowed.join(", ")
    );
    let mut response = if crate::error::is_anthropic_path(path) {
        AnthropicError::new(status, message).into_response()
    } else if crate::error::is_openai_path(path) {
        OpenAiError::new(status, "invalid_request_error", message)
            .code("method_not_allowed")
            .into_response()
    } else {
        Problem::new(status, "Method Not Allowed", message)
            .with("code", "method_not_allowed")
            .into_response()
    };
    if let Ok(value) = axum::http::HeaderValue::from_str(&allowed.join(", ")) {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, value);
    }
    response
}

fn deny(path: &str, status: StatusCode, message: String) -> Response {
    if crate::error::is_anthropic_path(path) {
        // `authentication_error` (401) / `permission_error` (403).
        AnthropicError::new(status, message).into_response()
    } else if crate::error::is_openai_path(path) {
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
    if crate::http::routes::access(request.method(), &path)
        == Some(crate::http::routes::Access::Public)
    {
        return next.run(request).await;
    }
    let allowed = crate::http::routes::methods(&path);
    if !allowed.is_empty() && !allowed.contains(&request.method().as_str()) {
        return method_not_allowed(&path, request.method(), &allowed);
    }
    let Some(needed) = required_role(request.method(), &path) else {
        tracing::error!(method = %request.method(), %path, "route without an access rule");
        return deny(
            &path,
            StatusCode::FORBIDDEN,
            "this route has no access rule".into(),
        );
    };
    let mut key_prefix = None;
    let caller = match presented_key(request.headers()) {
        // Without keys the server is open (loopback only): clients such as
        // the OpenAI SDKs always send some key, which is then ignored.
        _ if !app.auth.required() => Caller {
            project: ProjectId::default_project(),
            role: Role::Admin,
            key_id: None,
        },
        Some(secret) => match app.auth.lookup(&secret).await {
            Ok(Some(key)) => Caller {
                project: {
                    key_prefix = Some(key.prefix);
                    ProjectId::new(key.project_id)
                },
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
            Err(err) => {
                tracing::warn!(error = %err, "API key lookup failed");
                return unavailable(&path);
            }
        },
        None => return deny(&path, StatusCode::UNAUTHORIZED, KEY_REQUIRED.into()),
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
    let key_id = caller.key_id.clone();
    let seen = crate::http::access::SeenCaller {
        project: caller.project.clone(),
        key_prefix,
    };
    request.extensions_mut().insert(id);
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    // For the access log, outside this layer.
    response.extensions_mut().insert(seen);
    match key_id {
        Some(key_id) if is_event_stream(&response) => {
            let revoked = Box::pin(app.auth.until_revoked(key_id));
            response.map(|body| {
                axum::body::Body::new(UntilRevoked {
                    inner: Some(body),
                    revoked,
                })
            })
        }
        _ => response,
    }
}

/// The 401 message of a request without a key.
const KEY_REQUIRED: &str =
    "an API key is required: send Authorization: Bearer <key> (or x-api-key: <key>)";

/// The API key a request presents: `Authorization: Bearer <key>` (OpenAI
/// SDKs, the CLI, the web UI, Claude Code's `ANTHROPIC_AUTH_TOKEN`), else
/// `x-api-key: <key>` (Anthropic SDKs' `api_key`, Claude Code's
/// `ANTHROPIC_API_KEY`; Anthropic API reference, "Authentication"). Same
/// key format (`mk_…`) either way; the bearer wins when both are sent.
fn presented_key(headers: &axum::http::HeaderMap) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let x_api_key = || headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer
        .or_else(x_api_key)
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
}

/// 503 when the key store cannot be asked (down, or slower than
/// [`KEY_LOOKUP_TIMEOUT`]), in the route's error shape, with `Retry-After`.
fn unavailable(path: &str) -> Response {
    let message = "cannot check the API key: the database is unavailable; retry shortly";
    let mut response = if crate::error::is_anthropic_path(path) {
        AnthropicError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response()
    } else if crate::error::is_openai_path(path) {
        OpenAiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            .code("store_unavailable")
            .into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            message.into(),
        )
        .into_response()
    };
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A response body (an SSE stream) that ends when its key is revoked: the
/// inner body (and with it the stream's task, slot and upstream request) is
/// dropped and the client sees the end of the stream.
struct UntilRevoked {
    inner: Option<axum::body::Body>,
    revoked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl axum::body::HttpBody for UntilRevoked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        if this.revoked.as_mut().poll(cx).is_ready() {
            tracing::info!("ending an event stream: its API key was revoked");
            this.inner = None;
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
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
            Some(caller) => {
                let mut app = state.scoped(caller.clone());
                // The budgets middleware's admission, for the request's model call.
                app.admission = parts
                    .extensions
                    .get::<crate::quota::AdmissionSlot>()
                    .cloned();
                Ok(Scoped(app))
            }
            None => {
                Err(Problem::internal("request without an authenticated caller").into_response())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key row as the store would return it.
    fn key_row(id: &str) -> ApiKeyRow {
        ApiKeyRow {
            id: id.to_owned(),
            project_id: "default".to_owned(),
            name: "valid".to_owned(),
            role: Role::Member,
            prefix: "mk_valid".to_owned(),
            created_at_ms: 0,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn a_flood_of_random_keys_does_not_evict_a_valid_one() {
        // One instant for the whole flood: the cache's TTL plays no part,
        // however slow the machine (a flood through the store took longer
        // than the 10 s TTL on a loaded CI machine).
        let now = Instant::now();
        let mut cache = KeyCache::default();
        // Given a valid key in the cache...
        cache.insert("valid".to_owned(), Some(key_row("k1")), now);
        // ... when a client floods the server with random keys (more than
        // either map holds)...
        for i in 0..MAX_CACHED_MISSES + MAX_CACHED_KEYS + 1 {
            let hash = generate_key().hash;
            assert!(cache.get(&hash, now).is_none(), "lookup {i} was cached");
            cache.insert(hash, None, now);
        }
        // ... then the valid key is still answered from the cache, and both
        // maps stay within their bounds.
        assert_eq!(
            cache.get("valid", now).and_then(|row| row).map(|k| k.id),
            Some("k1".to_owned()),
            "the valid key was evicted by the flood"
        );
        assert!(cache.misses.len() <= MAX_CACHED_MISSES);
        assert!(cache.hits.len() <= MAX_CACHED_KEYS);
        // After the TTL the answer is asked again.
        assert!(cache.get("valid", now + KEY_CACHE_TTL).is_none());
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
