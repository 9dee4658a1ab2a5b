//! The materialized records a conversation's log folds into: the
//! conversation, turn and message rows, and token totals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm_config::ReasoningEffort;

use super::event::{Part, ResolvedFrom, TokenUsage};

/// Who a message of the log is from. Only these three enter the log: system
/// prompts come from configs and are not messages of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// The user's message of a turn.
    User,
    /// A model's answer (text and tool calls).
    Assistant,
    /// A tool's result.
    Tool,
}

impl MessageRole {
    /// `user`, `assistant` or `tool` (OpenAI's role names).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(MessageRole::User),
            "assistant" => Some(MessageRole::Assistant),
            "tool" => Some(MessageRole::Tool),
            _ => None,
        }
    }
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
    /// A conversation arena run ended with answers: the turn waits for the
    /// user to pick one (`POST .../arena/{runId}/pick`). The conversation
    /// stays blocked for other turns meanwhile.
    AwaitingPick,
}

impl TurnStatus {
    /// `running`, `completed`, `failed`, `cancelled`, `interrupted`,
    /// `requires_action`, `awaiting_pick`.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Running => "running",
            TurnStatus::Completed => "completed",
            TurnStatus::Failed => "failed",
            TurnStatus::Cancelled => "cancelled",
            TurnStatus::Interrupted => "interrupted",
            TurnStatus::RequiresAction => "requires_action",
            TurnStatus::AwaitingPick => "awaiting_pick",
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
            TurnStatus::AwaitingPick,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// Running token totals of a conversation or turn (tokens), named like a
/// call's usage ([`TokenUsage`]). Totals serialized before that
/// (`input`, `output`, `reasoning`, `cachedInput`, `total`) still read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTotals {
    /// Sum of prompt tokens.
    #[serde(alias = "input")]
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    #[serde(alias = "output")]
    pub completion_tokens: u64,
    /// Sum of reasoning tokens (part of the completion tokens).
    #[serde(alias = "reasoning")]
    pub reasoning_tokens: u64,
    /// Sum of cached prompt tokens (part of the prompt tokens).
    #[serde(alias = "cachedInput")]
    pub cached_prompt_tokens: u64,
    /// Sum of total tokens.
    #[serde(alias = "total")]
    pub total_tokens: u64,
    /// Sum of the known costs, nano-USD (saturating); `None` while no call
    /// counted here had a known cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nusd: Option<i64>,
}

impl TokenTotals {
    /// Adds one call's usage (saturating at
    /// [`crate::usage::MAX_TOKEN_COUNT`]: counts come from upstreams).
    pub fn add(&mut self, u: &TokenUsage) {
        use crate::usage::add_tokens;
        self.prompt_tokens = add_tokens(self.prompt_tokens, u.prompt_tokens.unwrap_or(0));
        self.completion_tokens =
            add_tokens(self.completion_tokens, u.completion_tokens.unwrap_or(0));
        self.reasoning_tokens = add_tokens(self.reasoning_tokens, u.reasoning_tokens.unwrap_or(0));
        self.cached_prompt_tokens = add_tokens(
            self.cached_prompt_tokens,
            u.cached_prompt_tokens.unwrap_or(0),
        );
        let total = u.total_tokens.unwrap_or_else(|| {
            add_tokens(
                u.prompt_tokens.unwrap_or(0),
                u.completion_tokens.unwrap_or(0),
            )
        });
        self.total_tokens = add_tokens(self.total_tokens, total);
        if let Some(cost) = u.cost_nusd {
            self.cost_nusd = Some(self.cost_nusd.unwrap_or(0).saturating_add(cost));
        }
    }
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
    /// Reasoning effort setting. An event written before values were checked
    /// may hold another text; it folds to `None` (never sent upstream).
    pub reasoning_effort: Option<ReasoningEffort>,
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
    /// The model of the conversation's latest `chat` turn: its resolved
    /// id (a route or a deployment) from `turn.started` on, then the
    /// deployment that answered from each `message.assistant`. Turns of
    /// other operations (`title`, custom ones) never move it.
    pub latest_model_id: Option<String>,
    /// Prompt tokens the upstream reported for the latest `chat` model
    /// call (the conversation's last context size); `None` before one
    /// reported usage.
    #[serde(default)]
    pub context_tokens: Option<u64>,
    /// Token totals over every assistant message.
    pub totals: TokenTotals,
    /// The running turn, if any (one at a time).
    pub running_turn_id: Option<String>,
    /// The conversation arena run whose turn waits for a pick, if any: set
    /// by an `arena.completed` with an answer to pick (the turn is then
    /// `awaiting_pick`, and still [`Self::running_turn_id`]); cleared by
    /// `arena.picked` and by the turn's end (`turn.completed`, `.failed`,
    /// `.cancelled`, `.interrupted`).
    #[serde(default)]
    pub pending_arena: Option<PendingArena>,
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

/// A conversation arena run that waits for the user's pick
/// ([`ConversationRecord::pending_arena`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingArena {
    /// The run (`POST .../arena/{runId}/pick` picks in it).
    pub run_id: String,
    /// Its turn (`awaiting_pick`).
    pub turn_id: String,
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
    /// The LLM config that supplied options, if any (`llmId`; `llmConfigId`
    /// still reads).
    #[serde(rename = "llmId", alias = "llmConfigId")]
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
    /// Client-side tools offered to the model (the OpenAI `tools` array of
    /// `turn.started`; empty without any): a resumed run offers them again.
    #[serde(default)]
    pub client_tools: Vec<Value>,
    /// Tool calls of the turn's assistant messages that no `message.tool`
    /// has answered yet, in the order they were made; what a
    /// `requires_action` turn waits for.
    #[serde(default)]
    pub pending_tool_calls: Vec<PendingToolCall>,
    /// The conversation arena run that answers this turn (`arena.started`),
    /// if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arena_run_id: Option<String>,
}

/// A tool call waiting for its result (a fact of the fold: made by a
/// `message.assistant` of the turn, not answered by a `message.tool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingToolCall {
    /// The call id the result must name (`toolCallId`).
    pub id: String,
    /// The function called.
    pub name: String,
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
    /// Who it is from.
    pub role: MessageRole,
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
