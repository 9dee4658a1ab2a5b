//! Conversations: the append-only event log and the tables materialized from
//! it.
//!
//! Every change to a conversation is an [`Event`] stored in
//! `conversation_events` (per-conversation `seq` 1, 2, 3, … without gaps;
//! the payload as its JSON text, with the dotted `type`). The rows of
//! `conversations`, `turns` and `messages` are what
//! [`modelyard_core::conversation::apply`] makes of the log; they are written
//! in the transaction that appends the events, so the tables always equal the
//! fold of the log ([`modelyard_core::conversation::fold`]).
//!
//! Appends to one conversation are serialized: on SQLite by the single writer
//! connection and `BEGIN IMMEDIATE`, on PostgreSQL by a row lock on the
//! conversation (and, for its creation, by the primary keys of
//! `conversations` and `conversation_events`).
//!
//! The only non-fold state is a running turn's crash checkpoint
//! ([`Store::checkpoint_turn`]), kept in the `turns` row beside the fold's
//! columns and never touched by appends.

use modelyard_core::conversation::{
    self, ApplyError, ConversationRecord, Event, EventPayload, MessageRecord, Part, ResolvedFrom,
    TokenTotals, TokenUsage, TurnRecord, TurnStatus, EVENT_PAYLOAD_VERSION,
};
use serde_json::Value;

use crate::favorites::begin_sql;
use crate::{Backend, ProjectId, Store, StoreError};

/// Page size of [`Store::list_conversations`] when
/// [`ConversationFilter::limit`] is 0.
pub const DEFAULT_CONVERSATION_LIMIT: u32 = 50;

/// Largest page of [`Store::list_conversations`]; larger
/// [`ConversationFilter::limit`] values are capped to this.
pub const MAX_CONVERSATION_LIMIT: u32 = 200;

/// Number of events [`Store::events_after`] returns when `limit` is 0.
pub const DEFAULT_EVENTS_LIMIT: u32 = 1000;

/// Selection and paging for [`Store::list_conversations`]. All set criteria
/// must match (AND).
#[derive(Clone, Debug, Default)]
pub struct ConversationFilter {
    /// Page size: 0 means [`DEFAULT_CONVERSATION_LIMIT`] (50); values above
    /// [`MAX_CONVERSATION_LIMIT`] (200) are capped.
    pub limit: u32,
    /// Cursor: `(updated_at_ms, id)` of the last conversation of the previous
    /// page; only conversations strictly after it in the list order (newest
    /// `updated_at_ms` first, then id descending) are returned.
    pub before: Option<(i64, String)>,
    /// Also list soft-deleted conversations (excluded by default).
    pub include_deleted: bool,
    /// Only the conversations whose parent is exactly this conversation.
    pub parent_id: Option<String>,
}

impl ConversationFilter {
    /// The page size actually used: `limit` with 0 mapped to
    /// [`DEFAULT_CONVERSATION_LIMIT`] and capped at [`MAX_CONVERSATION_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_CONVERSATION_LIMIT,
            n => n.min(MAX_CONVERSATION_LIMIT),
        }
    }
}

// ---------------------------------------------------------------- SQL

/// Columns of [`ConversationRow`], in bind order after `project_id`.
macro_rules! conversation_columns {
    () => {
        "id, parent_id, title, model, cwd, reasoning_effort, metadata_json, latest_model_id, \
         input_tokens, output_tokens, reasoning_tokens, cached_input_tokens, total_tokens, \
         running_turn_id, deleted, last_seq, created_at_ms, updated_at_ms, llm_id, \
         llm_overrides_json, compacted_through_seq, summary, advisor"
    };
}

/// Columns of [`TurnRow`], in bind order after `project_id`.
macro_rules! turn_columns {
    () => {
        "id, conversation_id, operation, model_id, resolved_from, llm_config_id, status, error, \
         input_tokens, output_tokens, reasoning_tokens, cached_input_tokens, total_tokens, \
         started_seq, started_at_ms, ended_at_ms"
    };
}

/// Columns of [`MessageRow`], in bind order after `project_id`.
macro_rules! message_columns {
    () => {
        "id, conversation_id, turn_id, role, content_json, parts_json, model_id, usage_json, \
         finish_reason, seq, created_at_ms"
    };
}

const SELECT_CONVERSATIONS: &str =
    concat!("SELECT ", conversation_columns!(), " FROM conversations");

