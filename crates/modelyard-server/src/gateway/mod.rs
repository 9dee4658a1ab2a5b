//! The OpenAI-compatible gateway: `POST /v1/chat/completions` and
//! `GET /v1/models` (OpenAI API reference shapes; Anthropic's list shape
//! when the request carries `anthropic-version`), the pass-throughs
//! `POST /v1/embeddings`, `POST /v1/rerank` and the legacy
//! `POST /v1/completions` ([`passthrough`]), and the Anthropic Messages
//! front ([`anthropic`]: `POST /v1/messages`).
//!
//! Request flow: read the body head ([`ChatRequestHead`]) → resolve the model
//! ([`crate::registry`]) → rewrite `model` to the upstream name (and, when
//! streaming, force `stream_options.include_usage`) → send → pass the answer
//! back with `model` set to the composite id → hand the call record to the
//! [`crate::recorder`]. Nothing else in the body is touched, unless the
//! provider has `set_params` / `strip_params`.
//!
//! Param rules, sending, status mapping, error reading and the record are
//! the one LLM call path's ([`crate::service::llm_call`]); the streamed
//! pass-through ([`stream`]) splices bytes and keeps its own loop.

pub mod anthropic;
mod call;
pub mod config;
pub(crate) mod passthrough;
pub mod responses;
pub mod schema;
mod stream;

pub use passthrough::{completions, embeddings, rerank};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_upstream::openai::{ChatRequestHead, RequestError};
use serde_json::json;

use crate::app::AppState;
use crate::auth::Scoped;
use crate::error::OpenAiError;
use crate::registry::{RouteError, Target};
use crate::routing::Destination;
use crate::service::llm_call::{LlmCall, LlmCallError, Purpose, UpstreamStatus};
use crate::service::routed::{Plan, RoutedError};

use call::CallDraft;

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

pub(crate) fn route_error(err: RouteError) -> OpenAiError {
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

/// The client's answer to a failed upstream call:
/// - an upstream `401` / `403`: the provider refused *Modelyard's*
///   credentials, not the client's: 502 with code `upstream_auth_error`
///   naming the provider (an SDK must not tell its user that their key is
///   bad);
/// - `3xx`: redirects are never followed (credentials stay with the
///   provider's origin); 502, since a redirect without its `Location` means
///   nothing to the client;
/// - any other status passes through with the upstream's message, `type`
///   and `code` (and `Retry-After`);
/// - a deadline: 504; anything else the provider did wrong: 502;
/// - a provider of kind `anthropic` (it speaks only Messages), reached by
///   an OpenAI-style request: 400 `messages_api_only`, nothing sent.
pub(crate) fn call_error(err: LlmCallError) -> OpenAiError {
    let kind = err.kind().to_owned();
    match err {
        LlmCallError::Status(answer) => {
            let UpstreamStatus {
                status,
                message,
                code,
                retry_after,
                ..
            } = *answer;
            let mut error = match status {
                401 | 403 => OpenAiError::new(StatusCode::BAD_GATEWAY, &kind, message)
                    .code("upstream_auth_error"),
                300..=399 => OpenAiError::new(StatusCode::BAD_GATEWAY, &kind, message),
                _ => {
                    let mut error = OpenAiError::new(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        &kind,
                        message,
                    );
                    error.code = code;
                    error
                }
            };
            error.retry_after = retry_after;
            error
        }
        LlmCallError::InvalidRequest(message) => {
            OpenAiError::new(StatusCode::BAD_REQUEST, &kind, message)
        }
        err @ LlmCallError::MessagesOnly { .. } => {
            OpenAiError::new(StatusCode::BAD_REQUEST, &kind, err.to_string())
                .code("messages_api_only")
        }
        LlmCallError::Disabled { .. } => OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            &kind,
            "provider is disabled",
        ),
        LlmCallError::Send(error) | LlmCallError::Upstream(error) if error.is_timeout() => {
            OpenAiError::new(StatusCode::GATEWAY_TIMEOUT, &kind, error.to_string())
        }
        LlmCallError::InBand { message, code } => {
            let mut error = OpenAiError::new(StatusCode::BAD_GATEWAY, &kind, message);
            error.code = code;
            error
        }
        other => OpenAiError::new(StatusCode::BAD_GATEWAY, &kind, other.to_string()),
    }
}

