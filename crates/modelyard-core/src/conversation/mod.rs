//! Conversations as an append-only event log, and the fold that
//! materializes it (docs/design.md#vocabulary,
//! docs/design.md#event-log).
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
//!
//! Files: `event.rs` (the event types and their payloads), `record.rs`
//! (the materialized records), `fold.rs` ([`apply`] and [`fold()`]).

mod event;
mod fold;
mod record;

pub use event::{
    ArenaOutcome, ArenaStatus, Event, EventPayload, ImportedMessage, Part, ResolvedFrom,
    SelectionSource, TokenUsage, ToolCallRef, EVENT_PAYLOAD_VERSION,
};
pub use fold::{apply, fold, ApplyError, Changes, Folded, ARENA_OPERATION, CHAT_OPERATION};
pub use record::{
    ConversationRecord, MessageRecord, MessageRole, PendingArena, PendingToolCall, TokenTotals,
    TurnRecord, TurnStatus,
};

#[cfg(test)]
mod tests;
