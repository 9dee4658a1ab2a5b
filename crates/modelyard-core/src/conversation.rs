//! Conversations as an append-only event log, and the fold that
//! materializes it (DESIGN.md §2, §4).
//!
//! Every change to a conversation is an [`Event`] with a per-conversation
//! `seq` (1, 2, 3, … without gaps) and a time. The stored form is the event
//! type (dotted lowercase, e.g. `turn.started`), a payload version and the
//! payload JSON (camelCase). Payloads only ever gain optional fields, so every
//! stored event stays readable by later versions ([`EVENT_PAYLOAD_VERSION`]).
//!
//! [`apply`] is the one fold: it turns an event into changes of the
//! materialized records ([`ConversationRecord`], [`TurnRecord`],
//! [`MessageRecord`]). The store calls it inside the transaction that appends
//! the event, so the tables always equal the fold of the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::usage::Usage;

/// Version written with every new payload.
pub const EVENT_PAYLOAD_VERSION: u32 = 1;

/// Who changed a conversation's model selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SelectionSource {
    /// `PUT /v1/conversations/{id}/model` or creation.
    Api,
    /// A turn's per-turn `model` override.
    TurnOverride,
    /// Inherited from the parent conversation at creation.
    Parent,
}

/// Why a turn's model was chosen (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResolvedFrom {
    /// The model named on the turn request.
    Request,
    /// The conversation's persisted selection.
    Conversation,
    /// The conversation's LLM config for this operation.
    OperationConfig,
    /// The conversation's default LLM config.
    ConversationConfig,
    /// The server's default.
    ServerDefault,
}

/// A turn's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// Started, not ended.
    Running,
    /// Ended with an answer.
    Completed,
    /// Ended with an error.
    Failed,
    /// Stopped by a cancel request.
    Cancelled,
    /// The server stopped while it ran (found at restart).
    Interrupted,
    /// Waits for the results of client-side tool calls
    /// (`POST .../turns/{id}/tool-results` resumes it).
    RequiresAction,
}

impl TurnStatus {
    /// `running`, `completed`, `failed`, `cancelled`, `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Running => "running",
            TurnStatus::Completed => "completed",
            TurnStatus::Failed => "failed",
            TurnStatus::Cancelled => "cancelled",
            TurnStatus::Interrupted => "interrupted",
            TurnStatus::RequiresAction => "requires_action",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        [
            TurnStatus::Running,
            TurnStatus::Completed,
            TurnStatus::Failed,
            TurnStatus::Cancelled,
            TurnStatus::Interrupted,
            TurnStatus::RequiresAction,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// One part of an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Part {
    /// Answer text.
    Text {
        /// The text.
        text: String,
    },
    /// Reasoning text.
    Reasoning {
        /// The text.
        text: String,
    },
    /// A tool call (OpenAI function-call shape).
    ToolCall {
        /// Call id.
        id: String,
        /// Function name.
        name: String,
        /// Arguments as the model wrote them (JSON text).
        arguments: String,
    },
    /// What a tool message answers (the message's content is the result).
    #[serde(rename_all = "camelCase")]
    ToolResult {
        /// The call it answers.
        tool_call_id: String,
        /// Function name.
        name: String,
        /// Whether the result is an error the model sees.
        #[serde(default)]
        is_error: bool,
    },
}

/// One message of `messages.imported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportedMessage {
    /// Message id.
    pub message_id: String,
    /// `user`, `assistant` or `tool`.
    pub role: String,
    /// User: the OpenAI content value; assistant: its text; tool: the result.
    pub content: Value,
    /// Assistant: text and tool-call parts; tool: one `toolResult` part.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// A pending client-side tool call of a turn in `requires_action`
/// (OpenAI function-call shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallRef {
    /// Call id.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// Token usage as stored in events (all tokens; absent = not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Prompt (input) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Reasoning tokens (part of completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Cached prompt tokens (part of prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<u64>,
    /// Total tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
}

