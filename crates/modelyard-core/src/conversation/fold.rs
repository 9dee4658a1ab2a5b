//! [`apply`] and [`fold`]: the one fold from events to records.

use serde_json::Value;

use crate::llm_config::ReasoningEffort;

use super::event::{ArenaStatus, Event, EventPayload, Part, TokenUsage};
use super::record::{
    ConversationRecord, MessageRecord, MessageRole, PendingArena, PendingToolCall, TokenTotals,
    TurnRecord, TurnStatus,
};

/// The operation whose turns move a conversation's latest model and
/// context size.
pub const CHAT_OPERATION: &str = "chat";

/// The operation of a conversation arena turn (`arena.started`): its picked
/// answer moves the latest model and context size like a chat answer.
pub const ARENA_OPERATION: &str = "arena";

/// Why an event cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The first event must be `conversation.created`, and only the first.
    #[error("conversation {0} does not exist")]
    NoConversation(String),
    /// `conversation.created` on an existing conversation.
    #[error("conversation {0} already exists")]
    AlreadyExists(String),
    /// `seq` is not last_seq + 1.
    #[error("event seq {got} does not follow {last}")]
    SeqGap {
        /// Last applied seq.
        last: i64,
        /// Offered seq.
        got: i64,
    },
    /// A turn starts while another runs.
    #[error("turn {running} is still running")]
    TurnRunning {
        /// The running turn.
        running: String,
    },
    /// A turn event for a turn that is not running.
    #[error("turn {0} is not running")]
    TurnNotRunning(String),
    /// `turn.resumed` for a turn that does not wait for tool results.
    #[error("turn {0} is not waiting for tool results")]
    TurnNotWaiting(String),
    /// An arena event for a turn that is not that run's, or `arena.picked`
    /// for a run that does not wait for a pick (not ended, or picked).
    #[error("turn {turn} does not wait for a pick of arena run {run}")]
    NotAwaitingPick {
        /// The turn.
        turn: String,
        /// The run.
        run: String,
    },
}

/// What applying one event changes; the store writes exactly these rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// The turn row to insert or update, if the event touched a turn.
    pub turn: Option<TurnRecord>,
    /// Message rows to insert (one, or several for `messages.imported`).
    pub message: Vec<MessageRecord>,
}

