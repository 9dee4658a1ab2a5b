//! Running turns: their transient-event buffers and cancel handles.
//!
//! Each running turn keeps its transient events in a bounded buffer so a
//! client that reconnects mid-turn gets the partial output before going
//! live. Past `max_events`, the oldest deltas of the same type and turn are
//! coalesced (their text joined) rather than dropped, so the text is never
//! lost; the buffer is dropped when the turn ends (the log then holds the
//! truth).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::bus::TransientEvent;

/// Default cap of buffered transient events per turn.
pub const DEFAULT_MAX_EVENTS: usize = 8_192;

/// One running turn.
#[derive(Debug)]
pub struct LiveTurn {
    /// Turn id.
    pub turn_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Seq of `turn.started`.
    pub turn_seq: i64,
    /// Cancelled by `POST .../cancel` (or shutdown).
    pub cancel: CancellationToken,
    /// Set when the cancel comes from a server shutdown: the turn then ends
    /// `interrupted`, not `cancelled`.
    pub shutting_down: std::sync::atomic::AtomicBool,
    buffer: Mutex<Buffer>,
}

#[derive(Debug, Default)]
struct Buffer {
    events: Vec<Arc<TransientEvent>>,
    next_index: u64,
    max_events: usize,
}

impl LiveTurn {
    /// Records a transient event and returns it (with its index) for publishing.
    pub fn push(&self, event_type: &'static str, data: Value) -> Arc<TransientEvent> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.next_index += 1;
        let event = Arc::new(TransientEvent {
            turn_id: self.turn_id.clone(),
            turn_seq: self.turn_seq,
            index: buffer.next_index,
            event_type,
            data,
        });
        buffer.events.push(Arc::clone(&event));
        if buffer.events.len() > buffer.max_events {
            coalesce(&mut buffer.events);
        }
        event
    }

    /// Buffered events with index greater than `after`.
    pub fn since(&self, after: u64) -> Vec<Arc<TransientEvent>> {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer
            .events
            .iter()
            .filter(|e| e.index > after)
            .cloned()
            .collect()
    }
}

/// Joins the older half of the buffer's deltas per type into one event each
/// (text concatenated; the joined event keeps the highest index).
fn coalesce(events: &mut Vec<Arc<TransientEvent>>) {
    let half = events.len() / 2;
    let older: Vec<Arc<TransientEvent>> = events.drain(..half).collect();
    let mut merged: Vec<TransientEvent> = Vec::new();
    for event in older {
        let joinable = event.data.get("delta").and_then(Value::as_str).is_some();
        match merged.last_mut() {
            Some(last)
                if joinable
                    && last.event_type == event.event_type
                    && last.data.get("delta").is_some() =>
            {
                let text = format!(
                    "{}{}",
                    last.data["delta"].as_str().unwrap_or_default(),
                    event.data["delta"].as_str().unwrap_or_default()
                );
                last.data["delta"] = Value::String(text);
                last.index = event.index;
            }
            _ => merged.push((*event).clone()),
        }
    }
    let mut rebuilt: Vec<Arc<TransientEvent>> = merged.into_iter().map(Arc::new).collect();
    rebuilt.append(events);
    *events = rebuilt;
}

/// All running turns of this process.
#[derive(Debug, Default)]
pub struct LiveTurns {
    turns: Mutex<HashMap<String, Arc<LiveTurn>>>,
    max_events: usize,
    shutdown: CancellationToken,
}

impl LiveTurns {
    /// A registry whose buffers hold at most `max_events` each.
    pub fn new(max_events: usize) -> Self {
        Self {
            turns: Mutex::default(),
            max_events: max_events.max(16),
            shutdown: CancellationToken::new(),
        }
    }

    /// Registers a starting turn.
    pub fn start(&self, conversation_id: &str, turn_id: &str, turn_seq: i64) -> Arc<LiveTurn> {
        let turn = Arc::new(LiveTurn {
            turn_id: turn_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            turn_seq,
            cancel: CancellationToken::new(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            buffer: Mutex::new(Buffer {
                max_events: self.max_events,
                ..Buffer::default()
            }),
        });
        self.lock().insert(turn_id.to_owned(), Arc::clone(&turn));
        turn
    }

    /// The running turn with this id.
    pub fn get(&self, turn_id: &str) -> Option<Arc<LiveTurn>> {
        self.lock().get(turn_id).cloned()
    }

    /// The running turn of a conversation, if any.
    pub fn of_conversation(&self, conversation_id: &str) -> Option<Arc<LiveTurn>> {
        self.lock()
            .values()
            .find(|t| t.conversation_id == conversation_id)
            .cloned()
    }

    /// Forgets a finished turn.
    pub fn finish(&self, turn_id: &str) {
        self.lock().remove(turn_id);
    }

    /// Stops every running turn for a shutdown; they end `interrupted`.
    pub fn interrupt_all(&self) {
        for turn in self.lock().values() {
            turn.shutting_down
                .store(true, std::sync::atomic::Ordering::SeqCst);
            turn.cancel.cancel();
        }
    }

    /// Starts a shutdown: running turns end `interrupted` and every events
    /// stream ends (so a graceful shutdown does not wait for them).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.interrupt_all();
    }

    /// Cancelled when a shutdown begins ([`Self::begin_shutdown`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether no turn is running.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveTurn>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_coalesces_text_without_losing_it() {
        let turns = LiveTurns::new(16);
        let turn = turns.start("c", "t", 3);
        for i in 0..100 {
            turn.push(
                "text.delta",
                serde_json::json!({"turnId": "t", "delta": format!("{i},")}),
            );
        }
        let all = turn.since(0);
        assert!(all.len() <= 17, "{} events buffered", all.len());
        let text: String = all
            .iter()
            .map(|e| e.data["delta"].as_str().unwrap())
            .collect();
        let expected: String = (0..100).map(|i| format!("{i},")).collect();
        assert_eq!(text, expected);
        assert_eq!(all.last().unwrap().index, 100);
        assert!(all.windows(2).all(|w| w[0].index < w[1].index));
    }
}
