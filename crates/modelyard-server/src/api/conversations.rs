//! Conversations (tasks): `/v1/conversations` and everything under it.
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

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use modelyard_core::conversation::{
    ConversationRecord, Event, EventPayload, MessageRecord, Part, SelectionSource, TurnRecord,
    TurnStatus,
};
use modelyard_core::llm_config::is_operation_name;
use modelyard_core::turn_model::resolve_turn_model;
use modelyard_core::{ModelRef, ResolveError};
use modelyard_store::{ConversationFilter, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::app::AppState;
use crate::auth::Scoped;
use crate::clock::rfc3339;
use crate::conversations::advisor;
use crate::conversations::bus::BusMessage;
use crate::conversations::configs::TurnConfigs;
use crate::conversations::engine::{run_turn, TurnJob};
use crate::error::Problem;
use crate::registry::{ProviderStatus, RouteError};

pub(crate) fn store_problem(err: StoreError) -> Problem {
    match err {
        StoreError::Conflict { reason } => Problem::conflict(reason),
        StoreError::NotFound { .. } => Problem::not_found(err.to_string()),
        // The database is down or locked: say so (503), not "internal error".
        other if other.is_unavailable() => {
            tracing::warn!(error = %other, "store unavailable");
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "the database is unreachable or busy; try again shortly".into(),
            )
        }
        other => Problem::internal(other),
    }
}

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

/// Event JSON for the SSE stream and history: `{seq, at, type, ...payload}`.
pub fn event_json(e: &Event) -> Value {
    let mut value = serde_json::to_value(&e.payload).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("seq".into(), json!(e.seq));
        map.insert("at".into(), json!(rfc3339(e.at_ms)));
        map.insert("conversationId".into(), json!(e.conversation_id));
    }
    value
}

pub(crate) async fn load(app: &AppState, id: &str) -> Result<ConversationRecord, Problem> {
    match app.store.get_conversation(&app.project, id).await {
        Ok(Some(c)) if !c.deleted => Ok(c),
        Ok(_) => Err(Problem::not_found(format!(
            "no conversation with id {id:?}"
        ))),
        Err(err) => Err(store_problem(err)),
    }
}

/// Result of checking a model id for a selection.
pub(crate) struct Checked {
    /// The composite id to store.
    pub(crate) model: String,
    /// False when the provider is offline and the model could not be checked.
    pub(crate) verified: bool,
}

