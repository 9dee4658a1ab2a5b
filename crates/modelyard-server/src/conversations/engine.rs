//! The turn engine.
//!
//! Starting a turn appends, in one transaction, the per-turn model override
//! (`model.selected`, for `chat`), `turn.started` and `message.user`; a
//! second turn while one runs is refused by the fold (409). The turn then
//! runs in its own task, in steps (the OpenAI tool-call protocol):
//!
//! 1. send the conversation's messages, the tools (the advisor when the
//!    conversation enables it, plus the turn's client tools) and the
//!    config's options to the resolved model (streaming), publishing
//!    `text.delta` / `reasoning.delta` / `tool_call.started` /
//!    `tool_call.delta` transient events and checkpointing the text;
//! 2. without tool calls, end with `message.assistant` (model id, usage)
//!    and `turn.completed` — or, keeping the partial answer, `turn.failed` /
//!    `turn.cancelled`;
//! 3. with tool calls, append `message.assistant`, run the server-side ones
//!    (the advisor, [`super::advisor`]; an unknown name gets an error
//!    result) and append each result as `message.tool`, then publish
//!    `tool_call.completed`. If the model called client tools, end the run
//!    with `turn.requires_action` (the pending calls); `POST
//!    .../tool-results` appends their results and `turn.resumed` and runs
//!    the turn again. Otherwise go back to 1, at most
//!    `[turns] max_tool_steps` model calls per run.
//!
//! Each run of a turn is one LLM session of its operation (id = the turn id
//! for the first run; a resumed run's session is a child of it), with one
//! call per step; advisor consultations are child sessions of the run's.
//!
//! The append that closes a run (the last `message.assistant` and the
//! `turn.*` event) is retried while the store is unavailable, with back-off
//! from [`CLOSE_RETRY_FIRST`] doubling to [`CLOSE_RETRY_MAX`], until it
//! succeeds or the server stops (then start-up recovery closes the turn).
//! The turn stays registered in `LiveTurns` meanwhile, so nothing else
//! closes it twice; it is forgotten once its end is committed or abandoned,
//! even if the run panics.
//!
//! At start-up, turns left `running` by a stopped process are closed with
//! `turn.interrupted`, keeping the last checkpointed text; a sweeper
//! ([`spawn_sweeper`]) does the same, periodically, for turns that are
//! `running` in the store but run nowhere in this process.

use std::sync::Arc;
use std::time::Duration;

use modelyard_core::conversation::{EventPayload, MessageRecord, Part, TokenUsage, ToolCallRef};
use modelyard_store::{LlmConfigRow, NewLlmCall, NewLlmSession, RecordedSession, Store};
use modelyard_upstream::openai::StreamAccumulator;
use serde_json::{json, Map, Value};

use super::advisor::{self, Advisor, ADVISOR_TOOL};
use super::bus::{BusMessage, EventBus};
use super::call::{stream_call, CallEnd};
use super::live::{LiveTurn, LiveTurns};
use crate::app::AppState;
use crate::clock::now_ms;
use crate::registry::Target;

pub use super::call::CHECKPOINT_EVERY;

/// Publishes committed events on the bus, in order.
pub fn publish_events(
    bus: &dyn EventBus,
    conversation_id: &str,
    events: &[modelyard_core::conversation::Event],
) {
    for event in events {
        bus.publish(
            conversation_id,
            BusMessage::Persisted(Arc::new(event.clone())),
        );
    }
}

/// What a running turn needs.
pub struct TurnJob {
    /// App state.
    pub app: AppState,
    /// The live turn (buffer, cancel).
    pub live: Arc<LiveTurn>,
    /// Where to send it.
    pub target: Target,
    /// Operation.
    pub operation: String,
    /// Reasoning effort setting, passed as `reasoning_effort`.
    pub reasoning_effort: Option<String>,
    /// The LLM config that supplies options and system prompt, if any.
    pub llm_config: Option<LlmConfigRow>,
    /// Client-side tools (OpenAI `tools` entries) offered besides the
    /// server's; calls to them end the run in `requires_action`.
    pub client_tools: Vec<Value>,
    /// LLM session of this run: the turn id for the first run.
    pub session_id: String,
    /// The turn's first session, for a resumed run.
    pub parent_session_id: Option<String>,
}

