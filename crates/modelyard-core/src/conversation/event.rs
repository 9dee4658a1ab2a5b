//! Conversation events: the stored [`Event`] and its [`EventPayload`]s
//! (dotted type names, versioned camelCase payloads), with the value types
//! they carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::MessageRole;
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

/// Why a turn's model was chosen (docs/design.md#turn-model).
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
    /// Who it is from.
    pub role: MessageRole,
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

/// Token usage as stored in events (all tokens; absent = not reported),
/// with the call's cost when it is known.
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
    /// The call's cost in nano-USD (1e-9 USD, [`crate::cost`]); absent when
    /// it is unknown (usage not reported, an unpriced cloud model, or an
    /// event written before costs existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nusd: Option<i64>,
}

impl From<Usage> for TokenUsage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            reasoning_tokens: u.reasoning_tokens,
            cached_prompt_tokens: u.cached_prompt_tokens,
            total_tokens: u.total_tokens,
            cost_nusd: None,
        }
    }
}

/// How one model of an arena run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArenaStatus {
    /// It answered.
    Completed,
    /// It failed (see the result's `error`).
    Failed,
}

/// One model's answer in `arena.completed` (what a pick chooses from; the
/// unpicked ones stay readable here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArenaOutcome {
    /// The model id as the request named it (a route or a deployment id).
    pub model: String,
    /// Completed or failed.
    pub status: ArenaStatus,
    /// The answer's text (what arrived, also when it failed).
    #[serde(default)]
    pub text: String,
    /// Token counts, with the cost when it is known.
    #[serde(default)]
    pub usage: TokenUsage,
    /// Why it failed (failed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The deployment that answered (a composite `provider/model` id), when
    /// a call was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Milliseconds from the first send to the first output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<i64>,
    /// Milliseconds from the first send to the end.
    #[serde(default)]
    pub duration_ms: i64,
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
        /// `Some(false)` when the id did not resolve when it was selected
        /// (its provider offline, or the model not listed yet): a turn
        /// resolves it again and fails clearly if it still cannot. Absent
        /// when it resolved (and in events written before this field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verified: Option<bool>,
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
        /// The LLM config that supplied options, if any. Written as
        /// `llmId` (the API's one name for a config reference); events
        /// stored before that say `llmConfigId`, which still reads.
        #[serde(default, rename = "llmId", alias = "llmConfigId")]
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
    /// A conversation arena run began for the turn: its user message is
    /// answered by every model in `models`; the turn then waits for a pick.
    #[serde(rename = "arena.started", rename_all = "camelCase")]
    ArenaStarted {
        /// Turn id.
        turn_id: String,
        /// The run's id (its `arena` LLM session's).
        run_id: String,
        /// The model ids, in request order.
        models: Vec<String>,
    },
    /// Every model of the run ended; with at least one completed answer the
    /// turn waits for a pick (`awaiting_pick`), else `turn.failed` follows.
    #[serde(rename = "arena.completed", rename_all = "camelCase")]
    ArenaCompleted {
        /// Turn id.
        turn_id: String,
        /// The run's id.
        run_id: String,
        /// One outcome per model, in request order.
        results: Vec<ArenaOutcome>,
    },
    /// The user chose one answer of the run; its `message.assistant` and
    /// `turn.completed` follow.
    #[serde(rename = "arena.picked", rename_all = "camelCase")]
    ArenaPicked {
        /// Turn id.
        turn_id: String,
        /// The run's id.
        run_id: String,
        /// The chosen model id (as the run named it).
        model: String,
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

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Option<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
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
            EventPayload::ArenaStarted { .. } => "arena.started",
            EventPayload::ArenaCompleted { .. } => "arena.completed",
            EventPayload::ArenaPicked { .. } => "arena.picked",
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
            | EventPayload::ArenaStarted { turn_id, .. }
            | EventPayload::ArenaCompleted { turn_id, .. }
            | EventPayload::ArenaPicked { turn_id, .. }
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
