//! Database shapes of the conversation records and their conversions
//! (row ↔ record), with the helpers that map decoding failures.

use modelyard_core::conversation::{
    ConversationRecord, Event, MessageRecord, MessageRole, Part, PendingArena, ResolvedFrom,
    TokenTotals, TokenUsage, TurnRecord, TurnStatus,
};
use modelyard_core::llm_config::ReasoningEffort;
use serde_json::Value;

use crate::StoreError;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Maps a row that cannot be turned into a record (bad JSON, negative token
/// count, unknown enum text) to [`StoreError::Query`] of `op`.
pub(super) fn decode_err(op: &'static str) -> impl Fn(BoxError) -> StoreError {
    move |e| StoreError::Query {
        op,
        source: sqlx::Error::Decode(e),
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidInput {
        reason: format!("{what} cannot be serialized as JSON: {e}"),
    })
}

pub(super) fn to_db_count(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::InvalidInput {
        reason: format!("token count {n} does not fit a BIGINT"),
    })
}

pub(super) fn resolved_from_text(r: ResolvedFrom) -> &'static str {
    // The serde (API) names of `ResolvedFrom`.
    match r {
        ResolvedFrom::Request => "request",
        ResolvedFrom::Conversation => "conversation",
        ResolvedFrom::OperationConfig => "operationConfig",
        ResolvedFrom::ConversationConfig => "conversationConfig",
        ResolvedFrom::ServerDefault => "serverDefault",
    }
}

pub(super) fn parse_resolved_from(text: &str) -> Result<ResolvedFrom, BoxError> {
    Ok(serde_json::from_value(Value::String(text.to_owned()))?)
}

/// The five token-total columns. Their names (`input_tokens`,
/// `output_tokens`, `cached_input_tokens`, ...) are those of migration 0003;
/// they hold [`TokenTotals`]' `prompt_tokens`, `completion_tokens`,
/// `cached_prompt_tokens`, ...; `cost_nusd` (migration 0014) its cost.
#[derive(sqlx::FromRow)]
pub(super) struct TotalsRow {
    pub(super) input_tokens: i64,
    pub(super) output_tokens: i64,
    pub(super) reasoning_tokens: i64,
    pub(super) cached_input_tokens: i64,
    pub(super) total_tokens: i64,
    pub(super) cost_nusd: Option<i64>,
}

impl TotalsRow {
    pub(super) fn from_totals(t: &TokenTotals) -> Result<Self, StoreError> {
        Ok(Self {
            input_tokens: to_db_count(t.prompt_tokens)?,
            output_tokens: to_db_count(t.completion_tokens)?,
            reasoning_tokens: to_db_count(t.reasoning_tokens)?,
            cached_input_tokens: to_db_count(t.cached_prompt_tokens)?,
            total_tokens: to_db_count(t.total_tokens)?,
            cost_nusd: t.cost_nusd,
        })
    }

    pub(super) fn into_totals(self) -> Result<TokenTotals, BoxError> {
        Ok(TokenTotals {
            prompt_tokens: u64::try_from(self.input_tokens)?,
            completion_tokens: u64::try_from(self.output_tokens)?,
            reasoning_tokens: u64::try_from(self.reasoning_tokens)?,
            cached_prompt_tokens: u64::try_from(self.cached_input_tokens)?,
            total_tokens: u64::try_from(self.total_tokens)?,
            cost_nusd: self.cost_nusd,
        })
    }
}

