//! `POST /v1/arena`: one prompt, several models, side by side — an adapter
//! over [`crate::service::arena`], where the use case (resolution, the
//! concurrent calls on the one LLM call path, the `arena` session) lives.
//!
//! Body: `{messages | prompt, models: [id, …] (2–8, distinct), stream?,
//! llmId?, options?}`.
//! - `stream: false` (default): `{id, results: [{model, status
//!   ("completed" | "failed"), text, usage: {promptTokens, completionTokens,
//!   totalTokens}, costUsd, ttftMs, durationMs, error}]}` in request order.
//! - `stream: true`: one SSE feed: `arena.delta` `{model, index, delta}`,
//!   `arena.completed` `{model, index, usage, costUsd, ttftMs, durationMs,
//!   text}`, `arena.failed` `{model, index, error}`, then `arena.done`
//!   `{id}`. One model failing does not stop the others.
//!
//! Validation errors are 422 problem documents naming the field.
//!
//! Parts: `conversation.rs` (the arena inside a conversation, picks, a
//! run's results, the per-model stats). Both kinds of run stream through
//! one SSE adapter ([`feed`]).

pub mod conversation;

pub use conversation::{
    conversation_arena, get_run, pick, pick_standalone, stats, ArenaStatsDto,
    ConversationArenaBody, ConversationArenaDto, ModelStatsDto, PickBody, PickedDto, RunDto,
    StandalonePickDto, StatsQuery,
};

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::auth::Scoped;
use crate::http::{ApiError, ApiJson};
use crate::limits::Identity;
use crate::service::arena::{self, ArenaEvent, ArenaRequest, ArenaResult, ArenaUsage};

/// Interval of SSE keep-alive comments while models think.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Body of `POST /v1/arena`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArenaBody {
    /// Chat messages (OpenAI shape); exactly one of `messages` and `prompt`.
    #[schema(value_type = Option<Vec<Object>>)]
    messages: Option<Vec<Value>>,
    /// Shorthand for one user message.
    prompt: Option<String>,
    /// Model ids (route names or deployment ids), 2–8, distinct.
    models: Vec<String>,
    /// Stream one SSE feed (default false: one JSON answer).
    #[serde(default)]
    stream: bool,
    /// An LLM config whose options, system prompt and base URL apply.
    llm_id: Option<String>,
    /// Provider options (`temperature`, `max_tokens`, …), over the config's.
    #[schema(value_type = Option<Object>)]
    options: Option<Map<String, Value>>,
}

/// Token counts of one answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArenaUsageDto {
    /// Prompt tokens (null: not reported).
    pub prompt_tokens: Option<u64>,
    /// Generated tokens (null: not reported).
    pub completion_tokens: Option<u64>,
    /// Their sum (null unless both are known).
    pub total_tokens: Option<u64>,
}

impl From<ArenaUsage> for ArenaUsageDto {
    fn from(u: ArenaUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// One model's result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArenaResultDto {
    /// The model id as asked for.
    pub model: String,
    /// `completed` or `failed`.
    pub status: &'static str,
    /// The answer (what arrived, also when it failed).
    pub text: String,
    /// Token counts.
    pub usage: ArenaUsageDto,
    /// Cost in USD (null when not priced).
    pub cost_usd: Option<f64>,
    /// Milliseconds to the first output (null without output).
    pub ttft_ms: Option<i64>,
    /// Milliseconds from the first send to the end.
    pub duration_ms: i64,
    /// Why it failed (null when completed).
    pub error: Option<String>,
}

impl From<ArenaResult> for ArenaResultDto {
    fn from(r: ArenaResult) -> Self {
        Self {
            model: r.model,
            status: if r.error.is_none() {
                "completed"
            } else {
                "failed"
            },
            text: r.text,
            usage: r.usage.into(),
            cost_usd: r.cost_usd,
            ttft_ms: r.ttft_ms,
            duration_ms: r.duration_ms,
            error: r.error,
        }
    }
}

/// Answer of `POST /v1/arena` without `stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArenaDto {
    /// The run's id (its `arena` LLM session's).
    pub id: String,
    /// One result per model, in request order.
    pub results: Vec<ArenaResultDto>,
}

/// The SSE event of `event` ([`ArenaEvent::wire`]).
fn sse_event(event: ArenaEvent) -> SseEvent {
    let (name, data) = event.wire();
    SseEvent::default().event(name).data(data.to_string())
}

/// `POST /v1/arena`.
#[utoipa::path(
    post,
    path = "/v1/arena",
    tag = "arena",
    request_body = ArenaBody,
    responses((
        status = 200,
        description = "The results (JSON), or with `stream: true` an SSE feed of \
                       `arena.delta`, `arena.completed`, `arena.failed` and `arena.done`",
        body = ArenaDto
    ))
)]
pub async fn arena(
    Scoped(app): Scoped,
    identity: Identity,
    ApiJson(body): ApiJson<ArenaBody>,
) -> Result<Response, ApiError> {
    // A streamed answer takes a stream slot (`[limits] max_streams*`)
    // before anything is sent, held until the feed ends: beyond a cap, a
    // fast 429.
    let slot = if body.stream {
        match app.streams.try_acquire(&identity) {
            Ok(slot) => Some(slot),
            Err(limit) => return Ok(limit.problem()),
        }
    } else {
        None
    };
    let request = ArenaRequest {
        messages: body.messages,
        prompt: body.prompt,
        models: body.models,
        llm_id: body.llm_id,
        options: body.options.unwrap_or_default(),
    };
    let prepared = arena::prepare(&app, request).await?;
    let id = prepared.id.clone();
    if !body.stream {
        let results = arena::run(&app, prepared, None).await;
        return Ok(Json(ArenaDto {
            id,
            results: results.into_iter().map(ArenaResultDto::from).collect(),
        })
        .into_response());
    }
    Ok(feed(slot, json!({"id": id}), move |tx| async move {
        arena::run(&app, prepared, Some(tx)).await;
    }))
}

/// The SSE answer of a run: `run` (spawned, so it goes on and is recorded
/// when the client leaves) sends its events into the channel it is given;
/// each becomes `arena.delta` / `arena.completed` / `arena.failed`, and
/// once `run` has returned, `arena.done` with `done` as its data. `slot`
/// (the stream slot) is held as long as the feed.
pub(crate) fn feed<F, Fut>(slot: Option<crate::limits::StreamSlot>, done: Value, run: F) -> Response
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<ArenaEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ArenaEvent>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let running = run(tx);
    tokio::spawn(async move {
        running.await;
        let _ = done_tx.send(());
    });
    let stream = futures_util::stream::unfold(
        (rx, Some(done_rx), done),
        |(mut rx, done_rx, done)| async move {
            if let Some(event) = rx.recv().await {
                return Some((Ok::<_, Infallible>(sse_event(event)), (rx, done_rx, done)));
            }
            // Every sender is gone: the run ended (its session is queued).
            let done_rx = done_rx?;
            let _ = done_rx.await;
            let event = SseEvent::default()
                .event("arena.done")
                .data(done.to_string());
            Some((Ok(event), (rx, None, done)))
        },
    );
    // The slot lives as long as the feed.
    let stream = stream.map(move |event| {
        let _held = &slot;
        event
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