const SELECT_CONVERSATION: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE project_id = $1 AND id = $2"
);

/// PostgreSQL only (SQLite has no row locks; its single writer connection and
/// `BEGIN IMMEDIATE` serialize appends): locks the conversation row so that
/// appends to one conversation run one after the other. `FOR NO KEY UPDATE`
/// (the lock an `UPDATE` of non-key columns takes) conflicts with itself, so
/// appenders serialize, but not with the `FOR KEY SHARE` of foreign-key
/// checks. No row (conversation not created yet) takes no lock: concurrent
/// creations then collide on the primary key.
const LOCK_CONVERSATION: &str =
    "SELECT id FROM conversations WHERE project_id = $1 AND id = $2 FOR NO KEY UPDATE";

const INSERT_CONVERSATION: &str = concat!(
    "INSERT INTO conversations (project_id, ",
    conversation_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23, $24)"
);

const UPDATE_CONVERSATION: &str = "UPDATE conversations SET parent_id = $3, title = $4, \
     model = $5, cwd = $6, reasoning_effort = $7, metadata_json = $8, latest_model_id = $9, \
     input_tokens = $10, output_tokens = $11, reasoning_tokens = $12, \
     cached_input_tokens = $13, total_tokens = $14, running_turn_id = $15, deleted = $16, \
     last_seq = $17, created_at_ms = $18, updated_at_ms = $19, llm_id = $20, \
     llm_overrides_json = $21, compacted_through_seq = $22, summary = $23, advisor = $24 \
     WHERE project_id = $1 AND id = $2";

const INSERT_EVENT: &str = "INSERT INTO conversation_events \
     (project_id, conversation_id, seq, at_ms, event_type, version, payload) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const SELECT_EVENTS_AFTER: &str = "SELECT seq, at_ms, payload FROM conversation_events \
     WHERE project_id = $1 AND conversation_id = $2 AND seq > $3 ORDER BY seq ASC LIMIT $4";

const SELECT_TURN: &str = concat!(
    "SELECT ",
    turn_columns!(),
    " FROM turns WHERE project_id = $1 AND id = $2"
);

const SELECT_CONVERSATION_TURNS: &str = concat!(
    "SELECT ",
    turn_columns!(),
    " FROM turns WHERE project_id = $1 AND conversation_id = $2 ORDER BY started_seq ASC"
);

const SELECT_RUNNING_TURNS: &str = concat!(
    "SELECT project_id, ",
    turn_columns!(),
    " FROM turns WHERE status = 'running' ORDER BY project_id, started_at_ms, id"
);

const INSERT_TURN: &str = concat!(
    "INSERT INTO turns (project_id, ",
    turn_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
);

/// Updates the fold's columns of a turn; the checkpoint columns are left as
/// they are.
const UPDATE_TURN: &str = "UPDATE turns SET conversation_id = $3, operation = $4, \
     model_id = $5, resolved_from = $6, llm_config_id = $7, status = $8, error = $9, \
     input_tokens = $10, output_tokens = $11, reasoning_tokens = $12, \
     cached_input_tokens = $13, total_tokens = $14, started_seq = $15, started_at_ms = $16, \
     ended_at_ms = $17 \
     WHERE project_id = $1 AND id = $2";

const CHECKPOINT_TURN: &str = "UPDATE turns SET partial_text = $3, partial_at_ms = $4 \
     WHERE project_id = $1 AND id = $2 AND status = 'running'";

const SELECT_PARTIAL_TEXT: &str =
    "SELECT partial_text FROM turns WHERE project_id = $1 AND id = $2";

const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (project_id, ",
    message_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);

const SELECT_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE project_id = $1 AND conversation_id = $2 ORDER BY seq ASC, id ASC"
);

// ---------------------------------------------------------------- rows

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Maps a row that cannot be turned into a record (bad JSON, negative token
/// count, unknown enum text) to [`StoreError::Query`] of `op`.
fn decode_err(op: &'static str) -> impl Fn(BoxError) -> StoreError {
    move |e| StoreError::Query {
        op,
        source: sqlx::Error::Decode(e),
    }
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidInput {
        reason: format!("{what} cannot be serialized as JSON: {e}"),
    })
}

fn to_db_count(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::InvalidInput {
        reason: format!("token count {n} does not fit a BIGINT"),
    })
}