/// Database shape of a [`ConversationRecord`].
#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    pub(super) id: String,
    pub(super) parent_id: Option<String>,
    pub(super) title: Option<String>,
    pub(super) model: Option<String>,
    pub(super) cwd: Option<String>,
    pub(super) reasoning_effort: Option<String>,
    pub(super) metadata_json: String,
    pub(super) latest_model_id: Option<String>,
    #[sqlx(flatten)]
    pub(super) totals: TotalsRow,
    pub(super) running_turn_id: Option<String>,
    pub(super) deleted: bool,
    pub(super) last_seq: i64,
    pub(super) created_at_ms: i64,
    pub(super) updated_at_ms: i64,
    pub(super) llm_id: Option<String>,
    pub(super) llm_overrides_json: String,
    pub(super) compacted_through_seq: Option<i64>,
    pub(super) summary: Option<String>,
    pub(super) advisor: bool,
    pub(super) context_tokens: Option<i64>,
    /// [`ConversationRecord::pending_arena`] (migration 0020): both set or
    /// both NULL.
    pub(super) pending_arena_run_id: Option<String>,
    pub(super) pending_arena_turn_id: Option<String>,
}

impl ConversationRow {
    pub(super) fn from_record(c: &ConversationRecord) -> Result<Self, StoreError> {
        Ok(Self {
            id: c.id.clone(),
            parent_id: c.parent_id.clone(),
            title: c.title.clone(),
            model: c.model.clone(),
            cwd: c.cwd.clone(),
            reasoning_effort: c.reasoning_effort.map(|e| e.as_str().to_owned()),
            metadata_json: to_json(&c.metadata, "conversation metadata")?,
            latest_model_id: c.latest_model_id.clone(),
            totals: TotalsRow::from_totals(&c.totals)?,
            running_turn_id: c.running_turn_id.clone(),
            deleted: c.deleted,
            last_seq: c.last_seq,
            created_at_ms: c.created_at_ms,
            updated_at_ms: c.updated_at_ms,
            llm_id: c.llm_id.clone(),
            llm_overrides_json: to_json(&c.llm_overrides, "conversation LLM overrides")?,
            compacted_through_seq: c.compacted_through_seq,
            summary: c.summary.clone(),
            advisor: c.advisor,
            context_tokens: c.context_tokens.map(to_db_count).transpose()?,
            pending_arena_run_id: c.pending_arena.as_ref().map(|p| p.run_id.clone()),
            pending_arena_turn_id: c.pending_arena.as_ref().map(|p| p.turn_id.clone()),
        })
    }

    pub(super) fn into_record(self) -> Result<ConversationRecord, BoxError> {
        Ok(ConversationRecord {
            id: self.id,
            parent_id: self.parent_id,
            title: self.title,
            model: self.model,
            cwd: self.cwd,
            reasoning_effort: self
                .reasoning_effort
                .as_deref()
                .and_then(ReasoningEffort::parse),
            metadata: serde_json::from_str(&self.metadata_json)?,
            latest_model_id: self.latest_model_id,
            totals: self.totals.into_totals()?,
            running_turn_id: self.running_turn_id,
            deleted: self.deleted,
            last_seq: self.last_seq,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            llm_id: self.llm_id,
            llm_overrides: serde_json::from_str(&self.llm_overrides_json)?,
            compacted_through_seq: self.compacted_through_seq,
            summary: self.summary,
            advisor: self.advisor,
            context_tokens: self.context_tokens.map(u64::try_from).transpose()?,
            pending_arena: match (self.pending_arena_run_id, self.pending_arena_turn_id) {
                (Some(run_id), Some(turn_id)) => Some(PendingArena { run_id, turn_id }),
                _ => None,
            },
        })
    }
}

