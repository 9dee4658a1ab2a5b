//! The OpenAI Responses API front: `POST /v1/responses` and
//! `GET /v1/responses/{id}` (OpenAI API reference, "Responses"), so Codex
//! CLI and the `openai` SDK's `client.responses` can use any model Modelyard
//! routes to.
//!
//! - `store: true` (the default): the response is a conversation turn
//!   ([`crate::service::responses`]): a new conversation without
//!   `previous_response_id`, the conversation's next turn with it, or the
//!   waiting turn resumed with `function_call_output` items. Function
//!   tools are the turn's client tools: a run that ends `requires_action`
//!   answers `function_call` items (status `completed`). The answer is read
//!   from the turn's feed (streamed: its live deltas as typed events) and
//!   built from the stored turn, as `GET /v1/responses/{id}` reads it back.
//! - `store: false`: stateless, through the routed call path like
//!   `/v1/chat/completions` (operation [`OPERATION`] in the call log); no
//!   conversation, not readable later.
//!
//! Request translation is [`request`], the `Response` object [`response`],
//! the typed SSE events [`events`] (a pure state machine), the loops
//! [`stream`], errors (OpenAI's envelope) [`error`]; translation files hold
//! no axum. `DELETE /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items` are not offered.

mod error;
mod events;
mod request;
mod response;
mod stream;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use modelyard_upstream::openai::AnswerSummary;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::now_ms;
use crate::conversations::engine::RunOverrides;
use crate::error::OpenAiError;
use crate::gateway::call::CallDraft;
use crate::limits::{Identity, InFlight, StreamSlot};
use crate::routing::Destination;
use crate::service::llm_call::{compose, LlmCall, Purpose};
use crate::service::replay::FeedItem;
use crate::service::responses::{self as stored, ResponseInput, RunInput, RunStatus, StoredRun};
use crate::service::routed::Plan;
use crate::service::turns::ToolResult;

use request::{Echo, ResponsesRequest, StoredInput};
use response::{item_id, ConversationRef, IncompleteDetails, OutputItem, ResponseObject};

/// The operation name of the call records of stateless responses.
pub const OPERATION: &str = "responses";

