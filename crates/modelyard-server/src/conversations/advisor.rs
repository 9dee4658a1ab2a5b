//! The advisor: a server-side tool that consults the model of the `advisor`
//! operation (docs/design.md#turn-model, docs/design.md#advisor) in the middle of a turn.
//!
//! The chat model calls `advisor` with `{"question": "..."}`. The advisor
//! model gets a system prompt (the advisor LLM config's, else
//! [`ADVISOR_INSTRUCTION`]) and one user message: the conversation so far
//! (its last [`ADVISOR_INPUT_CHARS`] characters) and the question. Its answer
//! streams to the conversation's subscribers as transient events
//!
//! - `advisor.phase` `{turnId, toolCallId, phase}` with phase
//!   `preparing_context`, `waiting_for_response`, `streaming`,
//!   `finalizing_result`;
//! - `advisor.output` `{turnId, toolCallId, delta}`;
//!
//! and the chat model receives, whether or not anyone watches, the tool
//! result `{"type":"advice","advice":…,"advisorModel":…,"reasoningLevel":…,
//! "remainingUses":n}` (`reasoningLevel`: the `reasoning_effort` the
//! advisor call was sent with — from the advisor's LLM config — or null)
//! — or `{"type":"error","error":…,"remainingUses":n}` (an error result the
//! model sees) when the advisor fails, the use limit
//! ([`crate::config::TurnsConfig::advisor_max_uses`]) is reached or the
//! arguments are not a question.
//!
//! Each consultation is its own LLM session (operation `advisor`), a child of
//! the turn's session; its tokens count in the turn's and conversation's
//! totals through the tool message's `usage`, attributed to the advisor's
//! model.

use modelyard_core::conversation::{ConversationRecord, MessageRecord, Part, TokenUsage};
use modelyard_core::turn_model::resolve_turn_model;
use modelyard_store::{LlmConfigRow, NewLlmSession, RecordedSession};
use serde_json::{json, Map, Value};

use super::call::{stream_call, CallEnd};
use super::configs::TurnConfigs;
use super::engine::publish;
use super::live::LiveTurn;
use crate::app::AppState;
use crate::routing::Destination;
use crate::service::operations::message_text;

/// The tool's function name.
pub const ADVISOR_TOOL: &str = "advisor";
/// The operation the advisor's model is resolved and recorded under.
pub const ADVISOR_OPERATION: &str = "advisor";
/// How much of the conversation's text (the end of it) the advisor sees.
pub const ADVISOR_INPUT_CHARS: usize = 24_000;
/// The advisor's system prompt when its LLM config has none.
pub const ADVISOR_INSTRUCTION: &str = "You are an advisor. Another assistant is in the middle \
     of answering the user and asks you a question about the conversation below. Answer the \
     question with concise, concrete advice for that assistant.";

/// The OpenAI `tools` entry offered to the chat model.
pub fn tool_definition() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": ADVISOR_TOOL,
            "description": "Ask a stronger advisor model for advice. It sees the conversation \
                            so far. Use it when the task is hard or you are unsure.",
            "parameters": {
                "type": "object",
                "properties": {
                    "question": {"type": "string", "description": "What to ask the advisor."}
                },
                "required": ["question"]
            }
        }
    })
}

/// The resolved advisor model of a conversation.
#[derive(Debug, Clone)]
pub struct Advisor {
    /// Where its calls go: one deployment or a route.
    pub destination: Destination,
    /// The LLM config that supplies options and system prompt, if any.
    pub llm_config: Option<LlmConfigRow>,
    /// The config snapshot its LLM sessions record.
    pub config: modelyard_core::llm_config::ConfigSnapshot,
}

