//! The OpenAI-style pass-throughs besides chat, on the same fleet, routes,
//! keys, limits and call log:
//! - `POST /v1/embeddings` (OpenAI API reference, "Create embeddings"):
//!   `{model, input, encoding_format?, dimensions?, user?}` →
//!   `{object: "list", data: [{object: "embedding", index, embedding}],
//!   model, usage: {prompt_tokens, total_tokens}}`; operation `embeddings`;
//! - `POST /v1/rerank` and its alias `/v1/reranking` (llama.cpp server
//!   README; vLLM's rerank API): `{model, query, documents, top_n?}` →
//!   `{results: [{index, relevance_score, document?}], usage?}`; operation
//!   `rerank`;
//! - `POST /v1/completions` (OpenAI API reference, "Create completion",
//!   legacy): `{model, prompt, stream?, …}` → a `text_completion`
//!   (`choices[].text`), or its chunks as SSE; operation `completions`.
//!
//! Each request goes like a chat completion: its head is read
//! ([`modelyard_upstream::openai::EmbeddingsRequestHead`] and the others),
//! the model resolved ([`crate::app::AppState::destination`]: composite
//! ids, bare ids, routes), and the client's bytes — with `model` spliced to
//! each attempt's upstream name and, for a streamed completion,
//! `stream_options.include_usage` forced — sent by routing's [`Plan`]
//! (retries, fallbacks, affinity by `x-modelyard-affinity` or `user`)
//! through the one LLM call path ([`LlmCall::from_raw_to`]). The answer
//! passes through with `model` set to the route's name or the
//! deployment's composite id (as chat's), its `usage` captured into the
//! call record; a streamed completion goes through chat's SSE proxy
//! ([`super::stream`]), which reads legacy chunks' `choices[].text`. Errors
//! are OpenAI envelopes ([`super::routed_error`], [`super::call_error`]).
//! A provider's `set_params` / `strip_params` apply to completions only
//! ([`Endpoint::generates`]).

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_upstream::openai::{
    CompletionRequestHead, EmbeddingsRequestHead, RequestError, RerankRequestHead,
};

use super::call::CallDraft;
use super::{
    call_error, exceeded_output_cap, request_error, route_error, routed_error, stream,
    AFFINITY_HEADER, ATTEMPTS_HEADER, MODEL_HEADER,
};
use crate::app::AppState;
use crate::auth::Scoped;
use crate::error::OpenAiError;
use crate::limits::Identity;
use crate::registry::Target;
use crate::routing::Destination;
use crate::service::llm_call::{Endpoint, LlmCall, Purpose};
use crate::service::routed::Plan;

/// `POST /v1/embeddings` (see the [module docs](self)).
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body = super::schema::EmbeddingsRequest,
    responses((status = 200, description = "`{object: \"list\", data: [{object, index, embedding}], model, usage}`", body = Object))
)]
pub async fn embeddings(
    Scoped(app): Scoped,
    identity: Identity,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(serve(app, identity, &headers, body, Endpoint::Embeddings).await)
}

/// `POST /v1/rerank` and `POST /v1/reranking` (see the [module docs](self)).
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "openai",
    request_body = super::schema::RerankRequest,
    responses((status = 200, description = "`{results: [{index, relevance_score, document?}], usage?}`", body = Object))
)]
pub async fn rerank(
    Scoped(app): Scoped,
    identity: Identity,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(serve(app, identity, &headers, body, Endpoint::Rerank).await)
}

/// `POST /v1/completions`, streamed or not (see the [module docs](self)).
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = super::schema::CompletionRequest,
    responses((status = 200, description = "A `text_completion`, or with `stream: true` its chunks as SSE", content((Object = "application/json"), (crate::api::dto::SseEventSchema = "text/event-stream"))))
)]
pub async fn completions(
    Scoped(app): Scoped,
    identity: Identity,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(serve(app, identity, &headers, body, Endpoint::Completions).await)
}