/// Validates a model selection: unknown provider → 422; a model an online
/// provider does not serve → 422 with suggestions; an offline provider's
/// model is accepted unverified.
pub(crate) fn check_model(app: &AppState, id: &str) -> Result<Checked, Problem> {
    let parsed = ModelRef::parse(id, |p| app.registry.provider(p).is_some())
        .map_err(|e| Problem::unprocessable(format!("invalid model id: {e}")))?;
    let provider_name = match &parsed {
        ModelRef::Composite(m) => m.provider().as_str().to_owned(),
        ModelRef::Bare(_) => match app.registry.resolve(Some(id)) {
            Ok(target) => target.provider.name().to_owned(),
            Err(err) => {
                let detail = match id.split_once('/') {
                    Some((prefix, _)) => format!("unknown provider {prefix:?} in model id {id:?}"),
                    None => err.to_string(),
                };
                return Err(Problem::unprocessable(detail)
                    .with("suggestions", super::favorites::suggestions(app, id)));
            }
        },
    };
    let provider = app.registry.provider(&provider_name).cloned();
    let online = provider
        .as_ref()
        .is_some_and(|p| p.state().status == ProviderStatus::Online);
    match app.registry.resolve(Some(id)) {
        Ok(target) => Ok(Checked {
            model: target.resolution.model_id.to_string(),
            verified: online,
        }),
        Err(RouteError::Resolve(ResolveError::UnknownModel { .. })) if !online => Ok(Checked {
            model: id.to_owned(),
            verified: false,
        }),
        Err(err @ RouteError::Disabled { .. }) => Err(Problem::unprocessable(err.to_string())),
        Err(err) => Err(Problem::unprocessable(err.to_string())
            .with("suggestions", super::favorites::suggestions(app, id))),
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Body of `POST /v1/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    title: Option<String>,
    parent_id: Option<String>,
    model: Option<String>,
    cwd: Option<String>,
    reasoning_effort: Option<String>,
    /// Offer the advisor tool in turns (default false).
    advisor: Option<bool>,
    metadata: Option<Value>,
    llm_id: Option<String>,
    llm_overrides: Option<BTreeMap<String, String>>,
}

fn operation_problem(op: &str) -> Problem {
    Problem::unprocessable(format!(
        "llmOverrides: operation {op:?} must match [a-z][a-z0-9_-]{{0,31}}"
    ))
    .with("field", "llmOverrides")
}

/// Checks every config id of a conversation's `llmId` / `llmOverrides`
/// (operation names too) before anything is written: reads only.
async fn check_llm_ids(
    app: &AppState,
    llm_id: Option<&str>,
    overrides: &[(&str, Option<&str>)],
) -> Result<(), Problem> {
    if let Some(id) = llm_id {
        super::llms::check_config_id(app, "llmId", id).await?;
    }
    for &(op, id) in overrides {
        if !is_operation_name(op) {
            return Err(operation_problem(op));
        }
        if let Some(id) = id {
            super::llms::check_config_id(app, &format!("llmOverrides.{op}"), id).await?;
        }
    }
    Ok(())
}

/// `POST /v1/conversations` → 201 with the conversation.
pub async fn create(
    Scoped(app): Scoped,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    if let Some(metadata) = &body.metadata {
        if !metadata.is_object() {
            return Problem::unprocessable("metadata must be a JSON object").into_response();
        }
    }
    let mut model = match &body.model {
        Some(id) => match check_model(&app, id) {
            Ok(checked) => Some(checked.model),
            Err(problem) => return problem.into_response(),
        },
        None => None,
    };
    if let Some(parent_id) = &body.parent_id {
        match load(&app, parent_id).await {
            // A subtask starts with its parent's selected model.
            Ok(parent) => model = model.or(parent.model),
            Err(_) => {
                return Problem::unprocessable(format!(
                    "parentId: no conversation with id {parent_id:?}"
                ))
                .into_response()
            }
        }
    }
    let llm_overrides = body.llm_overrides.unwrap_or_default();
    let ids: Vec<(&str, Option<&str>)> = llm_overrides
        .iter()
        .map(|(op, id)| (op.as_str(), Some(id.as_str())))
        .collect();
    if let Err(problem) = check_llm_ids(&app, body.llm_id.as_deref(), &ids).await {
        return problem.into_response();
    }
    let id = new_id();
    let payload = EventPayload::ConversationCreated {
        title: body.title,
        parent_id: body.parent_id,
        model,
        cwd: body.cwd,
        reasoning_effort: body.reasoning_effort,
        advisor: body.advisor.unwrap_or(false),
        metadata: body.metadata.unwrap_or_else(|| json!({})),
        llm_id: body.llm_id,
        llm_overrides,
    };
    if let Err(err) = app.append_and_publish(&id, vec![payload]).await {
        return store_problem(err).into_response();
    }
    match load(&app, &id).await {
        Ok(c) => (StatusCode::CREATED, Json(conversation_json(&c))).into_response(),
        Err(problem) => problem.into_response(),
    }
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
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Problem::bad_request(format!("limit must be between 1 and 200, got {limit}"))
            .into_response();
    }
    let before = match query.before.as_deref().map(parse_cursor) {
        Some(Some(cursor)) => Some(cursor),
        Some(None) => {
            return Problem::bad_request("before: not a cursor from nextBefore").into_response()
        }
        None => None,
    };
    let filter = ConversationFilter {
        limit,
        before,
        include_deleted: false,
        parent_id: query.parent_id,
    };
    match app.store.list_conversations(&app.project, &filter).await {
        Ok(rows) => {
            let next = (rows.len() == limit as usize)
                .then(|| rows.last().map(|c| format!("{}_{}", c.updated_at_ms, c.id)))
                .flatten();
            let data: Vec<Value> = rows.iter().map(conversation_json).collect();
            Json(json!({"data": data, "nextBefore": next})).into_response()
        }
        Err(err) => store_problem(err).into_response(),
    }
}

fn parse_cursor(text: &str) -> Option<(i64, String)> {
    let (ms, id) = text.split_once('_')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

/// `GET /v1/conversations/{id}`.
pub async fn show(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match load(&app, &id).await {
        Ok(c) => Json(conversation_json(&c)).into_response(),
        Err(problem) => problem.into_response(),
    }
}

fn double<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /v1/conversations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchBody {
    title: Option<String>,
    metadata: Option<Value>,
    /// The default LLM config; `null` clears.
    #[serde(default, deserialize_with = "double")]
    llm_id: Option<Option<String>>,
    /// Merged into the overrides: a `null` value removes that operation's
    /// override; `null` for the whole map clears them all.
    #[serde(default, deserialize_with = "double")]
    llm_overrides: Option<Option<BTreeMap<String, Option<String>>>>,
}

/// `PATCH /v1/conversations/{id}`: title, metadata, `llmId` and
/// `llmOverrides`. Every config id is checked before anything is written.
pub async fn patch(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    body: Result<Json<PatchBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    if body.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Problem::unprocessable("metadata must be a JSON object").into_response();
    }
    let conversation = match load(&app, &id).await {
        Ok(c) => c,
        Err(problem) => return problem.into_response(),
    };
    let empty = BTreeMap::new();
    let override_changes = match &body.llm_overrides {
        Some(Some(changes)) => changes,
        _ => &empty,
    };
    let ids: Vec<(&str, Option<&str>)> = override_changes
        .iter()
        .map(|(op, id)| (op.as_str(), id.as_deref()))
        .collect();
    if let Err(problem) =
        check_llm_ids(&app, body.llm_id.as_ref().and_then(Option::as_deref), &ids).await
    {
        return problem.into_response();
    }
    let mut payloads = Vec::with_capacity(2);
    if body.title.is_some() || body.metadata.is_some() {
        payloads.push(EventPayload::ConversationUpdated {
            title: body.title,
            metadata: body.metadata,
        });
    }
    let llm_id = body.llm_id.filter(|new| *new != conversation.llm_id);
    let llm_overrides = body
        .llm_overrides
        .map(|changes| {
            let mut merged = conversation.llm_overrides.clone();
            match changes {
                None => merged.clear(),
                Some(changes) => {
                    for (op, config) in changes {
                        match config {
                            Some(config) => merged.insert(op, config),
                            None => merged.remove(&op),
                        };
                    }
                }
            }
            merged
        })
        .filter(|merged| *merged != conversation.llm_overrides);
    if llm_id.is_some() || llm_overrides.is_some() {
        payloads.push(EventPayload::LlmChanged {
            llm_id,
            llm_overrides,
        });
    }
    if let Err(err) = app.append_and_publish(&id, payloads).await {
        return store_problem(err).into_response();
    }
    show(Scoped(app), Path(id)).await
}

/// `DELETE /v1/conversations/{id}`: soft delete, 204.
pub async fn delete(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    if let Err(problem) = load(&app, &id).await {
        return problem.into_response();
    }
    match app
        .append_and_publish(&id, vec![EventPayload::ConversationDeleted {}])
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => store_problem(err).into_response(),
    }
}

/// `GET /v1/conversations/{id}/messages`: `{data: [message]}` in order; each
/// assistant message has its `modelId` and `usage`.
pub async fn messages(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    if let Err(problem) = load(&app, &id).await {
        return problem.into_response();
    }
    match app.store.list_messages(&app.project, &id).await {
        Ok(rows) => {
            Json(json!({"data": rows.iter().map(message_json).collect::<Vec<_>>()})).into_response()
        }
        Err(err) => store_problem(err).into_response(),
    }
}

/// `GET /v1/conversations/{id}/turns`: `{data: [turn]}`.
pub async fn turns(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    if let Err(problem) = load(&app, &id).await {
        return problem.into_response();
    }
    match app.store.list_turns(&app.project, &id).await {
        Ok(rows) => {
            Json(json!({"data": rows.iter().map(turn_json).collect::<Vec<_>>()})).into_response()
        }
        Err(err) => store_problem(err).into_response(),
    }
}

/// `GET /v1/conversations/{id}/model` → `{conversationId, model}`.
pub async fn get_model(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match load(&app, &id).await {
        Ok(c) => Json(json!({"conversationId": c.id, "model": c.model})).into_response(),
        Err(problem) => problem.into_response(),
    }
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
    body: Result<Json<ModelBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    let conversation = match load(&app, &id).await {
        Ok(c) => c,
        Err(problem) => return problem.into_response(),
    };
    let (payload, verified) = match body.model {
        None => (
            EventPayload::ModelCleared {
                previous: conversation.model.clone(),
                source: SelectionSource::Api,
            },
            true,
        ),
        Some(model) => match check_model(&app, &model) {
            Ok(checked) => (
                EventPayload::ModelSelected {
                    model: checked.model,
                    previous: conversation.model.clone(),
                    source: SelectionSource::Api,
                },
                checked.verified,
            ),
            Err(problem) => return problem.into_response(),
        },
    };
    if let Err(err) = app.append_and_publish(&id, vec![payload]).await {
        return store_problem(err).into_response();
    }
    match load(&app, &id).await {
        Ok(c) => Json(json!({"conversationId": c.id, "model": c.model, "verified": verified}))
            .into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// `GET /v1/conversations/{id}/settings` → `{conversationId, cwd,
/// reasoningEffort, advisor, advisorModel, advisorError}`: `advisorModel`
/// is the model the advisor tool would consult now (null, with
/// `advisorError` saying why, when none resolves).
pub async fn get_settings(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    match load(&app, &id).await {
        Ok(c) => {
            let (advisor_model, advisor_error) = match advisor::resolve(&app, &c).await {
                Ok(a) => (Some(a.target.resolution.model_id.to_string()), None),
                Err(reason) => (None, Some(reason)),
            };
            Json(json!({
                "conversationId": c.id,
                "cwd": c.cwd,
                "reasoningEffort": c.reasoning_effort,
                "advisor": c.advisor,
                "advisorModel": advisor_model,
                "advisorError": advisor_error,
            }))
            .into_response()
        }
        Err(problem) => problem.into_response(),
    }
}

/// `PATCH /v1/conversations/{id}/settings` with `{cwd?, reasoningEffort?}`
/// (`null` clears a setting; absent leaves it).
pub async fn patch_settings(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    let Some(object) = body.as_object() else {
        return Problem::bad_request("expected a JSON object").into_response();
    };
    let mut cwd = None;
    let mut reasoning_effort = None;
    let mut advisor_setting = None;
    for (key, value) in object {
        if key == "advisor" {
            match value {
                Value::Bool(on) => advisor_setting = Some(*on),
                _ => {
                    return Problem::unprocessable("advisor must be true or false").into_response()
                }
            }
            continue;
        }
        let parsed = match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => {
                return Problem::unprocessable(format!("{key} must be a string or null"))
                    .into_response()
            }
        };
        match key.as_str() {
            "cwd" => cwd = Some(parsed),
            "reasoningEffort" => {
                if let Some(effort) = &parsed {
                    if !["none", "minimal", "low", "medium", "high", "xhigh"]
                        .contains(&effort.as_str())
                    {
                        return Problem::unprocessable(format!("reasoningEffort must be one of none, minimal, low, medium, high, xhigh; got {effort:?}")).into_response();
                    }
                }
                reasoning_effort = Some(parsed)
            }
            other => {
                return Problem::unprocessable(format!(
                    "unknown setting {other:?}; settings are cwd, reasoningEffort and advisor"
                ))
                .into_response()
            }
        }
    }
    let conversation = match load(&app, &id).await {
        Ok(c) => c,
        Err(problem) => return problem.into_response(),
    };
    if advisor_setting == Some(true) {
        if let Err(reason) = advisor::resolve(&app, &conversation).await {
            return Problem::unprocessable(format!("cannot enable the advisor: {reason}"))
                .into_response();
        }
    }
    if cwd.is_some() || reasoning_effort.is_some() || advisor_setting.is_some() {
        let payload = EventPayload::SettingsChanged {
            cwd,
            reasoning_effort,
            advisor: advisor_setting,
        };
        if let Err(err) = app.append_and_publish(&id, vec![payload]).await {
            return store_problem(err).into_response();
        }
    }
    get_settings(Scoped(app), Path(id)).await
}

/// `GET /v1/conversations/{id}/model-history`: every selection change and
/// every turn's resolved model, oldest first.
pub async fn model_history(Scoped(app): Scoped, Path(id): Path<String>) -> Response {
    if let Err(problem) = load(&app, &id).await {
        return problem.into_response();
    }
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let events = match app.store.events_after(&app.project, &id, after, 1000).await {
            Ok(e) => e,
            Err(err) => return store_problem(err).into_response(),
        };
        let done = events.len() < 1000;
        for e in &events {
            after = e.seq;
            let entry = match &e.payload {
                EventPayload::ConversationCreated {
                    model: Some(model),
                    parent_id,
                    ..
                } => {
                    json!({"kind": "selected", "model": model, "previous": null, "source": if parent_id.is_some() { "parent" } else { "api" }})
                }
                EventPayload::ModelSelected {
                    model,
                    previous,
                    source,
                } => {
                    json!({"kind": "selected", "model": model, "previous": previous, "source": source})
                }
                EventPayload::ModelCleared { previous, source } => {
                    json!({"kind": "cleared", "model": null, "previous": previous, "source": source})
                }
                EventPayload::TurnStarted {
                    turn_id,
                    operation,
                    model_id,
                    resolved_from,
                    llm_config_id,
                    ..
                } => json!({
                    "kind": "turn", "turnId": turn_id, "operation": operation, "model": model_id,
                    "resolvedFrom": resolved_from, "llmConfigId": llm_config_id,
                }),
                _ => continue,
            };
            let mut entry = entry;
            entry["seq"] = json!(e.seq);
            entry["at"] = json!(rfc3339(e.at_ms));
            entries.push(entry);
        }
        if done {
            break;
        }
    }
    Json(json!({"conversationId": id, "data": entries})).into_response()
}

/// Body of `POST /v1/conversations/{id}/turns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnBody {
    /// The user's message: a string or OpenAI content parts.
    content: Value,
    /// Per-turn model override (persisted as the selection for `chat`).
    model: Option<String>,
    /// Operation, default `chat`.
    operation: Option<String>,
    /// Answer with the turn's events as SSE instead of 202.
    #[serde(default)]
    stream: bool,
    /// Client-side tools (OpenAI `tools` entries, `type: function`): when
    /// the model calls one, the turn ends in `requires_action`.
    tools: Option<Vec<Value>>,
}

