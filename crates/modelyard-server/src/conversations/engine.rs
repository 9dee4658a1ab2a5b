//! The turn engine.
//!
//! Starting a turn appends, in one transaction, the per-turn model override
//! (`model.selected`, for `chat`), `turn.started` and `message.user`; a
//! second turn while one runs is refused by the fold (409). The turn then
//! runs in its own task: it sends the conversation's messages to the
//! resolved model (streaming), publishes `text.delta` / `reasoning.delta` /
//! `tool_call.delta` transient events, checkpoints the partial text to the
//! store at most every [`CHECKPOINT_EVERY`], and ends by appending
//! `message.assistant` (with model id and usage) and `turn.completed` —
//! or, with the partial answer kept, `turn.failed` / `turn.cancelled`.
//! Every turn is one LLM session of its operation in the call log.
//!
//! At start-up, turns left `running` by a stopped process are closed with
//! `turn.interrupted`, keeping the last checkpointed text.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use modelyard_core::conversation::{EventPayload, Part, TokenUsage};
use modelyard_store::{LlmConfigRow, ProjectId, Store};
use modelyard_upstream::openai::{ChunkKind, StreamAccumulator};
use modelyard_upstream::sse::SseDecoder;
use serde_json::{json, Map, Value};

use super::bus::{BusMessage, EventBus};
use super::live::LiveTurn;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::recorder::CallRecord;
use crate::registry::Target;

/// Longest interval between two checkpoints of a running turn's text.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Appends events and publishes them once committed.
///
/// # Errors
/// The store's error (conflict, not found, database).
pub async fn append_and_publish(
    store: &Store,
    bus: &dyn EventBus,
    project: &ProjectId,
    conversation_id: &str,
    payloads: &[EventPayload],
) -> Result<Vec<modelyard_core::conversation::Event>, modelyard_store::StoreError> {
    let events = store
        .append_events(project, conversation_id, payloads, now_ms())
        .await?;
    for event in &events {
        bus.publish(
            conversation_id,
            BusMessage::Persisted(Arc::new(event.clone())),
        );
    }
    Ok(events)
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
}

