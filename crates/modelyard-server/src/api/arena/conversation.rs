//! The arena inside a conversation, picks and stats — adapters over
//! [`crate::service::arena`].
//!
//! - `POST /v1/conversations/{id}/arena` `{content, models, stream?,
//!   options?}` → `{runId, turnId, results}` (the results as in
//!   `POST /v1/arena`), or with `stream: true` the same SSE feed, whose
//!   `arena.done` is `{id: runId, turnId}`. The turn then waits for a pick.
//! - `GET /v1/conversations/{id}/arena/{runId}` → `{runId, turnId, models,
//!   results, picked}`.
//! - `POST /v1/conversations/{id}/arena/{runId}/pick` `{model}` →
//!   `{turnId, runId, model, message}`.
//! - `POST /v1/arena/{runId}/pick` `{model}` (a standalone run) →
//!   `{runId, model, others}`.
//! - `GET /v1/arena/stats?since=RFC3339` → `{models: [{model, wins,
//!   appearances, winRate}]}`, most wins first.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_core::conversation::{ArenaOutcome, ArenaStatus};
use modelyard_core::ids::ConversationId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{feed, ArenaResultDto, ArenaUsageDto};
use crate::api::conversations::dto::MessageDto;
use crate::auth::Scoped;
use crate::http::{ApiError, ApiJson, ApiQuery};
use crate::limits::Identity;
use crate::service::arena::{self, ConversationArena};

/// Body of `POST /v1/conversations/{id}/arena`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationArenaBody {
    /// The user's message.
    content: String,
    /// Model ids (route names or deployment ids), 2–8, distinct.
    models: Vec<String>,
    /// Stream one SSE feed (default false: one JSON answer).
    #[serde(default)]
    stream: bool,
    /// Provider options (`temperature`, `max_tokens`, …), over the
    /// conversation's config's.
    #[schema(value_type = Option<Object>)]
    options: Option<Map<String, Value>>,
}

/// Answer of `POST /v1/conversations/{id}/arena` without `stream`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationArenaDto {
    /// The run's id (its `arena` LLM session's).
    pub run_id: String,
    /// The turn the run answers (now `awaiting_pick`, or `failed` when no
    /// model answered).
    pub turn_id: String,
    /// One result per model, in request order.
    pub results: Vec<ArenaResultDto>,
}

/// `POST /v1/conversations/{id}/arena`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/arena",
    tag = "arena",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = ConversationArenaBody,
    responses((
        status = 200,
        description = "The results (JSON), or with `stream: true` an SSE feed of \
                       `arena.delta`, `arena.completed`, `arena.failed` and `arena.done` \
                       (`{id, turnId}`); the turn then waits for a pick",
        body = ConversationArenaDto
    ))
)]
pub async fn conversation_arena(
    Scoped(app): Scoped,
    identity: Identity,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConversationArenaBody>,
) -> Result<Response, ApiError> {
    let id = ConversationId::parse(&id)?;
    let slot = if body.stream {
        match app.streams.try_acquire(&identity) {
            Ok(slot) => Some(slot),
            Err(limit) => return Ok(limit.problem()),
        }
    } else {
        None
    };
    let request = ConversationArena {
        content: body.content,
        models: body.models,
        options: body.options.unwrap_or_default(),
    };
    let begun = arena::begin(&app, &id, request).await?;
    let (run_id, turn_id) = (begun.run_id.clone(), begun.turn_id.clone());
    if !body.stream {
        let results = arena::finish(&app, begun, None).await;
        return Ok(Json(ConversationArenaDto {
            run_id,
            turn_id,
            results: results.into_iter().map(ArenaResultDto::from).collect(),
        })
        .into_response());
    }
    let done = json!({"id": run_id, "turnId": turn_id});
    Ok(feed(slot, done, move |tx| async move {
        arena::finish(&app, begun, Some(tx)).await;
    }))
}

impl From<ArenaOutcome> for ArenaResultDto {
    fn from(o: ArenaOutcome) -> Self {
        let total_tokens =
            o.usage
                .total_tokens
                .or(match (o.usage.prompt_tokens, o.usage.completion_tokens) {
                    (Some(p), Some(c)) => Some(p.saturating_add(c)),
                    _ => None,
                });
        Self {
            model: o.model,
            status: match o.status {
                ArenaStatus::Completed => "completed",
                ArenaStatus::Failed => "failed",
            },
            text: o.text,
            usage: ArenaUsageDto {
                prompt_tokens: o.usage.prompt_tokens,
                completion_tokens: o.usage.completion_tokens,
                total_tokens,
            },
            cost_usd: o.usage.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
            ttft_ms: o.ttft_ms,
            duration_ms: o.duration_ms,
            error: o.error,
        }
    }
}

