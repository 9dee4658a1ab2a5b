//! The wire shapes of `/v1/conversations/...` (camelCase; times RFC 3339;
//! token counts in `…Tokens` fields, the names of a call's `usage`).

use modelyard_core::conversation::MessageRole;
use modelyard_core::llm_config::ReasoningEffort;
use std::collections::BTreeMap;

use modelyard_core::conversation::{
    ConversationRecord, MessageRecord, Part, PendingArena, ResolvedFrom, TokenTotals, TokenUsage,
    TurnRecord,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::api::dto::{List, Page};
use crate::clock::rfc3339;
use crate::service::conversations::{ModelHistoryEntry, Settings};

/// Token sums of a conversation, a turn or an LLM session; the names of a
/// call's `usage`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenTotalsDto {
    /// Sum of prompt tokens.
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of reasoning tokens (part of the completion tokens).
    pub reasoning_tokens: u64,
    /// Sum of cached prompt tokens (part of the prompt tokens).
    pub cached_prompt_tokens: u64,
    /// Sum of total tokens.
    pub total_tokens: u64,
}

impl From<TokenTotals> for TokenTotalsDto {
    fn from(t: TokenTotals) -> Self {
        TokenTotalsDto {
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            reasoning_tokens: t.reasoning_tokens,
            cached_prompt_tokens: t.cached_prompt_tokens,
            total_tokens: t.total_tokens,
        }
    }
}

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDto {
    /// Id.
    pub id: String,
    /// Parent conversation (subtasks).
    pub parent_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Persisted model selection.
    pub model: Option<String>,
    /// Working directory setting.
    pub cwd: Option<String>,
    /// Reasoning effort setting.
    #[schema(value_type = Option<String>, example = "high")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Whether turns offer the advisor tool.
    pub advisor: bool,
    /// Free-form metadata object.
    pub metadata: Value,
    /// The conversation's default LLM config; for a conversation created
    /// without one, the server default it was created under (a
    /// `system-default` config; turns use the server's current default).
    pub llm_id: Option<String>,
    /// Operation → LLM config id.
    pub llm_overrides: BTreeMap<String, String>,
    /// `idle`, `running`, or `awaiting_pick` (its turn is a conversation
    /// arena whose answers wait for a pick: see `pendingArena`).
    #[schema(example = "idle")]
    pub status: &'static str,
    /// The running turn, if any (also while it waits for a pick).
    pub running_turn_id: Option<String>,
    /// The conversation arena run that waits for a pick
    /// (`POST /v1/conversations/{id}/arena/{runId}/pick`); `null` otherwise.
    pub pending_arena: Option<PendingArenaDto>,
    /// The model of the latest chat turn: its resolved id from the turn's
    /// start, then the deployment that answered.
    pub latest_model_id: Option<String>,
    /// Prompt tokens the upstream reported for the latest chat model call:
    /// the conversation's last context size (`null` before one reported
    /// usage).
    pub context_tokens: Option<u64>,
    /// Context window (tokens) of the deployment the conversation's next
    /// chat turn goes to (a route: the smallest of its targets'); `null`
    /// when unknown.
    pub context_window: Option<u64>,
    /// Token totals over every model call of the conversation.
    pub usage: TokenTotalsDto,
    /// Sum of the known costs of those calls, USD; `null` while none has a
    /// known cost.
    pub cost_usd: Option<f64>,
    /// Seq of the last event.
    pub last_seq: i64,
    /// Creation time.
    pub created_at: String,
    /// Time of the last event.
    pub updated_at: String,
}

/// A conversation arena run that waits for a pick.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingArenaDto {
    /// The run.
    pub run_id: String,
    /// Its turn (`awaiting_pick`).
    pub turn_id: String,
}

impl From<&PendingArena> for PendingArenaDto {
    fn from(p: &PendingArena) -> Self {
        PendingArenaDto {
            run_id: p.run_id.clone(),
            turn_id: p.turn_id.clone(),
        }
    }
}

impl ConversationDto {
    /// `c` with `context_window` (tokens) of its next chat turn's deployment.
    pub fn with_window(c: &ConversationRecord, context_window: Option<u64>) -> Self {
        ConversationDto {
            context_window,
            ..ConversationDto::from(c)
        }
    }
}

