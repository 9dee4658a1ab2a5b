//! The steps of a run: model calls, their streamed progress (text,
//! reasoning and tool-call events) and the tool calls they make.

use modelyard_core::conversation::MessageRole;
use modelyard_core::conversation::{
    ConversationRecord, EventPayload, MessageRecord, Part, TokenUsage, ToolCallRef,
};
use modelyard_store::{Appended, NewLlmCall, StoreError};
use modelyard_upstream::openai::StreamAccumulator;
use serde_json::{json, Value};

use super::loading::LoadingTicker;
use super::run::{Ending, Outcome};
use super::{publish, TurnJob};
use crate::app::AppState;
use crate::conversations::advisor::{self, Advisor, ADVISOR_TOOL};
use crate::conversations::call::{stream_call, CallEnd};
use crate::conversations::live::LiveTurn;

/// The run's steps; see the [module docs](super).
pub(super) async fn drive(job: &TurnJob, calls: &mut Vec<NewLlmCall>) -> Outcome {
    let TurnJob {
        app,
        live,
        destination,
        ..
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
    let advisor = offered_advisor(app, &conversation).await;
    let client_names: Vec<&str> = job
        .client_tools
        .iter()
        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
        .collect();
    let tools = step_tools(advisor.as_ref(), &job.client_tools);
    let max_steps = app.config.turns.max_tool_steps;
    let max_uses = app.config.turns.advisor_max_uses;
    let mut advisor_uses: Option<u32> = None;

    // The transcript is read once and then kept in memory: the run adds the
    // messages it appends itself. `None`: read it before the next step.
    let mut transcript: Option<Transcript> = None;

    for step in 1..=max_steps {
        let mut current = match transcript.take() {
            Some(t) => t,
            None => match Transcript::read(app, &live.conversation_id).await {
                Ok(t) => t,
                Err(err) => {
                    return Outcome::ended(Ending::Failed(format!(
                        "cannot read the conversation: {err}"
                    )))
                }
            },
        };
        let messages = &current.messages;
        // Consultations earlier in this turn (before a requires_action).
        let uses = advisor_uses.get_or_insert_with(|| {
            messages
                .iter()
                .filter(|m| {
                    m.turn_id == live.turn_id && m.role == MessageRole::Tool && m.model_id.is_some()
                })
                .filter(|m| {
                    m.parts
                        .iter()
                        .any(|p| matches!(p, Part::ToolResult { name, .. } if name == ADVISOR_TOOL))
                })
                .count() as u32
        });
        // The step's request, fitted into the context window
        // (`[turns] context_strategy`): compacted, truncated or refused.
        let body = match super::context::fitted_body(job, &mut current, &tools).await {
            Ok(body) => body,
            Err(error) => return Outcome::ended(Ending::Failed(error)),
        };
        let sent_bytes = crate::service::context::request_bytes(&body);
        let mut progress = Progress::default();
        let mut loading = LoadingTicker::start(app, live, destination);
        let mut on_chunk = |acc: &StreamAccumulator| {
            loading.stop();
            progress.publish(app, live, acc);
        };
        let mut streamed = stream_call(
            app,
            live,
            destination,
            &job.operation,
            body,
            true,
            &mut on_chunk,
        )
        .await;
        drop(loading);
        calls.extend(
            std::mem::take(&mut streamed.records)
                .into_iter()
                .map(|r| r.into_call(&job.session_id)),
        );
        let summary = streamed.acc.summary();
        let usage = TokenUsage::from(summary.usage);
        // What this request's size turned out to be, for the next estimate.
        if let Some(calibration) = usage
            .prompt_tokens
            .and_then(|tokens| crate::service::context::Calibration::new(tokens, sent_bytes))
        {
            app.calibrations.note(&live.conversation_id, calibration);
        }
        let (parts, tool_calls) = progress.parts(&summary);
        let last_text = summary.text.clone();
        let assistant = EventPayload::AssistantMessage {
            message_id: uuid::Uuid::now_v7().to_string(),
            turn_id: live.turn_id.clone(),
            parts,
            model_id: streamed.model_id.clone(),
            usage: TokenUsage {
                cost_nusd: app
                    .pricing
                    .cost_of(&streamed.model_id, &summary.usage)
                    .cost_nusd,
                ..usage
            },
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
            .append_and_publish_folded(&live.conversation_id, vec![assistant])
            .await
        {
            Ok(appended) => {
                live.note_seq(appended.events.last().map_or(0, |e| e.seq));
                current.add(appended);
            }
            Err(err) => {
                return Outcome::ended(Ending::Failed(format!("cannot save the answer: {err}")));
            }
        }
        let mut pending = Vec::new();
        for call in tool_calls {
            let is_client_tool = client_names.contains(&call.name.as_str())
                && !(advisor.is_some() && call.name == ADVISOR_TOOL);
            // A span per tool call the server answers (client tools are
            // answered by the client, after this run).
            let span = if app.traces.enabled() && !is_client_tool {
                app.traces.child(
                    format!("execute_tool {}", call.name),
                    opentelemetry::trace::SpanKind::Internal,
                    vec![
                        opentelemetry::KeyValue::new("gen_ai.operation.name", "execute_tool"),
                        opentelemetry::KeyValue::new("gen_ai.tool.name", call.name.clone()),
                        opentelemetry::KeyValue::new("gen_ai.tool.call.id", call.id.clone()),
                        opentelemetry::KeyValue::new("gen_ai.tool.type", "function"),
                        opentelemetry::KeyValue::new("modelyard.step", i64::from(step)),
                    ],
                )
            } else {
                None
            };
            let (content, is_error, model_id, usage, stopped) = match &advisor {
                Some(advisor) if call.name == ADVISOR_TOOL => {
                    let consult = advisor::consult(
                        app,
                        live,
                        advisor,
                        &call.id,
                        &call.arguments,
                        uses,
                        max_uses,
                        &job.session_id,
                    );
                    let c = match &span {
                        Some(cx) => {
                            use crate::traces::FutureExt as _;
                            consult.with_context(cx.clone()).await
                        }
                        None => consult.await,
                    };
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
            if let Some(cx) = &span {
                crate::traces::end_span(cx, is_error.then_some("tool_error"));
            }
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
                .append_and_publish_folded(&live.conversation_id, vec![message])
                .await
            {
                Ok(appended) => {
                    live.note_seq(appended.events.last().map_or(0, |e| e.seq));
                    current.add(appended);
                }
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
        transcript = current.kept();
    }
    Outcome::ended(Ending::Failed("no model call was made".into()))
}

/// The advisor a turn of `conversation` offers: when the conversation
/// enables it and its model resolves (else it is left out, with a warning).
pub(crate) async fn offered_advisor(
    app: &AppState,
    conversation: &ConversationRecord,
) -> Option<Advisor> {
    if !conversation.advisor {
        return None;
    }
    match advisor::resolve(app, conversation).await {
        Ok(advisor) => Some(advisor),
        Err(reason) => {
            tracing::warn!(conversation = %conversation.id, %reason, "advisor not offered");
            None
        }
    }
}

/// The tools a step offers: the advisor's, then the turn's client tools.
pub(crate) fn step_tools(advisor: Option<&Advisor>, client_tools: &[Value]) -> Vec<Value> {
    advisor
        .map(|_| advisor::tool_definition())
        .into_iter()
        .chain(client_tools.iter().cloned())
        .collect()
}

/// A run's view of the conversation for its requests: the messages and the
/// compaction summary, as of event `last_seq`.
pub(super) struct Transcript {
    pub(super) messages: Vec<MessageRecord>,
    /// `(compacted_through_seq, summary)` after a compaction.
    pub(super) summary: Option<(i64, String)>,
    pub(super) last_seq: i64,
    /// Something else was appended meanwhile: read it again.
    stale: bool,
}

impl Transcript {
    /// Reads the conversation's messages and its compaction summary (none
    /// when the conversation cannot be read: then the transcript is read
    /// again at the next step, as its `last_seq` is 0).
    pub(super) async fn read(app: &AppState, conversation_id: &str) -> Result<Self, StoreError> {
        let conversation = app
            .store
            .get_conversation(&app.project, conversation_id)
            .await
            .ok()
            .flatten();
        let messages = app
            .store
            .list_messages(&app.project, conversation_id)
            .await?;
        let (summary, last_seq) = match conversation {
            Some(c) => (c.compacted_through_seq.zip(c.summary), c.last_seq),
            None => (None, 0),
        };
        Ok(Self {
            messages,
            summary,
            last_seq,
            stale: false,
        })
    }

    /// Adds what the run appended: its messages and the conversation's
    /// summary as the append left it. When other events came in between
    /// (the seqs do not follow on), the transcript is stale.
    fn add(&mut self, appended: Appended) {
        let follows = appended
            .events
            .first()
            .is_some_and(|e| e.seq == self.last_seq + 1);
        match appended.conversation {
            Some(c) if follows && !self.stale => {
                self.messages.extend(appended.messages);
                self.summary = c.compacted_through_seq.zip(c.summary);
                self.last_seq = c.last_seq;
            }
            _ => self.stale = true,
        }
    }

    /// The transcript for the next step, unless it must be read again.
    fn kept(self) -> Option<Self> {
        (!self.stale).then_some(self)
    }
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