/// The upstream request of a turn step: the config's provider options
/// (snake_case OpenAI fields, `extra` merged at the top level), the
/// conversation's reasoning effort setting over them, the config's system
/// prompt as the first message, then the conversation's messages
/// ([`openai_messages`]) — after a compaction, one system message
/// `Summary of the earlier conversation: …` in place of the messages it
/// covers ([`compacted`]); `tools` when there are any; routing's own fields
/// (`model`, `messages`, `stream`, `stream_options`) last, so nothing
/// overrides them.
fn request_body(
    upstream_model: &str,
    messages: &[MessageRecord],
    config: Option<&LlmConfigRow>,
    reasoning_effort: Option<&str>,
    summary: Option<(i64, &str)>,
    tools: &[Value],
) -> Value {
    let mut body = Map::new();
    if let Some(config) = config {
        config.fields.provider_options.apply_to(&mut body);
    }
    if let Some(effort) = reasoning_effort {
        body.insert("reasoning_effort".into(), json!(effort));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools.to_vec()));
    }
    let system = config
        .and_then(|c| c.fields.system_prompt.as_deref())
        .map(|prompt| json!({"role": "system", "content": prompt}));
    let (summary_message, rest) = compacted(messages, summary);
    let messages: Vec<Value> = system
        .into_iter()
        .chain(summary_message)
        .chain(openai_messages(rest))
        .collect();
    crate::service::llm_call::compose(upstream_model, body, messages, true)
}

/// Text that stands in for the result of a tool call that never got one
/// (the turn failed, was cancelled or interrupted first).
pub const NO_TOOL_RESULT: &str = "(no result: the turn ended before this tool answered)";

/// The stored messages as OpenAI chat messages: user content as is;
/// assistant text with `tool_calls`; tool results as `role: tool` with
/// `tool_call_id`. Reasoning is not sent back. A tool call without a result
/// gets a [`NO_TOOL_RESULT`] one, and a tool result without its call is
/// left out, so the history always satisfies the tool-call protocol.
pub fn openai_messages(messages: &[MessageRecord]) -> Vec<Value> {
    let answered: std::collections::HashSet<&str> = messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
            _ => None,
        })
        .collect();
    let mut called: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role.as_str() {
            "assistant" => {
                let text: String = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<(&str, &str, &str)> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                        } => Some((id.as_str(), name.as_str(), arguments.as_str())),
                        _ => None,
                    })
                    .collect();
                if calls.is_empty() {
                    out.push(json!({"role": "assistant", "content": text}));
                    continue;
                }
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .map(|(id, name, arguments)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": arguments}})
                    })
                    .collect();
                out.push(json!({
                    "role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { Value::String(text) },
                    "tool_calls": tool_calls,
                }));
                for (id, _, _) in calls {
                    called.insert(id);
                    if !answered.contains(id) {
                        out.push(
                            json!({"role": "tool", "tool_call_id": id, "content": NO_TOOL_RESULT}),
                        );
                    }
                }
            }
            "tool" => {
                let id = m.parts.iter().find_map(|p| match p {
                    Part::ToolResult { tool_call_id, .. } => Some(tool_call_id.as_str()),
                    _ => None,
                });
                if let Some(id) = id.filter(|id| called.contains(id)) {
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": m.content}));
                }
            }
            role => out.push(json!({"role": role, "content": m.content})),
        }
    }
    out
}

/// The summary system message (when the conversation was compacted through
/// seq `through`) and the messages after it (tool results whose call the
/// summary covers are dropped with it).
pub fn compacted<'a>(
    messages: &'a [MessageRecord],
    summary: Option<(i64, &str)>,
) -> (Option<Value>, &'a [MessageRecord]) {
    match summary {
        None => (None, messages),
        Some((through, text)) => {
            let mut start = messages.partition_point(|m| m.seq <= through);
            while messages.get(start).is_some_and(|m| m.role == "tool") {
                start += 1;
            }
            (
                Some(json!({
                    "role": "system",
                    "content": format!("Summary of the earlier conversation: {text}"),
                })),
                &messages[start..],
            )
        }
    }
}

/// How a run of a turn ends.
enum Ending {
    Completed,
    Failed(String),
    Cancelled,
    Interrupted,
    RequiresAction(Vec<ToolCallRef>),
}

