//! The SQL text of the conversation tables, written once for both backends.

/// Columns of [`ConversationRow`](super::rows::ConversationRow), in bind order after `project_id`.
macro_rules! conversation_columns {
    () => {
        "id, parent_id, title, model, cwd, reasoning_effort, metadata_json, latest_model_id, \
         input_tokens, output_tokens, reasoning_tokens, cached_input_tokens, total_tokens, \
         running_turn_id, deleted, last_seq, created_at_ms, updated_at_ms, llm_id, \
         llm_overrides_json, compacted_through_seq, summary, advisor, context_tokens, cost_nusd, \
         pending_arena_run_id, pending_arena_turn_id"
    };
}

/// Columns of [`TurnRow`](super::rows::TurnRow), in bind order after `project_id`.
macro_rules! turn_columns {
    () => {
        "id, conversation_id, operation, model_id, resolved_from, llm_config_id, status, error, \
         input_tokens, output_tokens, reasoning_tokens, cached_input_tokens, total_tokens, \
         started_seq, started_at_ms, ended_at_ms, client_tools_json, pending_tool_calls_json, cost_nusd, \
         arena_run_id"
    };
}

/// Columns of [`MessageRow`](super::rows::MessageRow), in bind order after `project_id`.
macro_rules! message_columns {
    () => {
        "id, conversation_id, turn_id, role, content_json, parts_json, model_id, usage_json, \
         finish_reason, seq, created_at_ms"
    };
}

pub(super) const SELECT_CONVERSATIONS: &str =
    concat!("SELECT ", conversation_columns!(), " FROM conversations");

pub(super) const SELECT_CONVERSATION: &str = concat!(
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
pub(super) const LOCK_CONVERSATION: &str =
    "SELECT id FROM conversations WHERE project_id = $1 AND id = $2 FOR NO KEY UPDATE";

pub(super) const INSERT_CONVERSATION: &str = concat!(
    "INSERT INTO conversations (project_id, ",
    conversation_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"
);

pub(super) const UPDATE_CONVERSATION: &str =
    "UPDATE conversations SET parent_id = $3, title = $4, \
     model = $5, cwd = $6, reasoning_effort = $7, metadata_json = $8, latest_model_id = $9, \
     input_tokens = $10, output_tokens = $11, reasoning_tokens = $12, \
     cached_input_tokens = $13, total_tokens = $14, running_turn_id = $15, deleted = $16, \
     last_seq = $17, created_at_ms = $18, updated_at_ms = $19, llm_id = $20, \
     llm_overrides_json = $21, compacted_through_seq = $22, summary = $23, advisor = $24, \
     context_tokens = $25, cost_nusd = $26, pending_arena_run_id = $27, \
     pending_arena_turn_id = $28 WHERE project_id = $1 AND id = $2";

pub(super) const INSERT_EVENT: &str = "INSERT INTO conversation_events \
     (project_id, conversation_id, seq, at_ms, event_type, version, payload) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(super) const SELECT_EVENTS_AFTER: &str = "SELECT seq, at_ms, payload FROM conversation_events \
     WHERE project_id = $1 AND conversation_id = $2 AND seq > $3 ORDER BY seq ASC LIMIT $4";

pub(super) const SELECT_TURN: &str = concat!(
    "SELECT ",
    turn_columns!(),
    " FROM turns WHERE project_id = $1 AND id = $2"
);

pub(super) const SELECT_CONVERSATION_TURNS: &str = concat!(
    "SELECT ",
    turn_columns!(),
    " FROM turns WHERE project_id = $1 AND conversation_id = $2 ORDER BY started_seq ASC"
);

pub(super) const SELECT_RUNNING_TURNS: &str = concat!(
    "SELECT project_id, ",
    turn_columns!(),
    " FROM turns WHERE status = 'running' ORDER BY project_id, started_at_ms, id"
);

pub(super) const INSERT_TURN: &str = concat!(
    "INSERT INTO turns (project_id, ",
    turn_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
);

/// Updates the fold's columns of a turn; the checkpoint columns are left as
/// they are.
pub(super) const UPDATE_TURN: &str = "UPDATE turns SET conversation_id = $3, operation = $4, \
     model_id = $5, resolved_from = $6, llm_config_id = $7, status = $8, error = $9, \
     input_tokens = $10, output_tokens = $11, reasoning_tokens = $12, \
     cached_input_tokens = $13, total_tokens = $14, started_seq = $15, started_at_ms = $16, \
     ended_at_ms = $17, client_tools_json = $18, pending_tool_calls_json = $19, cost_nusd = $20, \
     arena_run_id = $21 WHERE project_id = $1 AND id = $2";

pub(super) const CHECKPOINT_TURN: &str = "UPDATE turns SET partial_text = $3, partial_at_ms = $4 \
     WHERE project_id = $1 AND id = $2 AND status = 'running'";

pub(super) const SELECT_PARTIAL_TEXT: &str =
    "SELECT partial_text FROM turns WHERE project_id = $1 AND id = $2";

pub(super) const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO messages (project_id, ",
    message_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);

pub(super) const SELECT_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE project_id = $1 AND conversation_id = $2 ORDER BY seq ASC, id ASC"
);

/// `requires_action` turns written before migration 0017 (project,
/// conversation, turn).
pub(super) const SELECT_TURNS_WITHOUT_TOOL_FACTS: &str = "SELECT project_id, conversation_id, id \
     FROM turns WHERE status = 'requires_action' AND pending_tool_calls_json IS NULL";

/// Fills a turn's tool facts (the backfill of migration 0017).
pub(super) const SET_TURN_TOOL_FACTS: &str = "UPDATE turns SET client_tools_json = $3, \
     pending_tool_calls_json = $4 WHERE project_id = $1 AND id = $2";
