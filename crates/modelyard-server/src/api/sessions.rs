//! The LLM-call audit: `GET /v1/llm-sessions`, `GET /v1/llm-sessions/{id}`
//! and `GET /v1/usage` (`GET /v1/llm-calls/{id}` is routed to
//! [`crate::api::calls::show`]).
//!
//! A session as JSON (camelCase; times RFC 3339 UTC; durations ms; tokens):
//! `{id, operation, parentSessionId, conversationId, turnId, createdAt,
//! callCount, modelId (of the last call), provider, status ("ok" | "error"),
//! lastError, startedAt (first call sent), finishedAt (last call completed),
//! durationMs, usage {promptTokens, completionTokens, reasoningTokens,
//! cachedPromptTokens, totalTokens}, costUsd, config}`; token sums count unreported
//! usage as 0; `costUsd` (USD, beside `usage`) sums the calls' known costs
//! and is null when no call has one. `config` is the LLM config snapshot
//! the session ran with, as it was then (null when it ran without one,
//! e.g. a plain gateway request): `{llmId, version, source, resolvedFrom,
//! model, providerOptions, systemPrompt, baseUrl}` — `llmId` + `version`
//! name the config version (`GET /v1/llms/{llmId}?version=N`, also after
//! the config is deleted).
//! The single-session view adds `calls` (oldest first, each as
//! `GET /v1/calls/{id}` shows it) and `children` (sessions started by this
//! one, oldest first).
//!
//! Time ranges are `from` (inclusive) and `to` (exclusive), RFC 3339
//! (`2026-01-31T12:00:00Z`, `2026-01-31T12:00:00.5+02:00`, the zone may be
//! left out for UTC) or a plain UTC date (`2026-01-31`). Sessions are
//! selected by their creation time, usage by the calls' sent time.

use modelyard_core::ids::{ConversationId, SessionId};
use modelyard_core::llm_config::ConfigSnapshot;
use std::time::UNIX_EPOCH;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_store::{
    SessionFilter, SessionRow, SessionStatus, TokenSums, UsageFilter, UsageGroup, UsageGroupRow,
    MAX_LIST_LIMIT,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::calls::CallDto;
use crate::api::dto::Page;
use crate::api::llms::ProviderOptionsDto;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::error::Problem;
use crate::http::ApiQuery;

/// Page size of `GET /v1/llm-sessions` without `limit`.
const DEFAULT_LIMIT: u32 = 50;

/// Token sums of a session or a usage group (unreported usage counts as
/// 0); the names of a call's `usage`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSumsDto {
    /// Sum of prompt tokens.
    pub prompt_tokens: i64,
    /// Sum of completion tokens.
    pub completion_tokens: i64,
    /// Sum of reasoning tokens.
    pub reasoning_tokens: i64,
    /// Sum of cached prompt tokens.
    pub cached_prompt_tokens: i64,
    /// Sum of total tokens.
    pub total_tokens: i64,
}

impl From<TokenSums> for TokenSumsDto {
    fn from(t: TokenSums) -> Self {
        TokenSumsDto {
            prompt_tokens: t.input,
            completion_tokens: t.output,
            reasoning_tokens: t.reasoning,
            cached_prompt_tokens: t.cached_input,
            total_tokens: t.total,
        }
    }
}

/// The LLM config snapshot a session ran with (see the module docs).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSnapshotDto {
    /// The config's id; `null` when no config supplied options.
    pub llm_id: Option<String>,
    /// The config's version.
    pub version: Option<i64>,
    /// `user` or `system-default`; `null` without a config.
    #[schema(value_type = Option<String>)]
    pub source: Option<&'static str>,
    /// Which step of the turn-model rule chose the model (`request`,
    /// `conversation`, `operationConfig`, `conversationConfig`,
    /// `serverDefault`); `null` outside conversations.
    #[schema(value_type = Option<String>)]
    pub resolved_from: Option<modelyard_core::conversation::ResolvedFrom>,
    /// The model id called (a composite id or a route's name).
    pub model: String,
    /// The config's provider options.
    pub provider_options: ProviderOptionsDto,
    /// The config's system prompt.
    pub system_prompt: Option<String>,
    /// The base URL of the deployment (the config's custom one when it has
    /// one), without credentials; `null` for a route.
    pub base_url: Option<String>,
}

