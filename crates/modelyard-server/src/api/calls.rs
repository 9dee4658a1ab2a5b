//! The call log: `GET /v1/calls` and `GET /v1/calls/{id}`.
//!
//! A call as JSON (camelCase; times RFC 3339 UTC; durations ms; tokens):
//! `{id, sessionId, operation, conversationId, turnId, modelId, provider, upstreamModel, stream,
//! status ("ok" | "error"), httpStatus, error, attempt (from 1 within its request),
//! route (the route the request named, or null), finishReason, usage
//! {promptTokens, completionTokens, reasoningTokens, cachedPromptTokens,
//! totalTokens}, sentAt, firstTokenAt, completedAt, latencyMs,
//! timeToFirstTokenMs}`; the single-call view adds `request` (the JSON body
//! sent upstream), `responseText`, `reasoningText` and `toolCalls`.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use modelyard_store::{CallFilter, LlmCallRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::error::Problem;
use crate::http::ApiQuery;

/// Query of `GET /v1/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
    /// Only calls older than this call id (the previous page's `nextBefore`).
    before: Option<String>,
    /// Only calls to this composite model id.
    model: Option<String>,
    /// Only calls of this operation.
    operation: Option<String>,
    /// Only calls made for this conversation.
    conversation_id: Option<String>,
}

/// A call as JSON (see the module docs); `full` adds the request and response.
pub(crate) fn call_json(row: &LlmCallRow, full: bool) -> Value {
    let latency_ms = row.completed_at_ms.map(|done| done - row.sent_at_ms);
    let ttft_ms = row.first_token_at_ms.map(|first| first - row.sent_at_ms);
    let mut value = json!({
        "id": row.id,
        "sessionId": row.session_id,
        "operation": row.operation,
        "conversationId": row.conversation_id,
        "turnId": row.turn_id,
        "modelId": row.model_id,
        "provider": row.provider,
        "upstreamModel": row.upstream_model,
        "stream": row.stream,
        "status": if row.error.is_none() { "ok" } else { "error" },
        "httpStatus": row.http_status,
        "error": row.error,
        "attempt": row.attempt,
        "route": row.route,
        "finishReason": row.finish_reason,
        "usage": {
            "promptTokens": row.usage.prompt_tokens,
            "completionTokens": row.usage.completion_tokens,
            "reasoningTokens": row.usage.reasoning_tokens,
            "cachedPromptTokens": row.usage.cached_prompt_tokens,
            "totalTokens": row.usage.total_tokens,
        },
        "sentAt": rfc3339(row.sent_at_ms),
        "firstTokenAt": row.first_token_at_ms.map(rfc3339),
        "completedAt": row.completed_at_ms.map(rfc3339),
        "latencyMs": latency_ms,
        "timeToFirstTokenMs": ttft_ms,
    });
    if full {
        let request: Value = serde_json::from_str(&row.request_json)
            .unwrap_or_else(|_| Value::String(row.request_json.clone()));
        let tool_calls: Value = row
            .tool_calls_json
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        value["request"] = request;
        value["responseText"] = json!(row.response_text);
        value["reasoningText"] = json!(row.reasoning_text);
        value["toolCalls"] = tool_calls;
    }
    value
}

/// `GET /v1/calls`: newest first, `{data: [call], nextBefore: id | null}`.
pub async fn list(Scoped(app): Scoped, ApiQuery(query): ApiQuery<ListQuery>) -> Response {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::bad_request(format!("limit must be between 1 and 500, got {limit}"))
            .into_response();
    }
    let filter = CallFilter {
        limit,
        before_id: query.before,
        model_id: query.model,
        operation: query.operation,
        conversation_id: query.conversation_id,
    };
    match app.store.list_calls(&app.project, &filter).await {
        Ok(rows) => {
            let next_before = (rows.len() == limit as usize)
                .then(|| rows.last().map(|r| r.id.clone()))
                .flatten();
            let data: Vec<Value> = rows.iter().map(|r| call_json(r, false)).collect();
            axum::Json(json!({"data": data, "nextBefore": next_before})).into_response()
        }
        Err(err) => crate::http::store_problem(err).into_response(),
    }
}

/// `GET /v1/calls/{id}`: one call with its request and response.
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match app.store.get_call(&app.project, &id).await {
        Ok(Some(row)) => axum::Json(call_json(&row, true)).into_response(),
        Ok(None) => Problem::not_found(format!("no call with id {id:?}"))
            .with("code", "call_not_found")
            .into_response(),
        Err(err) => crate::http::store_problem(err).into_response(),
    }
}