/// Checks client tools: at most `max_tools` (`limits.max_tools`), OpenAI
/// function tools with distinct names (`[a-zA-Z0-9_-]{1,64}`) that do not
/// shadow a server tool.
fn check_tools(tools: &[Value], advisor_on: bool, max_tools: usize) -> Result<(), Problem> {
    if tools.len() > max_tools {
        return Err(Problem::unprocessable(format!(
            "tools: at most {max_tools} tools (limits.max_tools), got {}",
            tools.len()
        )));
    }
    let mut names = std::collections::HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Problem::unprocessable(format!(
                "tools[{i}].type must be \"function\""
            )));
        }
        let name = tool
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let valid = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Problem::unprocessable(format!(
                "tools[{i}].function.name must match [a-zA-Z0-9_-]{{1,64}}, got {name:?}"
            )));
        }
        if advisor_on && name == advisor::ADVISOR_TOOL {
            return Err(Problem::unprocessable(format!(
                "tools[{i}].function.name {name:?} is the server's advisor tool in this conversation"
            )));
        }
        if !names.insert(name) {
            return Err(Problem::unprocessable(format!(
                "tools[{i}].function.name {name:?} appears twice"
            )));
        }
    }
    Ok(())
}

/// `POST /v1/conversations/{id}/turns` → 202 `{turnId, conversationId,
/// modelId, resolvedFrom}`, or with `"stream": true` the conversation's
/// events as SSE until the turn ends. 409 while another turn runs.
pub async fn start_turn(
    Scoped(app): Scoped,
    identity: crate::limits::Identity,
    in_flight: crate::limits::InFlight,
    Path(id): Path<String>,
    body: Result<Json<TurnBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    // A stream slot before anything is written: beyond a cap, a fast 429.
    let slot = match body.stream.then(|| app.streams.try_acquire(&identity)) {
        Some(Err(limit)) => return limit.problem(),
        slot => slot.and_then(Result::ok),
    };
    let content_ok = match &body.content {
        Value::String(s) => !s.is_empty(),
        Value::Array(parts) => !parts.is_empty(),
        _ => false,
    };
    if !content_ok {
        return Problem::unprocessable(
            "content must be a non-empty string or array of content parts",
        )
        .into_response();
    }
    let operation = body.operation.unwrap_or_else(|| "chat".to_owned());
    if !is_operation_name(&operation) {
        return Problem::unprocessable(format!(
            "operation {operation:?} must match [a-z][a-z0-9_-]{{0,31}}"
        ))
        .into_response();
    }
    let conversation = match load(&app, &id).await {
        Ok(c) => c,
        Err(problem) => return problem.into_response(),
    };
    if let Some(running) = &conversation.running_turn_id {
        return Problem::conflict(format!(
            "turn {running} is still running; cancel it or wait"
        ))
        .into_response();
    }
    let client_tools = body.tools.unwrap_or_default();
    let max_tools = app.config.limits.max_tools as usize;
    if let Err(problem) = check_tools(&client_tools, conversation.advisor, max_tools) {
        return problem.into_response();
    }
    let configs = match TurnConfigs::load(&app, &conversation, &operation).await {
        Ok(configs) => configs,
        Err(problem) => return problem.into_response(),
    };
    let resolved = resolve_turn_model(&configs.input(
        &operation,
        body.model.as_deref(),
        conversation.model.as_deref(),
    ));
    let Some(resolved) = resolved else {
        return Problem::unprocessable(
            "no model: pass `model`, select one for the conversation, give it an LLM config \
             (llmId / llmOverrides), or configure [defaults.presets.default] or defaults.model",
        )
        .into_response();
    };
    let llm_config = configs
        .supplying(resolved.llm_config_id.as_deref())
        .cloned();
    let target = match app.registry.resolve(Some(&resolved.model)) {
        Ok(target) => target,
        Err(err) => {
            return Problem::unprocessable(err.to_string())
                .with(
                    "suggestions",
                    super::favorites::suggestions(&app, &resolved.model),
                )
                .into_response()
        }
    };
    // An LLM config's custom baseUrl ([security] allow_custom_base_urls).
    let target = match app.registry.for_llm_config(target, llm_config.as_ref()) {
        Ok(target) => target,
        Err(err) => return Problem::unprocessable(err.to_string()).into_response(),
    };
    let model_id = target.resolution.model_id.to_string();
    let turn_id = new_id();
    let mut payloads = Vec::with_capacity(3);
    // Compare the resolved id: a bare id naming the selected model is no change.
    if resolved.persist_selection && conversation.model.as_deref() != Some(model_id.as_str()) {
        payloads.push(EventPayload::ModelSelected {
            model: model_id.clone(),
            previous: conversation.model.clone(),
            source: SelectionSource::TurnOverride,
        });
    }
    payloads.push(EventPayload::TurnStarted {
        turn_id: turn_id.clone(),
        operation: operation.clone(),
        model_id: model_id.clone(),
        resolved_from: resolved.resolved_from,
        llm_config_id: resolved.llm_config_id.clone(),
        client_tools: (!client_tools.is_empty()).then(|| Value::Array(client_tools.clone())),
    });
    payloads.push(EventPayload::UserMessage {
        message_id: new_id(),
        turn_id: turn_id.clone(),
        content: body.content,
    });
    let accepted = json!({
        "turnId": turn_id,
        "conversationId": id,
        "modelId": model_id,
        "resolvedFrom": resolved.resolved_from,
    });
    let run = Run {
        target,
        operation,
        reasoning_effort: conversation.reasoning_effort.clone(),
        llm_config,
        client_tools,
        session_id: turn_id.clone(),
        parent_session_id: None,
        in_flight,
    };
    launch(
        app,
        id,
        turn_id,
        payloads,
        run,
        body.stream.then_some(slot),
        accepted,
    )
    .await
}

