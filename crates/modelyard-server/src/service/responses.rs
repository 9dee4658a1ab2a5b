//! Stored Responses API responses (`POST /v1/responses` with `store: true`)
//! as conversation turns (docs/design.md: conversations, turns, client
//! tools).
//!
//! A stored response IS a run of a turn: the turn's first run is response
//! `resp_<turnId>`; a run resumed with the client's tool results (the next
//! request's `function_call_output` items) is `resp_<turnId>_<seq>`, `seq`
//! being its `turn.resumed` event's. So `previous_response_id` finds the
//! conversation and continues it with its persisted model and history:
//! - without `previous_response_id`, a conversation is created (its model:
//!   the request's) and the response is its first turn;
//! - with it, the conversation's next turn starts — the request's `model`
//!   is a turn override that persists (the turn-model rule) — or, when the
//!   previous response ended with function calls (the turn is
//!   `requires_action`), the turn is resumed with the outputs.
//!
//! Only a conversation's latest response can be continued (no forks).
//! Earlier input items are imported into the conversation before the turn
//! ([`super::imports`]); the run's instructions and sampling options are
//! [`RunOverrides`], not persisted. Reading back ([`read`]) rebuilds a
//! response from the turn and its messages.

use modelyard_core::conversation::MessageRole;
use modelyard_core::conversation::{EventPayload, Part, TurnRecord, TurnStatus};
use modelyard_core::ids::{ConversationId, TurnId};
use modelyard_core::Usage;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::conversations::{self, load_stored, NewConversation};
use super::error::ServiceError;
use super::replay::{self, FeedItem, Position};
use super::turns::{self, Launched, NewTurn, ToolResult};
use crate::app::AppState;
use crate::conversations::bus::BusMessage;
use crate::conversations::engine::RunOverrides;
use crate::limits::InFlight;

/// Most events of one conversation read to find a turn's runs.
const RUN_EVENTS_PAGE: u32 = 10_000;

/// A stored response's id: the turn, and the `turn.resumed` seq of a
/// resumed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseId {
    /// The turn.
    pub turn_id: String,
    /// `None`: the turn's first run.
    pub resumed_seq: Option<i64>,
}

impl ResponseId {
    /// Reads `resp_<turnId>` or `resp_<turnId>_<seq>`.
    pub fn parse(text: &str) -> Option<ResponseId> {
        let rest = text.strip_prefix("resp_")?;
        let (turn_id, resumed_seq) = match rest.split_once('_') {
            Some((turn, seq)) => (turn, Some(seq.parse::<i64>().ok().filter(|s| *s > 0)?)),
            None => (rest, None),
        };
        if turn_id.is_empty() {
            return None;
        }
        Some(ResponseId {
            turn_id: turn_id.to_owned(),
            resumed_seq,
        })
    }
}

impl std::fmt::Display for ResponseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resumed_seq {
            Some(seq) => write!(f, "resp_{}_{seq}", self.turn_id),
            None => write!(f, "resp_{}", self.turn_id),
        }
    }
}

/// What a stored response's request carries, already translated.
#[derive(Debug)]
pub struct ResponseInput {
    /// `model`: a new conversation's model, or a turn override.
    pub model: Option<String>,
    /// `previous_response_id`.
    pub previous_response_id: Option<String>,
    /// What the run does.
    pub action: RunInput,
    /// Client function tools (chat-completions shape).
    pub tools: Vec<Value>,
    /// The run's instructions and options.
    pub overrides: RunOverrides,
    /// `metadata`: a new conversation's.
    pub metadata: Option<Value>,
}

/// What a stored response runs.
#[derive(Debug)]
pub enum RunInput {
    /// A new turn: chat messages imported first, then the user's message.
    Start {
        /// Earlier input items (user, assistant, tool chat messages).
        history: Vec<Value>,
        /// The user's message (a string or content parts).
        content: Value,
    },
    /// The previous response's function calls answered.
    Resume {
        /// One result per call.
        results: Vec<ToolResult>,
    },
}

