//! The bus between a running turn and the conversation's subscribers
//! (docs/design.md#live-streams): persisted events (after their transaction commits) and
//! transient events (text deltas) of a conversation fan out to every
//! subscriber. In-process now ([`InProcessBus`]); a NATS implementation of
//! [`EventBus`] carries the same messages between replicas. Losing the bus
//! costs latency, never data: subscribers re-read the log from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use modelyard_core::conversation::Event;
use modelyard_store::ProjectId;
use serde_json::Value;
use tokio::sync::broadcast;

/// Messages kept per conversation channel before a slow subscriber lags
/// (it then re-reads from the store and the turn buffer).
pub const CHANNEL_CAPACITY: usize = 1024;

/// A live-only event of a running turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TransientEvent {
    /// The turn.
    pub turn_id: String,
    /// Seq of the turn's `turn.started` event.
    pub turn_seq: i64,
    /// Position within the turn: 1, 2, 3, ...
    pub index: u64,
    /// The conversation's last persisted seq the turn knew of when the
    /// event was pushed (its own appends): a replay sends the event before
    /// the persisted event `after_seq + 1`, as it went out live.
    pub after_seq: i64,
    /// Event type: `text.delta`, `reasoning.delta`, `tool_call.delta`, …;
    /// a conversation arena's `arena.delta`, `arena.completed`,
    /// `arena.failed` (per model).
    pub event_type: &'static str,
    /// Event data (camelCase JSON; includes `turnId`).
    pub data: Value,
}

/// What travels on the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A committed event of the log.
    Persisted(Arc<Event>),
    /// A transient event of a running turn.
    Transient(Arc<TransientEvent>),
    /// Another replica committed the event with this seq (read it from the
    /// store; [`crate::conversations::nats_bus`]).
    Announced(i64),
}

/// Fan-out of conversation events. Publishing never waits for subscribers.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Sends to every current subscriber of the conversation, which
    /// belongs to `project` (between replicas, the NATS subject names it).
    fn publish(&self, project: &ProjectId, conversation_id: &str, message: BusMessage);
    /// Starts receiving the conversation's messages.
    fn subscribe(&self, conversation_id: &str) -> broadcast::Receiver<BusMessage>;
    /// How events travel, as `GET /health` says: `in-process`, `nats`, or
    /// `nats-disconnected` (replicas then learn of events from the store).
    fn mode(&self) -> &'static str {
        "in-process"
    }
}

/// One broadcast channel per conversation with subscribers.
#[derive(Debug, Default)]
pub struct InProcessBus {
    channels: Mutex<HashMap<String, broadcast::Sender<BusMessage>>>,
}

impl EventBus for InProcessBus {
    fn publish(&self, _project: &ProjectId, conversation_id: &str, message: BusMessage) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = channels.get(conversation_id) {
            if sender.send(message).is_err() {
                // No subscriber left: drop the channel.
                channels.remove(conversation_id);
            }
        }
    }

    fn subscribe(&self, conversation_id: &str) -> broadcast::Receiver<BusMessage> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(conversation_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }
}