/// What [`launch`] starts: a turn's run (see [`TurnJob`]).
struct Run {
    target: crate::registry::Target,
    operation: String,
    reasoning_effort: Option<String>,
    llm_config: Option<modelyard_store::LlmConfigRow>,
    client_tools: Vec<Value>,
    session_id: String,
    parent_session_id: Option<String>,
    /// The request's slot among `limits.max_concurrent_requests`, handed
    /// to the run.
    in_flight: crate::limits::InFlight,
}

/// Appends the events that start (or resume) a run of `turn_id` — the run's
/// transient events are positioned after the first `turn.started` /
/// `turn.resumed` among them — registers the live turn, publishes the
/// events and spawns the run, which takes over the request's `in_flight`
/// slot. With `stream` (`Some(slot)`), answers with the
/// conversation's events as SSE from the first appended one until the run
/// ends; otherwise 202 with `accepted`.
async fn launch(
    app: AppState,
    id: String,
    turn_id: String,
    payloads: Vec<EventPayload>,
    run: Run,
    stream: Option<Option<crate::limits::StreamSlot>>,
    accepted: Value,
) -> Response {
    // Subscribe before appending, so a streaming caller misses nothing.
    let subscription = stream.is_some().then(|| app.bus.subscribe(&id));
    let events = match app.append_events(&id, payloads).await {
        Ok(events) => events,
        Err(err) => return store_problem(err).into_response(),
    };
    let run_seq = events
        .iter()
        .find(|e| {
            matches!(
                e.payload,
                EventPayload::TurnStarted { .. } | EventPayload::TurnResumed { .. }
            )
        })
        .map(|e| e.seq)
        .unwrap_or_default();
    let last_seq = events.last().map(|e| e.seq).unwrap_or_default();
    let live = app.live.start(&id, &turn_id, run_seq, last_seq);
    for event in &events {
        app.bus
            .publish(&id, BusMessage::Persisted(Arc::new(event.clone())));
    }
    // The request's in-flight slot (`limits.max_concurrent_requests`)
    // passes to the run, which frees it when it ends.
    let run_slot = run.in_flight.take();
    let run = run_turn(TurnJob {
        app: app.clone(),
        live,
        target: run.target,
        operation: run.operation,
        reasoning_effort: run.reasoning_effort,
        llm_config: run.llm_config,
        client_tools: run.client_tools,
        session_id: run.session_id,
        parent_session_id: run.parent_session_id,
    });
    tokio::spawn(async move {
        run.await;
        drop(run_slot);
    });
    match (subscription, stream) {
        (Some(rx), Some(slot)) => {
            let after = events.first().map(|e| e.seq - 1).unwrap_or(0);
            sse_response(
                app,
                id,
                Position {
                    seq: after,
                    transient: None,
                },
                rx,
                Some(turn_id),
                slot,
            )
        }
        _ => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
    }
}

