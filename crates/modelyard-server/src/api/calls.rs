//! The call log: `GET /v1/calls` and `GET /v1/calls/{id}`.
//!
//! A call as JSON (camelCase; times RFC 3339 UTC; durations ms; tokens):
//! `{id, sessionId, operation, conversationId, turnId, modelId, provider, upstreamModel, stream,
//! status ("ok" | "error"), httpStatus, error, attempt (from 1 within its request),
//! route (the route the request named, or null), finishReason, usage
//! {promptTokens, completionTokens, reasoningTokens, cachedPromptTokens,
//! cacheCreationTokens, totalTokens}, costUsd (USD, a JSON number; null when
//! unknown: usage not reported, an unpriced cloud model, or a call recorded
//! before costs), priceSource ("config" | "provider" | "none" | null),
//! priceVersion, sentAt, firstTokenAt, completedAt, latencyMs,
//! timeToFirstTokenMs}`; the single-call view adds `request` (the JSON body
//! sent upstream), `responseText`, `reasoningText` and `toolCalls`.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use modelyard_store::{CallFilter, LlmCallRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::dto::Page;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::error::Problem;
use crate::http::ApiQuery;

/// Query of `GET /v1/calls`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
    /// Only calls of the request with this `x-request-id`.
    request_id: Option<String>,
}

/// A call's token usage; `null` where the upstream reported nothing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallUsageDto {
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Completion tokens.
    pub completion_tokens: Option<i64>,
    /// Reasoning tokens (part of the completion tokens).
    pub reasoning_tokens: Option<i64>,
    /// Cached prompt tokens (part of the prompt tokens).
    pub cached_prompt_tokens: Option<i64>,
    /// Prompt tokens written to the provider's cache (part of the prompt
    /// tokens; Anthropic's `cache_creation_input_tokens`).
    pub cache_creation_tokens: Option<i64>,
    /// Total tokens.
    pub total_tokens: Option<i64>,
}

/// A call (see the module docs).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallDto {
    /// Id.
    pub id: String,
    /// Its LLM session.
    pub session_id: String,
    /// What it was for (`gateway`, `chat`, ...).
    pub operation: String,
    /// The conversation it was made for, if any.
    pub conversation_id: Option<String>,
    /// The turn it was made for, if any.
    pub turn_id: Option<String>,
    /// Composite model id.
    pub model_id: String,
    /// Provider name.
    pub provider: String,
    /// The model name sent upstream.
    pub upstream_model: String,
    /// Whether it was streamed.
    pub stream: bool,
    /// `ok` or `error`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The upstream's HTTP status, if one answered.
    pub http_status: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// Attempt number within its request, from 1 (retries and fallbacks
    /// add attempts).
    pub attempt: i32,
    /// The route the request named, `None` when it named a deployment.
    pub route: Option<String>,
    /// The `x-request-id` of the request that made the call (a gateway
    /// request, or the one that started the turn).
    pub request_id: Option<String>,
    /// OpenAI finish reason.
    pub finish_reason: Option<String>,
    /// Token usage.
    pub usage: CallUsageDto,
    /// Cost in USD; `null` when unknown (see the module docs).
    pub cost_usd: Option<f64>,
    /// Where its price came from: `config`, `provider` or `none`; `null`
    /// for calls recorded before costs.
    #[schema(value_type = Option<String>)]
    pub price_source: Option<&'static str>,
    /// Fingerprint of the price entry used (12 hex digits).
    pub price_version: Option<String>,
    /// When it was sent.
    pub sent_at: String,
    /// When the first token arrived.
    pub first_token_at: Option<String>,
    /// When it completed.
    pub completed_at: Option<String>,
    /// Sent to completed.
    pub latency_ms: Option<i64>,
    /// Sent to first token.
    pub time_to_first_token_ms: Option<i64>,
    /// The single-call view's request and response.
    #[serde(flatten)]
    pub detail: Option<CallDetailDto>,
}

/// What the single-call view adds to a call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallDetailDto {
    /// The JSON body sent upstream (its text if it is not JSON).
    pub request: Value,
    /// The answer's text.
    pub response_text: Option<String>,
    /// The answer's reasoning text.
    pub reasoning_text: Option<String>,
    /// The answer's tool calls.
    pub tool_calls: Value,
}

impl CallDto {
    /// The call `row`; `full` adds the request and response.
    pub fn new(row: &LlmCallRow, full: bool) -> Self {
        let u = &row.usage;
        let detail = full.then(|| CallDetailDto {
            request: serde_json::from_str(&row.request_json)
                .unwrap_or_else(|_| Value::String(row.request_json.clone())),
            response_text: row.response_text.clone(),
            reasoning_text: row.reasoning_text.clone(),
            tool_calls: row
                .tool_calls_json
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null),
        });
        CallDto {
            id: row.id.clone(),
            session_id: row.session_id.clone(),
            operation: row.operation.clone(),
            conversation_id: row.conversation_id.clone(),
            turn_id: row.turn_id.clone(),
            model_id: row.model_id.clone(),
            provider: row.provider.clone(),
            upstream_model: row.upstream_model.clone(),
            stream: row.stream,
            status: if row.error.is_none() { "ok" } else { "error" },
            http_status: row.http_status,
            error: row.error.clone(),
            attempt: row.attempt,
            route: row.route.clone(),
            request_id: row.request_id.clone(),
            finish_reason: row.finish_reason.clone(),
            usage: CallUsageDto {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                reasoning_tokens: u.reasoning_tokens,
                cached_prompt_tokens: u.cached_prompt_tokens,
                cache_creation_tokens: u.cache_creation_tokens,
                total_tokens: u.total_tokens,
            },
            cost_usd: row.cost.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
            price_source: row.cost.price_source.map(|s| s.as_str()),
            price_version: row.cost.price_version.clone(),
            sent_at: rfc3339(row.sent_at_ms),
            first_token_at: row.first_token_at_ms.map(rfc3339),
            completed_at: row.completed_at_ms.map(rfc3339),
            latency_ms: row.completed_at_ms.map(|done| done - row.sent_at_ms),
            time_to_first_token_ms: row.first_token_at_ms.map(|first| first - row.sent_at_ms),
            detail,
        }
    }
}

/// `GET /v1/calls`: newest first, `{data: [call], nextBefore: id | null}`.
#[utoipa::path(
    get,
    path = "/v1/calls",
    tag = "calls",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Page<CallDto>))
)]
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
        request_id: query.request_id,
    };
    match app.store.list_calls(&app.project, &filter).await {
        Ok(rows) => {
            let next_before = (rows.len() == limit as usize)
                .then(|| rows.last().map(|r| r.id.clone()))
                .flatten();
            axum::Json(Page {
                data: rows.iter().map(|r| CallDto::new(r, false)).collect(),
                next_before,
            })
            .into_response()
        }
        Err(err) => crate::http::store_problem(err).into_response(),
    }
}

/// `GET /v1/calls/{id}`: one call with its request and response.
#[utoipa::path(
    get,
    path = "/v1/calls/{id}",
    tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, description = "The call with `request`, `responseText`, `reasoningText`, `toolCalls`", body = CallDto))
)]
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match app.store.get_call(&app.project, &id).await {
        Ok(Some(row)) => axum::Json(CallDto::new(&row, true)).into_response(),
        Ok(None) => Problem::not_found(format!("no call with id {id:?}"))
            .with("code", "call_not_found")
            .into_response(),
        Err(err) => crate::http::store_problem(err).into_response(),
    }
}
