//! The Anthropic Messages front: `POST /v1/messages` (Anthropic API
//! reference, "Messages"), served over the same providers, keys, limits and
//! call log as the OpenAI front, so Anthropic SDKs and Claude Code can use
//! any model Modelyard routes to.
//!
//! Request flow: the body's head is read (`model`, `stream`, the `[limits]`
//! counts, `metadata.user_id`:
//! [`modelyard_upstream::anthropic::MessagesRequestHead`]) → the model is
//! resolved like the gateway's
//! ([`crate::registry::ProviderRegistry::resolve`]) → each attempt of
//! routing's plan goes through the one LLM call path
//! ([`crate::service::llm_call`], operation `messages`) under a
//! [`CallDraft`] (one call record per request, whatever way it ends), by
//! its deployment:
//! - a provider that speaks Messages natively (kind `anthropic`, or
//!   `messages_api = true`): the client's bytes with `model` spliced to the
//!   upstream name (the provider's `set_params` / `strip_params` apply; the
//!   client's `anthropic-version` / `anthropic-beta` headers are passed on)
//!   to its `/v1/messages`; the answer passes through with `model` set to
//!   the id the client sent ([`native`] for streams);
//! - any other: the body translated into an OpenAI chat-completions
//!   request ([`request`]), the answer translated back: one message
//!   ([`response`]) or Anthropic's named SSE events ([`stream`],
//!   [`events`]).
//!
//! Errors use Anthropic's shape ([`crate::error::AnthropicError`],
//! [`error`]), as do the auth, guard and limit refusals on `/v1/messages…`.
//! `POST /v1/messages/count_tokens` goes to a native provider's own
//! `/v1/messages/count_tokens`, or is counted by llama.cpp providers
//! (`/apply-template` + `/tokenize`, [`crate::service::tokens`]); other
//! kinds answer 404 `not_found_error` naming the provider.
//!
//! The translation modules hold no axum; the handlers here are thin
//! adapters.

mod error;
mod events;
pub(crate) mod models;
mod native;
mod request;
mod response;
mod stream;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_upstream::UpstreamResponse;

use crate::app::AppState;
use crate::auth::Scoped;
use crate::error::AnthropicError;
use crate::gateway::call::CallDraft;
use crate::limits::Identity;
use crate::routing::Destination;
use crate::service::llm_call::{compose, Endpoint, LlmCall, LlmCallError, Purpose};
use crate::service::routed::Plan;
use modelyard_upstream::anthropic::MessagesRequestHead;

/// The operation name of the call records this front writes.
pub const OPERATION: &str = "messages";

