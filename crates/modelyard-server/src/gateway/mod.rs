//! The OpenAI-compatible gateway: `POST /v1/chat/completions` and
//! `GET /v1/models` (OpenAI API reference shapes).
//!
//! Request flow: read the body head ([`ChatRequestHead`]) → resolve the model
//! ([`crate::registry`]) → rewrite `model` to the upstream name (and, when
//! streaming, force `stream_options.include_usage`) → send → pass the answer
//! back with `model` set to the composite id → hand the call record to the
//! [`crate::recorder`]. Nothing else in the body is touched.

mod call;
mod stream;

pub(crate) use stream::event_too_large;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_upstream::openai::{
    apply_param_rules, rewrite_completion, upstream_error_message, ChatRequestHead,
    CompletionError, RequestError,
};
use serde_json::json;

use crate::app::AppState;
use crate::auth::Scoped;
use crate::error::OpenAiError;
use crate::registry::RouteError;

use call::CallDraft;

/// Largest non-streamed upstream answer read, bytes.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Largest upstream error body read, bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Characters of an upstream error message kept.
const MAX_ERROR_CHARS: usize = 2_000;

fn request_error(err: RequestError) -> OpenAiError {
    let param = match &err {
        RequestError::FieldType { field, .. } => Some(*field),
        RequestError::Missing(field) => Some(*field),
        RequestError::NotJson(_) => None,
    };
    let error = OpenAiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        err.to_string(),
    );
    match param {
        Some(p) => error.param(p),
        None => error,
    }
}

fn route_error(err: RouteError) -> OpenAiError {
    match err {
        RouteError::NoModel => OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            err.to_string(),
        )
        .param("model"),
        RouteError::Resolve(modelyard_core::ResolveError::Invalid(e)) => OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            e.to_string(),
        )
        .param("model"),
        RouteError::Resolve(modelyard_core::ResolveError::Ambiguous { .. }) => OpenAiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            err.to_string(),
        )
        .param("model")
        .code("model_ambiguous"),
        RouteError::Resolve(_) => OpenAiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            err.to_string(),
        )
        .param("model")
        .code("model_not_found"),
        RouteError::Disabled { .. } => OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_disabled",
            err.to_string(),
        )
        .param("model"),
    }
}

/// The client's answer to an upstream non-2xx status:
/// - `401` / `403`: the provider refused *Modelyard's* credentials, not the
///   client's: 502 with code `upstream_auth_error` naming the provider (an
///   SDK must not tell its user that their key is bad);
/// - `3xx`: redirects are never followed (credentials stay with the
///   provider's origin); 502, since a redirect without its `Location` means
///   nothing to the client;
/// - anything else passes through with the upstream's message, `type` and
///   `code`.
pub(crate) fn upstream_status_error(
    provider: &str,
    status: u16,
    message: String,
    kind: Option<String>,
    code: Option<serde_json::Value>,
) -> OpenAiError {
    match status {
        401 | 403 => OpenAiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!(
                "provider '{provider}' rejected the server's credentials (HTTP {status}: \
                 {message}); this is the provider's key in Modelyard's configuration, not \
                 the key of this request"
            ),
        )
        .code("upstream_auth_error"),
        300..=399 => OpenAiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!(
                "provider '{provider}' answered HTTP {status}: {message} (a redirect; \
                 redirects are not followed)"
            ),
        ),
        _ => {
            let mut error = OpenAiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                kind.as_deref().unwrap_or("upstream_error"),
                format!("provider '{provider}' answered HTTP {status}: {message}"),
            );
            error.code = code;
            error
        }
    }
}

