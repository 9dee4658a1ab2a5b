//! Turn use cases: start a turn, resume a `requires_action` turn with the
//! client's tool results, cancel. Starting and resuming append the events
//! that begin a run, register the live turn and spawn the run
//! ([`crate::conversations::engine::run_turn`]).

use modelyard_core::ids::{ConversationId, TurnId};
use modelyard_core::llm_config::ReasoningEffort;
use std::collections::HashSet;
use std::sync::Arc;

use modelyard_core::conversation::{EventPayload, SelectionSource, TurnStatus};
use modelyard_core::llm_config::is_operation_name;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast;

use super::conversations::load_stored;
use super::error::{new_id, ServiceError};
use super::replay::Position;
use crate::app::AppState;
use crate::conversations::advisor;
use crate::conversations::bus::BusMessage;
use crate::conversations::engine::{run_turn, RunOverrides, TurnJob};
use crate::limits::InFlight;

/// What starting a turn takes.
#[derive(Debug)]
pub struct NewTurn {
    /// The user's message: a string or OpenAI content parts.
    pub content: Value,
    /// Per-turn model override (persisted as the selection for `chat`).
    pub model: Option<String>,
    /// Operation, default `chat`.
    pub operation: Option<String>,
    /// Client-side tools (OpenAI `tools` entries, `type: function`).
    pub tools: Option<Vec<Value>>,
    /// This run's instructions and options (not persisted).
    pub overrides: RunOverrides,
}

/// A started (or resumed) run.
#[derive(Debug)]
pub struct Launched {
    /// The turn.
    pub turn_id: String,
    /// The resolved model id (a start).
    pub model_id: String,
    /// How the model was resolved (a start).
    pub resolved_from: Option<modelyard_core::conversation::ResolvedFrom>,
    /// Right before the run's first event: where a feed of the run starts.
    pub from: Position,
    /// The bus subscription, taken before anything was appended, when
    /// asked for.
    pub subscription: Option<broadcast::Receiver<BusMessage>>,
}

/// Checks client tools: at most `max_tools` (`limits.max_tools`), OpenAI
/// function tools with distinct names (`[a-zA-Z0-9_-]{1,64}`) that do not
/// shadow a server tool.
fn check_tools(tools: &[Value], advisor_on: bool, max_tools: usize) -> Result<(), ServiceError> {
    let invalid = |reason: String| ServiceError::invalid_field("tools", reason);
    if tools.len() > max_tools {
        return Err(invalid(format!(
            "tools: at most {max_tools} tools (limits.max_tools), got {}",
            tools.len()
        )));
    }
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(format!("tools[{i}].type must be \"function\"")));
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
            return Err(invalid(format!(
                "tools[{i}].function.name must match [a-zA-Z0-9_-]{{1,64}}, got {name:?}"
            )));
        }
        if advisor_on && name == advisor::ADVISOR_TOOL {
            return Err(invalid(format!(
                "tools[{i}].function.name {name:?} is the server's advisor tool in this conversation"
            )));
        }
        if !names.insert(name) {
            return Err(invalid(format!(
                "tools[{i}].function.name {name:?} appears twice"
            )));
        }
    }
    Ok(())
}