/// `POST /v1/conversations/{id}/turns/{turn_id}/cancel` → 202; the turn
/// ends with `turn.cancelled` and its upstream request is dropped.
pub async fn cancel_turn(
    Scoped(app): Scoped,
    Path((id, turn_id)): Path<(String, String)>,
) -> Response {
    if let Err(problem) = load(&app, &id).await {
        return problem.into_response();
    }
    match app.live.get(&turn_id) {
        Some(turn) if turn.conversation_id == id => {
            turn.cancel.cancel();
            (
                StatusCode::ACCEPTED,
                Json(json!({"turnId": turn_id, "cancelling": true})),
            )
                .into_response()
        }
        _ => match app.store.get_turn(&app.project, &turn_id).await {
            // Waiting for tool results: nothing runs, so cancel it here.
            Ok(Some(turn))
                if turn.conversation_id == id && turn.status == TurnStatus::RequiresAction =>
            {
                let payload = EventPayload::TurnCancelled {
                    turn_id: turn_id.clone(),
                };
                match app.append_and_publish(&id, vec![payload]).await {
                    Ok(_) => (
                        StatusCode::ACCEPTED,
                        Json(json!({"turnId": turn_id, "cancelling": true})),
                    )
                        .into_response(),
                    Err(err) => store_problem(err).into_response(),
                }
            }
            Ok(Some(turn)) if turn.conversation_id == id => Problem::conflict(format!(
                "turn {turn_id} is not running (status {})",
                turn.status.as_str()
            ))
            .into_response(),
            Ok(_) => Problem::not_found(format!("no turn {turn_id:?} in conversation {id:?}"))
                .into_response(),
            Err(err) => store_problem(err).into_response(),
        },
    }
}