fn resolved_from_text(r: ResolvedFrom) -> &'static str {
    // The serde (API) names of `ResolvedFrom`.
    match r {
        ResolvedFrom::Request => "request",
        ResolvedFrom::Conversation => "conversation",
        ResolvedFrom::OperationConfig => "operationConfig",
        ResolvedFrom::ConversationConfig => "conversationConfig",
        ResolvedFrom::ServerDefault => "serverDefault",
    }
}

fn parse_resolved_from(text: &str) -> Result<ResolvedFrom, BoxError> {
    Ok(serde_json::from_value(Value::String(text.to_owned()))?)
}

/// The five token-total columns.
#[derive(sqlx::FromRow)]
struct TotalsRow {
    input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cached_input_tokens: i64,
    total_tokens: i64,
}

impl TotalsRow {
    fn from_totals(t: &TokenTotals) -> Result<Self, StoreError> {
        Ok(Self {
            input_tokens: to_db_count(t.input)?,
            output_tokens: to_db_count(t.output)?,
            reasoning_tokens: to_db_count(t.reasoning)?,
            cached_input_tokens: to_db_count(t.cached_input)?,
            total_tokens: to_db_count(t.total)?,
        })
    }

    fn into_totals(self) -> Result<TokenTotals, BoxError> {
        Ok(TokenTotals {
            input: u64::try_from(self.input_tokens)?,
            output: u64::try_from(self.output_tokens)?,
            reasoning: u64::try_from(self.reasoning_tokens)?,
            cached_input: u64::try_from(self.cached_input_tokens)?,
            total: u64::try_from(self.total_tokens)?,
        })
    }
}

/// Database shape of a [`ConversationRecord`].
#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: String,
    parent_id: Option<String>,
    title: Option<String>,
    model: Option<String>,
    cwd: Option<String>,
    reasoning_effort: Option<String>,
    metadata_json: String,
    latest_model_id: Option<String>,
    #[sqlx(flatten)]
    totals: TotalsRow,
    running_turn_id: Option<String>,
    deleted: bool,
    last_seq: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    llm_id: Option<String>,
    llm_overrides_json: String,
    compacted_through_seq: Option<i64>,
    summary: Option<String>,
    advisor: bool,
}

impl ConversationRow {
    fn from_record(c: &ConversationRecord) -> Result<Self, StoreError> {
        Ok(Self {
            id: c.id.clone(),
            parent_id: c.parent_id.clone(),
            title: c.title.clone(),
            model: c.model.clone(),
            cwd: c.cwd.clone(),
            reasoning_effort: c.reasoning_effort.clone(),
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
        })
    }

    fn into_record(self) -> Result<ConversationRecord, BoxError> {
        Ok(ConversationRecord {
            id: self.id,
            parent_id: self.parent_id,
            title: self.title,
            model: self.model,
            cwd: self.cwd,
            reasoning_effort: self.reasoning_effort,
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
        })
    }
}

/// Binds `$project` and the fields of a [`ConversationRow`] in the order of
/// [`INSERT_CONVERSATION`] / [`UPDATE_CONVERSATION`].
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
    };
}

/// Database shape of a [`TurnRecord`].
#[derive(sqlx::FromRow)]
struct TurnRow {
    id: String,
    conversation_id: String,
    operation: String,
    model_id: String,
    resolved_from: String,
    llm_config_id: Option<String>,
    status: String,
    error: Option<String>,
    #[sqlx(flatten)]
    totals: TotalsRow,
    started_seq: i64,
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
}

impl TurnRow {
    fn from_record(t: &TurnRecord) -> Result<Self, StoreError> {
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
        })
    }

    fn into_record(self) -> Result<TurnRecord, BoxError> {
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
        })
    }
}

/// Binds `$project` and the fields of a [`TurnRow`] in the order of
/// [`INSERT_TURN`] / [`UPDATE_TURN`].
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
    };
}

/// A turn row with its project ([`Store::running_turns`]).
#[derive(sqlx::FromRow)]
struct ProjectTurnRow {
    project_id: String,
    #[sqlx(flatten)]
    turn: TurnRow,
}

/// Database shape of a [`MessageRecord`].
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    conversation_id: String,
    turn_id: String,
    role: String,
    content_json: String,
    parts_json: String,
    model_id: Option<String>,
    usage_json: String,
    finish_reason: Option<String>,
    seq: i64,
    created_at_ms: i64,
}