/// Applies one event to the conversation record (`None` before creation)
/// and the turn it concerns (the running turn, if the event names it).
///
/// # Errors
/// [`ApplyError`] when the event does not fit the current state.
pub fn apply(
    conversation: &mut Option<ConversationRecord>,
    running_turn: Option<&TurnRecord>,
    event: &Event,
) -> Result<Changes, ApplyError> {
    if let EventPayload::ConversationCreated {
        title,
        parent_id,
        model,
        cwd,
        reasoning_effort,
        advisor,
        metadata,
        llm_id,
        llm_overrides,
    } = &event.payload
    {
        if conversation.is_some() {
            return Err(ApplyError::AlreadyExists(event.conversation_id.clone()));
        }
        if event.seq != 1 {
            return Err(ApplyError::SeqGap {
                last: 0,
                got: event.seq,
            });
        }
        *conversation = Some(ConversationRecord {
            id: event.conversation_id.clone(),
            parent_id: parent_id.clone(),
            title: title.clone(),
            model: model.clone(),
            cwd: cwd.clone(),
            reasoning_effort: reasoning_effort.as_deref().and_then(ReasoningEffort::parse),
            advisor: *advisor,
            metadata: if metadata.is_null() {
                Value::Object(Default::default())
            } else {
                metadata.clone()
            },
            llm_id: llm_id.clone(),
            llm_overrides: llm_overrides.clone(),
            latest_model_id: None,
            context_tokens: None,
            totals: TokenTotals::default(),
            running_turn_id: None,
            pending_arena: None,
            deleted: false,
            compacted_through_seq: None,
            summary: None,
            last_seq: 1,
            created_at_ms: event.at_ms,
            updated_at_ms: event.at_ms,
        });
        return Ok(Changes::default());
    }
    let c = conversation
        .as_mut()
        .ok_or_else(|| ApplyError::NoConversation(event.conversation_id.clone()))?;
    if event.seq != c.last_seq + 1 {
        return Err(ApplyError::SeqGap {
            last: c.last_seq,
            got: event.seq,
        });
    }
    let running = |turn_id: &str| -> Result<TurnRecord, ApplyError> {
        match running_turn {
            Some(t) if t.id == turn_id && t.status == TurnStatus::Running => Ok(t.clone()),
            _ => Err(ApplyError::TurnNotRunning(turn_id.to_owned())),
        }
    };
    let mut changes = Changes::default();
    match &event.payload {
        EventPayload::ConversationCreated { .. } => unreachable!("handled above"),
        EventPayload::ConversationUpdated { title, metadata } => {
            if let Some(title) = title {
                c.title = Some(title.clone());
            }
            if let Some(metadata) = metadata {
                c.metadata = metadata.clone();
            }
        }
        EventPayload::ConversationDeleted {} => c.deleted = true,
        EventPayload::ConversationCompacted {
            summary, up_to_seq, ..
        } => {
            c.compacted_through_seq = Some(*up_to_seq);
            c.summary = Some(summary.clone());
        }
        EventPayload::LlmChanged {
            llm_id,
            llm_overrides,
        } => {
            if let Some(llm_id) = llm_id {
                c.llm_id = llm_id.clone();
            }
            if let Some(overrides) = llm_overrides {
                c.llm_overrides = overrides.clone();
            }
        }
        EventPayload::ModelSelected { model, .. } => c.model = Some(model.clone()),
        EventPayload::ModelCleared { .. } => c.model = None,
        EventPayload::SettingsChanged {
            cwd,
            reasoning_effort,
            advisor,
        } => {
            if let Some(advisor) = advisor {
                c.advisor = *advisor;
            }
            if let Some(cwd) = cwd {
                c.cwd = cwd.clone();
            }
            if let Some(effort) = reasoning_effort {
                c.reasoning_effort = effort.as_deref().and_then(ReasoningEffort::parse);
            }
        }
        EventPayload::TurnStarted {
            turn_id,
            operation,
            model_id,
            resolved_from,
            llm_config_id,
            client_tools,
        } => {
            if let Some(running) = &c.running_turn_id {
                return Err(ApplyError::TurnRunning {
                    running: running.clone(),
                });
            }
            c.running_turn_id = Some(turn_id.clone());
            // The latest model moves as a chat turn starts (not only at
            // its answer); other operations leave it alone.
            if operation == CHAT_OPERATION {
                c.latest_model_id = Some(model_id.clone());
            }
            changes.turn = Some(TurnRecord {
                id: turn_id.clone(),
                conversation_id: c.id.clone(),
                operation: operation.clone(),
                model_id: model_id.clone(),
                resolved_from: *resolved_from,
                llm_config_id: llm_config_id.clone(),
                status: TurnStatus::Running,
                error: None,
                totals: TokenTotals::default(),
                started_seq: event.seq,
                started_at_ms: event.at_ms,
                ended_at_ms: None,
                client_tools: match client_tools {
                    Some(Value::Array(tools)) => tools.clone(),
                    _ => Vec::new(),
                },
                pending_tool_calls: Vec::new(),
                arena_run_id: None,
            });
        }
        EventPayload::UserMessage {
            message_id,
            turn_id,
            content,
        } => {
            running(turn_id)?;
            changes.message.push(MessageRecord {
                id: message_id.clone(),
                conversation_id: c.id.clone(),
                turn_id: turn_id.clone(),
                role: MessageRole::User,
                content: content.clone(),
                parts: Vec::new(),
                model_id: None,
                usage: TokenUsage::default(),
                finish_reason: None,
                seq: event.seq,
                created_at_ms: event.at_ms,
            });
        }
        EventPayload::AssistantMessage {
            message_id,
            turn_id,
            parts,
            model_id,
            usage,
            finish_reason,
        } => {
            let mut turn = running(turn_id)?;
            turn.totals.add(usage);
            c.totals.add(usage);
            if turn.operation == CHAT_OPERATION || turn.operation == ARENA_OPERATION {
                c.latest_model_id = Some(model_id.clone());
                if let Some(prompt_tokens) = usage.prompt_tokens {
                    c.context_tokens = Some(prompt_tokens);
                }
            }
            turn.pending_tool_calls
                .extend(parts.iter().filter_map(|p| match p {
                    Part::ToolCall { id, name, .. } => Some(PendingToolCall {
                        id: id.clone(),
                        name: name.clone(),
                    }),
                    _ => None,
                }));
            let text: String = parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            changes.message.push(MessageRecord {
                id: message_id.clone(),
                conversation_id: c.id.clone(),
                turn_id: turn_id.clone(),
                role: MessageRole::Assistant,
                content: Value::String(text),
                parts: parts.clone(),
                model_id: Some(model_id.clone()),
                usage: *usage,
                finish_reason: finish_reason.clone(),
                seq: event.seq,
                created_at_ms: event.at_ms,
            });
            changes.turn = Some(turn);
        }
        EventPayload::ToolMessage {
            message_id,
            turn_id,
            tool_call_id,
            name,
            content,
            is_error,
            model_id,
            usage,
        } => {
            let mut turn = running(turn_id)?;
            if let Some(usage) = usage {
                turn.totals.add(usage);
                c.totals.add(usage);
            }
            turn.pending_tool_calls.retain(|p| &p.id != tool_call_id);
            changes.message.push(MessageRecord {
                id: message_id.clone(),
                conversation_id: c.id.clone(),
                turn_id: turn_id.clone(),
                role: MessageRole::Tool,
                content: Value::String(content.clone()),
                parts: vec![Part::ToolResult {
                    tool_call_id: tool_call_id.clone(),
                    name: name.clone(),
                    is_error: *is_error,
                }],
                model_id: model_id.clone(),
                usage: usage.unwrap_or_default(),
                finish_reason: None,
                seq: event.seq,
                created_at_ms: event.at_ms,
            });
            changes.turn = Some(turn);
        }
        EventPayload::MessagesImported {
            import_id,
            messages,
        } => {
            if let Some(running) = &c.running_turn_id {
                return Err(ApplyError::TurnRunning {
                    running: running.clone(),
                });
            }
            for m in messages {
                changes.message.push(MessageRecord {
                    id: m.message_id.clone(),
                    conversation_id: c.id.clone(),
                    turn_id: import_id.clone(),
                    role: m.role,
                    content: m.content.clone(),
                    parts: m.parts.clone(),
                    model_id: None,
                    usage: TokenUsage::default(),
                    finish_reason: None,
                    seq: event.seq,
                    created_at_ms: event.at_ms,
                });
            }
        }
        EventPayload::ArenaStarted {
            turn_id, run_id, ..
        } => {
            let mut turn = running(turn_id)?;
            if turn.arena_run_id.is_some() {
                return Err(ApplyError::NotAwaitingPick {
                    turn: turn_id.clone(),
                    run: run_id.clone(),
                });
            }
            turn.arena_run_id = Some(run_id.clone());
            changes.turn = Some(turn);
        }
        EventPayload::ArenaCompleted {
            turn_id,
            run_id,
            results,
        } => {
            let mut turn = running(turn_id)?;
            if turn.arena_run_id.as_deref() != Some(run_id.as_str()) {
                return Err(ApplyError::NotAwaitingPick {
                    turn: turn_id.clone(),
                    run: run_id.clone(),
                });
            }
            // With no answer to pick, the turn stays running: `turn.failed`
            // follows.
            if results.iter().any(|r| r.status == ArenaStatus::Completed) {
                turn.status = TurnStatus::AwaitingPick;
                c.pending_arena = Some(PendingArena {
                    run_id: run_id.clone(),
                    turn_id: turn_id.clone(),
                });
            }
            changes.turn = Some(turn);
        }
        EventPayload::ArenaPicked {
            turn_id,
            run_id,
            model,
        } => {
            let mut turn = match running_turn {
                Some(t)
                    if &t.id == turn_id
                        && t.status == TurnStatus::AwaitingPick
                        && t.arena_run_id.as_deref() == Some(run_id.as_str()) =>
                {
                    t.clone()
                }
                _ => {
                    return Err(ApplyError::NotAwaitingPick {
                        turn: turn_id.clone(),
                        run: run_id.clone(),
                    })
                }
            };
            // Running again for the picked answer (`message.assistant`)
            // and `turn.completed`, which follow in the same append.
            turn.status = TurnStatus::Running;
            turn.model_id = model.clone();
            c.pending_arena = None;
            changes.turn = Some(turn);
        }
        EventPayload::TurnRequiresAction { turn_id, .. } => {
            let mut turn = running(turn_id)?;
            turn.status = TurnStatus::RequiresAction;
            changes.turn = Some(turn);
        }
        EventPayload::TurnResumed { turn_id } => {
            let mut turn = match running_turn {
                Some(t) if &t.id == turn_id && t.status == TurnStatus::RequiresAction => t.clone(),
                _ => return Err(ApplyError::TurnNotWaiting(turn_id.clone())),
            };
            turn.status = TurnStatus::Running;
            changes.turn = Some(turn);
        }
        EventPayload::TurnCompleted { turn_id }
        | EventPayload::TurnFailed { turn_id, .. }
        | EventPayload::TurnCancelled { turn_id }
        | EventPayload::TurnInterrupted { turn_id, .. } => {
            let mut turn = match (&event.payload, running_turn) {
                // A turn waiting for tool results or a pick can be
                // cancelled too.
                (EventPayload::TurnCancelled { .. }, Some(t))
                    if &t.id == turn_id
                        && matches!(
                            t.status,
                            TurnStatus::RequiresAction | TurnStatus::AwaitingPick
                        ) =>
                {
                    t.clone()
                }
                _ => running(turn_id)?,
            };
            turn.status = match &event.payload {
                EventPayload::TurnCompleted { .. } => TurnStatus::Completed,
                EventPayload::TurnFailed { .. } => TurnStatus::Failed,
                EventPayload::TurnCancelled { .. } => TurnStatus::Cancelled,
                _ => TurnStatus::Interrupted,
            };
            turn.error = match &event.payload {
                EventPayload::TurnFailed { error, .. } => Some(error.clone()),
                _ => None,
            };
            turn.ended_at_ms = Some(event.at_ms);
            c.running_turn_id = None;
            c.pending_arena = None;
            changes.turn = Some(turn);
        }
    }
    c.last_seq = event.seq;
    c.updated_at_ms = event.at_ms;
    Ok(changes)
}

/// What a whole log folds into: the conversation (if created), its turns
/// and its messages.
pub type Folded = (
    Option<ConversationRecord>,
    Vec<TurnRecord>,
    Vec<MessageRecord>,
);

/// The fold of a whole log: the records the tables must hold.
///
/// # Errors
/// [`ApplyError`] for a log that does not fit together.
pub fn fold(events: &[Event]) -> Result<Folded, ApplyError> {
    let mut conversation = None;
    let mut turns: Vec<TurnRecord> = Vec::new();
    let mut messages = Vec::new();
    for event in events {
        let running = conversation
            .as_ref()
            .and_then(|c: &ConversationRecord| c.running_turn_id.as_ref())
            .and_then(|id| turns.iter().find(|t| &t.id == id));
        let changes = apply(&mut conversation, running, event)?;
        if let Some(turn) = changes.turn {
            match turns.iter_mut().find(|t| t.id == turn.id) {
                Some(existing) => *existing = turn,
                None => turns.push(turn),
            }
        }
        messages.extend(changes.message);
    }
    Ok((conversation, turns, messages))
}