/// `POST /v1/messages`: an Anthropic Messages request, streamed or not.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "anthropic",
    request_body = crate::gateway::schema::MessagesRequest,
    responses((status = 200, description = "A message, or with `stream: true` Anthropic's named SSE events", content((Object = "application/json"), (crate::api::dto::SseEventSchema = "text/event-stream"))))
)]
pub async fn messages(
    Scoped(app): Scoped,
    identity: Identity,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match serve(app, identity, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `POST /v1/messages/count_tokens` → `{"input_tokens": n}`, counted by
/// the deployment the request would go to ([`crate::service::tokens`]): a
/// provider that speaks Messages natively gets the body (`model` spliced)
/// at its own `/v1/messages/count_tokens`; a llama.cpp provider counts the
/// request translated like a message (`max_tokens` may be left out);
/// others answer 404 `not_found_error` naming the provider.
#[utoipa::path(
    post,
    path = "/v1/messages/count_tokens",
    tag = "anthropic",
    request_body = crate::gateway::schema::MessagesRequest,
    responses(
        (status = 200, description = "`{\"input_tokens\": n}`", body = crate::gateway::schema::InputTokens),
        (status = 404, description = "The model's provider cannot count (`not_found_error`)", body = crate::error::AnthropicErrorBody)
    )
)]
pub async fn count_tokens(
    Scoped(app): Scoped,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match count(&app, &headers, body).await {
        Ok(n) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"input_tokens": n})),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn count(
    app: &AppState,
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<u64, AnthropicError> {
    use crate::service::tokens::{
        count_chat_tokens, count_native_tokens, count_target, CountError,
    };
    let body =
        body.map_err(|rejection| AnthropicError::new(rejection.status(), rejection.body_text()))?;
    let head = MessagesRequestHead::parse(&body).map_err(head_error)?;
    let count_error = |err: CountError| match err {
        CountError::Route(err) => error::route(err),
        err @ CountError::Unsupported { .. } => {
            AnthropicError::new(StatusCode::NOT_FOUND, err.to_string())
        }
        err @ (CountError::NoTarget(_) | CountError::Disabled(_)) => {
            let mut error = AnthropicError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string());
            error.kind = "overloaded_error";
            error
        }
        CountError::Call(err) => error::call(err),
        CountError::Upstream(err) if err.is_timeout() => {
            AnthropicError::new(StatusCode::GATEWAY_TIMEOUT, err.to_string())
        }
        CountError::Upstream(err) => AnthropicError::new(StatusCode::BAD_GATEWAY, err.to_string()),
    };
    let target =
        count_target(app, head.model.as_deref(), head.user_id.as_deref()).map_err(count_error)?;
    if native(&target) {
        let upstream_body = head.upstream_body(&body, target.resolution.model_id.model());
        let forwarded = forwarded_headers(headers, &target);
        return count_native_tokens(&target, upstream_body, forwarded)
            .await
            .map_err(count_error);
    }
    // `max_tokens` is not part of a count request; the translation needs one.
    let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        AnthropicError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })?;
    if let Some(object) = value.as_object_mut() {
        object
            .entry("max_tokens")
            .or_insert(serde_json::Value::from(1));
    }
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let translated = request::translate(&body, &app.config.limits).map_err(error::bad_request)?;
    let upstream = translated.upstream;
    let tools = upstream
        .options
        .get("tools")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    count_chat_tokens(&target, &upstream.messages, &tools)
        .await
        .map_err(count_error)
}

async fn serve(
    app: AppState,
    identity: Identity,
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let body =
        body.map_err(|rejection| AnthropicError::new(rejection.status(), rejection.body_text()))?;
    let head = MessagesRequestHead::parse(&body).map_err(head_error)?;
    if let Some(error) = exceeded_cap(&head, &app.config.limits) {
        return Err(error);
    }
    let stream = head.stream;
    // Taken before anything is sent, held by the SSE body until it ends.
    let slot = if stream {
        Some(
            app.streams
                .try_acquire(&identity)
                .map_err(|e| e.anthropic())?,
        )
    } else {
        None
    };
    let opened = open_call(&app, &head, &body, headers, super::request_id_of(headers)).await?;
    // The id the client sent (the composite id when it sent none).
    let client_model = head
        .model
        .clone()
        .unwrap_or_else(|| opened.model_id.clone());

    let Some(translated) = opened.translated else {
        return native_answer(
            &app,
            opened.draft,
            opened.upstream,
            opened.provider,
            client_model,
            stream,
            slot,
        )
        .await;
    };
    let message_id = response::message_id();
    if stream {
        let setup = stream::StreamSetup {
            message_id,
            client_model,
            model_id: opened.model_id,
            provider: opened.provider,
            stop_sequences: translated.stop_sequences,
            max_event_bytes: app.config.limits.max_sse_event_bytes,
        };
        let body = stream::translate(opened.upstream, opened.draft, setup);
        return Ok(event_stream(Body::from_stream(crate::limits::hold(
            body, slot,
        ))));
    }

    let mut draft = opened.draft;
    match draft.read_body(opened.upstream).await {
        Ok(answer) => {
            let matched = response::matched_stop(&answer.body);
            let message = response::message(
                &message_id,
                &client_model,
                &answer.summary,
                matched.as_deref(),
                &translated.stop_sequences,
            );
            // A non-streamed answer has no observable first token.
            draft.complete(answer.summary, None);
            Ok((StatusCode::OK, axum::Json(message)).into_response())
        }
        Err(err) => {
            // The record keeps the status the upstream answered with.
            draft.fail(Default::default(), None, err.to_string());
            Err(error::call(err))
        }
    }
}