impl From<&ConfigSnapshot> for ConfigSnapshotDto {
    fn from(c: &ConfigSnapshot) -> Self {
        ConfigSnapshotDto {
            llm_id: c.llm_id.clone(),
            version: c.version,
            source: c.source.map(|s| s.as_str()),
            resolved_from: c.resolved_from,
            model: c.model.clone(),
            provider_options: ProviderOptionsDto::from(&c.provider_options),
            system_prompt: c.system_prompt.clone(),
            base_url: c.base_url.clone(),
        }
    }
}

/// A session (see the module docs).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDto {
    /// Id.
    pub id: String,
    /// What it was for (`gateway`, `chat`, ...).
    pub operation: String,
    /// The session that started it, if any.
    pub parent_session_id: Option<String>,
    /// Its conversation, if any.
    pub conversation_id: Option<String>,
    /// Its turn, if any.
    pub turn_id: Option<String>,
    /// The `x-request-id` of the request that made the session.
    pub request_id: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Number of calls.
    pub call_count: i64,
    /// Model of the last call.
    pub model_id: Option<String>,
    /// Provider of the last call.
    pub provider: Option<String>,
    /// `ok`, or `error` if any call failed.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The last error.
    pub last_error: Option<String>,
    /// When the first call was sent.
    pub started_at: Option<String>,
    /// When the last call completed.
    pub finished_at: Option<String>,
    /// Started to finished.
    pub duration_ms: Option<i64>,
    /// Token sums over its calls.
    pub usage: TokenSumsDto,
    /// Sum of its calls' known costs, USD; `null` when no call has one.
    pub cost_usd: Option<f64>,
    /// The LLM config snapshot it ran with; `null` without one.
    pub config: Option<ConfigSnapshotDto>,
}

impl From<&SessionRow> for SessionDto {
    fn from(s: &SessionRow) -> Self {
        SessionDto {
            id: s.id.clone(),
            operation: s.operation.clone(),
            parent_session_id: s.parent_session_id.clone(),
            conversation_id: s.conversation_id.clone(),
            turn_id: s.turn_id.clone(),
            request_id: s.request_id.clone(),
            created_at: rfc3339(s.created_at_ms),
            call_count: s.call_count,
            model_id: s.model_id.clone(),
            provider: s.provider.clone(),
            status: s.status.as_str(),
            last_error: s.last_error.clone(),
            started_at: s.started_at_ms.map(rfc3339),
            finished_at: s.finished_at_ms.map(rfc3339),
            duration_ms: s
                .started_at_ms
                .zip(s.finished_at_ms)
                .map(|(started, finished)| finished - started),
            usage: s.totals.into(),
            cost_usd: s.totals.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
            config: s.config.as_ref().map(ConfigSnapshotDto::from),
        }
    }
}

/// One session with its calls and the sessions it started.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetailDto {
    /// The session.
    #[serde(flatten)]
    pub session: SessionDto,
    /// Its calls, oldest first.
    pub calls: Vec<CallDto>,
    /// Sessions it started, oldest first.
    pub children: Vec<SessionDto>,
}

/// One group of `GET /v1/usage`, or the total over all groups.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRowDto {
    /// The group (a project id, API key id — `none` for calls made without
    /// a key —, model id, provider, operation or UTC date); absent in the
    /// total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Number of calls.
    pub calls: i64,
    /// Calls that reported usage but have no known cost (an unpriced cloud
    /// model): `costUsd` leaves them out.
    pub unpriced_calls: i64,
    /// Token sums.
    #[serde(flatten)]
    pub tokens: TokenSumsDto,
    /// Sum of the known costs, USD; `null` when no call has one.
    pub cost_usd: Option<f64>,
}