/// `[limits]` request caps: the first one exceeded, as a 400 naming the
/// field, the cap and the value.
fn exceeded_cap(
    head: &ChatRequestHead,
    limits: &crate::config::LimitsConfig,
) -> Option<OpenAiError> {
    if let Some(error) =
        exceeded_output_cap(head.n, head.max_tokens, head.max_completion_tokens, limits)
    {
        return Some(error);
    }
    let over = |param: &'static str, what: String| {
        Some(OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", what).param(param))
    };
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

/// The `[limits]` caps on output (`n`, `max_tokens`,
/// `max_completion_tokens`) of a generating request (chat or legacy
/// completion): the first one exceeded, as a 400 naming the field.
fn exceeded_output_cap(
    n: Option<u64>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    limits: &crate::config::LimitsConfig,
) -> Option<OpenAiError> {
    let over = |param: &'static str, what: String| {
        Some(OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", what).param(param))
    };
    if let Some(n) = n.filter(|n| *n > u64::from(limits.max_n)) {
        return over(
            "n",
            format!(
                "`n` is {n}; this server allows at most {} choices (limits.max_n)",
                limits.max_n
            ),
        );
    }
    for (param, value) in [
        ("max_tokens", max_tokens),
        ("max_completion_tokens", max_completion_tokens),
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
    None
}

/// The client's answer when no attempt served: the last error
/// ([`call_error`]), or 503 `no_deployment_available` naming each
/// deployment's reason, with `Retry-After` when the soonest recovery is
/// known.
pub(crate) fn routed_error(err: RoutedError) -> OpenAiError {
    match err {
        RoutedError::Call(err) => call_error(err),
        unavailable @ RoutedError::Unavailable { .. } => {
            let mut error = OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                unavailable.to_string(),
            )
            .code("no_deployment_available");
            error.retry_after = unavailable.retry_after_secs().map(|s| s.to_string());
            error
        }
    }
}

/// Header naming the deployment that served a request (`provider/model`).
pub const MODEL_HEADER: &str = "x-modelyard-model";
/// Header counting the attempts a request took (retries and fallbacks
/// included).
pub const ATTEMPTS_HEADER: &str = "x-modelyard-attempts";
/// Request header whose value keeps a caller's requests on one deployment
/// of a route with affinity (like OpenAI's `user` field, which also does).
pub const AFFINITY_HEADER: &str = "x-modelyard-affinity";

/// The request id the access layer set on a request
/// ([`crate::http::access`]).
pub(crate) fn request_id_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(crate::http::access::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /v1/chat/completions`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = schema::ChatCompletionRequest,
    responses((status = 200, description = "A chat completion, or with `stream: true` its chunks as SSE (`data: {...}`, then `data: [DONE]`)", content((Object = "application/json"), (crate::api::dto::SseEventSchema = "text/event-stream"))))
)]
pub async fn chat_completions(
    Scoped(app): Scoped,
    identity: crate::limits::Identity,
    preparsed: crate::http::quota::PreparsedChat,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat(app, identity, preparsed, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn chat(
    app: AppState,
    identity: crate::limits::Identity,
    preparsed: crate::http::quota::PreparsedChat,
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let started = std::time::Instant::now();
    let body = body.map_err(|rejection| {
        OpenAiError::new(
            rejection.status(),
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let head = match preparsed.head_of(&body) {
        Some(head) => head,
        None => ChatRequestHead::parse(&body).map_err(request_error)?,
    };
    // `x-modelyard-llm`: the request runs with what the config says and it
    // does not.
    let llm_config = config::named(&app, headers).await?;
    let (body, head) = match &llm_config {
        Some(llm_config) => {
            let body = config::apply(&body, llm_config).map_err(config::invalid_body)?;
            let head = ChatRequestHead::parse(&body).map_err(request_error)?;
            (body, head)
        }
        None => (body, head),
    };
    if let Some(error) = exceeded_cap(&head, &app.config.limits) {
        return Err(error);
    }
    // Taken before anything is sent, held by the SSE body until it ends.
    let slot = if head.stream {
        Some(app.streams.try_acquire(&identity).map_err(|e| e.openai())?)
    } else {
        None
    };
    let destination = app
        .destination(head.model.as_deref())
        .map_err(route_error)?;
    // A config's custom base URL, as for a turn.
    let destination = match &llm_config {
        Some(llm_config) => destination
            .for_llm_config(&app.registry, Some(llm_config))
            .map_err(|err| {
                OpenAiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    err.to_string(),
                )
                .code("invalid_base_url")
            })?,
        None => destination,
    };
    let snapshot = llm_config.as_ref().map(|llm_config| {
        crate::service::turn_target::config_snapshot(None, &destination, Some(llm_config))
    });
    if let Destination::Deployment(target) = &destination {
        if target.provider.client.is_none() {
            return Err(OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_disabled",
                "provider is disabled",
            ));
        }
    }
    // The answer's `model`: the route's name, or the deployment's id.
    let client_model = destination.model_id();
    let affinity = headers
        .get(AFFINITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(head.user.as_deref())
        .filter(|key| !key.is_empty());
    let mut plan = Plan::new(&app, destination, affinity);
    let purpose = Purpose::new("gateway");
    let mut build = |target: &Target| {
        let upstream_body = head.upstream_body(&body, target.resolution.model_id.model());
        LlmCall::from_raw(target, purpose.clone(), head.stream, upstream_body)
    };
    // The draft owns the attempts from here: whatever way the request ends
    // (the client gone included), one record.
    let mut draft = CallDraft::start(&app, request_id_of(headers)).with_config(snapshot);
    let upstream = match draft.send(&mut plan, &mut build).await {
        Ok(upstream) => upstream,
        Err(err) => {
            // The attempts' records keep the statuses the upstream answered with.
            draft.fail(Default::default(), None, err.to_string());
            return Err(routed_error(err));
        }
    };
    let (served_by, provider) = match draft.call() {
        Some(call) => (
            call.target().resolution.model_id.to_string(),
            call.target().provider.name().to_owned(),
        ),
        None => (client_model.clone(), String::new()),
    };
    let metrics = std::sync::Arc::clone(&app.metrics);
    let routing_headers = |response: &mut Response| {
        response
            .extensions_mut()
            .insert(crate::http::access::SeenModel(served_by.clone()));
        // Headers are ready: the gateway's own time is everything but the
        // waits on upstreams and back-off.
        metrics.overhead(
            "chat_completions",
            started.elapsed().saturating_sub(plan.waited()),
        );
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&served_by) {
            headers.insert(MODEL_HEADER, value);
        }
        headers.insert(ATTEMPTS_HEADER, HeaderValue::from(plan.attempts()));
    };

    if head.stream {
        let body = stream::proxy(
            upstream,
            draft,
            provider,
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
        routing_headers(&mut response);
        return Ok(response);
    }

    match draft.read_body(upstream).await {
        Ok(rewritten) => {
            // A non-streamed answer has no observable first token.
            draft.complete(rewritten.summary, None);
            let mut response = Response::new(Body::from(rewritten.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            routing_headers(&mut response);
            Ok(response)
        }
        Err(err) => {
            // The record keeps the status the upstream answered with.
            draft.fail(Default::default(), None, err.to_string());
            Err(call_error(err))
        }
    }
}

/// `GET /v1/models`: the models of every online provider as composite ids,
/// then the `[[routes]]` by name (`owned_by: "modelyard"`, `provider: null`),
/// in OpenAI's list shape plus `provider` and `context_window` (tokens,
/// `null` when unknown; a route's is the smallest of its targets';
/// snake_case like OpenAI's own fields), and `type: "embedding"` on the
/// models their provider says only embed (left out otherwise). A request with an
/// `anthropic-version` header (Anthropic SDKs, Claude Code) gets
/// Anthropic's list shape instead ([`anthropic::models`]).
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    params(("anthropic-version" = Option<String>, Header, description = "Answer in Anthropic's list shape")),
    responses((status = 200, description = "OpenAI's model list `{object: \"list\", data: [{id, object, created, owned_by}]}`; with an `anthropic-version` header, Anthropic's `{data, has_more, first_id, last_id}`", body = Object))
)]
pub async fn list_models(Scoped(app): Scoped, headers: axum::http::HeaderMap) -> Response {
    let mut key = std::hash::DefaultHasher::new();
    app.registry.snapshot_key(&mut key);
    if headers.contains_key("anthropic-version") {
        return anthropic_models(&app, std::hash::Hasher::finish(&key));
    }
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
                        let mut entry = json!({
                            "id": format!("{}/{}", provider.name(), model.model),
                            "object": "model",
                            "created": created,
                            "owned_by": provider.name(),
                            "provider": provider.name(),
                            "context_window": model.context_window,
                        });
                        if model.embedding {
                            entry["type"] = json!("embedding");
                        }
                        data.push(entry);
                    }
                }
                // Routes: ids like any other, `owned_by` the gateway, the
                // smallest known context window of their targets.
                for route in app.router.routes() {
                    let window = route_window(&app, route);
                    data.push(json!({
                        "id": route.config.name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "modelyard",
                        "provider": null,
                        "context_window": window,
                    }));
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

/// The smallest context window (tokens) its targets' providers report for
/// `route`, if any does.
fn route_window(app: &AppState, route: &crate::routing::Route) -> Option<u64> {
    route
        .config
        .targets
        .iter()
        .filter_map(|t| {
            let (provider, model) = t.model.split_once('/')?;
            let state = app.registry.provider(provider)?.state();
            let window = state.catalog.iter().find(|m| m.model == model)?;
            window.context_window
        })
        .min()
}

/// The models of every online provider, then the routes, in Anthropic's
/// list shape.
fn anthropic_models(app: &AppState, key: u64) -> Response {
    let body = app
        .registry
        .rendered
        .get_or_render("models-anthropic", key, || {
            let mut models = Vec::new();
            for provider in app.registry.providers() {
                let state = provider.state();
                if state.status != crate::registry::ProviderStatus::Online {
                    continue;
                }
                let created_secs =
                    u64::try_from(state.last_ok_at_ms.unwrap_or(0) / 1000).unwrap_or_default();
                for model in state.catalog.iter() {
                    models.push(anthropic::models::ListedModel {
                        id: format!("{}/{}", provider.name(), model.model),
                        display_name: model.display_name.clone(),
                        created_secs,
                        context_window: model.context_window,
                    });
                }
            }
            for route in app.router.routes() {
                models.push(anthropic::models::ListedModel {
                    id: route.config.name.clone(),
                    display_name: route.config.name.clone(),
                    created_secs: 0,
                    context_window: route_window(app, route),
                });
            }
            Bytes::from(anthropic::models::list_body(&models).to_string())
        });
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