impl From<Usage> for TokenUsage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// Running token totals of a conversation or turn (tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTotals {
    /// Sum of prompt tokens.
    pub input: u64,
    /// Sum of completion tokens.
    pub output: u64,
    /// Sum of reasoning tokens.
    pub reasoning: u64,
    /// Sum of cached prompt tokens.
    pub cached_input: u64,
    /// Sum of total tokens.
    pub total: u64,
}

impl TokenTotals {
    /// Adds one call's usage (saturating at
    /// [`crate::usage::MAX_TOKEN_COUNT`]: counts come from upstreams).
    pub fn add(&mut self, u: &TokenUsage) {
        use crate::usage::add_tokens;
        self.input = add_tokens(self.input, u.prompt_tokens.unwrap_or(0));
        self.output = add_tokens(self.output, u.completion_tokens.unwrap_or(0));
        self.reasoning = add_tokens(self.reasoning, u.reasoning_tokens.unwrap_or(0));
        self.cached_input = add_tokens(self.cached_input, u.cached_prompt_tokens.unwrap_or(0));
        let total = u.total_tokens.unwrap_or_else(|| {
            add_tokens(
                u.prompt_tokens.unwrap_or(0),
                u.completion_tokens.unwrap_or(0),
            )
        });
        self.total = add_tokens(self.total, total);
    }
}