/// `POST /v1/responses`: a Responses API request, streamed or not.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "openai",
    request_body = crate::gateway::schema::ResponsesRequest,
    responses((status = 200, description = "A `response` object, or with `stream: true` the typed `response.*` SSE events", content((Object = "application/json"), (crate::api::dto::SseEventSchema = "text/event-stream"))))
)]
pub async fn create(
    Scoped(app): Scoped,
    identity: Identity,
    in_flight: InFlight,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = super::request_id_of(&headers);
    match serve(app, identity, in_flight, request_id, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `GET /v1/responses/{id}`: a stored response, rebuilt from its turn
/// (404 in OpenAI's envelope when there is none). The request's echoed
/// fields (`instructions`, `temperature`, `tools`, …) are not stored and
/// read back empty.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}",
    tag = "openai",
    params(("id" = String, Path, description = "A response id (`resp_…`)")),
    responses((status = 200, description = "The stored `response` object", body = Object))
)]
pub async fn get(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match stored::read(&app, &id).await {
        Ok(run) => {
            let model = run.model_id.clone();
            let body = stored_response(&run, model, &Echo::default());
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(err) => error::service(err, None).into_response(),
    }
}

fn sse(
    stream: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
    slot: Option<StreamSlot>,
) -> Response {
    let mut response = Response::new(Body::from_stream(crate::limits::hold(stream, slot)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn serve(
    app: AppState,
    identity: Identity,
    in_flight: InFlight,
    request_id: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    let body = body.map_err(|rejection| {
        OpenAiError::new(
            rejection.status(),
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let request = request::parse(&body, &app.config.limits).map_err(error::bad_request)?;
    // Taken before anything is sent, held by the SSE body until it ends.
    let slot = if request.stream {
        Some(app.streams.try_acquire(&identity).map_err(|e| e.openai())?)
    } else {
        None
    };
    if request.store {
        serve_stored(app, in_flight, request_id, request, slot).await
    } else {
        serve_stateless(app, request_id, request, slot).await
    }
}

/// The response of a stored run, as `GET` reads it and a finished
/// `POST` answers it.
fn stored_response(run: &StoredRun, model: String, echo: &Echo) -> ResponseObject {
    let mut response = ResponseObject::new(run.id.clone(), run.created_at_ms, model, echo);
    response.conversation = Some(ConversationRef {
        id: run.conversation_id.clone(),
    });
    response.output = run
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            stored::RunItem::Text(text) => {
                OutputItem::message(item_id(&run.id, true, i), text.clone())
            }
            stored::RunItem::Call {
                call_id,
                name,
                arguments,
            } => OutputItem::FunctionCall {
                id: item_id(&run.id, false, i),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
                status: "completed",
            },
        })
        .collect();
    match &run.status {
        RunStatus::InProgress => {}
        RunStatus::Completed(finish_reason) => {
            response.complete(finish_reason.as_deref(), &run.usage);
        }
        RunStatus::Failed(message) => response.fail(message.clone(), &run.usage),
        RunStatus::Cancelled => {
            response.status = "cancelled";
            response.usage = Some((&run.usage).into());
        }
        RunStatus::Interrupted => {
            response.status = "incomplete";
            response.incomplete_details = Some(IncompleteDetails {
                reason: "interrupted",
            });
            response.usage = Some((&run.usage).into());
        }
    }
    response
}

async fn serve_stored(
    app: AppState,
    in_flight: InFlight,
    request_id: Option<String>,
    request: ResponsesRequest,
    slot: Option<StreamSlot>,
) -> Result<Response, OpenAiError> {
    let (action, system) =
        match request::stored_input(&request.items).map_err(error::bad_request)? {
            StoredInput::Start {
                system,
                history,
                content,
            } => (RunInput::Start { history, content }, system),
            StoredInput::Resume(outputs) => (
                RunInput::Resume {
                    results: outputs
                        .into_iter()
                        .map(|(call_id, output)| ToolResult {
                            tool_call_id: call_id,
                            content: Value::String(output),
                            is_error: false,
                        })
                        .collect(),
                },
                Vec::new(),
            ),
        };
    // `instructions` first, then the input's system / developer messages.
    let instructions: Vec<String> = request
        .instructions
        .iter()
        .cloned()
        .chain(system.into_iter().filter(|s| !s.is_empty()))
        .collect();
    let has_previous = request.previous_response_id.is_some();
    let input = ResponseInput {
        model: request.model.clone(),
        previous_response_id: request.previous_response_id.clone(),
        action,
        tools: request.tools.clone(),
        overrides: RunOverrides {
            instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
            options: request.options.clone(),
            request_id,
        },
        metadata: request.metadata.clone(),
    };
    let started = stored::create(&app, input, in_flight, true)
        .await
        .map_err(|err| error::service(err, has_previous.then_some("previous_response_id")))?;
    let Some(rx) = started.launched.subscription else {
        return Err(OpenAiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the run started without a subscription",
        ));
    };
    let response_id = started.response_id.to_string();
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| started.launched.model_id.clone());
    let feed = stored::follow(
        &app,
        started.conversation_id.clone(),
        started.launched.from,
        rx,
        started.launched.turn_id.clone(),
    );
    let setup = stream::StoredSetup {
        app: app.clone(),
        response_id: response_id.clone(),
        model: model.clone(),
        echo: request.echo.clone(),
    };
    if request.stream {
        let mut skeleton = ResponseObject::new(response_id, now_ms(), model, &request.echo);
        skeleton.conversation = Some(ConversationRef {
            id: started.conversation_id,
        });
        return Ok(sse(stream::stored(feed, skeleton, setup), slot));
    }
    // Non-streamed: wait for the run's end, then read it back.
    let mut feed = feed;
    while let Some(item) = feed.recv().await {
        if let FeedItem::CaughtUp { .. } = item {
            continue;
        }
    }
    let run = stored::read(&app, &response_id)
        .await
        .map_err(|err| error::service(err, None))?;
    let body = stored_response(&run, model, &request.echo);
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// The output items of a non-streamed stateless answer: its text, then its
/// tool calls.
fn answer_output(response_id: &str, summary: &AnswerSummary) -> Vec<OutputItem> {
    let mut output = Vec::new();
    if let Some(text) = summary.text.as_deref().filter(|t| !t.is_empty()) {
        output.push(OutputItem::message(
            item_id(response_id, true, 0),
            text.to_owned(),
        ));
    }
    for call in summary
        .tool_calls
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |path: &str| {
            call.pointer(path)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let call_id = Some(field("/id"))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(stream::new_call_id);
        output.push(OutputItem::FunctionCall {
            id: item_id(response_id, false, output.len()),
            call_id,
            name: field("/function/name"),
            arguments: field("/function/arguments"),
            status: "completed",
        });
    }
    output
}

async fn serve_stateless(
    app: AppState,
    request_id: Option<String>,
    request: ResponsesRequest,
    slot: Option<StreamSlot>,
) -> Result<Response, OpenAiError> {
    if request.previous_response_id.is_some() {
        return Err(OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "previous_response_id needs a stored response: send store: true (the default), \
             or the whole input with store: false",
        )
        .param("previous_response_id"));
    }
    let mut messages = Vec::with_capacity(request.items.len() + 1);
    if let Some(instructions) = &request.instructions {
        messages.push(serde_json::json!({"role": "system", "content": instructions}));
    }
    messages.extend(request::chat_messages(&request.items));
    let mut options = request.options.clone();
    if !request.tools.is_empty() {
        options.insert("tools".into(), Value::Array(request.tools.clone()));
    }
    if let Some(user) = &request.user {
        options.insert("user".into(), Value::String(user.clone()));
    }
    let destination = app
        .destination(request.model.as_deref())
        .map_err(super::route_error)?;
    if let Destination::Deployment(target) = &destination {
        if target.provider.client.is_none() {
            return Err(OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                format!("provider '{}' is disabled", target.provider.name()),
            ));
        }
    }
    // `model` is each attempt's deployment's, set by `LlmCall::new`.
    let body = compose("", options, messages, request.stream);
    let mut plan = Plan::new(&app, destination, request.user.as_deref());
    let purpose = Purpose::new(OPERATION);
    let mut build =
        |target: &crate::registry::Target| Ok(LlmCall::new(target, purpose.clone(), &body));
    // The draft owns the attempts from here: one record, whatever way the
    // request ends.
    let mut draft = CallDraft::start(&app, request_id);
    let upstream = match draft.send(&mut plan, &mut build).await {
        Ok(upstream) => upstream,
        Err(err) => {
            draft.fail(Default::default(), None, err.to_string());
            return Err(super::routed_error(err));
        }
    };
    let (model_id, provider) = match draft.call() {
        Some(call) => (
            call.target().resolution.model_id.to_string(),
            call.target().provider.name().to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    let model = request.model.clone().unwrap_or_else(|| model_id.clone());
    let response_id = response::new_response_id();
    let mut response = ResponseObject::new(response_id.clone(), now_ms(), model, &request.echo);
    response.store = false;
    if request.stream {
        let setup = stream::StatelessSetup {
            response,
            model_id,
            provider,
            max_event_bytes: app.config.limits.max_sse_event_bytes,
        };
        return Ok(sse(stream::stateless(upstream, draft, setup), slot));
    }
    match draft.read_body(upstream).await {
        Ok(answer) => {
            response.output = answer_output(&response_id, &answer.summary);
            response.complete(
                answer.summary.finish_reason.as_deref(),
                &answer.summary.usage,
            );
            // A non-streamed answer has no observable first token.
            draft.complete(answer.summary, None);
            Ok((StatusCode::OK, axum::Json(response)).into_response())
        }
        Err(err) => {
            draft.fail(Default::default(), None, err.to_string());
            Err(super::call_error(err))
        }
    }
}