/// The upstream request of a turn: the config's provider options (snake_case
/// OpenAI fields, `extra` merged at the top level), the conversation's
/// reasoning effort setting over them, the config's system prompt as the
/// first message, then the conversation's messages — after a compaction, one
/// system message `Summary of the earlier conversation: …` in place of the
/// messages it covers ([`compacted`]); routing's own fields
/// (`model`, `messages`, `stream`, `stream_options`) last, so nothing
/// overrides them.
fn request_body(
    upstream_model: &str,
    messages: &[modelyard_core::conversation::MessageRecord],
    config: Option<&LlmConfigRow>,
    reasoning_effort: Option<&str>,
    summary: Option<(i64, &str)>,
) -> Value {
    let mut body = Map::new();
    if let Some(config) = config {
        config.fields.provider_options.apply_to(&mut body);
    }
    if let Some(effort) = reasoning_effort {
        body.insert("reasoning_effort".into(), json!(effort));
    }
    let system = config
        .and_then(|c| c.fields.system_prompt.as_deref())
        .map(|prompt| json!({"role": "system", "content": prompt}));
    let messages: Vec<Value> = system
        .into_iter()
        .chain(compacted(messages, summary).0)
        .chain(
            compacted(messages, summary)
                .1
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content})),
        )
        .collect();
    body.insert("model".into(), json!(upstream_model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    Value::Object(body)
}

/// The summary system message (when the conversation was compacted through
/// seq `through`) and the messages after it.
pub fn compacted<'a>(
    messages: &'a [modelyard_core::conversation::MessageRecord],
    summary: Option<(i64, &str)>,
) -> (
    Option<Value>,
    &'a [modelyard_core::conversation::MessageRecord],
) {
    match summary {
        None => (None, messages),
        Some((through, text)) => {
            let start = messages.partition_point(|m| m.seq <= through);
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

enum Ending {
    Completed,
    Failed(String),
    Cancelled,
    Interrupted,
}

/// Runs a started turn to its end. Never panics; every way out appends the
/// closing events.
pub async fn run_turn(job: TurnJob) {
    let TurnJob {
        app,
        live,
        target,
        operation,
        reasoning_effort,
        llm_config,
    } = job;
    let conversation_id = live.conversation_id.clone();
    let turn_id = live.turn_id.clone();
    let model_id = target.resolution.model_id.to_string();
    let sent_at_ms = now_ms();
    let mut acc = StreamAccumulator::default();
    let mut status: Option<u16> = None;
    let mut first_token_at_ms = None;
    let mut request_json = String::new();

    let ending = match app
        .store
        .list_messages(&app.project, &conversation_id)
        .await
    {
        Err(err) => Ending::Failed(format!("cannot read the conversation: {err}")),
        Ok(messages) => {
            let conversation = app
                .store
                .get_conversation(&app.project, &conversation_id)
                .await
                .ok()
                .flatten();
            let summary = conversation
                .as_ref()
                .and_then(|c| Some((c.compacted_through_seq?, c.summary.as_deref()?)));
            let body = request_body(
                target.resolution.model_id.model(),
                &messages,
                llm_config.as_ref(),
                reasoning_effort.as_deref(),
                summary,
            );
            request_json = body.to_string();
            tokio::select! {
                ending = stream_answer(&app, &live, &target, Bytes::from(request_json.clone()), &mut acc, &mut status, &mut first_token_at_ms) => ending,
                () = live.cancel.cancelled() => {
                    if live.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                        Ending::Interrupted
                    } else {
                        Ending::Cancelled
                    }
                }
            }
        }
    };

    let summary = acc.summary();
    let mut parts = Vec::new();
    if let Some(reasoning) = &summary.reasoning {
        parts.push(Part::Reasoning {
            text: reasoning.clone(),
        });
    }
    if let Some(text) = &summary.text {
        parts.push(Part::Text { text: text.clone() });
    }
    if let Some(calls) = summary.tool_calls.as_ref().and_then(Value::as_array) {
        for call in calls {
            parts.push(Part::ToolCall {
                id: call["id"].as_str().unwrap_or_default().to_owned(),
                name: call["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                arguments: call["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    let usage = TokenUsage::from(summary.usage);
    let mut payloads = Vec::with_capacity(2);
    // A partial answer is kept on failure and cancel: the record stays readable.
    if !parts.is_empty() || matches!(ending, Ending::Completed) {
        payloads.push(EventPayload::AssistantMessage {
            message_id: uuid::Uuid::now_v7().to_string(),
            turn_id: turn_id.clone(),
            parts,
            model_id: model_id.clone(),
            usage,
            finish_reason: summary.finish_reason.clone(),
        });
    }
    let error = match &ending {
        Ending::Completed => None,
        Ending::Failed(e) => Some(e.clone()),
        Ending::Cancelled => Some("turn cancelled".to_owned()),
        Ending::Interrupted => Some("server shut down during the turn".to_owned()),
    };
    payloads.push(match ending {
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
            partial_text: summary.text.clone(),
        },
    });
    let closed = app
        .store
        .append_events(&app.project, &conversation_id, &payloads, now_ms())
        .await;
    // Forget the turn once its end is committed and before it is published:
    // a subscriber that has the end never finds the turn's buffer, and one
    // that took the buffer before still gets every delta.
    app.live.finish(&turn_id);
    match closed {
        Ok(events) => {
            for event in events {
                app.bus
                    .publish(&conversation_id, BusMessage::Persisted(Arc::new(event)));
            }
        }
        Err(err) => {
            tracing::error!(conversation = %conversation_id, turn = %turn_id, error = %err, "cannot close turn");
        }
    }

    app.recorder.record(
        CallRecord {
            operation,
            conversation_id: Some(conversation_id),
            turn_id: Some(turn_id),
            model_id,
            provider: target.provider.name().to_owned(),
            upstream_model: target.resolution.model_id.model().to_owned(),
            stream: true,
            request_json,
            summary,
            sent_at_ms,
            first_token_at_ms,
            completed_at_ms: now_ms(),
            http_status: status,
            error,
        }
        .into_session(),
    );
}

async fn stream_answer(
    app: &AppState,
    live: &LiveTurn,
    target: &Target,
    body: Bytes,
    acc: &mut StreamAccumulator,
    status: &mut Option<u16>,
    first_token_at_ms: &mut Option<i64>,
) -> Ending {
    let Some(client) = target.provider.client.as_ref() else {
        return Ending::Failed(format!("provider '{}' is disabled", target.provider.name()));
    };
    let mut upstream = match client.chat_completions(body, true).await {
        Ok(upstream) => upstream,
        Err(err) => return Ending::Failed(err.to_string()),
    };
    *status = Some(upstream.status());
    if !(200..300).contains(&upstream.status()) {
        let code = upstream.status();
        let body = upstream.bytes(64 * 1024).await.unwrap_or_default();
        let (message, _, _) = modelyard_upstream::openai::upstream_error_message(&body, 2_000);
        return Ending::Failed(format!(
            "provider '{}' answered HTTP {code}: {message}",
            target.provider.name()
        ));
    }
    let client_model = target.resolution.model_id.to_string();
    let mut decoder = SseDecoder::new();
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut checkpointed_len = 0;
    loop {
        let chunk = match upstream.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                return Ending::Failed(format!(
                    "provider '{}' closed the stream before [DONE]",
                    target.provider.name()
                ))
            }
            Err(err) => return Ending::Failed(err.to_string()),
        };
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            if event.data.as_ref() == b"[DONE]" {
                return Ending::Completed;
            }
            let (text_before, reasoning_before, tools_before) =
                (acc.text().len(), acc.reasoning().len(), acc.has_output());
            match acc.accept(&event.data, &client_model) {
                Ok(ChunkKind::Forward(_)) | Ok(ChunkKind::UsageOnly(_)) => {}
                Ok(ChunkKind::Error(error)) => {
                    let (message, _, _) =
                        modelyard_upstream::openai::upstream_error_message(error.as_bytes(), 2_000);
                    return Ending::Failed(format!(
                        "provider '{}' reported an error mid-stream: {message}",
                        target.provider.name()
                    ));
                }
                Err(reason) => {
                    return Ending::Failed(format!(
                        "provider '{}' sent malformed stream data: {reason}",
                        target.provider.name()
                    ))
                }
            }
            if first_token_at_ms.is_none() && acc.has_output() {
                *first_token_at_ms = Some(now_ms());
            }
            if acc.reasoning().len() > reasoning_before {
                let delta = acc.reasoning()[reasoning_before..].to_owned();
                publish(
                    app,
                    live,
                    "reasoning.delta",
                    json!({"turnId": live.turn_id, "delta": delta}),
                );
            }
            if acc.text().len() > text_before {
                let delta = acc.text()[text_before..].to_owned();
                publish(
                    app,
                    live,
                    "text.delta",
                    json!({"turnId": live.turn_id, "delta": delta}),
                );
            }
            if !tools_before
                && acc.has_output()
                && acc.text().is_empty()
                && acc.reasoning().is_empty()
            {
                publish(
                    app,
                    live,
                    "tool_call.delta",
                    json!({"turnId": live.turn_id}),
                );
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY && acc.text().len() != checkpointed_len {
            checkpointed_len = acc.text().len();
            last_checkpoint = tokio::time::Instant::now();
            if let Err(err) = app
                .store
                .checkpoint_turn(&app.project, &live.turn_id, acc.text(), now_ms())
                .await
            {
                tracing::warn!(turn = %live.turn_id, error = %err, "cannot checkpoint turn");
            }
        }
    }
}

fn publish(app: &AppState, live: &LiveTurn, event_type: &'static str, data: Value) {
    let event = live.push(event_type, data);
    app.bus
        .publish(&live.conversation_id, BusMessage::Transient(event));
}

/// Closes turns that a stopped process left `running` with
/// `turn.interrupted`, keeping their checkpointed text.
pub async fn recover_interrupted(store: &Store, bus: &dyn EventBus) {
    let running = match store.running_turns().await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!(error = %err, "cannot look for interrupted turns");
            return;
        }
    };
    for (project, turn) in running {
        let partial_text = store
            .turn_partial_text(&project, &turn.id)
            .await
            .ok()
            .flatten();
        let payload = EventPayload::TurnInterrupted {
            turn_id: turn.id.clone(),
            partial_text,
        };
        match append_and_publish(store, bus, &project, &turn.conversation_id, &[payload]).await {
            Ok(_) => {
                tracing::warn!(conversation = %turn.conversation_id, turn = %turn.id, "turn interrupted by a restart")
            }
            Err(err) => {
                tracing::error!(turn = %turn.id, error = %err, "cannot close interrupted turn")
            }
        }
    }
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
        let body = request_body("m", &[user("hi")], Some(&config), None, None);
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
        let body = request_body("m", &[user("hi")], Some(&config), Some("high"), None);
        assert_eq!(body["reasoning_effort"], "high");
        // After a compaction through seq 1: the summary replaces message 1.
        let mut later = user("later");
        later.seq = 2;
        let body = request_body("m", &[user("hi"), later], None, None, Some((1, "S")));
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "Summary of the earlier conversation: S"},
                   {"role": "user", "content": "later"}])
        );
        // Without a config: only routing's fields and the messages.
        let body = request_body("m", &[user("hi")], None, None, None);
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "stream": true, "stream_options": {"include_usage": true}})
        );
    }
}
