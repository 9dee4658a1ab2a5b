//! The auth middleware: authenticates a request, checks its route's role,
//! answers a denial in the route's error shape, and ends a key's event
//! streams when the key is revoked.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use modelyard_store::{ProjectId, Role};

use super::{Caller, CallerId};
use crate::app::AppState;
use crate::error::{AnthropicError, OpenAiError, Problem};

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
/// [`KEY_LOOKUP_TIMEOUT`](super::KEY_LOOKUP_TIMEOUT)), in the route's error
/// shape, with `Retry-After`.
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
