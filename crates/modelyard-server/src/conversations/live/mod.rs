//! Running turns: their transient-event buffers and cancel handles.
//!
//! Each running turn keeps its transient events in a bounded buffer so a
//! client that reconnects mid-turn gets the partial output before going
//! live. Past `max_events`, the oldest deltas of the same type and turn are
//! coalesced (their text joined) rather than dropped, so the text is never
//! lost; a joined run keeps each part's index and where its text ends, so a
//! client resuming after index k inside it gets exactly the text after k
//! ([`LiveTurn::since`]). Joining appends in place (linear in the text) and
//! runs at most once per O(buffer) pushes, so a push is O(1) amortized under
//! the buffer's lock. The buffer is dropped when the turn ends (the log then
//! holds the truth).
//!
//! A conversation arena turn streams several models at once into one
//! buffer: its `arena.delta` events name their `model`, and only deltas of
//! one model are joined, so each model's text stays its own.
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

mod buffer;
#[cfg(test)]
mod tests;

use buffer::{call_delta_len, coalesce, omit_oldest, Buffer, Entry};

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
        insert(&mut buffer, &event);
        event
    }

    /// Records a transient event of a turn running on another replica with
    /// the index that replica gave it; one at or below the last index
    /// recorded is a duplicate and is left out. Returns whether it was
    /// recorded. (A message NATS dropped leaves a hole: a subscriber
    /// resuming across it gets the text after it; the final message holds
    /// all of it.)
    pub fn record(&self, event: &Arc<TransientEvent>) -> bool {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if event.index <= buffer.next_index {
            return false;
        }
        buffer.next_index = event.index;
        insert(&mut buffer, event);
        true
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
        buffer.entries.iter().filter_map(Entry::delta_len).sum()
    }

    /// Buffered events after index `after`: exactly what was pushed after
    /// it, in order, with runs of deltas that were coalesced joined (a run
    /// that `after` falls inside gives only its text after `after`). The
    /// lock is held to clone handles only; text is copied outside it.
    pub fn since(&self, after: u64) -> Vec<Arc<TransientEvent>> {
        let entries: Vec<Entry> = {
            let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let from = buffer.entries.partition_point(|e| e.index() <= after);
            buffer.entries[from..].to_vec()
        };
        entries.iter().map(|entry| entry.since(after)).collect()
    }
}

/// Adds `event` to `buffer`, keeping the per-call byte cap and the event
/// cap (see the module docs).
fn insert(buffer: &mut Buffer, event: &Arc<TransientEvent>) {
    let event_type = event.event_type;
    let call_delta = call_delta_len(event);
    buffer.entries.push(Entry::One(Arc::clone(event)));
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
                &mut buffer.entries,
                event_type,
                call,
                &mut bytes,
                max / 4 * 3,
            );
        }
        buffer.call_bytes[position].2 = bytes;
    }
    if buffer.entries.len() > buffer.coalesce_at.max(buffer.max_events) {
        coalesce(&mut buffer.entries);
        let left = buffer.entries.len();
        // Coalescing costs O(left); the next one waits for at least a
        // quarter of that many pushes.
        buffer.coalesce_at = if left <= buffer.max_events / 4 * 3 {
            buffer.max_events
        } else {
            left.saturating_mul(2)
        };
    }
}

/// How long a mirrored turn is kept after its last event when its end is
/// never announced (its replica died, or NATS dropped the announcement).
const MIRROR_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Buffers of turns running on other replicas ([cluster] with NATS), filled
/// with the transient events NATS brings ([`Mirrors::record`]), so a
/// subscriber here replays a remote turn's partial output and resumes
/// inside it (`Last-Event-ID` `seq.turnSeq.index`) as on the replica running
/// it. A mirror is dropped when its turn's end is announced, when a newer
/// turn of its conversation shows up (here or remote), or after
/// [`MIRROR_IDLE`] without events. Mirrors are never cancelled or swept:
/// they are not turns this process runs.
#[derive(Debug, Default)]
pub struct Mirrors {
    turns: Mutex<HashMap<String, (Arc<LiveTurn>, std::time::Instant)>>,
    max_events: usize,
    max_call_bytes: usize,
}