impl From<CallEnd> for Ending {
    fn from(end: CallEnd) -> Self {
        match end {
            CallEnd::Done => Ending::Completed,
            CallEnd::Failed(e) => Ending::Failed(e),
            CallEnd::Cancelled => Ending::Cancelled,
            CallEnd::Interrupted => Ending::Interrupted,
        }
    }
}

/// What a run leaves to its closing transaction: the last assistant
/// message (not yet appended) and its text, for `turn.interrupted`.
struct Outcome {
    ending: Ending,
    last_message: Option<EventPayload>,
    last_text: Option<String>,
}

impl Outcome {
    fn ended(ending: Ending) -> Self {
        Self {
            ending,
            last_message: None,
            last_text: None,
        }
    }
}

/// Runs a started (or resumed) turn to the end of this run. Never panics;
/// every way out appends the closing events.
pub async fn run_turn(job: TurnJob) {
    // Whatever happens to this task (a panic included), the turn does not
    // stay registered: the sweeper can then close it.
    let _registered = Registered {
        app: job.app.clone(),
        turn_id: job.live.turn_id.clone(),
    };
    let mut calls: Vec<NewLlmCall> = Vec::new();
    let started_ms = now_ms();
    let outcome = drive(&job, &mut calls).await;
    let TurnJob {
        app,
        live,
        operation,
        session_id,
        parent_session_id,
        ..
    } = job;
    let conversation_id = live.conversation_id.clone();
    let turn_id = live.turn_id.clone();
    let mut payloads: Vec<EventPayload> = outcome.last_message.into_iter().collect();
    payloads.push(match outcome.ending {
        Ending::Completed => EventPayload::TurnCompleted {
            turn_id: turn_id.clone(),
        },
        Ending::Failed(error) => EventPayload::TurnFailed {
            turn_id: turn_id.clone(),
            error,
        },
        Ending::Cancelled => EventPayload::TurnCancelled {
            turn_id: turn_id.clone(),
        },
        Ending::Interrupted => EventPayload::TurnInterrupted {
            turn_id: turn_id.clone(),
            partial_text: outcome.last_text,
        },
        Ending::RequiresAction(tool_calls) => EventPayload::TurnRequiresAction {
            turn_id: turn_id.clone(),
            tool_calls,
        },
    });
    let closed = close_run(&app, &conversation_id, &turn_id, payloads).await;
    // Forget the turn once its end is committed and before it is published:
    // a subscriber that has the end never finds the turn's buffer, and one
    // that took the buffer before still gets every delta.
    app.live.finish(&turn_id);
    if let Some(events) = closed {
        publish_events(app.bus.as_ref(), &conversation_id, &events);
    }
    if !calls.is_empty() {
        let created_at_ms = calls.first().map_or(started_ms, |c| c.sent_at_ms);
        app.recorder.record(
            &app.project,
            RecordedSession {
                session: NewLlmSession {
                    id: session_id,
                    operation,
                    parent_session_id,
                    conversation_id: Some(conversation_id),
                    turn_id: Some(turn_id),
                    created_at_ms,
                },
                calls,
            },
        );
    }
}

/// Forgets a turn in [`LiveTurns`] when dropped.
struct Registered {
    app: AppState,
    turn_id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.live.finish(&self.turn_id);
    }
}

/// First wait before the closing append of a turn is tried again.
pub const CLOSE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two tries of a turn's closing append.
pub const CLOSE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Appends the events that close a run. While the store is unavailable
/// ([`modelyard_store::StoreError::is_unavailable`]: down, locked, pool
/// exhausted) the append is tried again after [`CLOSE_RETRY_FIRST`],
/// doubling up to [`CLOSE_RETRY_MAX`], until it succeeds or the server
/// halts (the shutdown deadline; start-up recovery then closes the turn as
/// `interrupted`). Any other error is logged and the turn left to the
/// sweeper. The committed events, or `None`.
async fn close_run(
    app: &AppState,
    conversation_id: &str,
    turn_id: &str,
    payloads: Vec<EventPayload>,
) -> Option<Vec<modelyard_core::conversation::Event>> {
    let mut delay = CLOSE_RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        match app.append_events(conversation_id, payloads.clone()).await {
            Ok(events) => {
                if failures > 0 {
                    tracing::info!(conversation = %conversation_id, turn = %turn_id, failures, "turn closed after the store came back");
                }
                return Some(events);
            }
            Err(err) if err.is_unavailable() => {
                failures += 1;
                // Log the first failure and then every ~minute, not every try.
                if failures == 1 || failures % 12 == 0 {
                    tracing::warn!(conversation = %conversation_id, turn = %turn_id, error = %err, failures, "cannot close turn yet: the store is unavailable; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = app.halt.cancelled() => {
                        tracing::warn!(conversation = %conversation_id, turn = %turn_id, "server stopping with the turn not closed; start-up recovery will close it");
                        return None;
                    }
                }
                delay = (delay * 2).min(CLOSE_RETRY_MAX);
            }
            Err(err) => {
                tracing::error!(conversation = %conversation_id, turn = %turn_id, error = %err, "cannot close turn; the sweeper will close it as interrupted");
                return None;
            }
        }
    }
}

