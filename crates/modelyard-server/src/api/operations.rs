//! `POST …/title`, `POST …/compact` and `POST …/warm`: adapters over
//! [`crate::service::operations`] and [`crate::service::warm`], where the use case (resolution, the
//! call on the one LLM call path, the record, the event) lives.
//!
//! - `POST /v1/conversations/{id}/title` `{"model"?}` → `{conversationId,
//!   title, modelId, resolvedFrom, llmId, sessionId}`: the `title`
//!   operation's model (resolved as for turns; `model` is a per-call
//!   override that is not persisted) gets a short instruction and the
//!   conversation's text (the last [`operations::TITLE_INPUT_CHARS`] characters); the
//!   first line of its answer, trimmed of quotes and punctuation and cut to
//!   [`operations::TITLE_MAX_CHARS`], becomes the title (`conversation.updated`).
//! - `POST /v1/conversations/{id}/compact` `{"keepLast"?: n, "model"?}`
//!   (default 2) → `{conversationId, summary, upToSeq, summaryMessageId,
//!   modelId, resolvedFrom, llmId, sessionId}`: the `compaction`
//!   model summarizes every message except the last `keepLast` (together
//!   with an earlier summary, if any); `conversation.compacted` records it,
//!   and later turns send the summary as one system message instead of the
//!   covered messages.
//!
//! Without a `max_tokens` from the LLM config, a title call asks for at most
//! [`operations::TITLE_MAX_TOKENS`] and a compaction for [`operations::COMPACTION_MAX_TOKENS`].
//!
//! - `POST /v1/conversations/{id}/warm` `{"model"?, "operation"?}` →
//!   `{model, resolvedFrom, deployment, action ("loaded" | "already-loaded" |
//!   "prefix-cached" | "none"), durationMs, sessionId}`: prepares the
//!   deployment the next turn will use (see [`crate::service::warm`]).
//!
//! Title and compaction run while a turn runs too (they only read its committed messages).
//! 422 when there is nothing to work on (no messages / nothing to compact)
//! or no model resolves; 502 when the provider fails (the failed call is
//! recorded).

use axum::extract::Path;
use axum::Json;
use modelyard_core::conversation::ResolvedFrom;
use modelyard_core::ids::ConversationId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Scoped;
use crate::http::{ApiError, ApiJsonOrDefault};
use crate::service::conversations::load;
use crate::service::operations;

/// Answer of `POST /v1/conversations/{id}/title`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TitledDto {
    /// The conversation.
    pub conversation_id: String,
    /// The new title.
    pub title: String,
    /// The model that wrote it.
    pub model_id: String,
    /// Why that model.
    #[schema(value_type = String)]
    pub resolved_from: ResolvedFrom,
    /// The LLM config that supplied options, if any.
    pub llm_id: Option<String>,
    /// The call's LLM session.
    pub session_id: String,
}

/// Answer of `POST /v1/conversations/{id}/compact`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactedDto {
    /// The conversation.
    pub conversation_id: String,
    /// The summary.
    pub summary: String,
    /// Id of the summary (the `conversation.compacted` event's).
    pub summary_message_id: String,
    /// Seq of the last message the summary covers.
    pub up_to_seq: i64,
    /// The model that wrote it.
    pub model_id: String,
    /// Why that model.
    #[schema(value_type = String)]
    pub resolved_from: ResolvedFrom,
    /// The LLM config that supplied options, if any.
    pub llm_id: Option<String>,
    /// The call's LLM session.
    pub session_id: String,
}

/// Body of `POST /v1/conversations/{id}/title`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TitleBody {
    /// Per-call model override (not persisted).
    model: Option<String>,
}

/// `POST /v1/conversations/{id}/title`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/title",
    tag = "operations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = Option<TitleBody>,
    responses((status = 200, description = "OK", body = TitledDto))
)]
pub async fn title(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJsonOrDefault(body): ApiJsonOrDefault<TitleBody>,
) -> Result<Json<TitledDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let conversation = load(&app, &id).await?;
    let titled = operations::title(&app, &conversation, body.model.as_deref())
        .await
        .map_err(|e| e.into_service(&app))?;
    Ok(Json(TitledDto {
        conversation_id: id.into_string(),
        title: titled.title,
        model_id: titled.model_id,
        resolved_from: titled.resolved.resolved_from,
        llm_id: titled.resolved.llm_config_id,
        session_id: titled.session_id,
    }))
}

/// Body of `POST /v1/conversations/{id}/compact`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompactBody {
    /// Messages left as they are (default 2).
    keep_last: Option<u32>,
    /// Per-call model override (not persisted).
    model: Option<String>,
}

/// `POST /v1/conversations/{id}/compact`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/compact",
    tag = "operations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = Option<CompactBody>,
    responses((status = 200, description = "OK", body = CompactedDto))
)]
pub async fn compact(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJsonOrDefault(body): ApiJsonOrDefault<CompactBody>,
) -> Result<Json<CompactedDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let conversation = load(&app, &id).await?;
    let compacted = operations::compact(&app, &conversation, body.keep_last, body.model.as_deref())
        .await
        .map_err(|e| e.into_service(&app))?;
    Ok(Json(CompactedDto {
        conversation_id: id.into_string(),
        summary: compacted.summary,
        summary_message_id: compacted.summary_message_id,
        up_to_seq: compacted.up_to_seq,
        model_id: compacted.model_id,
        resolved_from: compacted.resolved.resolved_from,
        llm_id: compacted.resolved.llm_config_id,
        session_id: compacted.session_id,
    }))
}

/// Body of `POST /v1/conversations/{id}/warm`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarmBody {
    /// The next turn's model override (not persisted).
    model: Option<String>,
    /// The next turn's operation, default `chat`.
    operation: Option<String>,
}

/// Answer of `POST /v1/conversations/{id}/warm`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmedDto {
    /// The resolved model id (route name or composite id).
    pub model: String,
    /// Why that model.
    #[schema(value_type = String)]
    pub resolved_from: ResolvedFrom,
    /// The deployment prepared.
    pub deployment: String,
    /// `loaded`, `already-loaded`, `prefix-cached` or `none`.
    pub action: &'static str,
    /// How long the warm took.
    pub duration_ms: u64,
    /// The recorded `warm` session, when something was sent.
    pub session_id: Option<String>,
}

/// `POST /v1/conversations/{id}/warm`.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/warm",
    tag = "operations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = Option<WarmBody>,
    responses((status = 200, description = "OK", body = WarmedDto))
)]
pub async fn warm(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJsonOrDefault(body): ApiJsonOrDefault<WarmBody>,
) -> Result<Json<WarmedDto>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let warmed =
        crate::service::warm::warm(&app, &id, body.model.as_deref(), body.operation.as_deref())
            .await?;
    Ok(Json(WarmedDto {
        model: warmed.model,
        resolved_from: warmed.resolved_from,
        deployment: warmed.deployment,
        action: warmed.action.as_str(),
        duration_ms: warmed.duration_ms,
        session_id: warmed.session_id,
    }))
}