/// `GET /v1/usage`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageDto {
    /// `project`, `key`, `model`, `provider`, `operation` or `day`.
    #[schema(value_type = String)]
    pub group_by: &'static str,
    /// Start of the range (RFC 3339), if given.
    pub from: Option<String>,
    /// End of the range (RFC 3339), if given.
    pub to: Option<String>,
    /// The conversation whose calls are counted, if given.
    pub conversation_id: Option<String>,
    /// The groups, ordered by key.
    pub data: Vec<UsageRowDto>,
    /// Sums over all groups.
    pub total: UsageRowDto,
}

/// Parses the time query parameter `name`: RFC 3339 with `Z`, a numeric
/// offset or no zone (UTC), `T` or a space between date and time, any
/// fraction of seconds; or a plain date `YYYY-MM-DD` (midnight UTC). Returns
/// unix milliseconds.
pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64, Problem> {
    let invalid = || {
        Problem::bad_request(format!(
            "{name}: {text:?} is not an RFC 3339 time \
             (e.g. 2026-01-31T12:00:00Z, 2026-01-31T12:00:00+02:00 or 2026-01-31)"
        ))
    };
    let is_date = |s: &str| {
        s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    // A trailing `+HH:MM` / `-HH:MM` after the time: parse as UTC, then
    // shift by the offset (humantime only knows `Z`).
    let split = text
        .len()
        .checked_sub(6)
        .and_then(|at| Some((text.get(..at)?, text.get(at..)?)));
    let (utc_text, offset_ms) = match split {
        Some((head, zone))
            if head.len() >= 19
                && zone.is_ascii()
                && matches!(zone.as_bytes()[0], b'+' | b'-')
                && zone.as_bytes()[3] == b':' =>
        {
            let hours: i64 = zone[1..3].parse().map_err(|_| invalid())?;
            let minutes: i64 = zone[4..6].parse().map_err(|_| invalid())?;
            if hours > 23 || minutes > 59 {
                return Err(invalid());
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            (head.to_owned(), sign * (hours * 60 + minutes) * 60_000)
        }
        _ if is_date(text) => (format!("{text}T00:00:00Z"), 0),
        _ => (text.to_owned(), 0),
    };
    let time = humantime::parse_rfc3339_weak(&utc_text).map_err(|_| invalid())?;
    let ms = time
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(invalid)?;
    Ok(ms - offset_ms)
}

/// Parses the optional `from` / `to` pair; `from` must be before `to`.
fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), Problem> {
    let from_ms = from.map(|t| parse_time("from", t)).transpose()?;
    let to_ms = to.map(|t| parse_time("to", t)).transpose()?;
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f >= t {
            return Err(Problem::bad_request(format!(
                "from ({}) must be before to ({})",
                rfc3339(f),
                rfc3339(t)
            )));
        }
    }
    Ok((from_ms, to_ms))
}

/// `Some(value)` unless it is empty (then a 400 naming `name`).
fn non_empty(name: &str, value: Option<String>) -> Result<Option<String>, Problem> {
    match value {
        Some(v) if v.is_empty() => Err(Problem::bad_request(format!(
            "{name} must not be empty (leave it out to not filter by it)"
        ))),
        other => Ok(other),
    }
}

/// Query of `GET /v1/llm-sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    /// Only sessions of this conversation.
    conversation_id: Option<String>,
    /// Only sessions of this operation.
    operation: Option<String>,
    /// Only sessions with a call to this composite model id.
    model: Option<String>,
    /// Only sessions with a call to this provider.
    provider: Option<String>,
    /// `ok` or `error`.
    status: Option<String>,
    /// Created at or after (RFC 3339).
    from: Option<String>,
    /// Created before (RFC 3339).
    to: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
    /// Only sessions older than this session id (the previous page's
    /// `nextBefore`).
    before: Option<String>,
}