/// Starts a turn of conversation `id`; the run takes over `in_flight`.
/// With `subscribe`, the answer holds a bus subscription taken before the
/// first event was appended.
///
/// # Errors
/// 422s (content, operation, tools, no model, a model that does not
/// route, `context_length_exceeded` with `[turns] context_strategy =
/// "error"`); `conversation_not_found`; `turn_running` (409); the store's.
pub async fn start(
    app: &AppState,
    id: &ConversationId,
    body: NewTurn,
    in_flight: InFlight,
    subscribe: bool,
) -> Result<Launched, ServiceError> {
    let id = id.as_str();
    let content_ok = match &body.content {
        Value::String(s) => !s.is_empty(),
        Value::Array(parts) => !parts.is_empty(),
        _ => false,
    };
    if !content_ok {
        return Err(ServiceError::invalid_field(
            "content",
            "content must be a non-empty string or array of content parts",
        ));
    }
    let operation = body.operation.unwrap_or_else(|| "chat".to_owned());
    if !is_operation_name(&operation) {
        return Err(ServiceError::invalid_field(
            "operation",
            format!("operation {operation:?} must match [a-z][a-z0-9_-]{{0,31}}"),
        ));
    }
    let conversation = load_stored(app, id).await?;
    if let Some(running) = &conversation.running_turn_id {
        return Err(super::arena::pending_conflict(app, &conversation, running).await);
    }
    let client_tools = body.tools.unwrap_or_default();
    let max_tools = app.config.limits.max_tools as usize;
    check_tools(&client_tools, conversation.advisor, max_tools)?;
    let target = super::turn_target::resolve(app, &conversation, &operation, body.model.as_deref())
        .await
        .map_err(|err| err.into_turn_error(app))?;
    let config = target.snapshot();
    let super::turn_target::TurnTarget {
        resolved,
        llm_config,
        destination,
    } = target;
    // `[turns] context_strategy = "error"`: refused before anything is
    // appended when the first request would not fit the context window.
    let first_tools: Vec<Value> = conversation
        .advisor
        .then(advisor::tool_definition)
        .into_iter()
        .chain(client_tools.iter().cloned())
        .collect();
    crate::conversations::engine::check_at_start(
        app,
        id,
        &destination,
        crate::conversations::engine::StartCheck {
            llm_config: llm_config.as_ref(),
            reasoning_effort: conversation.reasoning_effort,
            overrides: &body.overrides,
            tools: &first_tools,
            content: &body.content,
        },
    )
    .await?;
    // A route's name, or the deployment's composite id.
    let model_id = destination.model_id();
    let turn_id = new_id();
    let mut payloads = Vec::with_capacity(3);
    // Compare the resolved id: a bare id naming the selected model is no change.
    if resolved.persist_selection && conversation.model.as_deref() != Some(model_id.as_str()) {
        payloads.push(EventPayload::ModelSelected {
            model: model_id.clone(),
            previous: conversation.model.clone(),
            source: SelectionSource::TurnOverride,
            verified: None,
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
    let job = Run {
        destination,
        operation,
        reasoning_effort: conversation.reasoning_effort,
        llm_config,
        client_tools,
        session_id: turn_id.clone(),
        parent_session_id: None,
        in_flight,
        overrides: body.overrides,
        config,
    };
    let (from, subscription) = launch(app, id, &turn_id, payloads, job, subscribe).await?;
    Ok(Launched {
        turn_id,
        model_id,
        resolved_from: Some(resolved.resolved_from),
        from,
        subscription,
    })
}

/// One client tool result.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolResult {
    /// The call it answers.
    pub tool_call_id: String,
    /// The result: a string is sent as is, other JSON as its text.
    pub content: Value,
    /// Whether the result reports an error.
    #[serde(default)]
    pub is_error: bool,
}

/// Answers every pending client tool call of a `requires_action` turn
/// (exactly once each) and runs the turn again, with `overrides` for that
/// run.
///
/// # Errors
/// `turn_not_found`; `turn_not_waiting` (409); 422 for a missing, unknown or
/// repeated call id; the store's.
pub async fn resume(
    app: &AppState,
    id: &ConversationId,
    turn_id: &TurnId,
    results: Vec<ToolResult>,
    overrides: RunOverrides,
    in_flight: InFlight,
    subscribe: bool,
) -> Result<Launched, ServiceError> {
    let id = id.as_str();
    let turn_id = turn_id.as_str();
    let conversation = load_stored(app, id).await?;
    let turn = match app.store.get_turn(&app.project, turn_id).await? {
        Some(turn) if turn.conversation_id == id => turn,
        _ => return Err(no_turn(id, turn_id)),
    };
    if turn.status != TurnStatus::RequiresAction {
        return Err(ServiceError::conflict(
            "turn_not_waiting",
            format!(
                "turn {turn_id} is not waiting for tool results (status {})",
                turn.status.as_str()
            ),
        ));
    }
    // Facts of the fold: the calls no `message.tool` has answered yet.
    let pending: Vec<(&str, &str)> = turn
        .pending_tool_calls
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .collect();
    let mut seen = HashSet::new();
    for (i, result) in results.iter().enumerate() {
        if !pending.iter().any(|(p, _)| *p == result.tool_call_id) {
            let ids: Vec<&str> = pending.iter().map(|(p, _)| *p).collect();
            return Err(ServiceError::invalid_field(
                format!("results[{i}].toolCallId"),
                format!(
                    "results[{i}].toolCallId {:?} is not a pending tool call of turn {turn_id}; pending: {}",
                    result.tool_call_id,
                    ids.join(", ")
                ),
            ));
        }
        if !seen.insert(result.tool_call_id.as_str()) {
            return Err(ServiceError::invalid_field(
                format!("results[{i}].toolCallId"),
                format!(
                    "results[{i}].toolCallId {:?} is answered twice",
                    result.tool_call_id
                ),
            ));
        }
    }
    let missing: Vec<String> = pending
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !seen.contains(p))
        .map(str::to_owned)
        .collect();
    if !missing.is_empty() {
        return Err(ServiceError::ToolResultsMissing {
            message: format!(
                "results must answer every pending tool call; missing: {}",
                missing.join(", ")
            ),
            missing,
        });
    }
    // What the first run had: client tools (a fact of the fold), config, model.
    let client_tools = turn.client_tools.clone();
    let cannot_resume = |err: &dyn std::fmt::Display| ServiceError::Invalid {
        code: "cannot_resume",
        field: None,
        reason: format!("cannot resume the turn: {err}"),
    };
    let destination = app
        .destination(Some(&turn.model_id))
        .map_err(|err| cannot_resume(&err))?;
    let llm_config = match &turn.llm_config_id {
        Some(config_id) => app.store.get_llm_config(&app.project, config_id).await?,
        None => None,
    };
    let destination = destination
        .for_llm_config(&app.registry, llm_config.as_ref())
        .map_err(|err| cannot_resume(&err))?;
    // The config as it is now: what this run is sent with.
    let config = super::turn_target::config_snapshot(
        Some(turn.resolved_from),
        &destination,
        llm_config.as_ref(),
    );
    let mut payloads = vec![EventPayload::TurnResumed {
        turn_id: turn_id.to_owned(),
    }];
    for result in &results {
        let name = pending
            .iter()
            .find(|(p, _)| *p == result.tool_call_id)
            .map(|(_, name)| (*name).to_owned())
            .unwrap_or_default();
        payloads.push(EventPayload::ToolMessage {
            message_id: new_id(),
            turn_id: turn_id.to_owned(),
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
    let job = Run {
        destination,
        operation: turn.operation.clone(),
        reasoning_effort: conversation.reasoning_effort,
        llm_config,
        client_tools,
        session_id: new_id(),
        parent_session_id: Some(turn_id.to_owned()),
        in_flight,
        overrides,
        config,
    };
    let (from, subscription) = launch(app, id, turn_id, payloads, job, subscribe).await?;
    Ok(Launched {
        turn_id: turn_id.to_owned(),
        model_id: turn.model_id.clone(),
        resolved_from: None,
        from,
        subscription,
    })
}

fn no_turn(id: &str, turn_id: &str) -> ServiceError {
    ServiceError::not_found(
        "turn",
        turn_id,
        format!("no turn {turn_id:?} in conversation {id:?}"),
    )
}

/// Cancels turn `turn_id`: a running one is told to stop (it ends with
/// `turn.cancelled`); one waiting for tool results or an arena pick is
/// cancelled here.
///
/// # Errors
/// `conversation_not_found`, `turn_not_found`; `turn_not_running` (409);
/// the store's.
pub async fn cancel(
    app: &AppState,
    id: &ConversationId,
    turn_id: &TurnId,
) -> Result<(), ServiceError> {
    let id = id.as_str();
    let turn_id = turn_id.as_str();
    load_stored(app, id).await?;
    if let Some(turn) = app.live.get(turn_id).filter(|t| t.conversation_id == id) {
        turn.cancel.cancel();
        return Ok(());
    }
    match app.store.get_turn(&app.project, turn_id).await? {
        // Waiting for tool results or an arena pick: nothing runs, so
        // cancel it here.
        Some(turn)
            if turn.conversation_id == id
                && matches!(
                    turn.status,
                    TurnStatus::RequiresAction | TurnStatus::AwaitingPick
                ) =>
        {
            let payload = EventPayload::TurnCancelled {
                turn_id: turn_id.to_owned(),
            };
            app.append_and_publish(id, vec![payload]).await?;
            Ok(())
        }
        // Running on another replica: its owner cancels it when it next
        // renews its leases (within a second).
        Some(turn)
            if turn.conversation_id == id
                && turn.status == TurnStatus::Running
                && app.config.cluster.is_some()
                && app.store.request_turn_cancel(&app.project, turn_id).await? =>
        {
            Ok(())
        }
        Some(turn) if turn.conversation_id == id => Err(ServiceError::conflict(
            "turn_not_running",
            format!(
                "turn {turn_id} is not running (status {})",
                turn.status.as_str()
            ),
        )),
        _ => Err(no_turn(id, turn_id)),
    }
}

/// What [`launch`] starts: a turn's run (see [`TurnJob`]).
struct Run {
    destination: crate::routing::Destination,
    operation: String,
    reasoning_effort: Option<ReasoningEffort>,
    llm_config: Option<modelyard_store::LlmConfigRow>,
    client_tools: Vec<Value>,
    session_id: String,
    parent_session_id: Option<String>,
    /// The request's slot among `limits.max_concurrent_requests`, handed
    /// to the run.
    in_flight: InFlight,
    overrides: RunOverrides,
    /// The config snapshot the run's LLM session records.
    config: modelyard_core::llm_config::ConfigSnapshot,
}

/// Appends the events that start (or resume) a run of `turn_id` — the run's
/// transient events are positioned after the first `turn.started` /
/// `turn.resumed` among them — registers the live turn, publishes the
/// events and spawns the run, which takes over the request's `in_flight`
/// slot. Returns the position right before the first appended event and,
/// with `subscribe`, a bus subscription taken before the append.
async fn launch(
    app: &AppState,
    id: &str,
    turn_id: &str,
    payloads: Vec<EventPayload>,
    run: Run,
    subscribe: bool,
) -> Result<(Position, Option<broadcast::Receiver<BusMessage>>), ServiceError> {
    // Subscribe before appending, so a streaming caller misses nothing.
    let subscription = subscribe.then(|| app.bus.subscribe(id));
    let events = app.append_events(id, payloads).await?;
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
    // Replicas: this one owns the run; others leave the turn alone while
    // the lease is renewed (docs/design.md#replicas).
    if let Some(cluster) = &app.config.cluster {
        let until = crate::clock::now_ms() + cluster.turn_lease_ms as i64;
        if let Err(err) = app
            .store
            .take_turn_lease(&app.project, turn_id, &cluster.replica_id, until)
            .await
        {
            tracing::warn!(turn = %turn_id, error = %err, "cannot take the turn's lease");
        }
    }
    let live = app.live.start(id, turn_id, run_seq, last_seq);
    for event in &events {
        app.bus.publish(
            &app.project,
            id,
            BusMessage::Persisted(Arc::new(event.clone())),
        );
    }
    // The request's in-flight slot (`limits.max_concurrent_requests`)
    // passes to the run, which frees it when it ends.
    let run_slot = run.in_flight.take();
    let job = run_turn(TurnJob {
        app: app.clone(),
        live,
        destination: run.destination,
        operation: run.operation,
        reasoning_effort: run.reasoning_effort,
        llm_config: run.llm_config,
        client_tools: run.client_tools,
        session_id: run.session_id,
        parent_session_id: run.parent_session_id,
        overrides: run.overrides,
        config: run.config,
    });
    // The run's span: a child of this request's, which it outlives.
    let span = app.traces.child(
        "invoke_agent turn",
        opentelemetry::trace::SpanKind::Internal,
        vec![
            opentelemetry::KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            opentelemetry::KeyValue::new("gen_ai.agent.name", "modelyard"),
            opentelemetry::KeyValue::new("gen_ai.conversation.id", id.to_owned()),
            opentelemetry::KeyValue::new("modelyard.turn_id", turn_id.to_owned()),
        ],
    );
    tokio::spawn(async move {
        match span {
            Some(cx) => {
                use crate::traces::FutureExt as _;
                job.with_context(cx.clone()).await;
                crate::traces::end_span(&cx, None);
            }
            None => job.await,
        }
        drop(run_slot);
    });
    let from = Position::after(events.first().map(|e| e.seq - 1).unwrap_or(0));
    Ok((from, subscription))
}