/// The run's steps; see the module docs.
async fn drive(job: &TurnJob, calls: &mut Vec<NewLlmCall>) -> Outcome {
    let TurnJob {
        app, live, target, ..
    } = job;
    let conversation = match app
        .store
        .get_conversation(&app.project, &live.conversation_id)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return Outcome::ended(Ending::Failed("the conversation is gone".into())),
        Err(err) => {
            return Outcome::ended(Ending::Failed(format!(
                "cannot read the conversation: {err}"
            )))
        }
    };
    let advisor: Option<Advisor> = if conversation.advisor {
        match advisor::resolve(app, &conversation).await {
            Ok(advisor) => Some(advisor),
            Err(reason) => {
                tracing::warn!(conversation = %conversation.id, %reason, "advisor not offered");
                None
            }
        }
    } else {
        None
    };
    let client_names: Vec<&str> = job
        .client_tools
        .iter()
        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
        .collect();
    let tools: Vec<Value> = advisor
        .as_ref()
        .map(|_| advisor::tool_definition())
        .into_iter()
        .chain(job.client_tools.iter().cloned())
        .collect();
    let max_steps = app.config.turns.max_tool_steps;
    let max_uses = app.config.turns.advisor_max_uses;
    let mut advisor_uses: Option<u32> = None;

    for step in 1..=max_steps {
        let messages = match app
            .store
            .list_messages(&app.project, &live.conversation_id)
            .await
        {
            Ok(messages) => messages,
            Err(err) => {
                return Outcome::ended(Ending::Failed(format!(
                    "cannot read the conversation: {err}"
                )))
            }
        };
        let summary = match app
            .store
            .get_conversation(&app.project, &live.conversation_id)
            .await
        {
            Ok(Some(c)) => c.compacted_through_seq.zip(c.summary),
            _ => None,
        };
        // Consultations earlier in this turn (before a requires_action).
        let uses = advisor_uses.get_or_insert_with(|| {
            messages
                .iter()
                .filter(|m| m.turn_id == live.turn_id && m.role == "tool" && m.model_id.is_some())
                .filter(|m| {
                    m.parts
                        .iter()
                        .any(|p| matches!(p, Part::ToolResult { name, .. } if name == ADVISOR_TOOL))
                })
                .count() as u32
        });
        let body = request_body(
            target.resolution.model_id.model(),
            &messages,
            job.llm_config.as_ref(),
            job.reasoning_effort.as_deref(),
            summary.as_ref().map(|(seq, text)| (*seq, text.as_str())),
            &tools,
        );
        let mut progress = Progress::default();
        let mut on_chunk = |acc: &StreamAccumulator| progress.publish(app, live, acc);
        let streamed =
            stream_call(app, live, target, &job.operation, body, true, &mut on_chunk).await;
        calls.push(streamed.record().into_call(&job.session_id));
        let summary = streamed.acc.summary();
        let (parts, tool_calls) = progress.parts(&summary);
        let last_text = summary.text.clone();
        let assistant = EventPayload::AssistantMessage {
            message_id: uuid::Uuid::now_v7().to_string(),
            turn_id: live.turn_id.clone(),
            parts,
            model_id: target.resolution.model_id.to_string(),
            usage: TokenUsage::from(summary.usage),
            finish_reason: summary.finish_reason.clone(),
        };
        let has_parts =
            matches!(&assistant, EventPayload::AssistantMessage { parts, .. } if !parts.is_empty());
        let done = streamed.end == CallEnd::Done;
        if !done || tool_calls.is_empty() {
            // A partial answer is kept on failure and cancel: the record stays readable.
            return Outcome {
                ending: streamed.end.into(),
                last_message: (has_parts || done).then_some(assistant),
                last_text,
            };
        }
        if step == max_steps {
            return Outcome {
                ending: Ending::Failed(format!(
                    "the model still called tools after {max_steps} model calls \
                     ([turns] max_tool_steps)"
                )),
                last_message: Some(assistant),
                last_text,
            };
        }
        match app
            .append_and_publish(&live.conversation_id, vec![assistant])
            .await
        {
            Ok(events) => live.note_seq(events.last().map_or(0, |e| e.seq)),
            Err(err) => {
                return Outcome::ended(Ending::Failed(format!("cannot save the answer: {err}")));
            }
        }
        let mut pending = Vec::new();
        for call in tool_calls {
            let (content, is_error, model_id, usage, stopped) = match &advisor {
                Some(advisor) if call.name == ADVISOR_TOOL => {
                    let c = advisor::consult(
                        app,
                        live,
                        advisor,
                        &call.id,
                        &call.arguments,
                        uses,
                        max_uses,
                        &job.session_id,
                    )
                    .await;
                    (c.content, c.is_error, c.model_id, c.usage, c.stopped)
                }
                _ if client_names.contains(&call.name.as_str()) => {
                    pending.push(call);
                    continue;
                }
                _ => {
                    let offered: Vec<&str> = tools
                        .iter()
                        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                        .collect();
                    let error = if offered.is_empty() {
                        format!("unknown tool {:?}: no tools are available", call.name)
                    } else {
                        format!(
                            "unknown tool {:?}; the tools are: {}",
                            call.name,
                            offered.join(", ")
                        )
                    };
                    (
                        json!({"type": "error", "error": error}).to_string(),
                        true,
                        None,
                        None,
                        None,
                    )
                }
            };
            let message = EventPayload::ToolMessage {
                message_id: uuid::Uuid::now_v7().to_string(),
                turn_id: live.turn_id.clone(),
                tool_call_id: call.id.clone(),
                name: call.name.clone(),
                content,
                is_error,
                model_id,
                usage,
            };
            match app
                .append_and_publish(&live.conversation_id, vec![message])
                .await
            {
                Ok(events) => live.note_seq(events.last().map_or(0, |e| e.seq)),
                Err(err) => {
                    return Outcome::ended(Ending::Failed(format!(
                        "cannot save the result of tool call {}: {err}",
                        call.id
                    )));
                }
            }
            publish(
                app,
                live,
                "tool_call.completed",
                json!({"turnId": live.turn_id, "toolCallId": call.id, "name": call.name,
                       "isError": is_error}),
            );
            if let Some(end) = stopped {
                return Outcome::ended(end.into());
            }
        }
        if !pending.is_empty() {
            return Outcome::ended(Ending::RequiresAction(pending));
        }
    }
    Outcome::ended(Ending::Failed("no model call was made".into()))
}

