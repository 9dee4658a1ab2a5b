//! The Anthropic Messages front: `POST /v1/messages` (Anthropic API
//! reference, "Messages"), served over the same providers, keys, limits and
//! call log as the OpenAI front, so Anthropic SDKs and Claude Code can use
//! any model Modelyard routes to.
//!
//! Request flow: the body is translated into an OpenAI chat-completions
//! request ([`request`]) → the model is resolved like the gateway's
//! ([`crate::registry::ProviderRegistry::resolve`]) → the request is
//! composed and sent through the one LLM call path
//! ([`crate::service::llm_call`], operation `messages`) under a
//! [`CallDraft`] (one call record per request, whatever way it ends) → the
//! answer is translated back: one message ([`response`]) or Anthropic's
//! named SSE events ([`stream`], [`events`]).
//!
//! Errors use Anthropic's shape ([`crate::error::AnthropicError`],
//! [`error`]), as do the auth, guard and limit refusals on `/v1/messages…`.
//! `POST /v1/messages/count_tokens` is counted by llama.cpp providers
//! (`/apply-template` + `/tokenize`, [`crate::service::tokens`]); other
//! kinds answer 404 `not_found_error` naming the provider.
//!
//! The translation modules hold no axum; the handlers here are thin
//! adapters.

mod error;
mod events;
pub(crate) mod models;
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
use crate::service::llm_call::{compose, LlmCall, Purpose};
use crate::service::routed::Plan;

use request::UpstreamRequest;

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
    let request_id = super::request_id_of(&headers);
    match serve(app, identity, request_id, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `POST /v1/messages/count_tokens` → `{"input_tokens": n}`: the
/// request (a Messages body; `max_tokens` may be left out) translated like
/// a message and counted by the deployment it would go to
/// ([`crate::service::tokens`]) — llama.cpp providers only; others answer
/// 404 `not_found_error` naming the provider.
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
pub async fn count_tokens(Scoped(app): Scoped, body: Result<Bytes, BytesRejection>) -> Response {
    match count(&app, body).await {
        Ok(n) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"input_tokens": n})),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn count(app: &AppState, body: Result<Bytes, BytesRejection>) -> Result<u64, AnthropicError> {
    use crate::service::tokens::{count_prompt_tokens, CountError};
    let body =
        body.map_err(|rejection| AnthropicError::new(rejection.status(), rejection.body_text()))?;
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
    let affinity = upstream
        .options
        .get("user")
        .and_then(serde_json::Value::as_str);
    count_prompt_tokens(
        app,
        upstream.model.as_deref(),
        &upstream.messages,
        &tools,
        affinity,
    )
    .await
    .map_err(|err| match err {
        CountError::Route(err) => error::route(err),
        err @ CountError::Unsupported { .. } => {
            AnthropicError::new(StatusCode::NOT_FOUND, err.to_string())
        }
        err @ (CountError::NoTarget(_) | CountError::Disabled(_)) => {
            let mut error = AnthropicError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string());
            error.kind = "overloaded_error";
            error
        }
        CountError::Upstream(err) if err.is_timeout() => {
            AnthropicError::new(StatusCode::GATEWAY_TIMEOUT, err.to_string())
        }
        CountError::Upstream(err) => AnthropicError::new(StatusCode::BAD_GATEWAY, err.to_string()),
    })
}

async fn serve(
    app: AppState,
    identity: Identity,
    request_id: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let body =
        body.map_err(|rejection| AnthropicError::new(rejection.status(), rejection.body_text()))?;
    let translated = request::translate(&body, &app.config.limits).map_err(error::bad_request)?;
    let stream = translated.upstream.stream;
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
    let requested = translated.upstream.model.clone();
    let opened = open_call(&app, translated.upstream, request_id).await?;
    // The id the client sent (the composite id when it sent none).
    let client_model = requested.unwrap_or_else(|| opened.model_id.clone());
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

/// A sent call: its record and the upstream's answer (a 2xx).
struct Opened {
    draft: CallDraft,
    upstream: UpstreamResponse,
    /// Composite id.
    model_id: String,
    /// Provider name.
    provider: String,
}

/// Resolves the model (a route or one deployment), builds the upstream
/// request and sends it by routing's plan (retries, fallbacks, affinity by
/// `metadata.user_id`) — the one place this front routes. Failed attempts
/// are recorded by the draft; a resolution error happens before any call
/// and leaves no record, as on the OpenAI front.
async fn open_call(
    app: &AppState,
    request: UpstreamRequest,
    request_id: Option<String>,
) -> Result<Opened, AnthropicError> {
    let destination = app
        .destination(request.model.as_deref())
        .map_err(error::route)?;
    if let Destination::Deployment(target) = &destination {
        if target.provider.client.is_none() {
            return Err(AnthropicError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("provider '{}' is disabled", target.provider.name()),
            ));
        }
    }
    // `metadata.user_id` (sent upstream as `user`) keeps a caller on one
    // deployment of a route with affinity.
    let affinity = request
        .options
        .get("user")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    // `model` is each attempt's deployment's, set by `LlmCall::new`.
    let body = compose("", request.options, request.messages, request.stream);
    let mut plan = Plan::new(app, destination, affinity.as_deref());
    let purpose = Purpose::new(OPERATION);
    let mut build =
        |target: &crate::registry::Target| Ok(LlmCall::new(target, purpose.clone(), &body));
    // The draft owns the attempts from here: whatever way the request ends
    // (the client gone included), one record.
    let mut draft = CallDraft::start(app, request_id);
    match draft.send(&mut plan, &mut build).await {
        Ok(upstream) => {
            let (model_id, provider) = match draft.call() {
                Some(call) => (
                    call.target().resolution.model_id.to_string(),
                    call.target().provider.name().to_owned(),
                ),
                None => (String::new(), String::new()),
            };
            Ok(Opened {
                draft,
                upstream,
                model_id,
                provider,
            })
        }
        Err(err) => {
            draft.fail(Default::default(), None, err.to_string());
            Err(error::routed(err))
        }
    }
}
