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
//! ([`Store::checkpoint_turn`](crate::Store::checkpoint_turn)), kept in the `turns` row beside the fold's
//! columns and never touched by appends.
//!
//! Files: `sql.rs` (the SQL text), `rows.rs` (database rows ↔ core records),
//! `append.rs` (`append_events`: fold a batch and write the changed rows),
//! `read.rs` (the queries), `checkpoint.rs` (a running turn's crash
//! checkpoint), `backfill.rs` (tool facts of turns written before migration
//! 0017, filled at connect).

mod append;
pub use append::Appended;
mod backfill;
mod checkpoint;
mod read;
mod rows;
mod sql;

/// Page size of [`Store::list_conversations`](crate::Store::list_conversations) when
/// [`ConversationFilter::limit`] is 0.
pub const DEFAULT_CONVERSATION_LIMIT: u32 = 50;

/// Largest page of [`Store::list_conversations`](crate::Store::list_conversations); larger
/// [`ConversationFilter::limit`] values are capped to this.
pub const MAX_CONVERSATION_LIMIT: u32 = 200;

/// Number of events [`Store::events_after`](crate::Store::events_after) returns when `limit` is 0.
pub const DEFAULT_EVENTS_LIMIT: u32 = 1000;

/// Selection and paging for [`Store::list_conversations`](crate::Store::list_conversations). All set criteria
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

#[cfg(test)]
mod tests;