/// Binds `$project` and the fields of a [`ConversationRow`] in the order of
/// [`INSERT_CONVERSATION`](super::sql::INSERT_CONVERSATION) /
/// [`UPDATE_CONVERSATION`](super::sql::UPDATE_CONVERSATION).
macro_rules! bind_conversation {
    ($query:expr, $project:expr, $row:expr) => {
        $query
            .bind($project.as_str())
            .bind(&$row.id)
            .bind(&$row.parent_id)
            .bind(&$row.title)
            .bind(&$row.model)
            .bind(&$row.cwd)
            .bind(&$row.reasoning_effort)
            .bind(&$row.metadata_json)
            .bind(&$row.latest_model_id)
            .bind($row.totals.input_tokens)
            .bind($row.totals.output_tokens)
            .bind($row.totals.reasoning_tokens)
            .bind($row.totals.cached_input_tokens)
            .bind($row.totals.total_tokens)
            .bind(&$row.running_turn_id)
            .bind($row.deleted)
            .bind($row.last_seq)
            .bind($row.created_at_ms)
            .bind($row.updated_at_ms)
            .bind(&$row.llm_id)
            .bind(&$row.llm_overrides_json)
            .bind($row.compacted_through_seq)
            .bind(&$row.summary)
            .bind($row.advisor)
            .bind($row.context_tokens)
            .bind($row.totals.cost_nusd)
            .bind(&$row.pending_arena_run_id)
            .bind(&$row.pending_arena_turn_id)
    };
}
pub(super) use bind_conversation;

/// Database shape of a [`TurnRecord`].
#[derive(sqlx::FromRow)]
pub(super) struct TurnRow {
    pub(super) id: String,
    pub(super) conversation_id: String,
    pub(super) operation: String,
    pub(super) model_id: String,
    pub(super) resolved_from: String,
    pub(super) llm_config_id: Option<String>,
    pub(super) status: String,
    pub(super) error: Option<String>,
    #[sqlx(flatten)]
    pub(super) totals: TotalsRow,
    pub(super) started_seq: i64,
    pub(super) started_at_ms: i64,
    pub(super) ended_at_ms: Option<i64>,
    /// NULL on rows written before migration 0017 (read as empty).
    pub(super) client_tools_json: Option<String>,
    /// NULL on rows written before migration 0017 (read as empty).
    pub(super) pending_tool_calls_json: Option<String>,
    /// The turn's arena run (migration 0019).
    pub(super) arena_run_id: Option<String>,
}

impl TurnRow {
    pub(super) fn from_record(t: &TurnRecord) -> Result<Self, StoreError> {
        Ok(Self {
            id: t.id.clone(),
            conversation_id: t.conversation_id.clone(),
            operation: t.operation.clone(),
            model_id: t.model_id.clone(),
            resolved_from: resolved_from_text(t.resolved_from).to_owned(),
            llm_config_id: t.llm_config_id.clone(),
            status: t.status.as_str().to_owned(),
            error: t.error.clone(),
            totals: TotalsRow::from_totals(&t.totals)?,
            started_seq: t.started_seq,
            started_at_ms: t.started_at_ms,
            ended_at_ms: t.ended_at_ms,
            client_tools_json: Some(to_json(&t.client_tools, "turn client tools")?),
            pending_tool_calls_json: Some(to_json(
                &t.pending_tool_calls,
                "turn pending tool calls",
            )?),
            arena_run_id: t.arena_run_id.clone(),
        })
    }

    pub(super) fn into_record(self) -> Result<TurnRecord, BoxError> {
        Ok(TurnRecord {
            id: self.id,
            conversation_id: self.conversation_id,
            operation: self.operation,
            model_id: self.model_id,
            resolved_from: parse_resolved_from(&self.resolved_from)?,
            llm_config_id: self.llm_config_id,
            status: TurnStatus::parse(&self.status)
                .ok_or_else(|| format!("unknown turn status {:?}", self.status))?,
            error: self.error,
            totals: self.totals.into_totals()?,
            started_seq: self.started_seq,
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
            client_tools: match self.client_tools_json {
                Some(json) => serde_json::from_str(&json)?,
                None => Vec::new(),
            },
            pending_tool_calls: match self.pending_tool_calls_json {
                Some(json) => serde_json::from_str(&json)?,
                None => Vec::new(),
            },
            arena_run_id: self.arena_run_id,
        })
    }
}