/// Resolves the `advisor` operation's model for `conversation`: its
/// `llmOverrides.advisor`, its `llmId`, the `advisor` preset, then the
/// server default (docs/design.md#turn-model).
///
/// # Errors
/// A message saying why no advisor model is available.
pub async fn resolve(app: &AppState, conversation: &ConversationRecord) -> Result<Advisor, String> {
    let configs = TurnConfigs::load(app, conversation, ADVISOR_OPERATION)
        .await
        .map_err(|err| err.to_string())?;
    let resolved =
        resolve_turn_model(&configs.input(ADVISOR_OPERATION, None, None)).ok_or_else(|| {
            "no advisor model: set llmOverrides.advisor, [defaults.presets.advisor] or a server \
             default model"
                .to_owned()
        })?;
    let llm_config = configs
        .supplying(resolved.llm_config_id.as_deref())
        .cloned();
    let destination = app
        .destination(Some(&resolved.model))
        .map_err(|e| e.to_string())?
        .for_llm_config(&app.registry, llm_config.as_ref())
        .map_err(|e| e.to_string())?;
    let config = crate::service::turn_target::config_snapshot(
        Some(resolved.resolved_from),
        &destination,
        llm_config.as_ref(),
    );
    Ok(Advisor {
        destination,
        llm_config,
        config,
    })
}

/// What a consultation gives the turn.
#[derive(Debug)]
pub struct Consultation {
    /// The tool result text (JSON) the chat model receives.
    pub content: String,
    /// Whether it is an error result.
    pub is_error: bool,
    /// The advisor's model id, when it was consulted.
    pub model_id: Option<String>,
    /// The advisor call's usage, when it was consulted.
    pub usage: Option<TokenUsage>,
    /// Set when the turn was cancelled or interrupted during the call.
    pub stopped: Option<CallEnd>,
}

fn refusal(error: String, remaining: u32) -> Consultation {
    Consultation {
        content: json!({"type": "error", "error": error, "remainingUses": remaining}).to_string(),
        is_error: true,
        model_id: None,
        usage: None,
        stopped: None,
    }
}

/// Consults the advisor for tool call `call_id` with the call's JSON
/// `arguments`. `uses` counts this turn's consultations so far and is
/// incremented when the advisor is actually called; `parent_session` is the
/// turn's LLM session.
#[allow(clippy::too_many_arguments)]
pub async fn consult(
    app: &AppState,
    live: &LiveTurn,
    advisor: &Advisor,
    call_id: &str,
    arguments: &str,
    uses: &mut u32,
    max_uses: u32,
    parent_session: &str,
) -> Consultation {
    let remaining_now = max_uses.saturating_sub(*uses);
    if remaining_now == 0 {
        return refusal(
            format!(
                "the advisor can be consulted at most {max_uses} times per turn; continue \
                 without it"
            ),
            0,
        );
    }
    let question = serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|v| v.get("question")?.as_str().map(str::to_owned))
        .filter(|q| !q.trim().is_empty());
    let Some(question) = question else {
        return refusal(
            format!(
                "the advisor expects arguments {{\"question\": \"...\"}} with a non-empty \
                 question; got {}",
                modelyard_upstream::openai::truncate(arguments, 200)
            ),
            remaining_now,
        );
    };
    *uses += 1;
    let remaining = max_uses - *uses;
    let phase = |phase: &str| {
        publish(
            app,
            live,
            "advisor.phase",
            json!({"turnId": live.turn_id, "toolCallId": call_id, "phase": phase}),
        );
    };

    phase("preparing_context");
    let messages = app
        .store
        .list_messages(&app.project, &live.conversation_id)
        .await
        .unwrap_or_default();
    let body = request_body(app, advisor, &messages, &question);
    // The reasoning effort the advisor runs with (its config's), or null.
    let reasoning_level = body.get("reasoning_effort").cloned().unwrap_or(Value::Null);

    phase("waiting_for_response");
    let mut sent = 0;
    let mut on_chunk = |acc: &modelyard_upstream::openai::StreamAccumulator| {
        let text = acc.text();
        if text.len() > sent {
            if sent == 0 {
                phase("streaming");
            }
            publish(
                app,
                live,
                "advisor.output",
                json!({"turnId": live.turn_id, "toolCallId": call_id, "delta": &text[sent..]}),
            );
            sent = text.len();
        }
    };
    let mut streamed = stream_call(
        app,
        live,
        &advisor.destination,
        ADVISOR_OPERATION,
        body,
        false,
        &mut on_chunk,
    )
    .await;
    phase("finalizing_result");

    let model_id = streamed.model_id.clone();
    let summary = streamed.acc.summary();
    let usage = TokenUsage {
        cost_nusd: app.pricing.cost_of(&model_id, &summary.usage).cost_nusd,
        ..TokenUsage::from(summary.usage)
    };
    let records = std::mem::take(&mut streamed.records);
    let session_id = uuid::Uuid::now_v7().to_string();
    app.record_charged(RecordedSession {
        session: NewLlmSession {
            id: session_id.clone(),
            operation: ADVISOR_OPERATION.to_owned(),
            parent_session_id: Some(parent_session.to_owned()),
            conversation_id: Some(live.conversation_id.clone()),
            turn_id: Some(live.turn_id.clone()),
            created_at_ms: streamed.sent_at_ms,
            request_id: None,
            key_id: app.key_id.clone(),
            config: Some(advisor.config.clone()),
        },
        calls: records
            .into_iter()
            .map(|r| r.into_call(&session_id))
            .collect(),
    })
    .await;

    let (content, is_error, stopped) = match streamed.end {
        CallEnd::Done => (
            json!({
                "type": "advice",
                "advice": summary.text.unwrap_or_default(),
                "advisorModel": model_id,
                "reasoningLevel": reasoning_level,
                "remainingUses": remaining,
            }),
            false,
            None,
        ),
        CallEnd::Failed(error) => (
            json!({
                "type": "error",
                "error": format!("the advisor failed: {error}"),
                "advisorModel": model_id,
                "reasoningLevel": reasoning_level,
                "remainingUses": remaining,
            }),
            true,
            None,
        ),
        end @ (CallEnd::Cancelled | CallEnd::Interrupted) => (
            json!({
                "type": "error",
                "error": "the turn was stopped while the advisor answered",
                "advisorModel": model_id,
                "reasoningLevel": reasoning_level,
                "remainingUses": remaining,
            }),
            true,
            Some(end),
        ),
    };
    Consultation {
        content: content.to_string(),
        is_error,
        model_id: Some(model_id),
        usage: Some(usage),
        stopped,
    }
}