/// What a chat step has published so far, and the ids of its tool calls.
#[derive(Default)]
struct Progress {
    text: usize,
    reasoning: usize,
    /// Per tool call index: its id (the model's, else one made up) and
    /// how many argument bytes were published.
    calls: Vec<(String, usize)>,
}

impl Progress {
    fn publish(&mut self, app: &AppState, live: &LiveTurn, acc: &StreamAccumulator) {
        if acc.reasoning().len() > self.reasoning {
            let delta = &acc.reasoning()[self.reasoning..];
            publish(
                app,
                live,
                "reasoning.delta",
                json!({"turnId": live.turn_id, "delta": delta}),
            );
            self.reasoning = acc.reasoning().len();
        }
        if acc.text().len() > self.text {
            let delta = &acc.text()[self.text..];
            publish(
                app,
                live,
                "text.delta",
                json!({"turnId": live.turn_id, "delta": delta}),
            );
            self.text = acc.text().len();
        }
        for index in 0..acc.tool_call_count() {
            let Some((id, name, arguments)) = acc.tool_call(index) else {
                continue;
            };
            if index >= self.calls.len() {
                if name.is_empty() {
                    break; // announced once its name is known
                }
                let id = if id.is_empty() {
                    format!("call_{}", uuid::Uuid::now_v7().simple())
                } else {
                    id.to_owned()
                };
                publish(
                    app,
                    live,
                    "tool_call.started",
                    json!({"turnId": live.turn_id, "toolCallId": id, "name": name}),
                );
                self.calls.push((id, 0));
            }
            let (id, sent) = &mut self.calls[index];
            if arguments.len() > *sent {
                publish(
                    app,
                    live,
                    "tool_call.delta",
                    json!({"turnId": live.turn_id, "toolCallId": id,
                           "delta": &arguments[*sent..]}),
                );
                *sent = arguments.len();
            }
        }
    }