/// Binds `$project` and the fields of a [`TurnRow`] in the order of
/// [`INSERT_TURN`](super::sql::INSERT_TURN) / [`UPDATE_TURN`](super::sql::UPDATE_TURN).
macro_rules! bind_turn {
    ($query:expr, $project:expr, $row:expr) => {
        $query
            .bind($project.as_str())
            .bind(&$row.id)
            .bind(&$row.conversation_id)
            .bind(&$row.operation)
            .bind(&$row.model_id)
            .bind(&$row.resolved_from)
            .bind(&$row.llm_config_id)
            .bind(&$row.status)
            .bind(&$row.error)
            .bind($row.totals.input_tokens)
            .bind($row.totals.output_tokens)
            .bind($row.totals.reasoning_tokens)
            .bind($row.totals.cached_input_tokens)
            .bind($row.totals.total_tokens)
            .bind($row.started_seq)
            .bind($row.started_at_ms)
            .bind($row.ended_at_ms)
            .bind(&$row.client_tools_json)
            .bind(&$row.pending_tool_calls_json)
            .bind($row.totals.cost_nusd)
            .bind(&$row.arena_run_id)
    };
}
pub(super) use bind_turn;

/// A turn row with its project ([`Store::running_turns`]).
#[derive(sqlx::FromRow)]
pub(super) struct ProjectTurnRow {
    pub(super) project_id: String,
    #[sqlx(flatten)]
    pub(super) turn: TurnRow,
}

/// Database shape of a [`MessageRecord`].
#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    pub(super) id: String,
    pub(super) conversation_id: String,
    pub(super) turn_id: String,
    pub(super) role: String,
    pub(super) content_json: String,
    pub(super) parts_json: String,
    pub(super) model_id: Option<String>,
    pub(super) usage_json: String,
    pub(super) finish_reason: Option<String>,
    pub(super) seq: i64,
    pub(super) created_at_ms: i64,
}

impl MessageRow {
    pub(super) fn from_record(m: &MessageRecord) -> Result<Self, StoreError> {
        Ok(Self {
            id: m.id.clone(),
            conversation_id: m.conversation_id.clone(),
            turn_id: m.turn_id.clone(),
            role: m.role.as_str().to_owned(),
            content_json: to_json(&m.content, "message content")?,
            parts_json: to_json(&m.parts, "message parts")?,
            model_id: m.model_id.clone(),
            usage_json: to_json(&m.usage, "message usage")?,
            finish_reason: m.finish_reason.clone(),
            seq: m.seq,
            created_at_ms: m.created_at_ms,
        })
    }

    pub(super) fn into_record(self) -> Result<MessageRecord, BoxError> {
        Ok(MessageRecord {
            id: self.id,
            conversation_id: self.conversation_id,
            turn_id: self.turn_id,
            role: MessageRole::parse(&self.role)
                .ok_or_else(|| format!("unknown message role {:?}", self.role))?,
            content: serde_json::from_str(&self.content_json)?,
            parts: serde_json::from_str::<Vec<Part>>(&self.parts_json)?,
            model_id: self.model_id,
            usage: serde_json::from_str::<TokenUsage>(&self.usage_json)?,
            finish_reason: self.finish_reason,
            seq: self.seq,
            created_at_ms: self.created_at_ms,
        })
    }
}

/// Raw shape of a [`SELECT_EVENTS_AFTER`](super::sql::SELECT_EVENTS_AFTER) row: seq, at_ms, payload JSON.
pub(super) type EventRecord = (i64, i64, String);

pub(super) fn to_events(
    conversation_id: &str,
    records: Vec<EventRecord>,
) -> Result<Vec<Event>, StoreError> {
    records
        .into_iter()
        .map(|(seq, at_ms, payload)| {
            Ok(Event {
                conversation_id: conversation_id.to_owned(),
                seq,
                at_ms,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| decode_err("events_after")(Box::new(e)))?,
            })
        })
        .collect()
}