impl Mirrors {
    /// Records a transient event of a remote turn of `conversation_id`,
    /// creating the turn's mirror on its first event.
    pub fn record(&self, conversation_id: &str, event: &Arc<TransientEvent>) {
        let now = std::time::Instant::now();
        let turn = {
            let mut turns = self.lock();
            if let Some((turn, seen)) = turns.get_mut(&event.turn_id) {
                *seen = now;
                Arc::clone(turn)
            } else {
                // Older mirrors of this conversation, and idle ones, go.
                turns.retain(|_, (t, seen)| {
                    !(t.conversation_id == conversation_id && t.turn_seq <= event.turn_seq)
                        && now.duration_since(*seen) < MIRROR_IDLE
                });
                let turn = Arc::new(LiveTurn {
                    turn_id: event.turn_id.clone(),
                    conversation_id: conversation_id.to_owned(),
                    turn_seq: event.turn_seq,
                    cancel: CancellationToken::new(),
                    shutting_down: std::sync::atomic::AtomicBool::new(false),
                    last_seq: std::sync::atomic::AtomicI64::new(event.after_seq),
                    buffer: Mutex::new(Buffer {
                        max_events: self.max_events,
                        coalesce_at: self.max_events,
                        max_call_bytes: self.max_call_bytes,
                        ..Buffer::default()
                    }),
                });
                turns.insert(event.turn_id.clone(), (Arc::clone(&turn), now));
                turn
            }
        };
        turn.record(event);
    }

    /// Drops the mirror of a remote turn that ended.
    pub fn finish(&self, turn_id: &str) {
        self.lock().remove(turn_id);
    }

    /// Drops the mirrors of a conversation (a turn of it starts here).
    fn finish_conversation(&self, conversation_id: &str) {
        self.lock()
            .retain(|_, (t, _)| t.conversation_id != conversation_id);
    }

    /// The mirrored turn of a conversation, if any (the newest).
    fn of_conversation(&self, conversation_id: &str) -> Option<Arc<LiveTurn>> {
        self.lock()
            .values()
            .filter(|(t, _)| t.conversation_id == conversation_id)
            .max_by_key(|(t, _)| t.turn_seq)
            .map(|(t, _)| Arc::clone(t))
    }

    /// Turns mirrored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no turn is mirrored.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<LiveTurn>, std::time::Instant)>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// All running turns of this process, and the mirrors of turns running on
/// other replicas ([`Mirrors`]).
#[derive(Debug, Default)]
pub struct LiveTurns {
    turns: Mutex<HashMap<String, Arc<LiveTurn>>>,
    mirrors: Arc<Mirrors>,
    max_events: usize,
    max_call_bytes: usize,
    shutdown: CancellationToken,
}

impl LiveTurns {
    /// A registry whose buffers hold at most `max_events` each, and at most
    /// `max_call_bytes` of delta text per tool call and event type.
    pub fn new(max_events: usize, max_call_bytes: usize) -> Self {
        let (max_events, max_call_bytes) = (max_events.max(16), max_call_bytes.max(64));
        Self {
            turns: Mutex::default(),
            mirrors: Arc::new(Mirrors {
                turns: Mutex::default(),
                max_events,
                max_call_bytes,
            }),
            max_events,
            max_call_bytes,
            shutdown: CancellationToken::new(),
        }
    }

    /// The mirrors of turns running on other replicas, for the bus that
    /// fills them.
    pub fn mirrors(&self) -> Arc<Mirrors> {
        Arc::clone(&self.mirrors)
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
                coalesce_at: self.max_events,
                max_call_bytes: self.max_call_bytes,
                ..Buffer::default()
            }),
        });
        self.mirrors.finish_conversation(conversation_id);
        self.lock().insert(turn_id.to_owned(), Arc::clone(&turn));
        turn
    }

    /// The running turn with this id.
    pub fn get(&self, turn_id: &str) -> Option<Arc<LiveTurn>> {
        self.lock().get(turn_id).cloned()
    }

    /// The running turn of a conversation, if any: one this process runs,
    /// else the mirror of one running on another replica (for replay only;
    /// [`Self::get`], which cancel and the sweeper use, never answers a
    /// mirror).
    pub fn of_conversation(&self, conversation_id: &str) -> Option<Arc<LiveTurn>> {
        let local = self
            .lock()
            .values()
            .find(|t| t.conversation_id == conversation_id)
            .cloned();
        local.or_else(|| self.mirrors.of_conversation(conversation_id))
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

    /// Turns running.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no turn is running.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveTurn>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }
}
