//! Conversations (tasks): `/v1/conversations` and everything under it, as
//! adapters over [`crate::service::conversations`]; turns in [`turns`]
//! (over [`crate::service::turns`]), the events feed in [`events`] (over
//! [`crate::service::replay`]).
//!
//! A conversation as JSON (camelCase; times RFC 3339; tokens):
//! `{id, parentId, title, model, cwd, reasoningEffort, metadata, llmId,
//! llmOverrides, status ("idle" | "running"), runningTurnId, latestModelId,
//! usage {inputTokens, outputTokens, reasoningTokens, cachedInputTokens,
//! totalTokens}, lastSeq, createdAt, updatedAt}`.
//!
//! Settings are one resource: `GET/PATCH /v1/conversations/{id}/settings`
//! with `{cwd, reasoningEffort}`; the model selection has its own contract:
//! `GET/PUT /v1/conversations/{id}/model` ↔ `{conversationId, model}` (PUT
//! answers `verified` too).

pub mod events;
pub mod turns;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use modelyard_core::conversation::{ConversationRecord, MessageRecord, TurnRecord};
use serde::Deserialize;
use serde_json::{json, Value};

pub use events::events;
pub use turns::{cancel_turn, start_turn, tool_results};

use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::http::{ApiError, ApiJson, ApiQuery};
use crate::service::conversations::{self as service, ConversationPatch, NewConversation};
pub use crate::service::replay::event_json;

fn conversation_json(c: &ConversationRecord) -> Value {
    json!({
        "id": c.id,
        "parentId": c.parent_id,
        "title": c.title,
        "model": c.model,
        "cwd": c.cwd,
        "reasoningEffort": c.reasoning_effort,
        "advisor": c.advisor,
        "metadata": c.metadata,
        "llmId": c.llm_id,
        "llmOverrides": c.llm_overrides,
        "status": if c.running_turn_id.is_some() { "running" } else { "idle" },
        "runningTurnId": c.running_turn_id,
        "latestModelId": c.latest_model_id,
        "usage": {
            "inputTokens": c.totals.input,
            "outputTokens": c.totals.output,
            "reasoningTokens": c.totals.reasoning,
            "cachedInputTokens": c.totals.cached_input,
            "totalTokens": c.totals.total,
        },
        "lastSeq": c.last_seq,
        "createdAt": rfc3339(c.created_at_ms),
        "updatedAt": rfc3339(c.updated_at_ms),
    })
}

fn message_json(m: &MessageRecord) -> Value {
    json!({
        "id": m.id,
        "turnId": m.turn_id,
        "role": m.role,
        "content": m.content,
        "parts": m.parts,
        "modelId": m.model_id,
        "usage": m.usage,
        "finishReason": m.finish_reason,
        "seq": m.seq,
        "createdAt": rfc3339(m.created_at_ms),
    })
}

fn turn_json(t: &TurnRecord) -> Value {
    json!({
        "id": t.id,
        "conversationId": t.conversation_id,
        "operation": t.operation,
        "modelId": t.model_id,
        "resolvedFrom": t.resolved_from,
        "llmConfigId": t.llm_config_id,
        "status": t.status.as_str(),
        "error": t.error,
        "usage": t.totals,
        "startedAt": rfc3339(t.started_at_ms),
        "endedAt": t.ended_at_ms.map(rfc3339),
    })
}

/// `POST /v1/conversations` → 201 with the conversation.
pub async fn create(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<NewConversation>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c = service::create(&app, body).await?;
    Ok((StatusCode::CREATED, Json(conversation_json(&c))))
}

/// Query of `GET /v1/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    limit: Option<u32>,
    before: Option<String>,
    parent_id: Option<String>,
}

/// `GET /v1/conversations`: `{data, nextBefore}`, most recently updated first.
pub async fn list(
    Scoped(app): Scoped,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = service::list(&app, query.limit, query.before.as_deref(), query.parent_id).await?;
    let data: Vec<Value> = page.data.iter().map(conversation_json).collect();
    Ok(Json(json!({"data": data, "nextBefore": page.next_before})))
}

/// `GET /v1/conversations/{id}`.
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(conversation_json(&service::load(&app, &id).await?)))
}

/// `PATCH /v1/conversations/{id}`: title, metadata, `llmId` and
/// `llmOverrides`. Every config id is checked before anything is written.
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConversationPatch>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(conversation_json(
        &service::patch(&app, &id, body).await?,
    )))
}

/// `DELETE /v1/conversations/{id}`: soft delete, 204.
pub async fn delete(Scoped(app): Scoped, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    service::delete(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/conversations/{id}/messages`: `{data: [message]}` in order; each
/// assistant message has its `modelId` and `usage`.
pub async fn messages(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rows = service::messages(&app, &id).await?;
    Ok(Json(
        json!({"data": rows.iter().map(message_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/conversations/{id}/turns`: `{data: [turn]}`.
pub async fn turns(Scoped(app): Scoped, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let rows = service::turns(&app, &id).await?;
    Ok(Json(
        json!({"data": rows.iter().map(turn_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/conversations/{id}/model` → `{conversationId, model}`.
pub async fn get_model(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = service::load(&app, &id).await?;
    Ok(Json(json!({"conversationId": c.id, "model": c.model})))
}

/// Body of `PUT /v1/conversations/{id}/model`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// A model id, or `null` to clear.
    model: Option<String>,
}

/// `PUT /v1/conversations/{id}/model` with `{model}` → `{conversationId,
/// model, verified}`; `null` clears.
pub async fn put_model(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ModelBody>,
) -> Result<Json<Value>, ApiError> {
    let selection = service::select_model(&app, &id, body.model).await?;
    let c = &selection.conversation;
    Ok(Json(
        json!({"conversationId": c.id, "model": c.model, "verified": selection.verified}),
    ))
}

fn settings_json(s: &service::Settings) -> Value {
    let c = &s.conversation;
    json!({
        "conversationId": c.id,
        "cwd": c.cwd,
        "reasoningEffort": c.reasoning_effort,
        "advisor": c.advisor,
        "advisorModel": s.advisor_model,
        "advisorError": s.advisor_error,
    })
}

/// `GET /v1/conversations/{id}/settings` → `{conversationId, cwd,
/// reasoningEffort, advisor, advisorModel, advisorError}`: `advisorModel`
/// is the model the advisor tool would consult now (null, with
/// `advisorError` saying why, when none resolves).
pub async fn get_settings(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(settings_json(&service::settings(&app, &id).await?)))
}

/// `PATCH /v1/conversations/{id}/settings` with `{cwd?, reasoningEffort?,
/// advisor?}` (`null` clears a setting; absent leaves it).
pub async fn patch_settings(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let change = service::SettingsChange::parse(&body)?;
    let settings = service::change_settings(&app, &id, change).await?;
    Ok(Json(settings_json(&settings)))
}

/// `GET /v1/conversations/{id}/model-history`: every selection change and
/// every turn's resolved model, oldest first.
pub async fn model_history(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entries = service::model_history(&app, &id).await?;
    Ok(Json(json!({"conversationId": id, "data": entries})))
}
