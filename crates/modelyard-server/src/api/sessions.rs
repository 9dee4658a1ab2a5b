//! The LLM-call audit: `GET /v1/llm-sessions`, `GET /v1/llm-sessions/{id}`
//! and `GET /v1/usage` (`GET /v1/llm-calls/{id}` is routed to
//! [`crate::api::calls::show`]).
//!
//! A session as JSON (camelCase; times RFC 3339 UTC; durations ms; tokens):
//! `{id, operation, parentSessionId, conversationId, turnId, createdAt,
//! callCount, modelId (of the last call), provider, status ("ok" | "error"),
//! lastError, startedAt (first call sent), finishedAt (last call completed),
//! durationMs, usage {inputTokens, outputTokens, reasoningTokens,
//! cachedInputTokens, totalTokens}}`; token sums count unreported usage as 0.
//! The single-session view adds `calls` (oldest first, each as
//! `GET /v1/calls/{id}` shows it) and `children` (sessions started by this
//! one, oldest first).
//!
//! Time ranges are `from` (inclusive) and `to` (exclusive), RFC 3339
//! (`2026-01-31T12:00:00Z`, `2026-01-31T12:00:00.5+02:00`, the zone may be
//! left out for UTC) or a plain UTC date (`2026-01-31`). Sessions are
//! selected by their creation time, usage by the calls' sent time.

use std::time::UNIX_EPOCH;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_store::{
    SessionFilter, SessionRow, SessionStatus, UsageGroup, UsageGroupRow, MAX_LIST_LIMIT,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::calls::call_json;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::error::Problem;
use crate::http::ApiQuery;

/// Page size of `GET /v1/llm-sessions` without `limit`.
const DEFAULT_LIMIT: u32 = 50;

/// A session as JSON (see the module docs).
pub(crate) fn session_json(s: &SessionRow) -> Value {
    let duration_ms = s
        .started_at_ms
        .zip(s.finished_at_ms)
        .map(|(started, finished)| finished - started);
    json!({
        "id": s.id,
        "operation": s.operation,
        "parentSessionId": s.parent_session_id,
        "conversationId": s.conversation_id,
        "turnId": s.turn_id,
        "createdAt": rfc3339(s.created_at_ms),
        "callCount": s.call_count,
        "modelId": s.model_id,
        "provider": s.provider,
        "status": s.status.as_str(),
        "lastError": s.last_error,
        "startedAt": s.started_at_ms.map(rfc3339),
        "finishedAt": s.finished_at_ms.map(rfc3339),
        "durationMs": duration_ms,
        "usage": {
            "inputTokens": s.totals.input,
            "outputTokens": s.totals.output,
            "reasoningTokens": s.totals.reasoning,
            "cachedInputTokens": s.totals.cached_input,
            "totalTokens": s.totals.total,
        },
    })
}

/// Parses the time query parameter `name`: RFC 3339 with `Z`, a numeric
/// offset or no zone (UTC), `T` or a space between date and time, any
/// fraction of seconds; or a plain date `YYYY-MM-DD` (midnight UTC). Returns
/// unix milliseconds.
fn parse_time(name: &str, text: &str) -> Result<i64, Problem> {
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
#[derive(Debug, Deserialize)]
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
            let data: Vec<Value> = rows.iter().map(session_json).collect();
            Json(json!({"data": data, "nextBefore": next_before})).into_response()
        }
        Err(err) => crate::http::store_problem(err).into_response(),
    }
}

/// `GET /v1/llm-sessions/{id}`: the session with its `calls` and `children`.
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    let (row, calls) = match app.store.get_session(&app.project, &id).await {
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
    let mut value = session_json(&row);
    value["calls"] = calls.iter().map(|c| call_json(c, true)).collect();
    value["children"] = children.iter().map(session_json).collect();
    Json(value).into_response()
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsageQuery {
    /// `model` (default), `provider`, `operation` or `day`.
    group_by: Option<String>,
    /// Calls sent at or after (RFC 3339).
    from: Option<String>,
    /// Calls sent before (RFC 3339).
    to: Option<String>,
}

fn usage_json(key: Option<&str>, calls: i64, sums: [i64; 5]) -> Value {
    let [input, output, reasoning, cached_input, total] = sums;
    let mut value = json!({
        "calls": calls,
        "inputTokens": input,
        "outputTokens": output,
        "reasoningTokens": reasoning,
        "cachedInputTokens": cached_input,
        "totalTokens": total,
    });
    if let Some(key) = key {
        value["key"] = json!(key);
    }
    value
}

fn sums_of(r: &UsageGroupRow) -> [i64; 5] {
    [r.input, r.output, r.reasoning, r.cached_input, r.total]
}

/// `GET /v1/usage`: token usage per group, ordered by key, with the totals
/// over all groups: `{groupBy, from, to, data: [{key, calls, inputTokens,
/// outputTokens, reasoningTokens, cachedInputTokens, totalTokens}], total:
/// {calls, ...same sums}}`.
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
    let rows = match app
        .store
        .usage(&app.project, group_by, from_ms, to_ms)
        .await
    {
        Ok(rows) => rows,
        Err(err) => return crate::http::store_problem(err).into_response(),
    };
    let mut calls = 0i64;
    let mut total = [0i64; 5];
    for row in &rows {
        calls = calls.saturating_add(row.calls);
        for (sum, n) in total.iter_mut().zip(sums_of(row)) {
            *sum = sum.saturating_add(n);
        }
    }
    let data: Vec<Value> = rows
        .iter()
        .map(|r| usage_json(Some(&r.key), r.calls, sums_of(r)))
        .collect();
    Json(json!({
        "groupBy": group_by.as_str(),
        "from": from_ms.map(rfc3339),
        "to": to_ms.map(rfc3339),
        "data": data,
        "total": usage_json(None, calls, total),
    }))
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