/// The advisor request: the config's options (`max_tokens` defaulting to
/// `[turns] advisor_max_tokens`), its system prompt or
/// [`ADVISOR_INSTRUCTION`], and one user message with the conversation and
/// the question.
fn request_body(
    app: &AppState,
    advisor: &Advisor,
    messages: &[MessageRecord],
    question: &str,
) -> Value {
    let mut body = Map::new();
    if let Some(config) = &advisor.llm_config {
        config.fields.provider_options.apply_to(&mut body);
    }
    if !body.contains_key("max_tokens") && !body.contains_key("max_completion_tokens") {
        body.insert(
            "max_tokens".into(),
            json!(app.config.turns.advisor_max_tokens),
        );
    }
    let system = advisor
        .llm_config
        .as_ref()
        .and_then(|c| c.fields.system_prompt.clone())
        .unwrap_or_else(|| ADVISOR_INSTRUCTION.to_owned());
    let user = format!(
        "Conversation so far:\n{}\n\nQuestion from the assistant: {question}",
        transcript(messages, ADVISOR_INPUT_CHARS)
    );
    // `model` is each attempt's deployment's, set by `LlmCall::new`.
    crate::service::llm_call::compose(
        "",
        body,
        vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": user}),
        ],
        true,
    )
}

/// `role: text` lines (tool calls as `assistant called name(arguments)`),
/// keeping the last `max_chars` characters.
fn transcript(messages: &[MessageRecord], max_chars: usize) -> String {
    let mut text = String::new();
    for m in messages {
        let line = message_text(m);
        if !line.is_empty() {
            text.push_str(m.role.as_str());
            text.push_str(": ");
            text.push_str(&line);
            text.push('\n');
        }
        for part in &m.parts {
            if let Part::ToolCall {
                name, arguments, ..
            } = part
            {
                text.push_str(&format!("assistant called {name}({arguments})\n"));
            }
        }
    }
    let count = text.chars().count();
    if count > max_chars {
        text = text.chars().skip(count - max_chars).collect();
    }
    text.trim().to_owned()
}