impl From<&ConversationRecord> for ConversationDto {
    /// `c` with `context_window` unknown (see [`ConversationDto::with_window`]).
    fn from(c: &ConversationRecord) -> Self {
        ConversationDto {
            id: c.id.clone(),
            parent_id: c.parent_id.clone(),
            title: c.title.clone(),
            model: c.model.clone(),
            cwd: c.cwd.clone(),
            reasoning_effort: c.reasoning_effort,
            advisor: c.advisor,
            metadata: c.metadata.clone(),
            llm_id: c.llm_id.clone(),
            llm_overrides: c.llm_overrides.clone(),
            status: match (&c.pending_arena, &c.running_turn_id) {
                (Some(_), _) => "awaiting_pick",
                (None, Some(_)) => "running",
                (None, None) => "idle",
            },
            running_turn_id: c.running_turn_id.clone(),
            pending_arena: c.pending_arena.as_ref().map(PendingArenaDto::from),
            latest_model_id: c.latest_model_id.clone(),
            context_tokens: c.context_tokens,
            context_window: None,
            usage: c.totals.into(),
            cost_usd: c.totals.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
            last_seq: c.last_seq,
            created_at: rfc3339(c.created_at_ms),
            updated_at: rfc3339(c.updated_at_ms),
        }
    }
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageDto {
    /// Id.
    pub id: String,
    /// The turn (or import) it belongs to.
    pub turn_id: String,
    /// `user`, `assistant` or `tool`.
    #[schema(value_type = String, example = "assistant")]
    pub role: MessageRole,
    /// User: the OpenAI content; assistant: the text; tool: the result.
    pub content: Value,
    /// Text, reasoning, tool-call and tool-result parts.
    #[schema(value_type = Vec<Object>)]
    pub parts: Vec<Part>,
    /// The model that produced it.
    pub model_id: Option<String>,
    /// The call's usage (`promptTokens`, `completionTokens`, ...; absent =
    /// not reported; `costNusd` its cost in nano-USD).
    #[schema(value_type = Object)]
    pub usage: TokenUsage,
    /// The cost of the call that produced it (an assistant message, or a
    /// tool result that consulted a model), USD; `null` when unknown.
    pub cost_usd: Option<f64>,
    /// OpenAI finish reason.
    pub finish_reason: Option<String>,
    /// Seq of the event that created it.
    pub seq: i64,
    /// Creation time.
    pub created_at: String,
}

impl From<&MessageRecord> for MessageDto {
    fn from(m: &MessageRecord) -> Self {
        MessageDto {
            id: m.id.clone(),
            turn_id: m.turn_id.clone(),
            role: m.role,
            content: m.content.clone(),
            parts: m.parts.clone(),
            model_id: m.model_id.clone(),
            usage: m.usage,
            cost_usd: m.usage.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
            finish_reason: m.finish_reason.clone(),
            seq: m.seq,
            created_at: rfc3339(m.created_at_ms),
        }
    }
}

/// A turn.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnDto {
    /// Id.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Operation (`chat`, ...).
    pub operation: String,
    /// The resolved model.
    pub model_id: String,
    /// Why that model.
    #[schema(value_type = String)]
    pub resolved_from: ResolvedFrom,
    /// The LLM config that supplied options, if any.
    pub llm_id: Option<String>,
    /// `running`, `completed`, `failed`, `cancelled`, `interrupted`,
    /// `requires_action`.
    pub status: &'static str,
    /// The error of a failed turn (or the note of an interrupted one).
    pub error: Option<String>,
    /// Token totals over every model call of the turn.
    pub usage: TokenTotalsDto,
    /// Sum of the known costs of those calls, USD; `null` while none has a
    /// known cost.
    pub cost_usd: Option<f64>,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub ended_at: Option<String>,
    /// Tool calls no tool result has answered yet (`[{id, name}]`, in the
    /// order the model made them): what a `requires_action` turn waits for,
    /// answered with `POST …/turns/{turnId}/tool-results`.
    pub pending_tool_calls: Vec<PendingToolCallDto>,
}

/// A tool call waiting for its result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingToolCallDto {
    /// The call id a result must name (`toolCallId`).
    pub id: String,
    /// The function called.
    pub name: String,
}

impl From<&TurnRecord> for TurnDto {
    fn from(t: &TurnRecord) -> Self {
        TurnDto {
            id: t.id.clone(),
            conversation_id: t.conversation_id.clone(),
            operation: t.operation.clone(),
            model_id: t.model_id.clone(),
            resolved_from: t.resolved_from,
            llm_id: t.llm_config_id.clone(),
            status: t.status.as_str(),
            error: t.error.clone(),
            usage: t.totals.into(),
            cost_usd: t.totals.cost_nusd.map(modelyard_core::cost::nusd_to_usd),
            started_at: rfc3339(t.started_at_ms),
            ended_at: t.ended_at_ms.map(rfc3339),
            pending_tool_calls: t
                .pending_tool_calls
                .iter()
                .map(|p| PendingToolCallDto {
                    id: p.id.clone(),
                    name: p.name.clone(),
                })
                .collect(),
        }
    }
}

/// `GET/PUT /v1/conversations/{id}/model`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSelectionDto {
    /// The conversation.
    pub conversation_id: String,
    /// Its persisted model selection.
    pub model: Option<String>,
    /// PUT only: whether the id resolved to a model an online provider
    /// serves (`false`: stored anyway, resolved again by each turn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// `GET/PATCH /v1/conversations/{id}/settings`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsDto {
    /// The conversation.
    pub conversation_id: String,
    /// Working directory.
    pub cwd: Option<String>,
    /// Reasoning effort.
    #[schema(value_type = Option<String>, example = "high")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Whether turns offer the advisor tool.
    pub advisor: bool,
    /// The model the advisor would consult now.
    pub advisor_model: Option<String>,
    /// Why no advisor model resolves.
    pub advisor_error: Option<String>,
}

impl From<&Settings> for SettingsDto {
    fn from(s: &Settings) -> Self {
        let c = &s.conversation;
        SettingsDto {
            conversation_id: c.id.clone(),
            cwd: c.cwd.clone(),
            reasoning_effort: c.reasoning_effort,
            advisor: c.advisor,
            advisor_model: s.advisor_model.clone(),
            advisor_error: s.advisor_error.clone(),
        }
    }
}

/// `GET /v1/conversations/{id}/model-history`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelHistoryDto {
    /// The conversation.
    pub conversation_id: String,
    /// Selection changes and turns' resolved models, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<ModelHistoryEntry>,
}

/// 202 answer of `POST /v1/conversations/{id}/turns`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartedDto {
    /// The new turn.
    pub turn_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The resolved model.
    pub model_id: String,
    /// Why that model.
    #[schema(value_type = Option<String>)]
    pub resolved_from: Option<ResolvedFrom>,
}

/// 202 answer of `POST …/turns/{turnId}/tool-results`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnResumedDto {
    /// The turn.
    pub turn_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// Always `running`.
    pub status: &'static str,
}

/// 202 answer of `POST …/turns/{turnId}/cancel`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancellingDto {
    /// The turn.
    pub turn_id: String,
    /// Always `true`.
    pub cancelling: bool,
}