/// A `text/event-stream` response with `body`.
fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The answer of a provider that speaks Messages natively: its events
/// passed through ([`native`]), or its message with `model` set to
/// `client_model` and every other byte kept.
async fn native_answer(
    app: &AppState,
    mut draft: CallDraft,
    upstream: UpstreamResponse,
    provider: String,
    client_model: String,
    stream: bool,
    slot: Option<crate::limits::StreamSlot>,
) -> Result<Response, AnthropicError> {
    if stream {
        let body = native::pass_through(
            upstream,
            draft,
            provider,
            client_model,
            app.config.limits.max_sse_event_bytes,
        );
        return Ok(event_stream(Body::from_stream(crate::limits::hold(
            body, slot,
        ))));
    }
    match draft.read_message(upstream, &client_model).await {
        Ok(answer) => {
            draft.complete(answer.summary, None);
            let mut response = Response::new(Body::from(answer.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        Err(err) => {
            draft.fail(Default::default(), None, err.to_string());
            Err(error::call(err))
        }
    }
}

/// A Messages request head the client got wrong: 400 naming the field.
fn head_error(err: modelyard_upstream::openai::RequestError) -> AnthropicError {
    AnthropicError::new(StatusCode::BAD_REQUEST, err.to_string())
}

/// The `[limits]` caps a Messages request may exceed (`max_tokens` over
/// `max_output_tokens`, `messages` over `max_messages`, `tools` over
/// `max_tools`): the first one, as a 400 naming the field.
fn exceeded_cap(
    head: &MessagesRequestHead,
    limits: &crate::config::LimitsConfig,
) -> Option<AnthropicError> {
    let over = |what: String| Some(AnthropicError::new(StatusCode::BAD_REQUEST, what));
    if let Some(n) = head
        .max_tokens
        .filter(|n| *n > u64::from(limits.max_output_tokens))
    {
        return over(format!(
            "max_tokens: is {n}; this server allows at most {} output tokens \
             (limits.max_output_tokens)",
            limits.max_output_tokens
        ));
    }
    if head.message_count > limits.max_messages as usize {
        return over(format!(
            "messages: has {} entries; this server allows at most {} (limits.max_messages)",
            head.message_count, limits.max_messages
        ));
    }
    if let Some(tools) = head.tool_count.filter(|t| *t > limits.max_tools as usize) {
        return over(format!(
            "tools: has {tools} entries; this server allows at most {} (limits.max_tools)",
            limits.max_tools
        ));
    }
    None
}

/// Client headers passed on to a native provider: `anthropic-version` and
/// `anthropic-beta` (the features the client asks for), unless the
/// provider's own `headers` name them.
pub(crate) const FORWARDED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The [`FORWARDED_HEADERS`] of the client's `headers` that go to
/// `target`'s provider.
fn forwarded_headers(
    headers: &axum::http::HeaderMap,
    target: &crate::registry::Target,
) -> axum::http::HeaderMap {
    let own = &target.provider.config.headers;
    let mut out = axum::http::HeaderMap::new();
    for name in FORWARDED_HEADERS {
        if own.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            continue;
        }
        for value in headers.get_all(name) {
            out.append(name, value.clone());
        }
    }
    out
}

/// Whether `target`'s provider speaks Messages natively (kind
/// `anthropic`, or `messages_api = true`): its attempts pass the request
/// through instead of translating it.
pub(crate) fn native(target: &crate::registry::Target) -> bool {
    target.provider.config.messages_api
}

/// The translated request, composed once for every translated attempt.
struct Composed {
    body: serde_json::Value,
    stop_sequences: Vec<String>,
}

/// A sent call: its record and the upstream's answer (a 2xx).
struct Opened {
    draft: CallDraft,
    upstream: UpstreamResponse,
    /// Composite id.
    model_id: String,
    /// Provider name.
    provider: String,
    /// The translation, when the attempt that answered was translated
    /// (`None`: a native provider answered).
    translated: Option<Translated>,
}

/// What the translated path needs of the translation besides the body.
struct Translated {
    stop_sequences: Vec<String>,
}

/// Resolves the model (a route or one deployment) and sends the request by
/// routing's plan (retries, fallbacks, affinity by `metadata.user_id`) —
/// the one place this front routes. Each attempt goes by its deployment:
/// to a provider that speaks Messages natively, the client's bytes with
/// `model` spliced (and the client's forwarded headers); to any other, the request
/// translated to chat completions (translated once, when the first such
/// attempt is built, so a request routed only to native providers is
/// never parsed whole). Failed attempts are recorded by the draft; a
/// resolution error happens before any call and leaves no record, as on
/// the OpenAI front.
async fn open_call(
    app: &AppState,
    head: &MessagesRequestHead,
    body: &Bytes,
    client_headers: &axum::http::HeaderMap,
    request_id: Option<String>,
) -> Result<Opened, AnthropicError> {
    let destination = app
        .destination(head.model.as_deref())
        .map_err(error::route)?;
    if let Destination::Deployment(target) = &destination {
        if target.provider.client.is_none() {
            return Err(AnthropicError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("provider '{}' is disabled", target.provider.name()),
            ));
        }
    }
    let mut plan = Plan::new(app, destination, head.user_id.as_deref());
    let purpose = Purpose::new(OPERATION);
    let limits = &app.config.limits;
    let mut composed: Option<Composed> = None;
    let mut build = |target: &crate::registry::Target| {
        if native(target) {
            let upstream_body = head.upstream_body(body, target.resolution.model_id.model());
            let mut call = LlmCall::from_raw_to(
                target,
                purpose.clone(),
                Endpoint::Messages,
                head.stream,
                upstream_body,
            )?;
            call.set_headers(forwarded_headers(client_headers, target));
            return Ok(call);
        }
        if composed.is_none() {
            let translated =
                request::translate(body, limits).map_err(|e| LlmCallError::InvalidRequest(e.0))?;
            let upstream = translated.upstream;
            composed = Some(Composed {
                // `model` is each attempt's deployment's, set by `LlmCall::new`.
                body: compose("", upstream.options, upstream.messages, upstream.stream),
                stop_sequences: translated.stop_sequences,
            });
        }
        match &composed {
            Some(composed) => Ok(LlmCall::new(target, purpose.clone(), &composed.body)),
            None => Err(LlmCallError::InvalidRequest("no translated request".into())),
        }
    };
    // The draft owns the attempts from here: whatever way the request ends
    // (the client gone included), one record.
    let mut draft = CallDraft::start(app, request_id);
    let sent = draft.send(&mut plan, &mut build).await;
    match sent {
        Ok(upstream) => {
            let (model_id, provider, was_native) = match draft.call() {
                Some(call) => (
                    call.target().resolution.model_id.to_string(),
                    call.target().provider.name().to_owned(),
                    call.endpoint() == Endpoint::Messages,
                ),
                None => (String::new(), String::new(), false),
            };
            let translated = match (was_native, composed) {
                (true, _) => None,
                (false, composed) => Some(Translated {
                    stop_sequences: composed.map(|c| c.stop_sequences).unwrap_or_default(),
                }),
            };
            Ok(Opened {
                draft,
                upstream,
                model_id,
                provider,
                translated,
            })
        }
        Err(err) => {
            draft.fail(Default::default(), None, err.to_string());
            Err(error::routed(err))
        }
    }
}