fn session_filter(query: ListQuery) -> Result<SessionFilter, Problem> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
        )));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some(name) => Some(SessionStatus::from_name(name).ok_or_else(|| {
            Problem::bad_request(format!("status must be \"ok\" or \"error\", got {name:?}"))
        })?),
    };
    let (from_ms, to_ms) = parse_range(query.from.as_deref(), query.to.as_deref())?;
    Ok(SessionFilter {
        limit,
        before_id: non_empty("before", query.before)?,
        conversation_id: non_empty("conversationId", query.conversation_id)?,
        operation: non_empty("operation", query.operation)?,
        model_id: non_empty("model", query.model)?,
        provider: non_empty("provider", query.provider)?,
        status,
        from_ms,
        to_ms,
    })
}

/// `GET /v1/llm-sessions`: newest first, `{data: [session], nextBefore: id |
/// null}`.
#[utoipa::path(
    get,
    path = "/v1/llm-sessions",
    tag = "calls",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Page<SessionDto>))
)]
pub async fn list(Scoped(app): Scoped, ApiQuery(query): ApiQuery<ListQuery>) -> Response {
    let filter = match session_filter(query) {
        Ok(filter) => filter,
        Err(problem) => return problem.into_response(),
    };
    match app.store.list_sessions(&app.project, &filter).await {
        Ok(rows) => {
            let next_before = (rows.len() == filter.limit as usize)
                .then(|| rows.last().map(|r| r.id.clone()))
                .flatten();
            Json(Page {
                data: rows.iter().map(SessionDto::from).collect(),
                next_before,
            })
            .into_response()
        }
        Err(err) => crate::http::store_problem(err).into_response(),
    }
}

/// `GET /v1/llm-sessions/{id}`: the session with its `calls` and `children`.
#[utoipa::path(
    get,
    path = "/v1/llm-sessions/{id}",
    tag = "calls",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "OK", body = SessionDetailDto))
)]
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    let session = match SessionId::parse(&id) {
        Ok(id) => app.store.get_session(&app.project, id.as_str()).await,
        Err(_) => Ok(None),
    };
    let (row, calls) = match session {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Problem::not_found(format!("no LLM session with id {id:?}"))
                .with("code", "session_not_found")
                .into_response()
        }
        Err(err) => return crate::http::store_problem(err).into_response(),
    };
    let children = match app.store.child_sessions(&app.project, &id).await {
        Ok(children) => children,
        Err(err) => return crate::http::store_problem(err).into_response(),
    };
    Json(SessionDetailDto {
        session: SessionDto::from(&row),
        calls: calls.iter().map(|c| CallDto::new(c, true)).collect(),
        children: children.iter().map(SessionDto::from).collect(),
    })
    .into_response()
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsageQuery {
    /// `project`, `key`, `model` (default), `provider`, `operation` or
    /// `day`.
    group_by: Option<String>,
    /// Calls sent at or after (RFC 3339).
    from: Option<String>,
    /// Calls sent before (RFC 3339).
    to: Option<String>,
    /// Only the calls of this conversation's sessions (every operation run
    /// for it: turns, title, compaction, advisor, warm, ...).
    conversation_id: Option<String>,
}

fn sums_of(r: &UsageGroupRow) -> TokenSums {
    TokenSums {
        input: r.input,
        output: r.output,
        reasoning: r.reasoning,
        cached_input: r.cached_input,
        total: r.total,
        cost_nusd: r.cost_nusd,
    }
}

