//! Conversations (tasks): `/v1/conversations` and everything under it, as
//! adapters over [`crate::service::conversations`]; turns in [`turns`]
//! (over [`crate::service::turns`]), the events feed in [`events`] (over
//! [`crate::service::replay`]).
//!
//! A conversation as JSON ([`dto::ConversationDto`]; camelCase; times RFC
//! 3339; tokens): `{id, parentId, title, model, cwd, reasoningEffort,
//! advisor, metadata, llmId, llmOverrides, status ("idle" | "running" |
//! "awaiting_pick"), runningTurnId, pendingArena ({runId, turnId} of the
//! arena run that waits for a pick, or null), latestModelId, contextTokens, contextWindow, usage
//! {promptTokens, completionTokens,
//! reasoningTokens, cachedPromptTokens, totalTokens}, lastSeq, createdAt,
//! updatedAt}`.
//!
//! Settings are one resource: `GET/PATCH /v1/conversations/{id}/settings`
//! with `{cwd, reasoningEffort}`; the model selection has its own contract:
//! `GET/PUT /v1/conversations/{id}/model` ↔ `{conversationId, model}` (PUT
//! answers `verified` too).

pub mod dto;
pub mod events;
pub mod turns;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use modelyard_core::ids::ConversationId;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub use events::events;
pub use turns::{cancel_turn, start_turn, tool_results};

use crate::auth::Scoped;
use crate::http::{ApiError, ApiJson, ApiQuery};
use crate::service::conversations::{self as service, ConversationPatch, NewConversation};
pub use crate::service::replay::EventDto;
use dto::{
    ConversationDto, List, MessageDto, ModelHistoryDto, ModelSelectionDto, Page, SettingsDto,
    TurnDto,
};

/// `POST /v1/conversations` → 201 with the conversation.
#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "conversations",
    request_body = NewConversation,
    responses((status = 201, description = "Created", body = ConversationDto))
)]
pub async fn create(
    Scoped(app): Scoped,
    ApiJson(body): ApiJson<NewConversation>,
) -> Result<(StatusCode, Json<ConversationDto>), ApiError> {
    let c = service::create(&app, body).await?;
    let window = service::context_window(&app, &c).await;
    Ok((
        StatusCode::CREATED,
        Json(ConversationDto::with_window(&c, window)),
    ))
}

/// Query of `GET /v1/conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    limit: Option<u32>,
    before: Option<String>,
    parent_id: Option<String>,
}

/// `GET /v1/conversations`: `{data, nextBefore}`, most recently updated first.
#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "conversations",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Page<ConversationDto>))
)]
pub async fn list(
    Scoped(app): Scoped,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<ConversationDto>>, ApiError> {
    let page = service::list(&app, query.limit, query.before.as_deref(), query.parent_id).await?;
    Ok(Json(Page {
        data: page
            .data
            .iter()
            .map(|c| ConversationDto::with_window(c, service::context_window_now(&app, c)))
            .collect(),
        next_before: page.next_before,
    }))
}

/// `GET /v1/conversations/{id}`.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "OK", body = ConversationDto))
)]
pub async fn show(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<ConversationDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let c = service::load(&app, &id).await?;
    let window = service::context_window(&app, &c).await;
    Ok(Json(ConversationDto::with_window(&c, window)))
}

/// `PATCH /v1/conversations/{id}`: title, metadata, `llmId` and
/// `llmOverrides`. Every config id is checked before anything is written.
#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = ConversationPatch,
    responses((status = 200, description = "OK", body = ConversationDto))
)]
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConversationPatch>,
) -> Result<Json<ConversationDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let c = service::patch(&app, &id, body).await?;
    let window = service::context_window(&app, &c).await;
    Ok(Json(ConversationDto::with_window(&c, window)))
}

/// `DELETE /v1/conversations/{id}`: soft delete, 204.
#[utoipa::path(
    delete,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 204, description = "Done; no body"))
)]
pub async fn delete(Scoped(app): Scoped, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = ConversationId::parse(&id)?;
    service::delete(&app, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/conversations/{id}/messages`: `{data: [message]}` in order; each
/// assistant message has its `modelId` and `usage`.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "OK", body = List<MessageDto>))
)]
pub async fn messages(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<List<MessageDto>>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let rows = service::messages(&app, &id).await?;
    Ok(Json(List {
        data: rows.iter().map(MessageDto::from).collect(),
    }))
}

/// `GET /v1/conversations/{id}/turns`: `{data: [turn]}`.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/turns",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "OK", body = List<TurnDto>))
)]
pub async fn turns(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<List<TurnDto>>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let rows = service::turns(&app, &id).await?;
    Ok(Json(List {
        data: rows.iter().map(TurnDto::from).collect(),
    }))
}

/// `GET /v1/conversations/{id}/model` → `{conversationId, model}`.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/model",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "OK", body = ModelSelectionDto))
)]
pub async fn get_model(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<ModelSelectionDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let c = service::load(&app, &id).await?;
    Ok(Json(ModelSelectionDto {
        conversation_id: c.id,
        model: c.model,
        verified: None,
    }))
}

/// Body of `PUT /v1/conversations/{id}/model`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// A model id; `null` or `""` clears.
    model: Option<String>,
}

/// `PUT /v1/conversations/{id}/model` with `{model}` → `{conversationId,
/// model, verified}`; `null` or `""` clears. A well-formed id that does not
/// resolve now (provider offline, model not listed yet) is stored with
/// `verified: false`; only a malformed id is a 422 (`invalid_model_id`,
/// with `suggestions`).
#[utoipa::path(
    put,
    path = "/v1/conversations/{id}/model",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = ModelBody,
    responses((status = 200, description = "OK", body = ModelSelectionDto))
)]
pub async fn put_model(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ModelBody>,
) -> Result<Json<ModelSelectionDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let selection = service::select_model(&app, &id, body.model).await?;
    let c = selection.conversation;
    Ok(Json(ModelSelectionDto {
        conversation_id: c.id,
        model: c.model,
        verified: Some(selection.verified),
    }))
}

/// `GET /v1/conversations/{id}/settings` → `{conversationId, cwd,
/// reasoningEffort, advisor, advisorModel, advisorError}`: `advisorModel`
/// is the model the advisor tool would consult now (null, with
/// `advisorError` saying why, when none resolves).
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/settings",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "OK", body = SettingsDto))
)]
pub async fn get_settings(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<SettingsDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    Ok(Json(SettingsDto::from(
        &service::settings(&app, &id).await?,
    )))
}

/// `PATCH /v1/conversations/{id}/settings` with `{cwd?, reasoningEffort?,
/// advisor?}` (`null` clears a setting; absent leaves it).
#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}/settings",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = service::SettingsChange,
    responses((status = 200, description = "OK", body = SettingsDto))
)]
pub async fn patch_settings(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<SettingsDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let change = service::SettingsChange::parse(&body)?;
    let settings = service::change_settings(&app, &id, change).await?;
    Ok(Json(SettingsDto::from(&settings)))
}

/// `GET /v1/conversations/{id}/model-history`: every selection change and
/// every turn's resolved model, oldest first.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/model-history",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "OK", body = ModelHistoryDto))
)]
pub async fn model_history(
    Scoped(app): Scoped,
    Path(id): Path<String>,
) -> Result<Json<ModelHistoryDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let data = service::model_history(&app, &id).await?;
    Ok(Json(ModelHistoryDto {
        conversation_id: id.into_string(),
        data,
    }))
}