fn respond(result: Result<Response, OpenAiError>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The head of one of the pass-through requests.
enum Head {
    Embeddings(EmbeddingsRequestHead),
    Rerank(RerankRequestHead),
    Completions(CompletionRequestHead),
}

impl Head {
    fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Self, RequestError> {
        Ok(match endpoint {
            Endpoint::Embeddings => Head::Embeddings(EmbeddingsRequestHead::parse(body)?),
            Endpoint::Rerank => Head::Rerank(RerankRequestHead::parse(body)?),
            // Only the three above are served here; the others read as a
            // completion would.
            Endpoint::Completions
            | Endpoint::ChatCompletions
            | Endpoint::Messages
            | Endpoint::MessagesCountTokens => {
                Head::Completions(CompletionRequestHead::parse(body)?)
            }
        })
    }

    fn model(&self) -> Option<&str> {
        match self {
            Head::Embeddings(h) => h.model.as_deref(),
            Head::Rerank(h) => h.model.as_deref(),
            Head::Completions(h) => h.model.as_deref(),
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            Head::Embeddings(h) => h.user.as_deref(),
            Head::Rerank(h) => h.user.as_deref(),
            Head::Completions(h) => h.user.as_deref(),
        }
    }

    fn stream(&self) -> bool {
        matches!(self, Head::Completions(h) if h.stream)
    }

    fn upstream_body(&self, body: &[u8], upstream_model: &str) -> Vec<u8> {
        match self {
            Head::Embeddings(h) => h.upstream_body(body, upstream_model),
            Head::Rerank(h) => h.upstream_body(body, upstream_model),
            Head::Completions(h) => h.upstream_body(body, upstream_model),
        }
    }
}

/// The operation name of the call records of `endpoint`.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Embeddings => "embeddings",
        Endpoint::Rerank => "rerank",
        Endpoint::Completions => "completions",
        Endpoint::ChatCompletions => "gateway",
        Endpoint::Messages => "messages",
        Endpoint::MessagesCountTokens => "count_tokens",
    }
}

async fn serve(
    app: AppState,
    identity: Identity,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, OpenAiError> {
    let body = body.map_err(|rejection| {
        OpenAiError::new(
            rejection.status(),
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let head = Head::parse(endpoint, &body).map_err(request_error)?;
    if let Head::Completions(h) = &head {
        if let Some(error) = exceeded_output_cap(h.n, h.max_tokens, None, &app.config.limits) {
            return Err(error);
        }
    }
    let stream = head.stream();
    // Taken before anything is sent, held by the SSE body until it ends.
    let slot = if stream {
        Some(app.streams.try_acquire(&identity).map_err(|e| e.openai())?)
    } else {
        None
    };
    let destination = app.destination(head.model()).map_err(route_error)?;
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
        .or(head.user())
        .filter(|key| !key.is_empty());
    let mut plan = Plan::new(&app, destination, affinity);
    let purpose = Purpose::new(operation(endpoint));
    let mut build = |target: &Target| {
        let upstream_body = head.upstream_body(&body, target.resolution.model_id.model());
        LlmCall::from_raw_to(target, purpose.clone(), endpoint, stream, upstream_body)
    };
    // The draft owns the attempts from here: whatever way the request ends
    // (the client gone included), one record.
    let mut draft = CallDraft::start(&app, super::request_id_of(headers));
    let upstream = match draft.send(&mut plan, &mut build).await {
        Ok(upstream) => upstream,
        Err(err) => {
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
    let attempts = plan.attempts();
    let routing_headers = |response: &mut Response| {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&served_by) {
            headers.insert(MODEL_HEADER, value);
        }
        headers.insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    };

    if let (true, Head::Completions(h)) = (stream, &head) {
        let body = stream::proxy(
            upstream,
            draft,
            provider,
            client_model,
            h.client_include_usage,
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