    /// The assistant message's parts (reasoning, text, tool calls) and its
    /// tool calls, with the ids announced in `tool_call.started`.
    fn parts(
        &self,
        summary: &modelyard_upstream::openai::AnswerSummary,
    ) -> (Vec<Part>, Vec<ToolCallRef>) {
        let mut parts = Vec::new();
        if let Some(reasoning) = &summary.reasoning {
            parts.push(Part::Reasoning {
                text: reasoning.clone(),
            });
        }
        if let Some(text) = &summary.text {
            parts.push(Part::Text { text: text.clone() });
        }
        let mut tool_calls = Vec::new();
        if let Some(calls) = summary.tool_calls.as_ref().and_then(Value::as_array) {
            for (index, call) in calls.iter().enumerate() {
                let name = call["function"]["name"].as_str().unwrap_or_default();
                if name.is_empty() {
                    continue;
                }
                let id = match (call["id"].as_str(), self.calls.get(index)) {
                    (_, Some((announced, _))) => announced.clone(),
                    (Some(id), None) if !id.is_empty() => id.to_owned(),
                    _ => format!("call_{}", uuid::Uuid::now_v7().simple()),
                };
                let arguments = call["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                parts.push(Part::ToolCall {
                    id: id.clone(),
                    name: name.to_owned(),
                    arguments: arguments.clone(),
                });
                tool_calls.push(ToolCallRef {
                    id,
                    name: name.to_owned(),
                    arguments,
                });
            }
        }
        (parts, tool_calls)
    }
}

/// Records a transient event in the turn's buffer and publishes it.
pub fn publish(app: &AppState, live: &LiveTurn, event_type: &'static str, data: Value) {
    let event = live.push(event_type, data);
    app.bus
        .publish(&live.conversation_id, BusMessage::Transient(event));
}

/// Closes turns that a stopped process left `running` with
/// `turn.interrupted`, keeping their checkpointed text (at start-up, before
/// any turn runs here).
pub async fn recover_interrupted(store: &Store, bus: &dyn EventBus) {
    close_orphans(store, bus, &|_| false, "turn interrupted by a restart").await;
}

/// Closes, as `turn.interrupted` with their checkpointed text, the turns
/// `running` in the store for which `is_live(turn_id)` is false; how many
/// it closed. A turn that ended meanwhile is left alone (the append is a
/// conflict).
async fn close_orphans(
    store: &Store,
    bus: &dyn EventBus,
    is_live: &(dyn Fn(&str) -> bool + Sync),
    why: &str,
) -> usize {
    let running = match store.running_turns().await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!(error = %err, "cannot look for interrupted turns");
            return 0;
        }
    };
    let mut closed = 0;
    for (project, turn) in running {
        if is_live(&turn.id) {
            continue;
        }
        let partial_text = store
            .turn_partial_text(&project, &turn.id)
            .await
            .ok()
            .flatten();
        let payload = EventPayload::TurnInterrupted {
            turn_id: turn.id.clone(),
            partial_text,
        };
        let appended = store
            .append_events(&project, &turn.conversation_id, &[payload], now_ms())
            .await;
        match appended {
            Ok(events) => {
                publish_events(bus, &turn.conversation_id, &events);
                closed += 1;
                tracing::warn!(conversation = %turn.conversation_id, turn = %turn.id, "{why}");
            }
            Err(modelyard_store::StoreError::Conflict { .. }) => {
                tracing::debug!(turn = %turn.id, "turn ended before it was swept");
            }
            Err(err) => {
                tracing::error!(turn = %turn.id, error = %err, "cannot close interrupted turn")
            }
        }
    }
    closed
}

