//! Turns: start, tool results, cancel — adapters over
//! [`crate::service::turns`]; with `"stream": true` the answer is the
//! conversation's events as SSE until the run ends ([`super::events`]).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_core::ids::{ConversationId, TurnId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::dto::{CancellingDto, TurnResumedDto, TurnStartedDto};
use super::events::sse_response;
use crate::auth::Scoped;
use crate::conversations::engine::RunOverrides;
use crate::http::{ApiError, ApiJson};
use crate::limits::{Identity, InFlight, LimitError, StreamSlot};
use crate::service::turns::{self, Launched, NewTurn, ToolResult};

/// Body of `POST /v1/conversations/{id}/turns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnBody {
    /// The user's message: a string or OpenAI content parts.
    content: Value,
    /// Per-turn model override (persisted as the selection for `chat`).
    model: Option<String>,
    /// Operation, default `chat`.
    operation: Option<String>,
    /// Answer with the turn's events as SSE instead of 202.
    #[serde(default)]
    stream: bool,
    /// Client-side tools (OpenAI `tools` entries, `type: function`): when
    /// the model calls one, the turn ends in `requires_action`.
    tools: Option<Vec<Value>>,
}

/// A stream slot before anything is written: beyond a cap, a fast 429.
fn stream_slot(
    app: &crate::app::AppState,
    identity: &Identity,
    stream: bool,
) -> Result<Option<StreamSlot>, LimitError> {
    stream
        .then(|| app.streams.try_acquire(identity))
        .transpose()
}

/// The answer to a launched run: SSE of the run with `slot`, or 202 with
/// `accepted`.
fn answer(
    app: crate::app::AppState,
    id: String,
    launched: Launched,
    slot: Option<StreamSlot>,
    accepted: impl Serialize,
) -> Response {
    match launched.subscription {
        Some(rx) => sse_response(app, id, launched.from, rx, Some(launched.turn_id), slot),
        None => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
    }
}

/// `POST /v1/conversations/{id}/turns` → 202 `{turnId, conversationId,
/// modelId, resolvedFrom}`, or with `"stream": true` the conversation's
/// events as SSE until the turn ends. 409 (`turn_running`) while another
/// turn runs.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/turns",
    tag = "turns",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = TurnBody,
    responses((status = 202, description = "Started", body = TurnStartedDto),
        (status = 200, description = "`stream: true`: the conversation's events as SSE until the run ends", content_type = "text/event-stream", body = crate::api::dto::SseEventSchema))
)]
pub async fn start_turn(
    Scoped(app): Scoped,
    identity: Identity,
    in_flight: InFlight,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<TurnBody>,
) -> Result<Response, ApiError> {
    let id = ConversationId::parse(&id)?;
    let slot = match stream_slot(&app, &identity, body.stream) {
        Ok(slot) => slot,
        Err(limit) => return Ok(limit.problem()),
    };
    let turn = NewTurn {
        content: body.content,
        model: body.model,
        operation: body.operation,
        tools: body.tools,
        overrides: RunOverrides {
            request_id: crate::gateway::request_id_of(&headers),
            ..RunOverrides::default()
        },
    };
    let launched = turns::start(&app, &id, turn, in_flight, body.stream).await?;
    let accepted = TurnStartedDto {
        turn_id: launched.turn_id.clone(),
        conversation_id: id.to_string(),
        model_id: launched.model_id.clone(),
        resolved_from: launched.resolved_from,
    };
    Ok(answer(app, id.into_string(), launched, slot, accepted))
}

/// `POST /v1/conversations/{id}/turns/{turn_id}/cancel` → 202; the turn
/// ends with `turn.cancelled` and its upstream request is dropped.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/turns/{turn_id}/cancel",
    tag = "turns",
    params(("id" = String, Path, description = "Conversation id"), ("turn_id" = String, Path, description = "Turn id")),
    responses((status = 202, description = "Cancelling", body = CancellingDto))
)]
pub async fn cancel_turn(
    Scoped(app): Scoped,
    Path((id, turn_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<CancellingDto>), ApiError> {
    let (id, turn_id) = (ConversationId::parse(&id)?, TurnId::parse(&turn_id)?);
    turns::cancel(&app, &id, &turn_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CancellingDto {
            turn_id: turn_id.into_string(),
            cancelling: true,
        }),
    ))
}

/// Body of `POST /v1/conversations/{id}/turns/{turn_id}/tool-results`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResultsBody {
    /// One result per pending tool call.
    results: Vec<ToolResult>,
    /// Answer with the turn's events as SSE instead of 202.
    #[serde(default)]
    stream: bool,
}

/// `POST /v1/conversations/{id}/turns/{turn_id}/tool-results` with
/// `{results: [{toolCallId, content, isError?}], stream?}`: answers every
/// pending client tool call of a `requires_action` turn (exactly once each)
/// and runs the turn again → 202 `{turnId, conversationId, status}`, or
/// SSE like starting a turn. 404 unknown turn; 409 when the turn does not
/// wait for tool results; 422 for a missing, unknown or repeated call id.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/turns/{turn_id}/tool-results",
    tag = "turns",
    params(("id" = String, Path, description = "Conversation id"), ("turn_id" = String, Path, description = "Turn id")),
    request_body = ToolResultsBody,
    responses((status = 202, description = "Resumed", body = TurnResumedDto),
        (status = 200, description = "`stream: true`: the conversation's events as SSE until the run ends", content_type = "text/event-stream", body = crate::api::dto::SseEventSchema))
)]
pub async fn tool_results(
    Scoped(app): Scoped,
    identity: Identity,
    in_flight: InFlight,
    Path((id, turn_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<ToolResultsBody>,
) -> Result<Response, ApiError> {
    let (id, turn_id) = (ConversationId::parse(&id)?, TurnId::parse(&turn_id)?);
    let slot = match stream_slot(&app, &identity, body.stream) {
        Ok(slot) => slot,
        Err(limit) => return Ok(limit.problem()),
    };
    let launched = turns::resume(
        &app,
        &id,
        &turn_id,
        body.results,
        RunOverrides {
            request_id: crate::gateway::request_id_of(&headers),
            ..RunOverrides::default()
        },
        in_flight,
        body.stream,
    )
    .await?;
    let accepted = TurnResumedDto {
        turn_id: turn_id.into_string(),
        conversation_id: id.to_string(),
        status: "running",
    };
    Ok(answer(app, id.into_string(), launched, slot, accepted))
}