/// What happened. Serialized as `{"type": "<dotted name>", ...fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventPayload {
    /// The conversation exists.
    #[serde(rename = "conversation.created", rename_all = "camelCase")]
    ConversationCreated {
        /// Title.
        #[serde(default)]
        title: Option<String>,
        /// Parent conversation (for subtasks).
        #[serde(default)]
        parent_id: Option<String>,
        /// Initial model selection (a subtask starts with its parent's).
        #[serde(default)]
        model: Option<String>,
        /// Working directory setting.
        #[serde(default)]
        cwd: Option<String>,
        /// Reasoning effort setting.
        #[serde(default)]
        reasoning_effort: Option<String>,
        /// Whether the advisor tool is offered in this conversation's turns.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        advisor: bool,
        /// Free-form metadata object.
        #[serde(default)]
        metadata: Value,
        /// Default LLM config id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        llm_id: Option<String>,
        /// Per-operation LLM config ids.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        llm_overrides: BTreeMap<String, String>,
    },
    /// Title or metadata changed.
    #[serde(rename = "conversation.updated", rename_all = "camelCase")]
    ConversationUpdated {
        /// New title, when it changed.
        #[serde(default)]
        title: Option<String>,
        /// New metadata, when it changed.
        #[serde(default)]
        metadata: Option<Value>,
    },
    /// Soft-deleted.
    #[serde(rename = "conversation.deleted")]
    ConversationDeleted {},
    /// The messages up to `up_to_seq` were summarized: later turns send the
    /// summary instead of them.
    #[serde(rename = "conversation.compacted", rename_all = "camelCase")]
    ConversationCompacted {
        /// Id of the summary (the compaction's result).
        summary_message_id: String,
        /// The summary text.
        summary: String,
        /// Seq of the last message the summary covers.
        up_to_seq: i64,
        /// The model that wrote the summary.
        model_id: String,
    },
    /// The conversation's LLM configs changed; absent fields did not change.
    #[serde(rename = "llm.changed", rename_all = "camelCase")]
    LlmChanged {
        /// New default config id (`Some(None)` clears).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "double_option"
        )]
        llm_id: Option<Option<String>>,
        /// The new whole map of operation → config id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        llm_overrides: Option<BTreeMap<String, String>>,
    },
    /// The model selection was set.
    #[serde(rename = "model.selected", rename_all = "camelCase")]
    ModelSelected {
        /// New selection (a model id).
        model: String,
        /// Selection before.
        #[serde(default)]
        previous: Option<String>,
        /// Who set it.
        source: SelectionSource,
    },
    /// The model selection was cleared.
    #[serde(rename = "model.cleared", rename_all = "camelCase")]
    ModelCleared {
        /// Selection before.
        #[serde(default)]
        previous: Option<String>,
        /// Who cleared it.
        source: SelectionSource,
    },
    /// Settings changed; absent fields did not change, `null` inside
    /// `Some` clears.
    #[serde(rename = "settings.changed", rename_all = "camelCase")]
    SettingsChanged {
        /// New working directory (`Some(None)` clears).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "double_option"
        )]
        cwd: Option<Option<String>>,
        /// New reasoning effort (`Some(None)` clears).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "double_option"
        )]
        reasoning_effort: Option<Option<String>>,
        /// Whether the advisor tool is offered (absent: unchanged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advisor: Option<bool>,
    },
    /// A turn began.
    #[serde(rename = "turn.started", rename_all = "camelCase")]
    TurnStarted {
        /// Turn id.
        turn_id: String,
        /// Operation (`chat`, ...).
        operation: String,
        /// The resolved model id.
        model_id: String,
        /// Why that model.
        resolved_from: ResolvedFrom,
        /// The LLM config that supplied options, if any.
        #[serde(default)]
        llm_config_id: Option<String>,
        /// Client-side tools offered to the model (OpenAI `tools` array);
        /// calls to them end the turn in `requires_action`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_tools: Option<Value>,
    },
    /// The user's input for a turn.
    #[serde(rename = "message.user", rename_all = "camelCase")]
    UserMessage {
        /// Message id.
        message_id: String,
        /// Turn id.
        turn_id: String,
        /// OpenAI message content: a string or an array of parts.
        content: Value,
    },
    /// A finished assistant answer.
    #[serde(rename = "message.assistant", rename_all = "camelCase")]
    AssistantMessage {
        /// Message id.
        message_id: String,
        /// Turn id.
        turn_id: String,
        /// Text, reasoning and tool-call parts in order.
        parts: Vec<Part>,
        /// The model that produced it.
        model_id: String,
        /// Usage of the call.
        #[serde(default)]
        usage: TokenUsage,
        /// OpenAI finish reason.
        #[serde(default)]
        finish_reason: Option<String>,
    },
    /// A tool's result, answering one tool call of the turn's last
    /// assistant message. For the advisor, `model_id` and `usage` are the
    /// advisor model's: its tokens count in the turn's and conversation's
    /// totals.
    #[serde(rename = "message.tool", rename_all = "camelCase")]
    ToolMessage {
        /// Message id.
        message_id: String,
        /// Turn id.
        turn_id: String,
        /// The call it answers.
        tool_call_id: String,
        /// Function name.
        name: String,
        /// The result as the model receives it (text, often JSON).
        content: String,
        /// Whether the result reports an error.
        #[serde(default)]
        is_error: bool,
        /// The model a server-side tool consulted, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_id: Option<String>,
        /// That model's usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<TokenUsage>,
    },
    /// The turn waits for the results of client-side tool calls.
    #[serde(rename = "turn.requires_action", rename_all = "camelCase")]
    TurnRequiresAction {
        /// Turn id.
        turn_id: String,
        /// The calls to answer.
        tool_calls: Vec<ToolCallRef>,
    },
    /// A `requires_action` turn runs again (its tool results follow).
    #[serde(rename = "turn.resumed", rename_all = "camelCase")]
    TurnResumed {
        /// Turn id.
        turn_id: String,
    },
    /// Messages brought in from elsewhere (history of another app, an
    /// example exchange that shows a model how to call a tool), between
    /// turns. They have no model and no usage.
    #[serde(rename = "messages.imported", rename_all = "camelCase")]
    MessagesImported {
        /// Groups the imported messages (their `turnId`; no turn row).
        import_id: String,
        /// The messages in order.
        messages: Vec<ImportedMessage>,
    },
    /// The turn ended with an answer.
    #[serde(rename = "turn.completed", rename_all = "camelCase")]
    TurnCompleted {
        /// Turn id.
        turn_id: String,
    },
    /// The turn ended with an error.
    #[serde(rename = "turn.failed", rename_all = "camelCase")]
    TurnFailed {
        /// Turn id.
        turn_id: String,
        /// What went wrong.
        error: String,
    },
    /// The turn was cancelled.
    #[serde(rename = "turn.cancelled", rename_all = "camelCase")]
    TurnCancelled {
        /// Turn id.
        turn_id: String,
    },
    /// The server stopped while the turn ran.
    #[serde(rename = "turn.interrupted", rename_all = "camelCase")]
    TurnInterrupted {
        /// Turn id.
        turn_id: String,
        /// Text streamed before the interruption, if any was checkpointed.
        #[serde(default)]
        partial_text: Option<String>,
    },
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Option<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