/// How long a turn must be seen `running` in the store and not live here,
/// twice, before the sweeper closes it: covers the moment between a turn's
/// start being committed and its registration in `LiveTurns`.
pub const SWEEP_CONFIRM: Duration = Duration::from_secs(1);

/// Starts the sweeper: every `every` (the first time one period after
/// start; start-up recovery did the first pass), turns that are `running`
/// in the store but live nowhere in this process — their run died, its
/// closing append was given up, or the request that started them vanished
/// between the commit and the start of the run — are closed as
/// `turn.interrupted` with their checkpointed text, so no conversation
/// stays blocked. A candidate is confirmed after [`SWEEP_CONFIRM`]. Stops
/// when the server starts shutting down.
///
/// This assumes one server per database: with several replicas, a turn
/// running in another replica is not live here and would be closed. Running
/// replicas need turn leases (an owner and an expiry renewed by the running
/// replica) before the sweeper can tell a dead turn from a remote one; that
/// is a later issue.
pub fn spawn_sweeper(app: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    let stop = app.live.shutdown_token();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            sweep(&app, &stop).await;
        }
    })
}

/// One pass of the sweeper; see [`spawn_sweeper`].
async fn sweep(app: &AppState, stop: &tokio_util::sync::CancellationToken) {
    let candidates: Vec<String> = match app.store.running_turns().await {
        Ok(running) => running
            .into_iter()
            .map(|(_, turn)| turn.id)
            .filter(|id| app.live.get(id).is_none())
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "sweeper: cannot list running turns");
            return;
        }
    };
    if candidates.is_empty() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(SWEEP_CONFIRM) => {}
        () = stop.cancelled() => return,
    }
    let live: &LiveTurns = &app.live;
    let is_live = |id: &str| !candidates.iter().any(|c| c == id) || live.get(id).is_some();
    close_orphans(
        &app.store,
        app.bus.as_ref(),
        &is_live,
        "turn running nowhere closed as interrupted",
    )
    .await;
}

#[cfg(test)]
mod tests {
    use modelyard_core::conversation::{MessageRecord, TokenUsage};
    use modelyard_core::llm_config::{LlmSource, ProviderOptions};
    use modelyard_store::LlmConfigFields;

    use super::*;

    fn user(text: &str) -> MessageRecord {
        MessageRecord {
            id: "m".into(),
            conversation_id: "c".into(),
            turn_id: "t".into(),
            role: "user".into(),
            content: json!(text),
            parts: Vec::new(),
            model_id: None,
            usage: TokenUsage::default(),
            finish_reason: None,
            seq: 1,
            created_at_ms: 0,
        }
    }

    #[test]
    fn the_config_supplies_system_prompt_and_options() {
        let config = LlmConfigRow {
            id: "cfg".into(),
            source: LlmSource::User,
            fields: LlmConfigFields {
                display_name: "x".into(),
                model: "p/m".into(),
                system_prompt: Some("Be terse.".into()),
                provider_options: ProviderOptions {
                    temperature: Some(0.1),
                    max_tokens: Some(9),
                    reasoning_effort: Some("low".into()),
                    extra: Some(json!({"min_p": 0.2, "stream": false})),
                    ..ProviderOptions::default()
                },
                base_url: None,
            },
            preset_name: None,
            preset_version: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            deleted: false,
        };
        let body = request_body("m", &[user("hi")], Some(&config), None, None, &[]);
        assert_eq!(
            body,
            json!({
                "min_p": 0.2, "temperature": 0.1, "max_tokens": 9, "reasoning_effort": "low",
                "model": "m",
                "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
                "stream": true, "stream_options": {"include_usage": true},
            })
        );
        // The conversation's own setting wins over the config's.
        let body = request_body("m", &[user("hi")], Some(&config), Some("high"), None, &[]);
        assert_eq!(body["reasoning_effort"], "high");
        // After a compaction through seq 1: the summary replaces message 1.
        let mut later = user("later");
        later.seq = 2;
        let body = request_body("m", &[user("hi"), later], None, None, Some((1, "S")), &[]);
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "Summary of the earlier conversation: S"},
                   {"role": "user", "content": "later"}])
        );
        // Without a config: only routing's fields and the messages.
        let body = request_body("m", &[user("hi")], None, None, None, &[]);
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "stream": true, "stream_options": {"include_usage": true}})
        );
    }
}