/// A started run.
#[derive(Debug)]
pub struct Started {
    /// The response id.
    pub response_id: ResponseId,
    /// The conversation.
    pub conversation_id: String,
    /// The run (its feed position and bus subscription).
    pub launched: Launched,
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found("response", id, format!("No response found with id '{id}'."))
}

/// The turn of response `id`, checked to belong to this project.
async fn turn_of(app: &AppState, id: &str) -> Result<(ResponseId, TurnRecord), ServiceError> {
    let parsed = ResponseId::parse(id).ok_or_else(|| not_found(id))?;
    let turn = app
        .store
        .get_turn(&app.project, &parsed.turn_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((parsed, turn))
}

/// The seqs where the turn's runs start: `turn.started`, then each
/// `turn.resumed`.
async fn run_starts(app: &AppState, turn: &TurnRecord) -> Result<Vec<i64>, ServiceError> {
    let events = app
        .store
        .events_after(
            &app.project,
            &turn.conversation_id,
            turn.started_seq - 1,
            RUN_EVENTS_PAGE,
        )
        .await?;
    let mut starts = vec![turn.started_seq];
    starts.extend(events.iter().filter_map(|e| match &e.payload {
        EventPayload::TurnResumed { turn_id } if *turn_id == turn.id => Some(e.seq),
        _ => None,
    }));
    Ok(starts)
}

/// Starts (or resumes) the run of a stored response; the run takes over
/// `in_flight`. With `subscribe`, the answer holds a bus subscription
/// taken before the first event was appended.
///
/// # Errors
/// `response_not_found` for an unknown `previous_response_id`; 400
/// `previous_response_not_latest`, `function_call_output_required`,
/// `no_pending_function_calls`, `previous_response_required`; those of
/// creating a conversation, importing, starting and resuming a turn.
pub async fn create(
    app: &AppState,
    input: ResponseInput,
    in_flight: InFlight,
    subscribe: bool,
) -> Result<Started, ServiceError> {
    let Some(previous) = input.previous_response_id.as_deref() else {
        let RunInput::Start { history, content } = input.action else {
            return Err(ServiceError::bad_request(
                "previous_response_required",
                "function_call_output items answer a stored response: send its id as \
                 previous_response_id",
            ));
        };
        let conversation = conversations::create(
            app,
            NewConversation {
                title: None,
                parent_id: None,
                model: input.model,
                cwd: None,
                reasoning_effort: None,
                advisor: None,
                metadata: input.metadata,
                llm_id: None,
                llm_overrides: None,
            },
        )
        .await?;
        return start(
            app,
            &conversation.id,
            history,
            content,
            None,
            input.tools,
            input.overrides,
            in_flight,
            subscribe,
        )
        .await;
    };
    let (id, turn) = turn_of(app, previous).await?;
    let conversation = load_stored(app, &turn.conversation_id).await?;
    let turns = app.store.list_turns(&app.project, &conversation.id).await?;
    let starts = run_starts(app, &turn).await?;
    let run_start = id.resumed_seq.unwrap_or(turn.started_seq);
    if !starts.contains(&run_start) {
        return Err(not_found(previous));
    }
    let latest = turns.last().is_some_and(|t| t.id == turn.id) && starts.last() == Some(&run_start);
    if !latest {
        return Err(ServiceError::bad_request(
            "previous_response_not_latest",
            format!(
                "previous_response_id {previous} is not the latest response of conversation \
                 {}: only the latest response can be continued",
                conversation.id
            ),
        ));
    }
    match input.action {
        RunInput::Resume { results } => {
            if turn.status != TurnStatus::RequiresAction {
                return Err(ServiceError::bad_request(
                    "no_pending_function_calls",
                    format!(
                        "previous response {previous} has no function calls waiting for \
                         output (status {})",
                        turn.status.as_str()
                    ),
                ));
            }
            let launched = turns::resume(
                app,
                &ConversationId::from_trusted(conversation.id.as_str()),
                &TurnId::from_trusted(turn.id.as_str()),
                results,
                input.overrides,
                in_flight,
                subscribe,
            )
            .await?;
            Ok(Started {
                response_id: ResponseId {
                    turn_id: turn.id.clone(),
                    // The first event appended is `turn.resumed`.
                    resumed_seq: Some(launched.from.seq + 1),
                },
                conversation_id: conversation.id,
                launched,
            })
        }
        RunInput::Start { history, content } => {
            if turn.status == TurnStatus::RequiresAction {
                return Err(ServiceError::bad_request(
                    "function_call_output_required",
                    format!(
                        "previous response {previous} ended with function calls: send a \
                         function_call_output item for each"
                    ),
                ));
            }
            start(
                app,
                &conversation.id,
                history,
                content,
                input.model,
                input.tools,
                input.overrides,
                in_flight,
                subscribe,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start(
    app: &AppState,
    conversation_id: &str,
    history: Vec<Value>,
    content: Value,
    model: Option<String>,
    tools: Vec<Value>,
    overrides: RunOverrides,
    in_flight: InFlight,
    subscribe: bool,
) -> Result<Started, ServiceError> {
    let conversation_id = &ConversationId::from_trusted(conversation_id);
    if !history.is_empty() {
        super::imports::import(app, conversation_id, &history)
            .await
            .map_err(|err| err.in_field("input"))?;
    }
    let turn = NewTurn {
        content,
        model,
        operation: None,
        tools: (!tools.is_empty()).then_some(tools),
        overrides,
    };
    let launched = turns::start(app, conversation_id, turn, in_flight, subscribe).await?;
    Ok(Started {
        response_id: ResponseId {
            turn_id: launched.turn_id.clone(),
            resumed_seq: None,
        },
        conversation_id: conversation_id.to_string(),
        launched,
    })
}

/// Feeds the run of `turn_id` from `from` until it ends (or a shutdown)
/// into the returned channel; the task ends early when the receiver is
/// dropped.
pub fn follow(
    app: &AppState,
    conversation_id: String,
    from: Position,
    rx: broadcast::Receiver<BusMessage>,
    turn_id: String,
) -> mpsc::Receiver<FeedItem> {
    let (tx, out) = mpsc::channel::<FeedItem>(256);
    let app = app.clone();
    let shutdown = app.live.shutdown_token();
    let gone = tx.clone();
    tokio::spawn(async move {
        let source = replay::Source {
            store: &app.store,
            project: &app.project,
            live: &app.live,
            poll: app.config.cluster.as_ref().map(|_| replay::CLUSTER_POLL),
        };
        tokio::select! {
            () = replay::feed(source, &conversation_id, from, rx, tx, Some(&turn_id)) => {}
            () = shutdown.cancelled() => {}
            () = gone.closed() => {}
        }
    });
    out
}

/// One output item of a stored run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunItem {
    /// Answer text.
    Text(String),
    /// A tool call.
    Call {
        /// Call id.
        call_id: String,
        /// Function name.
        name: String,
        /// Arguments (JSON text).
        arguments: String,
    },
}

/// How a stored run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Still running.
    InProgress,
    /// Done (or ended with function calls for the client); the last
    /// answer's finish reason.
    Completed(Option<String>),
    /// Failed with this error.
    Failed(String),
    /// Cancelled.
    Cancelled,
    /// Cut short (a shutdown or crash).
    Interrupted,
}

/// A stored response read back.
#[derive(Debug, Clone)]
pub struct StoredRun {
    /// The response id.
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The run's start, unix ms.
    pub created_at_ms: i64,
    /// The model that served (the turn's model before an answer).
    pub model_id: String,
    /// The output, in order.
    pub items: Vec<RunItem>,
    /// Token usage summed over the run's answers.
    pub usage: Usage,
    /// Status.
    pub status: RunStatus,
}

/// Two optional counts added (saturating); `None` while neither was reported.
fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(modelyard_core::usage::add_tokens(
            a.unwrap_or(0),
            b.unwrap_or(0),
        )),
    }
}

/// Reads stored response `id` from its turn and messages.
///
/// # Errors
/// `response_not_found`; the store's.
pub async fn read(app: &AppState, id: &str) -> Result<StoredRun, ServiceError> {
    let (parsed, turn) = turn_of(app, id).await?;
    let conversation = load_stored(app, &turn.conversation_id).await?;
    let starts = run_starts(app, &turn).await?;
    let run_start = parsed.resumed_seq.unwrap_or(turn.started_seq);
    let Some(position) = starts.iter().position(|s| *s == run_start) else {
        return Err(not_found(id));
    };
    let run_end = starts.get(position + 1).copied();
    let is_last = run_end.is_none();
    let messages = app
        .store
        .list_messages(&app.project, &conversation.id)
        .await?;
    let in_run = |seq: i64| seq >= run_start && run_end.is_none_or(|end| seq < end);
    let mut items = Vec::new();
    let mut usage = Usage::default();
    let mut model_id = turn.model_id.clone();
    let mut finish_reason = None;
    let mut created_at_ms = turn.started_at_ms;
    let mut first = true;
    for m in messages
        .iter()
        .filter(|m| m.turn_id == turn.id && in_run(m.seq))
    {
        if first {
            created_at_ms = m.created_at_ms;
            first = false;
        }
        if m.role != MessageRole::Assistant {
            continue;
        }
        let text: String = m
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        if !text.is_empty() {
            items.push(RunItem::Text(text));
        }
        items.extend(m.parts.iter().filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(RunItem::Call {
                call_id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            }),
            _ => None,
        }));
        usage = Usage {
            prompt_tokens: sum(usage.prompt_tokens, m.usage.prompt_tokens),
            completion_tokens: sum(usage.completion_tokens, m.usage.completion_tokens),
            reasoning_tokens: sum(usage.reasoning_tokens, m.usage.reasoning_tokens),
            cached_prompt_tokens: sum(usage.cached_prompt_tokens, m.usage.cached_prompt_tokens),
            total_tokens: sum(usage.total_tokens, m.usage.total_tokens),
            cache_creation_tokens: None,
        };
        if let Some(model) = &m.model_id {
            model_id.clone_from(model);
        }
        finish_reason.clone_from(&m.finish_reason);
    }
    let status = if !is_last {
        RunStatus::Completed(finish_reason)
    } else {
        match turn.status {
            // An arena turn waiting for its pick has no answer yet.
            TurnStatus::Running | TurnStatus::AwaitingPick => RunStatus::InProgress,
            TurnStatus::Completed | TurnStatus::RequiresAction => {
                RunStatus::Completed(finish_reason)
            }
            TurnStatus::Failed => RunStatus::Failed(turn.error.clone().unwrap_or_default()),
            TurnStatus::Cancelled => RunStatus::Cancelled,
            TurnStatus::Interrupted => RunStatus::Interrupted,
        }
    };
    Ok(StoredRun {
        id: parsed.to_string(),
        conversation_id: conversation.id,
        created_at_ms,
        model_id,
        items,
        usage,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_round_trip() {
        let first = ResponseId::parse("resp_0193-ab").unwrap();
        assert_eq!(first.turn_id, "0193-ab");
        assert_eq!(first.resumed_seq, None);
        assert_eq!(first.to_string(), "resp_0193-ab");
        let resumed = ResponseId::parse("resp_0193-ab_12").unwrap();
        assert_eq!(resumed.resumed_seq, Some(12));
        assert_eq!(resumed.to_string(), "resp_0193-ab_12");
        for bad in [
            "",
            "resp_",
            "0193",
            "resp_x_",
            "resp_x_0",
            "resp_x_-1",
            "resp_x_y",
        ] {
            assert_eq!(ResponseId::parse(bad), None, "{bad}");
        }
    }
}