impl EventPayload {
    /// The dotted event type (`turn.started`).
    pub fn event_type(&self) -> &'static str {
        match self {
            EventPayload::ConversationCreated { .. } => "conversation.created",
            EventPayload::ConversationUpdated { .. } => "conversation.updated",
            EventPayload::ConversationDeleted {} => "conversation.deleted",
            EventPayload::ConversationCompacted { .. } => "conversation.compacted",
            EventPayload::LlmChanged { .. } => "llm.changed",
            EventPayload::ModelSelected { .. } => "model.selected",
            EventPayload::ModelCleared { .. } => "model.cleared",
            EventPayload::SettingsChanged { .. } => "settings.changed",
            EventPayload::TurnStarted { .. } => "turn.started",
            EventPayload::UserMessage { .. } => "message.user",
            EventPayload::AssistantMessage { .. } => "message.assistant",
            EventPayload::ToolMessage { .. } => "message.tool",
            EventPayload::TurnRequiresAction { .. } => "turn.requires_action",
            EventPayload::TurnResumed { .. } => "turn.resumed",
            EventPayload::MessagesImported { .. } => "messages.imported",
            EventPayload::TurnCompleted { .. } => "turn.completed",
            EventPayload::TurnFailed { .. } => "turn.failed",
            EventPayload::TurnCancelled { .. } => "turn.cancelled",
            EventPayload::TurnInterrupted { .. } => "turn.interrupted",
        }
    }

    /// The turn this event belongs to, if any.
    pub fn turn_id(&self) -> Option<&str> {
        match self {
            EventPayload::TurnStarted { turn_id, .. }
            | EventPayload::UserMessage { turn_id, .. }
            | EventPayload::AssistantMessage { turn_id, .. }
            | EventPayload::ToolMessage { turn_id, .. }
            | EventPayload::TurnRequiresAction { turn_id, .. }
            | EventPayload::TurnResumed { turn_id }
            | EventPayload::TurnCompleted { turn_id }
            | EventPayload::TurnFailed { turn_id, .. }
            | EventPayload::TurnCancelled { turn_id }
            | EventPayload::TurnInterrupted { turn_id, .. } => Some(turn_id),
            _ => None,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Conversation id.
    pub conversation_id: String,
    /// Position in the conversation's log: 1, 2, 3, ... without gaps.
    pub seq: i64,
    /// When it was appended, unix ms.
    pub at_ms: i64,
    /// What happened.
    pub payload: EventPayload,
}

/// The materialized conversation row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRecord {
    /// Id.
    pub id: String,
    /// Parent id (subtasks).
    pub parent_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Persisted model selection.
    pub model: Option<String>,
    /// Working directory setting.
    pub cwd: Option<String>,
    /// Reasoning effort setting.
    pub reasoning_effort: Option<String>,
    /// Whether the advisor tool is offered in turns.
    #[serde(default)]
    pub advisor: bool,
    /// Metadata object.
    pub metadata: Value,
    /// Default LLM config id.
    #[serde(default)]
    pub llm_id: Option<String>,
    /// Per-operation LLM config ids (operation → config id).
    #[serde(default)]
    pub llm_overrides: BTreeMap<String, String>,
    /// Model id of the latest assistant message.
    pub latest_model_id: Option<String>,
    /// Token totals over every assistant message.
    pub totals: TokenTotals,
    /// The running turn, if any (one at a time).
    pub running_turn_id: Option<String>,
    /// Soft-deleted.
    pub deleted: bool,
    /// Seq of the last message covered by the compaction summary, if any.
    #[serde(default)]
    pub compacted_through_seq: Option<i64>,
    /// The compaction summary that replaces messages up to
    /// `compacted_through_seq` in later turns.
    #[serde(default)]
    pub summary: Option<String>,
    /// Seq of the last applied event.
    pub last_seq: i64,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
    /// Time of the last event, unix ms.
    pub updated_at_ms: i64,
}