/// Body of `POST /v1/conversations/{id}/turns/{turn_id}/tool-results`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolResultsBody {
    /// One result per pending tool call.
    results: Vec<ToolResultBody>,
    /// Answer with the turn's events as SSE instead of 202.
    #[serde(default)]
    stream: bool,
}

/// One client tool result.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolResultBody {
    /// The call it answers.
    tool_call_id: String,
    /// The result: a string is sent as is, other JSON as its text.
    content: Value,
    /// Whether the result reports an error.
    #[serde(default)]
    is_error: bool,
}

/// `POST /v1/conversations/{id}/turns/{turn_id}/tool-results` with
/// `{results: [{toolCallId, content, isError?}], stream?}`: answers every
/// pending client tool call of a `requires_action` turn (exactly once each)
/// and runs the turn again → 202 `{turnId, conversationId, status}`, or
/// SSE like starting a turn. 404 unknown turn; 409 when the turn does not
/// wait for tool results; 422 for a missing, unknown or repeated call id.
pub async fn tool_results(
    Scoped(app): Scoped,
    identity: crate::limits::Identity,
    in_flight: crate::limits::InFlight,
    Path((id, turn_id)): Path<(String, String)>,
    body: Result<Json<ToolResultsBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    // A stream slot before anything is written: beyond a cap, a fast 429.
    let slot = match body.stream.then(|| app.streams.try_acquire(&identity)) {
        Some(Err(limit)) => return limit.problem(),
        slot => slot.and_then(Result::ok),
    };
    let conversation = match load(&app, &id).await {
        Ok(c) => c,
        Err(problem) => return problem.into_response(),
    };
    let turn = match app.store.get_turn(&app.project, &turn_id).await {
        Ok(Some(turn)) if turn.conversation_id == id => turn,
        Ok(_) => {
            return Problem::not_found(format!("no turn {turn_id:?} in conversation {id:?}"))
                .into_response()
        }
        Err(err) => return store_problem(err).into_response(),
    };
    if turn.status != TurnStatus::RequiresAction {
        return Problem::conflict(format!(
            "turn {turn_id} is not waiting for tool results (status {})",
            turn.status.as_str()
        ))
        .into_response();
    }
    let messages = match app.store.list_messages(&app.project, &id).await {
        Ok(messages) => messages,
        Err(err) => return store_problem(err).into_response(),
    };
    let answered: Vec<&str> = messages
        .iter()
        .filter(|m| m.turn_id == turn_id)
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    let pending: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m.turn_id == turn_id)
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolCall { id, name, .. } if !answered.contains(&id.as_str()) => {
                Some((id.as_str(), name.as_str()))
            }
            _ => None,
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (i, result) in body.results.iter().enumerate() {
        if !pending.iter().any(|(p, _)| *p == result.tool_call_id) {
            let ids: Vec<&str> = pending.iter().map(|(p, _)| *p).collect();
            return Problem::unprocessable(format!(
                "results[{i}].toolCallId {:?} is not a pending tool call of turn {turn_id};                  pending: {}",
                result.tool_call_id,
                ids.join(", ")
            ))
            .into_response();
        }
        if !seen.insert(result.tool_call_id.as_str()) {
            return Problem::unprocessable(format!(
                "results[{i}].toolCallId {:?} is answered twice",
                result.tool_call_id
            ))
            .into_response();
        }
    }
    let missing: Vec<&str> = pending
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !seen.contains(p))
        .collect();
    if !missing.is_empty() {
        return Problem::unprocessable(format!(
            "results must answer every pending tool call; missing: {}",
            missing.join(", ")
        ))
        .with("pending", json!(missing))
        .into_response();
    }
    // What the first run had: client tools (from turn.started), config, model.
    let client_tools = match app
        .store
        .events_after(&app.project, &id, turn.started_seq - 1, 1)
        .await
    {
        Ok(events) => match events.into_iter().next().map(|e| e.payload) {
            Some(EventPayload::TurnStarted {
                client_tools: Some(Value::Array(tools)),
                ..
            }) => tools,
            _ => Vec::new(),
        },
        Err(err) => return store_problem(err).into_response(),
    };
    let target = match app.registry.resolve(Some(&turn.model_id)) {
        Ok(target) => target,
        Err(err) => {
            return Problem::unprocessable(format!("cannot resume the turn: {err}")).into_response()
        }
    };
    let llm_config = match &turn.llm_config_id {
        Some(config_id) => match app.store.get_llm_config(&app.project, config_id).await {
            Ok(row) => row,
            Err(err) => return store_problem(err).into_response(),
        },
        None => None,
    };
    let target = match app.registry.for_llm_config(target, llm_config.as_ref()) {
        Ok(target) => target,
        Err(err) => {
            return Problem::unprocessable(format!("cannot resume the turn: {err}")).into_response()
        }
    };
    let mut payloads = vec![EventPayload::TurnResumed {
        turn_id: turn_id.clone(),
    }];
    for result in &body.results {
        let name = pending
            .iter()
            .find(|(p, _)| *p == result.tool_call_id)
            .map(|(_, name)| (*name).to_owned())
            .unwrap_or_default();
        payloads.push(EventPayload::ToolMessage {
            message_id: new_id(),
            turn_id: turn_id.clone(),
            tool_call_id: result.tool_call_id.clone(),
            name,
            content: match &result.content {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
            is_error: result.is_error,
            model_id: None,
            usage: None,
        });
    }
    let run = Run {
        target,
        operation: turn.operation.clone(),
        reasoning_effort: conversation.reasoning_effort.clone(),
        llm_config,
        client_tools,
        session_id: new_id(),
        parent_session_id: Some(turn_id.clone()),
        in_flight,
    };
    let accepted = json!({"turnId": turn_id, "conversationId": id, "status": "running"});
    launch(
        app,
        id,
        turn_id,
        payloads,
        run,
        body.stream.then_some(slot),
        accepted,
    )
    .await
}