/// A conversation arena run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDto {
    /// The run's id.
    pub run_id: String,
    /// The turn it answers.
    pub turn_id: String,
    /// The model ids, in request order.
    pub models: Vec<String>,
    /// One result per model (empty while the models still run).
    pub results: Vec<ArenaResultDto>,
    /// The picked model (null until picked).
    pub picked: Option<String>,
    /// The turn's status (`running`, `awaiting_pick`, `completed`, `failed`,
    /// `cancelled`, `interrupted`).
    pub status: &'static str,
}

/// `GET /v1/conversations/{id}/arena/{runId}`.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/arena/{run_id}",
    tag = "arena",
    params(("id" = String, Path, description = "Conversation id"),
           ("run_id" = String, Path, description = "Arena run id")),
    responses((status = 200, description = "The run, its results and its pick", body = RunDto))
)]
pub async fn get_run(
    Scoped(app): Scoped,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Json<RunDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let view = arena::get_run(&app, &id, &run_id).await?;
    Ok(Json(RunDto {
        run_id: view.run_id,
        turn_id: view.turn_id,
        models: view.models,
        results: view.results.into_iter().map(ArenaResultDto::from).collect(),
        picked: view.picked,
        status: view.status.as_str(),
    }))
}

/// Body of a pick.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PickBody {
    /// The chosen model id, as the run named it.
    model: String,
}

/// Answer of a pick in a conversation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PickedDto {
    /// The turn the pick completed.
    pub turn_id: String,
    /// The run.
    pub run_id: String,
    /// The chosen model.
    pub model: String,
    /// The assistant message the pick appended.
    pub message: MessageDto,
}

/// `POST /v1/conversations/{id}/arena/{runId}/pick`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/arena/{run_id}/pick",
    tag = "arena",
    params(("id" = String, Path, description = "Conversation id"),
           ("run_id" = String, Path, description = "Arena run id")),
    request_body = PickBody,
    responses((status = 200, description = "The picked answer, now the turn's assistant message",
               body = PickedDto))
)]
pub async fn pick(
    Scoped(app): Scoped,
    Path((id, run_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<PickBody>,
) -> Result<Json<PickedDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let picked = arena::pick(&app, &id, &run_id, &body.model).await?;
    Ok(Json(PickedDto {
        turn_id: picked.turn_id,
        run_id: picked.run_id,
        model: picked.model,
        message: MessageDto::from(&picked.message),
    }))
}

/// Answer of a standalone run's pick.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandalonePickDto {
    /// The run.
    pub run_id: String,
    /// The chosen model.
    pub model: String,
    /// The run's other completed models.
    pub others: Vec<String>,
}

/// `POST /v1/arena/{runId}/pick`.
#[utoipa::path(
    post,
    path = "/v1/arena/{run_id}/pick",
    tag = "arena",
    params(("run_id" = String, Path, description = "Arena run id (`POST /v1/arena`'s `id`)")),
    request_body = PickBody,
    responses((status = 200, description = "The pick, recorded", body = StandalonePickDto))
)]
pub async fn pick_standalone(
    Scoped(app): Scoped,
    Path(run_id): Path<String>,
    ApiJson(body): ApiJson<PickBody>,
) -> Result<Json<StandalonePickDto>, ApiError> {
    let picked = arena::pick_standalone(&app, &run_id, &body.model).await?;
    Ok(Json(StandalonePickDto {
        run_id: picked.run_id,
        model: picked.model,
        others: picked.others,
    }))
}

/// Query of `GET /v1/arena/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Only picks at or after this time (RFC 3339).
    since: Option<String>,
}

/// One model's record.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatsDto {
    /// The model id.
    pub model: String,
    /// Picks that chose it.
    pub wins: u64,
    /// Picks where it was chosen or among the other completed answers.
    pub appearances: u64,
    /// `wins / appearances` (0 to 1).
    pub win_rate: f64,
}

/// Answer of `GET /v1/arena/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArenaStatsDto {
    /// Every model picked or passed over, most wins first.
    pub models: Vec<ModelStatsDto>,
}

/// `GET /v1/arena/stats`.
#[utoipa::path(
    get,
    path = "/v1/arena/stats",
    tag = "arena",
    params(StatsQuery),
    responses((status = 200, description = "Per-model wins over the project's picks",
               body = ArenaStatsDto))
)]
pub async fn stats(
    Scoped(app): Scoped,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Response, ApiError> {
    let since_ms = match query.since.as_deref() {
        Some(text) => match crate::api::sessions::parse_time("since", text) {
            Ok(ms) => Some(ms),
            Err(problem) => return Ok(problem.into_response()),
        },
        None => None,
    };
    let models = arena::stats(&app, since_ms)
        .await?
        .into_iter()
        .map(|s| ModelStatsDto {
            win_rate: if s.appearances == 0 {
                0.0
            } else {
                s.wins as f64 / s.appearances as f64
            },
            model: s.model,
            wins: s.wins,
            appearances: s.appearances,
        })
        .collect();
    Ok(Json(ArenaStatsDto { models }).into_response())
}