/// A materialized turn row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnRecord {
    /// Turn id.
    pub id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Operation.
    pub operation: String,
    /// Resolved model id.
    pub model_id: String,
    /// Why that model.
    pub resolved_from: ResolvedFrom,
    /// LLM config id, if any.
    pub llm_config_id: Option<String>,
    /// Status.
    pub status: TurnStatus,
    /// Error (failed) or partial text note (interrupted).
    pub error: Option<String>,
    /// Token totals of the turn.
    pub totals: TokenTotals,
    /// Seq of `turn.started`.
    pub started_seq: i64,
    /// Start time, unix ms.
    pub started_at_ms: i64,
    /// End time, unix ms.
    pub ended_at_ms: Option<i64>,
}

/// A materialized message row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    /// Message id.
    pub id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Turn id.
    pub turn_id: String,
    /// `user`, `assistant` or `tool`.
    pub role: String,
    /// User: the OpenAI content value. Assistant: the text (parts joined).
    /// Tool: the result text.
    pub content: Value,
    /// Assistant parts; one `toolResult` part for tool messages; empty for
    /// user messages.
    pub parts: Vec<Part>,
    /// The model that produced it (assistant; tool when a model was consulted).
    pub model_id: Option<String>,
    /// Usage (assistant only).
    pub usage: TokenUsage,
    /// Finish reason (assistant only).
    pub finish_reason: Option<String>,
    /// Seq of the event that created it.
    pub seq: i64,
    /// Creation time, unix ms.
    pub created_at_ms: i64,
}

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
            reasoning_effort: reasoning_effort.clone(),
            advisor: *advisor,
            metadata: if metadata.is_null() {
                Value::Object(Default::default())
            } else {
                metadata.clone()
            },
            llm_id: llm_id.clone(),
            llm_overrides: llm_overrides.clone(),
            latest_model_id: None,
            totals: TokenTotals::default(),
            running_turn_id: None,
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
                c.reasoning_effort = effort.clone();
            }
        }
        EventPayload::TurnStarted {
            turn_id,
            operation,
            model_id,
            resolved_from,
            llm_config_id,
            ..
        } => {
            if let Some(running) = &c.running_turn_id {
                return Err(ApplyError::TurnRunning {
                    running: running.clone(),
                });
            }
            c.running_turn_id = Some(turn_id.clone());
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
                role: "user".into(),
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
            c.latest_model_id = Some(model_id.clone());
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
                role: "assistant".into(),
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
            changes.message.push(MessageRecord {
                id: message_id.clone(),
                conversation_id: c.id.clone(),
                turn_id: turn_id.clone(),
                role: "tool".into(),
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
                    role: m.role.clone(),
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
                // A turn waiting for tool results can be cancelled too.
                (EventPayload::TurnCancelled { .. }, Some(t))
                    if &t.id == turn_id && t.status == TurnStatus::RequiresAction =>
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

#[cfg(test)]
mod tests;