/// `[limits]` request caps: the first one exceeded, as a 400 naming the
/// field, the cap and the value.
fn exceeded_cap(
    head: &ChatRequestHead,
    limits: &crate::config::LimitsConfig,
) -> Option<OpenAiError> {
    let over = |param: &'static str, what: String| {
        Some(OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", what).param(param))
    };
    if let Some(n) = head.n.filter(|n| *n > u64::from(limits.max_n)) {
        return over(
            "n",
            format!(
                "`n` is {n}; this server allows at most {} choices (limits.max_n)",
                limits.max_n
            ),
        );
    }
    for (param, value) in [
        ("max_tokens", head.max_tokens),
        ("max_completion_tokens", head.max_completion_tokens),
    ] {
        if let Some(value) = value.filter(|v| *v > u64::from(limits.max_output_tokens)) {
            return over(
                param,
                format!(
                    "`{param}` is {value}; this server allows at most {} output tokens \
                     (limits.max_output_tokens)",
                    limits.max_output_tokens
                ),
            );
        }
    }
    if head.message_count > limits.max_messages as usize {
        return over(
            "messages",
            format!(
                "`messages` has {} entries; this server allows at most {} (limits.max_messages)",
                head.message_count, limits.max_messages
            ),
        );
    }
    if let Some(tools) = head.tool_count.filter(|t| *t > limits.max_tools as usize) {
        return over(
            "tools",
            format!(
                "`tools` has {tools} entries; this server allows at most {} (limits.max_tools)",
                limits.max_tools
            ),
        );
    }
    None
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    Scoped(app): Scoped,
    identity: crate::limits::Identity,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat(app, identity, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn chat(
    app: AppState,
    identity: crate::limits::Identity,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let body = body.map_err(|rejection| {
        OpenAiError::new(
            rejection.status(),
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let head = ChatRequestHead::parse(&body).map_err(request_error)?;
    if let Some(error) = exceeded_cap(&head, &app.config.limits) {
        return Err(error);
    }
    // Taken before anything is sent, held by the SSE body until it ends.
    let slot = if head.stream {
        Some(app.streams.try_acquire(&identity).map_err(|e| e.openai())?)
    } else {
        None
    };
    let target = app
        .registry
        .resolve(head.model.as_deref())
        .map_err(route_error)?;
    let Some(client) = target.provider.client.as_ref() else {
        return Err(OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_disabled",
            "provider is disabled",
        ));
    };
    let client_model = target.resolution.model_id.to_string();
    let mut upstream_body = head.upstream_body(&body, target.resolution.model_id.model());
    let rules = &target.provider.config;
    if !rules.set_params.is_empty() || !rules.strip_params.is_empty() {
        upstream_body = apply_param_rules(&upstream_body, &rules.set_params, &rules.strip_params)
            .map_err(|e| {
            OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", e)
        })?;
    }
    let upstream_body = Bytes::from(upstream_body);
    let draft = CallDraft::start(&app, &target, head.stream, upstream_body.clone());

    let upstream = match client.chat_completions(upstream_body, head.stream).await {
        Ok(upstream) => upstream,
        Err(err) => {
            let (status, kind) = if err.is_timeout() {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            } else {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable")
            };
            let message = err.to_string();
            draft.fail(None, Default::default(), None, message.clone());
            return Err(OpenAiError::new(status, kind, message));
        }
    };

    let status = upstream.status();
    if !(200..300).contains(&status) {
        let retry_after = upstream.retry_after().map(str::to_owned);
        let body = upstream.bytes(MAX_ERROR_BODY).await.unwrap_or_default();
        let (message, kind, code) = upstream_error_message(&body, MAX_ERROR_CHARS);
        let error = upstream_status_error(target.provider.name(), status, message, kind, code);
        // The record keeps the status the upstream answered with.
        draft.fail(
            Some(status),
            Default::default(),
            None,
            error.message.clone(),
        );
        let mut error = error;
        error.retry_after = retry_after;
        return Err(error);
    }

    if head.stream {
        if !upstream.is_event_stream() {
            let message = format!(
                "provider '{}' answered a streaming request with content type {:?} instead of text/event-stream",
                target.provider.name(),
                upstream.content_type()
            );
            draft.fail(Some(status), Default::default(), None, message.clone());
            return Err(OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_invalid_response",
                message,
            ));
        }
        let body = stream::proxy(
            upstream,
            draft,
            target.provider.name().to_owned(),
            client_model,
            head.client_include_usage,
            app.config.limits.max_sse_event_bytes,
        );
        let mut response = Response::new(Body::from_stream(crate::limits::hold(body, slot)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(response);
    }

    let bytes = match upstream.bytes(MAX_UPSTREAM_BODY).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let (client_status, kind) = if err.is_timeout() {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
            } else {
                (StatusCode::BAD_GATEWAY, "upstream_error")
            };
            let message = err.to_string();
            // The record keeps the status the upstream answered with.
            draft.fail(Some(status), Default::default(), None, message.clone());
            return Err(OpenAiError::new(client_status, kind, message));
        }
    };
    match rewrite_completion(&bytes, &client_model) {
        Ok(rewritten) => {
            // A non-streamed answer has no observable first token.
            draft.complete(status, rewritten.summary, None);
            let mut response = Response::new(Body::from(rewritten.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        // A success status whose body is an error object is an error, not an answer.
        Err(CompletionError::InBand(error)) => {
            let (message, _, code) = upstream_error_message(error.as_bytes(), MAX_ERROR_CHARS);
            let message = format!(
                "provider '{}' answered HTTP {status} with an error: {message}",
                target.provider.name()
            );
            draft.fail(Some(status), Default::default(), None, message.clone());
            let mut error = OpenAiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message);
            error.code = code;
            Err(error)
        }
        Err(CompletionError::NotJson(reason)) => {
            let message = format!(
                "provider '{}' sent a completion that is not a JSON object: {reason}",
                target.provider.name()
            );
            draft.fail(Some(status), Default::default(), None, message.clone());
            Err(OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_invalid_response",
                message,
            ))
        }
    }
}

/// `GET /v1/models`: the models of every online provider as composite ids,
/// in OpenAI's list shape plus `provider` and `context_window` (tokens,
/// `null` when unknown; snake_case like OpenAI's own fields).
pub async fn list_models(Scoped(app): Scoped) -> Response {
    let mut key = std::hash::DefaultHasher::new();
    app.registry.snapshot_key(&mut key);
    let body =
        app.registry
            .rendered
            .get_or_render("models", std::hash::Hasher::finish(&key), || {
                let mut data: Vec<serde_json::Value> = Vec::new();
                for provider in app.registry.providers() {
                    let state = provider.state();
                    if state.status != crate::registry::ProviderStatus::Online {
                        continue;
                    }
                    let created = state.last_ok_at_ms.unwrap_or(0) / 1000;
                    for model in state.catalog.iter() {
                        data.push(json!({
                            "id": format!("{}/{}", provider.name(), model.model),
                            "object": "model",
                            "created": created,
                            "owned_by": provider.name(),
                            "provider": provider.name(),
                            "context_window": model.context_window,
                        }));
                    }
                }
                Bytes::from(json!({"object": "list", "data": data}).to_string())
            });
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