impl MessageRow {
    fn from_record(m: &MessageRecord) -> Result<Self, StoreError> {
        Ok(Self {
            id: m.id.clone(),
            conversation_id: m.conversation_id.clone(),
            turn_id: m.turn_id.clone(),
            role: m.role.clone(),
            content_json: to_json(&m.content, "message content")?,
            parts_json: to_json(&m.parts, "message parts")?,
            model_id: m.model_id.clone(),
            usage_json: to_json(&m.usage, "message usage")?,
            finish_reason: m.finish_reason.clone(),
            seq: m.seq,
            created_at_ms: m.created_at_ms,
        })
    }

    fn into_record(self) -> Result<MessageRecord, BoxError> {
        Ok(MessageRecord {
            id: self.id,
            conversation_id: self.conversation_id,
            turn_id: self.turn_id,
            role: self.role,
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

/// Raw shape of a [`SELECT_EVENTS_AFTER`] row: seq, at_ms, payload JSON.
type EventRecord = (i64, i64, String);

fn to_events(conversation_id: &str, records: Vec<EventRecord>) -> Result<Vec<Event>, StoreError> {
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

// ---------------------------------------------------------------- fold

/// A turn touched by a batch of events.
struct TurnChange {
    turn: TurnRecord,
    /// Started in this batch (INSERT) rather than loaded (UPDATE).
    new: bool,
    /// Changed by the batch (a loaded running turn may be untouched).
    changed: bool,
}

/// What appending a batch writes.
struct Batch {
    /// The conversation after the batch.
    conversation: ConversationRecord,
    /// The new events, seq ascending.
    events: Vec<Event>,
    /// Turns touched, final state.
    turns: Vec<TurnChange>,
    /// Messages to insert.
    messages: Vec<MessageRecord>,
}

fn apply_error(e: ApplyError) -> StoreError {
    match e {
        ApplyError::NoConversation(id) => StoreError::NotFound {
            kind: "conversation",
            id,
        },
        other => StoreError::Conflict {
            reason: other.to_string(),
        },
    }
}

/// Folds `payloads` (non-empty) onto the stored state: the conversation
/// (`None` before creation) and its running turn, if any.
fn fold_batch(
    mut conversation: Option<ConversationRecord>,
    running: Option<TurnRecord>,
    conversation_id: &str,
    payloads: &[EventPayload],
    at_ms: i64,
) -> Result<Batch, StoreError> {
    let first_seq = conversation.as_ref().map_or(0, |c| c.last_seq) + 1;
    let mut turns: Vec<TurnChange> = running
        .into_iter()
        .map(|turn| TurnChange {
            turn,
            new: false,
            changed: false,
        })
        .collect();
    let mut events = Vec::with_capacity(payloads.len());
    let mut messages = Vec::new();
    for (seq, payload) in (first_seq..).zip(payloads) {
        let event = Event {
            conversation_id: conversation_id.to_owned(),
            seq,
            at_ms,
            payload: payload.clone(),
        };
        let running_id = conversation
            .as_ref()
            .and_then(|c| c.running_turn_id.clone());
        let running = running_id
            .and_then(|id| turns.iter().find(|t| t.turn.id == id))
            .map(|t| &t.turn);
        let changes =
            conversation::apply(&mut conversation, running, &event).map_err(apply_error)?;
        if let Some(turn) = changes.turn {
            match turns.iter_mut().find(|t| t.turn.id == turn.id) {
                Some(existing) => {
                    existing.turn = turn;
                    existing.changed = true;
                }
                None => turns.push(TurnChange {
                    turn,
                    new: true,
                    changed: true,
                }),
            }
        }
        messages.extend(changes.message);
        events.push(event);
    }
    let conversation = conversation.ok_or_else(|| StoreError::NotFound {
        kind: "conversation",
        id: conversation_id.to_owned(),
    })?;
    Ok(Batch {
        conversation,
        events,
        turns,
        messages,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

// ---------------------------------------------------------------- API

impl Store {
    /// Appends `payloads` to conversation `conversation_id` of `project`, all
    /// stamped `at_ms`, in ONE transaction, and returns the stored events
    /// (seq ascending).
    ///
    /// Reads the materialized conversation (none before its
    /// `conversation.created` event) and its running turn, assigns
    /// `seq = last_seq + 1, …`, runs
    /// [`modelyard_core::conversation::apply`] for each event, inserts the
    /// event rows (payload JSON with the dotted `type`, version
    /// [`EVENT_PAYLOAD_VERSION`]) and writes exactly the changed rows: the
    /// conversation (insert at creation, update after), each turn touched
    /// (insert when started in the batch, update otherwise; a turn's
    /// checkpoint is left as it is) and each new message. An empty `payloads`
    /// writes nothing and returns an empty list.
    ///
    /// Concurrent appends to one conversation serialize (SQLite: the single
    /// writer connection and `BEGIN IMMEDIATE`; PostgreSQL: a row lock on the
    /// conversation), so seqs never repeat or skip.
    ///
    /// # Errors
    ///
    /// In every error case nothing is written.
    ///
    /// * [`StoreError::Conflict`] when an event does not fit the state
    ///   (`turn.started` while a turn runs, a turn event for a turn that is
    ///   not running, `conversation.created` for an existing conversation —
    ///   of this project or, the ids being global, of another one — or one
    ///   created concurrently);
    /// * [`StoreError::NotFound`] (`kind: "conversation"`) for a first event
    ///   other than `conversation.created`, i.e. no such conversation in this
    ///   project;
    /// * [`StoreError::Duplicate`] when a new turn or message id already
    ///   exists;
    /// * [`StoreError::MissingReference`] when `project` does not exist;
    /// * [`StoreError::InvalidInput`] for a token count above `i64::MAX`;
    /// * [`StoreError::Query`] for other database failures.
    pub async fn append_events(
        &self,
        project: &ProjectId,
        conversation_id: &str,
        payloads: &[EventPayload],
        at_ms: i64,
    ) -> Result<Vec<Event>, StoreError> {
        const OP: &str = "append_events";
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let payload_texts = payloads
            .iter()
            .map(|p| to_json(p, "event payload"))
            .collect::<Result<Vec<_>, _>>()?;
        let version = i32::try_from(EVENT_PAYLOAD_VERSION).unwrap_or(i32::MAX);
        let err = StoreError::op(OP);
        let decode = decode_err(OP);
        let backend = self.backend();
        let events = on_pool!(self, writer, |pool| {
            let mut tx = pool.begin_with(begin_sql(backend)).await.map_err(&err)?;
            if backend == Backend::Postgres {
                sqlx::query(LOCK_CONVERSATION)
                    .bind(project.as_str())
                    .bind(conversation_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            let current: Option<ConversationRow> = sqlx::query_as(SELECT_CONVERSATION)
                .bind(project.as_str())
                .bind(conversation_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&err)?;
            let current = current
                .map(ConversationRow::into_record)
                .transpose()
                .map_err(&decode)?;
            let running_id = current.as_ref().and_then(|c| c.running_turn_id.clone());
            let running: Option<TurnRow> = match running_id {
                Some(turn_id) => sqlx::query_as(SELECT_TURN)
                    .bind(project.as_str())
                    .bind(turn_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(&err)?,
                None => None,
            };
            let running = running
                .map(TurnRow::into_record)
                .transpose()
                .map_err(&decode)?;
            let existed = current.is_some();
            let batch = fold_batch(current, running, conversation_id, payloads, at_ms)?;

            // The conversation first: the other rows reference it.
            let row = ConversationRow::from_record(&batch.conversation)?;
            let sql = if existed {
                UPDATE_CONVERSATION
            } else {
                INSERT_CONVERSATION
            };
            bind_conversation!(sqlx::query(sql), project, row)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict {
                            reason: format!("conversation {conversation_id} already exists"),
                        }
                    } else {
                        err(e)
                    }
                })?;
            for (event, payload) in batch.events.iter().zip(&payload_texts) {
                sqlx::query(INSERT_EVENT)
                    .bind(project.as_str())
                    .bind(conversation_id)
                    .bind(event.seq)
                    .bind(event.at_ms)
                    .bind(event.payload.event_type())
                    .bind(version)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::Conflict {
                                reason: format!(
                                    "event {} of conversation {conversation_id} already exists",
                                    event.seq
                                ),
                            }
                        } else {
                            err(e)
                        }
                    })?;
            }
            for change in batch.turns.iter().filter(|t| t.changed) {
                let row = TurnRow::from_record(&change.turn)?;
                let sql = if change.new { INSERT_TURN } else { UPDATE_TURN };
                bind_turn!(sqlx::query(sql), project, row)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            for message in &batch.messages {
                let row = MessageRow::from_record(message)?;
                sqlx::query(INSERT_MESSAGE)
                    .bind(project.as_str())
                    .bind(&row.id)
                    .bind(&row.conversation_id)
                    .bind(&row.turn_id)
                    .bind(&row.role)
                    .bind(&row.content_json)
                    .bind(&row.parts_json)
                    .bind(&row.model_id)
                    .bind(&row.usage_json)
                    .bind(&row.finish_reason)
                    .bind(row.seq)
                    .bind(row.created_at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(&err)?;
            }
            tx.commit().await.map_err(&err)?;
            batch.events
        });
        tracing::trace!(
            project = %project,
            conversation_id,
            events = events.len(),
            last_seq = events.last().map_or(0, |e| e.seq),
            "appended conversation events"
        );
        Ok(events)
    }

    /// The events of conversation `conversation_id` of `project` with
    /// `seq > after`, seq ascending, at most `limit` of them (0 means
    /// [`DEFAULT_EVENTS_LIMIT`], 1000). Empty if the conversation does not
    /// exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure or a stored payload that
    /// does not parse.
    pub async fn events_after(
        &self,
        project: &ProjectId,
        conversation_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = i64::from(if limit == 0 {
            DEFAULT_EVENTS_LIMIT
        } else {
            limit
        });
        let records: Vec<EventRecord> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_EVENTS_AFTER)
                .bind(project.as_str())
                .bind(conversation_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op("events_after"))
        })?;
        to_events(conversation_id, records)
    }

    /// The materialized conversation `id` of `project` (deleted ones too, with
    /// `deleted: true`); `None` if there is no such conversation in this
    /// project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_conversation(
        &self,
        project: &ProjectId,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        const OP: &str = "get_conversation";
        let row: Option<ConversationRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_CONVERSATION)
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(ConversationRow::into_record)
            .transpose()
            .map_err(decode_err(OP))
    }

    /// Conversations of `project` matching `filter`, newest `updated_at_ms`
    /// first (ties: id descending), at most
    /// [`ConversationFilter::effective_limit`] of them. Soft-deleted ones are
    /// left out unless [`ConversationFilter::include_deleted`]. For the next
    /// page, pass `(updated_at_ms, id)` of the last item as
    /// [`ConversationFilter::before`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_conversations(
        &self,
        project: &ProjectId,
        filter: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        const OP: &str = "list_conversations";
        let mut sql = format!("{SELECT_CONVERSATIONS} WHERE project_id = $1");
        let mut n = 1;
        if !filter.include_deleted {
            sql.push_str(" AND NOT deleted");
        }
        if filter.parent_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND parent_id = ${n}"));
        }
        if filter.before.is_some() {
            sql.push_str(&format!(
                " AND (updated_at_ms, id) < (${}, ${})",
                n + 1,
                n + 2
            ));
            n += 2;
        }
        sql.push_str(&format!(
            " ORDER BY updated_at_ms DESC, id DESC LIMIT ${}",
            n + 1
        ));
        let limit = i64::from(filter.effective_limit());
        let rows: Vec<ConversationRow> = on_pool!(self, reader, |pool| {
            let mut query = sqlx::query_as(&sql).bind(project.as_str());
            if let Some(parent_id) = &filter.parent_id {
                query = query.bind(parent_id.as_str());
            }
            if let Some((updated_at_ms, id)) = &filter.before {
                query = query.bind(*updated_at_ms).bind(id.as_str());
            }
            query
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(ConversationRow::into_record)
            .collect::<Result<_, _>>()
            .map_err(decode_err(OP))
    }

    /// The messages of conversation `conversation_id` of `project`, seq
    /// ascending (user and assistant messages interleaved as appended). Empty
    /// if the conversation does not exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_messages(
        &self,
        project: &ProjectId,
        conversation_id: &str,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        const OP: &str = "list_messages";
        let rows: Vec<MessageRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_MESSAGES)
                .bind(project.as_str())
                .bind(conversation_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(MessageRow::into_record)
            .collect::<Result<_, _>>()
            .map_err(decode_err(OP))
    }

    /// The turns of conversation `conversation_id` of `project`, in start
    /// order (`started_seq` ascending). Empty if the conversation does not
    /// exist in this project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn list_turns(
        &self,
        project: &ProjectId,
        conversation_id: &str,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        const OP: &str = "list_turns";
        let rows: Vec<TurnRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_CONVERSATION_TURNS)
                .bind(project.as_str())
                .bind(conversation_id)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(TurnRow::into_record)
            .collect::<Result<_, _>>()
            .map_err(decode_err(OP))
    }

    /// Turn `turn_id` of `project`; `None` if there is no such turn in this
    /// project.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn get_turn(
        &self,
        project: &ProjectId,
        turn_id: &str,
    ) -> Result<Option<TurnRecord>, StoreError> {
        const OP: &str = "get_turn";
        let row: Option<TurnRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_TURN)
                .bind(project.as_str())
                .bind(turn_id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        row.map(TurnRow::into_record)
            .transpose()
            .map_err(decode_err(OP))
    }

    /// Stores `partial_text` (the whole text streamed so far, replacing the
    /// previous checkpoint) as the crash checkpoint of running turn `turn_id`
    /// of `project`, taken at `at_ms`. Meant to be called by the turn engine
    /// at most every few hundred milliseconds; start-up recovery reads it back
    /// with [`Store::turn_partial_text`]. Not an event: the fold's columns
    /// are not touched, and appends leave the checkpoint as it is.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] (`kind: "running turn"`) if there is no turn
    /// `turn_id` in this project or it is no longer running (nothing is
    /// written); [`StoreError::Query`] on database failure.
    pub async fn checkpoint_turn(
        &self,
        project: &ProjectId,
        turn_id: &str,
        partial_text: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = on_pool!(self, writer, |pool| {
            sqlx::query(CHECKPOINT_TURN)
                .bind(project.as_str())
                .bind(turn_id)
                .bind(partial_text)
                .bind(at_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::op("checkpoint_turn"))
        })?;
        if updated == 0 {
            return Err(StoreError::NotFound {
                kind: "running turn",
                id: turn_id.to_owned(),
            });
        }
        Ok(())
    }

    /// The last checkpointed text of turn `turn_id` of `project`; `None` if
    /// the turn has no checkpoint or does not exist in this project. The
    /// checkpoint stays after the turn ended.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn turn_partial_text(
        &self,
        project: &ProjectId,
        turn_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let text: Option<Option<String>> = on_pool!(self, reader, |pool| {
            sqlx::query_scalar(SELECT_PARTIAL_TEXT)
                .bind(project.as_str())
                .bind(turn_id)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::op("turn_partial_text"))
        })?;
        Ok(text.flatten())
    }

    /// Every turn still `running`, in ALL projects, with its project (for
    /// start-up recovery, which ends them with `turn.interrupted`). Ordered
    /// by project, then start time.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] on database failure.
    pub async fn running_turns(&self) -> Result<Vec<(ProjectId, TurnRecord)>, StoreError> {
        const OP: &str = "running_turns";
        let rows: Vec<ProjectTurnRow> = on_pool!(self, reader, |pool| {
            sqlx::query_as(SELECT_RUNNING_TURNS)
                .fetch_all(pool)
                .await
                .map_err(StoreError::op(OP))
        })?;
        rows.into_iter()
            .map(|r| Ok((ProjectId::new(r.project_id), r.turn.into_record()?)))
            .collect::<Result<_, BoxError>>()
            .map_err(decode_err(OP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_from_text_matches_serde() {
        for r in [
            ResolvedFrom::Request,
            ResolvedFrom::Conversation,
            ResolvedFrom::OperationConfig,
            ResolvedFrom::ConversationConfig,
            ResolvedFrom::ServerDefault,
        ] {
            let text = resolved_from_text(r);
            assert_eq!(
                serde_json::to_value(r).expect("serialize"),
                Value::String(text.to_owned())
            );
            assert_eq!(parse_resolved_from(text).expect("parse"), r);
        }
    }

    #[test]
    fn conversation_filter_limits() {
        let limit = |limit| {
            ConversationFilter {
                limit,
                ..ConversationFilter::default()
            }
            .effective_limit()
        };
        assert_eq!(limit(0), 50);
        assert_eq!(limit(7), 7);
        assert_eq!(limit(10_000), 200);
    }
}