/// Where a subscriber is: last persisted seq seen, and within the running
/// turn `(turn_seq, index)` of the last transient event seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    seq: i64,
    transient: Option<(i64, u64)>,
}

/// Parses an SSE id: `seq` for persisted events, `seq.turnSeq.index` for
/// transient ones. Numbers are plain decimal digits that fit (`seq` and
/// `turnSeq` in an `i64`, `index` in a `u64`); a turn's start comes at or
/// before the position (`turnSeq <= seq`). Anything else is `None` (a 400).
fn parse_position(text: &str) -> Option<Position> {
    fn number<T: std::str::FromStr>(part: &str) -> Option<T> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    }
    let mut parts = text.split('.');
    let seq: i64 = number(parts.next()?)?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => Some(Position {
            seq,
            transient: None,
        }),
        (Some(turn_seq), Some(index), None) => {
            let turn_seq: i64 = number(turn_seq)?;
            (turn_seq >= 1 && turn_seq <= seq).then_some(())?;
            Some(Position {
                seq,
                transient: Some((turn_seq, number(index)?)),
            })
        }
        _ => None,
    }
}

/// Query of the events stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this position (same format as SSE ids); `Last-Event-ID` wins.
    after: Option<String>,
}

/// `GET /v1/conversations/{id}/events`: SSE. Persisted events carry
/// `id: <seq>` and `event: <type>`; transient ones `id: <seq>.<turnSeq>.<index>`.
/// After the replay a `caught-up` event (no id) marks the switch to live.
/// Keep-alive comments every 15 s.
pub async fn events(
    Scoped(app): Scoped,
    identity: crate::limits::Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return Problem::bad_request(rejection.body_text()).into_response(),
    };
    // Beyond a stream cap: a fast 429, before any store read.
    let slot = match app.streams.try_acquire(&identity) {
        Ok(slot) => slot,
        Err(limit) => return limit.problem(),
    };
    let conversation = match load(&app, &id).await {
        Ok(conversation) => conversation,
        Err(problem) => return problem.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.after);
    let position = match resume.as_deref().map(parse_position) {
        None => Position {
            seq: 0,
            transient: None,
        },
        Some(Some(p)) if p.seq <= conversation.last_seq => p,
        Some(Some(p)) => {
            return Problem::bad_request(format!(
                "cannot resume from {resume:?}: event {} is past the conversation's last event {}",
                p.seq, conversation.last_seq
            ))
            .into_response()
        }
        Some(None) => {
            return Problem::bad_request(format!(
                "cannot resume from {resume:?}: expected an event id like 12 or 12.10.3"
            ))
            .into_response()
        }
    };
    let rx = app.bus.subscribe(&id);
    sse_response(app, id, position, rx, None, Some(slot))
}

/// The SSE answer; `slot` (`[limits]` stream caps) is held until both the
/// response body and the task that feeds it are gone. The task ends with the
/// feed, at a shutdown, or as soon as the body is dropped (the client went
/// away), even while the conversation is idle and nothing is sent.
fn sse_response(
    app: AppState,
    conversation_id: String,
    from: Position,
    rx: broadcast::Receiver<BusMessage>,
    until_turn: Option<String>,
    slot: Option<crate::limits::StreamSlot>,
) -> Response {
    let (tx, out) = mpsc::channel::<SseEvent>(256);
    // A shutdown ends every stream, so graceful shutdown does not wait on them.
    let shutdown = app.live.shutdown_token();
    let slot = slot.map(Arc::new);
    let task_slot = slot.clone();
    let gone = tx.clone();
    tokio::spawn(async move {
        let _slot = task_slot;
        tokio::select! {
            () = feed(app, conversation_id, from, rx, tx, until_turn) => {}
            () = shutdown.cancelled() => {}
            () = gone.closed() => {}
        }
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), out))
    });
    Sse::new(crate::limits::hold(stream, slot))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The subscriber's position in a turn run that is still running (its
/// transient events sent so far), if any.
fn running_position(
    app: &AppState,
    conversation_id: &str,
    transient: Option<(i64, u64)>,
    last_end_seq: i64,
) -> Option<(i64, u64)> {
    transient.filter(|(turn_seq, _)| {
        *turn_seq > last_end_seq
            && app
                .live
                .of_conversation(conversation_id)
                .is_some_and(|live| live.turn_seq == *turn_seq)
    })
}

/// A persisted event; its id is the subscriber's whole position: `seq`, or
/// `seq.turnSeq.index` when it comes in the middle of a running turn run
/// whose transient events were sent up to `index` (a tool step's
/// `message.assistant`, `message.tool`), so a resume from it neither repeats
/// nor skips them.
fn persisted_sse(e: &Event, running: Option<(i64, u64)>) -> SseEvent {
    let id = match running {
        Some((turn_seq, index)) => format!("{}.{turn_seq}.{index}", e.seq),
        None => e.seq.to_string(),
    };
    SseEvent::default()
        .id(id)
        .event(e.payload.event_type())
        .data(event_json(e).to_string())
}

/// Whether `e` ends the turn's run (`turn.requires_action` too: the client
/// has to act before it goes on).
fn ends_turn(e: &Event, turn_id: &str) -> bool {
    matches!(&e.payload,
        EventPayload::TurnCompleted { turn_id: t }
        | EventPayload::TurnRequiresAction { turn_id: t, .. }
        | EventPayload::TurnFailed { turn_id: t, .. }
        | EventPayload::TurnCancelled { turn_id: t }
        | EventPayload::TurnInterrupted { turn_id: t, .. } if t == turn_id)
}

fn ends_any_turn(e: &Event) -> bool {
    matches!(
        e.payload,
        EventPayload::TurnCompleted { .. }
            | EventPayload::TurnRequiresAction { .. }
            | EventPayload::TurnFailed { .. }
            | EventPayload::TurnCancelled { .. }
            | EventPayload::TurnInterrupted { .. }
    )
}

