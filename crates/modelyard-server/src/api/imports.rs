//! `POST /v1/conversations/{id}/messages`: imports messages into a
//! conversation between turns, over [`crate::service::imports`].
//!
//! Body: `{"messages": [...]}` with OpenAI chat messages
//! (<https://platform.openai.com/docs/api-reference/chat/create>):
//! `user`, `assistant` (optional `tool_calls`), `tool`; system and
//! developer messages are refused. At most
//! [`MAX_IMPORTED`](crate::service::imports::MAX_IMPORTED) messages.
//!
//! → 201 `{conversationId, imported, lastSeq}`, one `messages.imported`
//! event. 409 (`turn_running`) while a turn runs; 422 (`invalid_field`)
//! naming the first bad message field.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use modelyard_core::ids::ConversationId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Scoped;
use crate::http::{ApiError, ApiJson};
use crate::service::imports;

/// Body of the import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    messages: Vec<Value>,
}

/// Answer of the import.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedDto {
    /// The conversation.
    pub conversation_id: String,
    /// Messages imported.
    pub imported: usize,
    /// Seq of the `messages.imported` event.
    pub last_seq: Option<i64>,
}

/// The handler; see the module docs.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = ImportBody,
    responses((status = 201, description = "Imported", body = ImportedDto))
)]
pub async fn import(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<(StatusCode, Json<ImportedDto>), ApiError> {
    let id = ConversationId::parse(&id)?;
    let done = imports::import(&app, &id, &body.messages).await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportedDto {
            conversation_id: id.into_string(),
            imported: done.imported,
            last_seq: done.last_seq,
        }),
    ))
}
