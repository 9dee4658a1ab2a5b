//! Running turns: their transient-event buffers and cancel handles.
//!
//! Each running turn keeps its transient events in a bounded buffer so a
//! client that reconnects mid-turn gets the partial output before going
//! live. Past `max_events`, the oldest deltas of the same type and turn are
//! coalesced (their text joined) rather than dropped, so the text is never
//! lost; the buffer is dropped when the turn ends (the log then holds the
//! truth).
//!
//! Deltas that belong to one tool call (`toolCallId`: argument deltas,
//! advisor output) are also capped in bytes per call and event type: past
//! the cap, the oldest of them are replaced by one marker event of the same
//! type with `"delta": ""` and `omittedBytes` (how many bytes of text it
//! stands for), so a long advice keeps the buffer bounded and a client that
//! reconnects sees that text is missing; the tool's persisted result holds
//! all of it.

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
    /// The conversation's last persisted seq the turn knows of.
    last_seq: std::sync::atomic::AtomicI64,
    buffer: Mutex<Buffer>,
}

#[derive(Debug, Default)]
struct Buffer {
    events: Vec<Arc<TransientEvent>>,
    next_index: u64,
    max_events: usize,
    /// Buffered delta bytes per (event type, tool call id); a turn has few
    /// tool calls, so a list (no key allocation per delta).
    call_bytes: Vec<(&'static str, String, usize)>,
    max_call_bytes: usize,
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
            after_seq: self.last_seq.load(std::sync::atomic::Ordering::SeqCst),
            event_type,
            data,
        });
        let call_delta = call_delta_len(&event);
        buffer.events.push(Arc::clone(&event));
        if let Some((call, len)) = call_delta {
            let max = buffer.max_call_bytes;
            let position = match buffer
                .call_bytes
                .iter()
                .position(|(t, c, _)| *t == event_type && c == call)
            {
                Some(position) => position,
                None => {
                    buffer.call_bytes.push((event_type, call.to_owned(), 0));
                    buffer.call_bytes.len() - 1
                }
            };
            let mut bytes = buffer.call_bytes[position].2 + len;
            if bytes > max {
                // Trim to three quarters of the cap, so trimming is rare.
                omit_oldest(
                    &mut buffer.events,
                    event_type,
                    call,
                    &mut bytes,
                    max / 4 * 3,
                );
            }
            buffer.call_bytes[position].2 = bytes;
        }
        if buffer.events.len() > buffer.max_events {
            coalesce(&mut buffer.events);
        }
        event
    }

    /// Notes that the turn appended (and published) events up to `seq`:
    /// later transient events come after it.
    pub fn note_seq(&self, seq: i64) {
        self.last_seq
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes of delta text buffered (all types and tool calls); for tests.
    #[cfg(test)]
    pub fn buffered_bytes(&self) -> usize {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer
            .events
            .iter()
            .filter_map(|e| e.data.get("delta").and_then(Value::as_str))
            .map(str::len)
            .sum()
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

/// The tool call and delta length of an event that carries a tool call's
/// delta text.
fn call_delta_len(event: &TransientEvent) -> Option<(&str, usize)> {
    let call = event.data.get("toolCallId")?.as_str()?;
    let delta = event.data.get("delta")?.as_str()?;
    Some((call, delta.len()))
}

/// Drops the oldest `event_type` deltas of tool call `call` until at most
/// `target` bytes of them are left (`bytes` holds the current count and is
/// updated); one marker event with `omittedBytes` takes the place of the
/// last one dropped (an earlier marker is folded into it).
fn omit_oldest(
    events: &mut Vec<Arc<TransientEvent>>,
    event_type: &'static str,
    call: &str,
    bytes: &mut usize,
    target: usize,
) {
    let mut omitted: u64 = 0;
    let mut marker: Option<(usize, TransientEvent)> = None;
    let mut kept = Vec::with_capacity(events.len());
    for event in events.drain(..) {
        let droppable = *bytes > target
            && event.event_type == event_type
            && call_delta_len(&event).is_some_and(|(c, _)| c == call);
        if !droppable {
            kept.push(event);
            continue;
        }
        let len = call_delta_len(&event).map_or(0, |(_, len)| len);
        *bytes -= len;
        omitted += len as u64
            + event
                .data
                .get("omittedBytes")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        marker = Some((kept.len(), (*event).clone()));
    }
    if let Some((position, mut event)) = marker {
        event.data["delta"] = Value::String(String::new());
        event.data["omittedBytes"] = Value::from(omitted);
        kept.insert(position, Arc::new(event));
    }
    *events = kept;
}

/// Joins the older half of the buffer's deltas per type into one event each
/// (text concatenated; the joined event keeps the highest index).
fn coalesce(events: &mut Vec<Arc<TransientEvent>>) {
    let half = events.len() / 2;
    let older: Vec<Arc<TransientEvent>> = events.drain(..half).collect();
    let mut merged: Vec<TransientEvent> = Vec::new();
    for event in older {
        // Deltas of one type (and tool call) join; omission markers do not.
        let joinable = event.data.get("delta").and_then(Value::as_str).is_some()
            && event.data.get("omittedBytes").is_none();
        match merged.last_mut() {
            Some(last)
                if joinable
                    && last.event_type == event.event_type
                    && last.data.get("delta").is_some()
                    && last.data.get("omittedBytes").is_none()
                    && last.data.get("toolCallId") == event.data.get("toolCallId") =>
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
    max_call_bytes: usize,
    shutdown: CancellationToken,
}

impl LiveTurns {
    /// A registry whose buffers hold at most `max_events` each, and at most
    /// `max_call_bytes` of delta text per tool call and event type.
    pub fn new(max_events: usize, max_call_bytes: usize) -> Self {
        Self {
            turns: Mutex::default(),
            max_events: max_events.max(16),
            max_call_bytes: max_call_bytes.max(64),
            shutdown: CancellationToken::new(),
        }
    }

    /// Registers a starting (or resumed) turn whose run starts at seq
    /// `turn_seq` and whose own starting events end at `last_seq`.
    pub fn start(
        &self,
        conversation_id: &str,
        turn_id: &str,
        turn_seq: i64,
        last_seq: i64,
    ) -> Arc<LiveTurn> {
        let turn = Arc::new(LiveTurn {
            turn_id: turn_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            turn_seq,
            cancel: CancellationToken::new(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            last_seq: std::sync::atomic::AtomicI64::new(last_seq),
            buffer: Mutex::new(Buffer {
                max_events: self.max_events,
                max_call_bytes: self.max_call_bytes,
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
        let turns = LiveTurns::new(16, 1024);
        let turn = turns.start("c", "t", 3, 4);
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

    #[test]
    fn a_long_tool_output_is_capped_with_a_marker() {
        let turns = LiveTurns::new(100_000, 1_000);
        let turn = turns.start("c", "t", 3, 4);
        turn.push(
            "advisor.phase",
            serde_json::json!({"turnId": "t", "toolCallId": "a", "phase": "streaming"}),
        );
        let mut sent = 0;
        for i in 0..2_000 {
            let delta = format!("w{i} ");
            sent += delta.len();
            turn.push(
                "advisor.output",
                serde_json::json!({"turnId": "t", "toolCallId": "a", "delta": delta}),
            );
            // Another call's text is not touched.
            if i < 10 {
                turn.push(
                    "advisor.output",
                    serde_json::json!({"turnId": "t", "toolCallId": "b", "delta": "b"}),
                );
            }
        }
        assert!(
            turn.buffered_bytes() <= 1_000 + 10,
            "{}",
            turn.buffered_bytes()
        );
        let all = turn.since(0);
        assert_eq!(all[0].event_type, "advisor.phase");
        assert!(all.windows(2).all(|w| w[0].index < w[1].index));
        let of_a: Vec<_> = all
            .iter()
            .filter(|e| e.event_type == "advisor.output" && e.data["toolCallId"] == "a")
            .collect();
        let omitted = of_a[0].data["omittedBytes"].as_u64().unwrap() as usize;
        let kept: usize = of_a
            .iter()
            .map(|e| e.data["delta"].as_str().unwrap().len())
            .sum();
        assert_eq!(omitted + kept, sent);
        assert!(of_a[1..]
            .iter()
            .all(|e| e.data.get("omittedBytes").is_none()));
        let tail: String = of_a
            .iter()
            .map(|e| e.data["delta"].as_str().unwrap())
            .collect();
        assert!(tail.ends_with("w1999 "));
        let of_b = all.iter().filter(|e| e.data["toolCallId"] == "b").count();
        assert_eq!(of_b, 10);
    }
}