/// Replays what the subscriber missed, then forwards live events, without
/// gaps or duplicates: persisted events are ordered by seq (a gap is filled
/// from the store), transient ones by (turn, index). A lagging subscriber
/// re-reads from the store and the turn buffer.
///
/// A turn's transient events are sent only while the subscriber is inside
/// that turn (its `turn.started` sent, its end not yet), as one run without
/// holes: from the turn buffer, then live. A turn that ends while the
/// subscriber replays is caught either way: its buffer is taken before the
/// store is read (it outlives the turn), and once its end has been sent its
/// late deltas are dropped (the log holds the text).
async fn feed(
    app: AppState,
    conversation_id: String,
    from: Position,
    mut rx: broadcast::Receiver<BusMessage>,
    tx: mpsc::Sender<SseEvent>,
    until_turn: Option<String>,
) {
    let mut seq = from.seq;
    let mut transient = from.transient;
    // Seq of the last turn end sent: transient events of turns started
    // before it are stale.
    let mut last_end_seq = 0;
    let mut caught_up_sent = false;
    loop {
        // The running turn before the store is read: if it ends during the
        // replay, its buffer still holds the deltas up to its end.
        let running_before = app.live.of_conversation(&conversation_id);
        // Replay persisted events from the store.
        loop {
            let events = match app
                .store
                .events_after(&app.project, &conversation_id, seq, 1000)
                .await
            {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(conversation = %conversation_id, error = %err, "event replay failed");
                    return;
                }
            };
            let done = events.len() < 1000;
            for e in &events {
                // The running turn's deltas that went out live before this
                // event go before it in the replay too.
                if let Some(live) = running_before
                    .as_ref()
                    .filter(|live| live.turn_seq <= seq && live.turn_seq > last_end_seq)
                {
                    let after = match transient {
                        Some((turn_seq, index)) if turn_seq == live.turn_seq => index,
                        _ => 0,
                    };
                    for t in live.since(after).iter().filter(|t| t.after_seq < e.seq) {
                        transient = Some((t.turn_seq, t.index));
                        if tx.send(transient_sse(seq, t)).await.is_err() {
                            return;
                        }
                    }
                }
                seq = e.seq;
                if ends_any_turn(e) {
                    last_end_seq = e.seq;
                }
                if tx
                    .send(persisted_sse(
                        e,
                        running_position(&app, &conversation_id, transient, last_end_seq),
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
                if until_turn.as_deref().is_some_and(|t| ends_turn(e, t)) {
                    return;
                }
            }
            if done {
                break;
            }
        }
        // Replay the running turn's partial output: a turn whose start was
        // sent and whose end was not.
        let live = [app.live.of_conversation(&conversation_id), running_before]
            .into_iter()
            .flatten()
            .find(|live| live.turn_seq <= seq && live.turn_seq >= last_end_seq);
        if let Some(live) = live {
            let after = match transient {
                Some((turn_seq, index)) if turn_seq == live.turn_seq => index,
                _ => 0,
            };
            for t in live.since(after) {
                transient = Some((t.turn_seq, t.index));
                if tx.send(transient_sse(seq, &t)).await.is_err() {
                    return;
                }
            }
        }
        if !caught_up_sent {
            caught_up_sent = true;
            let marker = SseEvent::default()
                .event("caught-up")
                .data(json!({"lastSeq": seq}).to_string());
            if tx.send(marker).await.is_err() {
                return;
            }
        }
        // Live.
        loop {
            match rx.recv().await {
                Ok(BusMessage::Persisted(e)) => {
                    if e.seq <= seq {
                        continue;
                    }
                    if e.seq > seq.saturating_add(1) {
                        break; // a gap: fill it from the store
                    }
                    seq = e.seq;
                    if ends_any_turn(&e) {
                        last_end_seq = e.seq;
                    }
                    if tx
                        .send(persisted_sse(
                            &e,
                            running_position(&app, &conversation_id, transient, last_end_seq),
                        ))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if until_turn.as_deref().is_some_and(|t| ends_turn(&e, t)) {
                        return;
                    }
                }
                Ok(BusMessage::Transient(t)) => {
                    if t.turn_seq < last_end_seq {
                        continue; // its turn ended: the log holds the text
                    }
                    let next = match transient {
                        Some((turn_seq, index)) if turn_seq == t.turn_seq => {
                            index.saturating_add(1)
                        }
                        _ => 1,
                    };
                    if t.index < next {
                        continue; // already sent
                    }
                    if t.index > next || t.turn_seq > seq {
                        // A hole, or a turn whose start was not sent: fill
                        // from the store and the turn buffer.
                        break;
                    }
                    transient = Some((t.turn_seq, t.index));
                    if tx.send(transient_sse(seq, &t)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn transient_sse(seq: i64, t: &crate::conversations::bus::TransientEvent) -> SseEvent {
    let mut data = t.data.clone();
    data["index"] = json!(t.index);
    SseEvent::default()
        .id(format!("{seq}.{}.{}", t.turn_seq, t.index))
        .event(t.event_type)
        .data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(
            parse_position("12"),
            Some(Position {
                seq: 12,
                transient: None
            })
        );
        assert_eq!(
            parse_position("12.10.3"),
            Some(Position {
                seq: 12,
                transient: Some((10, 3))
            })
        );
        assert_eq!(parse_position("x"), None);
        assert_eq!(parse_position("1.2"), None);
        assert_eq!(parse_position("1.2.3.4"), None);
        // Client-supplied: no sign, no overflow, a turn that starts before
        // the position.
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "9223372036854775808",
            "99999999999999999999999",
            "12.-1.3",
            "12.0.3",
            "12.13.3",
            "12.10.-3",
            "12.10.18446744073709551616",
            "12..3",
            "12.10.",
        ] {
            assert_eq!(parse_position(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_position("9223372036854775807.9223372036854775807.18446744073709551615"),
            Some(Position {
                seq: i64::MAX,
                transient: Some((i64::MAX, u64::MAX))
            })
        );
    }
}