/// `GET /v1/usage`: token usage per group, ordered by key, with the totals
/// over all groups (`conversationId`: of one conversation's sessions only;
/// with `groupBy=operation` its per-operation split): `{groupBy, from, to,
/// conversationId, data: [{key, calls, unpricedCalls,
/// promptTokens, completionTokens, reasoningTokens, cachedPromptTokens,
/// totalTokens, costUsd}], total: {calls, ...same sums}}`; `costUsd` is
/// USD, null when no call of the group has a known cost.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "calls",
    params(UsageQuery),
    responses((status = 200, description = "OK", body = UsageDto))
)]
pub async fn usage(Scoped(app): Scoped, ApiQuery(query): ApiQuery<UsageQuery>) -> Response {
    let group_by = match query.group_by.as_deref() {
        None => UsageGroup::Model,
        Some(name) => match UsageGroup::from_name(name) {
            Some(group) => group,
            None => {
                let allowed: Vec<&str> = UsageGroup::ALL.iter().map(|g| g.as_str()).collect();
                return Problem::bad_request(format!(
                    "groupBy must be one of {}; got {name:?}",
                    allowed.join(", ")
                ))
                .with("allowed", allowed)
                .into_response();
            }
        },
    };
    let (from_ms, to_ms) = match parse_range(query.from.as_deref(), query.to.as_deref()) {
        Ok(range) => range,
        Err(problem) => return problem.into_response(),
    };
    let conversation_id = match query.conversation_id.as_deref().map(ConversationId::parse) {
        None => None,
        Some(Ok(id)) => Some(id.as_str().to_owned()),
        Some(Err(err)) => {
            return Problem::bad_request(format!("conversationId: {err}")).into_response()
        }
    };
    let filter = UsageFilter {
        from_ms,
        to_ms,
        conversation_id,
    };
    let rows = match app.store.usage_where(&app.project, group_by, &filter).await {
        Ok(rows) => rows,
        Err(err) => return crate::http::store_problem(err).into_response(),
    };
    let mut calls = 0i64;
    let mut unpriced_calls = 0i64;
    let mut total = TokenSums::default();
    for row in &rows {
        calls = calls.saturating_add(row.calls);
        unpriced_calls = unpriced_calls.saturating_add(row.unpriced_calls);
        if let Some(cost) = row.cost_nusd {
            total.cost_nusd = Some(total.cost_nusd.unwrap_or(0).saturating_add(cost));
        }
        let r = sums_of(row);
        total.input = total.input.saturating_add(r.input);
        total.output = total.output.saturating_add(r.output);
        total.reasoning = total.reasoning.saturating_add(r.reasoning);
        total.cached_input = total.cached_input.saturating_add(r.cached_input);
        total.total = total.total.saturating_add(r.total);
    }
    let data = rows
        .iter()
        .map(|r| UsageRowDto {
            key: Some(r.key.clone()),
            calls: r.calls,
            unpriced_calls: r.unpriced_calls,
            tokens: sums_of(r).into(),
            cost_usd: r.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
        })
        .collect();
    Json(UsageDto {
        group_by: group_by.as_str(),
        from: from_ms.map(rfc3339),
        to: to_ms.map(rfc3339),
        conversation_id: filter.conversation_id,
        data,
        total: UsageRowDto {
            key: None,
            calls,
            unpriced_calls,
            tokens: total.into(),
            cost_usd: total.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
        },
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parses_rfc3339_variants_and_dates() {
        let jan31 = 1_769_817_600_000; // 2026-01-31T00:00:00Z
        let ok = |text: &str| parse_time("from", text).unwrap_or_else(|p| panic!("{}", p.detail));
        assert_eq!(ok("2026-01-31"), jan31);
        assert_eq!(ok("2026-01-31T00:00:00Z"), jan31);
        assert_eq!(ok("2026-01-31T00:00:00"), jan31);
        assert_eq!(ok("2026-01-31 00:00:00"), jan31);
        assert_eq!(ok("2026-01-31T00:00:00.250Z"), jan31 + 250);
        assert_eq!(ok("2026-01-31T02:00:00+02:00"), jan31);
        assert_eq!(ok("2026-01-30T22:30:00-01:30"), jan31);
        assert_eq!(ok("2026-01-31T00:00:00.5+00:00"), jan31 + 500);
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-01-31T25:00:00Z",
            "2026-01-31T00:00:00+24:00",
            "2026-01-31T00:00:00+ab:00",
            "1700000000",
            "1969-12-31T23:59:59Z",
            "2026-01-31T00:00:00é+0",
            "2026-01-31T00:00:00+01:0é",
        ] {
            let problem = parse_time("to", bad).expect_err(bad);
            assert!(
                problem
                    .detail
                    .starts_with(&format!("to: {bad:?} is not an RFC 3339 time")),
                "{bad}: {}",
                problem.detail
            );
        }
    }
}
