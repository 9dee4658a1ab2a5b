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
    entries: Vec<Entry>,
    next_index: u64,
    max_events: usize,
    /// Coalesce when more entries than this are buffered: `max_events`, or
    /// more when coalescing could not shrink the buffer enough (many
    /// interleaved streams), so each push costs O(1) amortized.
    coalesce_at: usize,
    /// Buffered delta bytes per (event type, tool call id); a turn has few
    /// tool calls, so a list (no key allocation per delta).
    call_bytes: Vec<(&'static str, String, usize)>,
    max_call_bytes: usize,
}

/// One buffered item: an event as pushed, or consecutive deltas of one
/// stream joined.
#[derive(Debug, Clone)]
enum Entry {
    One(Arc<TransientEvent>),
    Joined(Arc<Joined>),
}

/// Consecutive deltas of one stream (event type, tool call, `after_seq`)
/// joined into one text that remembers where each part ends, so "everything
/// after index k" stays exact inside it.
#[derive(Debug, Clone)]
struct Joined {
    /// The first part: type, ids and fields of the joined event (its delta
    /// is not used).
    first: Arc<TransientEvent>,
    /// The parts' text, concatenated.
    text: String,
    /// Per part, in order: its index and the end of its text in `text`.
    parts: Vec<(u64, usize)>,
}

impl Entry {
    /// The (last) index it covers.
    fn index(&self) -> u64 {
        match self {
            Self::One(event) => event.index,
            Self::Joined(joined) => joined.parts.last().map_or(joined.first.index, |p| p.0),
        }
    }

    /// The event that gives type, ids and fields.
    fn head(&self) -> &TransientEvent {
        match self {
            Self::One(event) => event,
            Self::Joined(joined) => &joined.first,
        }
    }

    /// Bytes of delta text.
    fn delta_len(&self) -> Option<usize> {
        match self {
            Self::One(event) => event
                .data
                .get("delta")
                .and_then(Value::as_str)
                .map(str::len),
            Self::Joined(joined) => Some(joined.text.len()),
        }
    }

    /// Whether `next` may be joined onto this entry: both deltas (not
    /// omission markers) of the same stream, pushed after the same
    /// persisted event.
    fn joins(&self, next: &Entry) -> bool {
        let (a, b) = (self.head(), next.head());
        let joinable = |e: &TransientEvent| {
            e.data.get("delta").and_then(Value::as_str).is_some()
                && e.data.get("omittedBytes").is_none()
        };
        joinable(a)
            && joinable(b)
            && a.event_type == b.event_type
            && a.after_seq == b.after_seq
            && a.data.get("toolCallId") == b.data.get("toolCallId")
    }

    /// Appends `next` (which [`Self::joins`] this entry); costs the length
    /// of `next`'s text, not of the text joined so far.
    fn append(&mut self, next: Entry) {
        if let Self::One(event) = self {
            let text = event.data["delta"].as_str().unwrap_or_default().to_owned();
            let end = text.len();
            *self = Self::Joined(Arc::new(Joined {
                first: Arc::clone(event),
                text,
                parts: vec![(event.index, end)],
            }));
        }
        let Self::Joined(joined) = self else {
            return;
        };
        // Copies only while a reader still holds this entry (briefly).
        let joined = Arc::make_mut(joined);
        match next {
            Self::One(event) => {
                joined
                    .text
                    .push_str(event.data["delta"].as_str().unwrap_or_default());
                joined.parts.push((event.index, joined.text.len()));
            }
            Self::Joined(other) => {
                let base = joined.text.len();
                joined.text.push_str(&other.text);
                joined
                    .parts
                    .extend(other.parts.iter().map(|&(index, end)| (index, base + end)));
            }
        }
    }

    /// The event a subscriber that saw up to index `after` gets: a joined
    /// entry gives the text of its parts after `after` only, with its last
    /// index.
    fn since(&self, after: u64) -> Arc<TransientEvent> {
        match self {
            Self::One(event) => Arc::clone(event),
            Self::Joined(joined) => {
                let seen = joined.parts.partition_point(|&(index, _)| index <= after);
                let start = match seen {
                    0 => 0,
                    n => joined.parts[n - 1].1,
                };
                let mut event = (*joined.first).clone();
                event.index = self.index();
                event.data["delta"] = Value::String(joined.text[start..].to_owned());
                Arc::new(event)
            }
        }
    }
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
        buffer.entries.push(Entry::One(Arc::clone(&event)));
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
    entries: &mut Vec<Entry>,
    event_type: &'static str,
    call: &str,
    bytes: &mut usize,
    target: usize,
) {
    let mut omitted: u64 = 0;
    let mut marker: Option<(usize, TransientEvent)> = None;
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries.drain(..) {
        let head = entry.head();
        let droppable = *bytes > target
            && head.event_type == event_type
            && call_delta_len(head).is_some_and(|(c, _)| c == call);
        if !droppable {
            kept.push(entry);
            continue;
        }
        let len = entry.delta_len().unwrap_or(0);
        *bytes -= len;
        omitted += len as u64
            + head
                .data
                .get("omittedBytes")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        let mut event = head.clone();
        event.index = entry.index();
        marker = Some((kept.len(), event));
    }
    if let Some((position, mut event)) = marker {
        event.data["delta"] = Value::String(String::new());
        event.data["omittedBytes"] = Value::from(omitted);
        kept.insert(position, Entry::One(Arc::new(event)));
    }
    *entries = kept;
}

/// Joins the older half of the buffer's deltas per stream (consecutive
/// deltas of one type and tool call) into one entry each; linear in the
/// entries moved and the text appended.
fn coalesce(entries: &mut Vec<Entry>) {
    let half = entries.len() / 2;
    let mut merged: Vec<Entry> = Vec::with_capacity(half);
    for entry in entries.drain(..half) {
        match merged.last_mut() {
            Some(last) if last.joins(&entry) => last.append(entry),
            _ => merged.push(entry),
        }
    }
    merged.append(entries);
    *entries = merged;
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
                coalesce_at: self.max_events,
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

    /// The delta text of `events`, joined.
    fn text_of(events: &[Arc<TransientEvent>]) -> String {
        events
            .iter()
            .filter_map(|e| e.data.get("delta").and_then(Value::as_str))
            .collect()
    }

    #[test]
    fn resume_inside_a_coalesced_range_repeats_no_text() {
        let turns = LiveTurns::new(16, 1 << 20);
        let turn = turns.start("c", "t", 3, 4);
        let mut sent = Vec::new();
        for i in 0..100 {
            let delta = format!("{i},");
            turn.push(
                "text.delta",
                serde_json::json!({"turnId": "t", "delta": delta.clone()}),
            );
            sent.push(delta);
        }
        // The first 50 deltas are joined by now; a client saw 20 of them.
        assert!(turn.since(0).len() <= 17);
        let resumed = turn.since(20);
        assert!(resumed.iter().all(|e| e.index > 20));
        assert_eq!(text_of(&resumed), sent[20..].concat());
        assert_eq!(resumed.last().unwrap().index, 100);
    }

    #[test]
    fn interleaved_streams_that_cannot_join_stay_exact() {
        // Text and reasoning alternate, so coalescing cannot shrink the
        // buffer: it then waits for the buffer to double (a push stays O(1)
        // amortized) and still loses nothing.
        let turns = LiveTurns::new(16, 1 << 20);
        let turn = turns.start("c", "t", 3, 4);
        let mut sent = String::new();
        for i in 0..20_000 {
            let event_type = if i % 2 == 0 {
                "text.delta"
            } else {
                "reasoning.delta"
            };
            let delta = format!("{i},");
            sent.push_str(&delta);
            turn.push(
                event_type,
                serde_json::json!({"turnId": "t", "delta": delta}),
            );
        }
        assert_eq!(text_of(&turn.since(0)), sent);
        let tail: String = (10_000..20_000).map(|i| format!("{i},")).collect();
        assert_eq!(text_of(&turn.since(10_000)), tail);
    }

    /// One pushed event of the property test: (type, tool call, text).
    fn pushed(choice: u8, text: &str) -> (&'static str, serde_json::Value) {
        match choice % 6 {
            0 | 1 => (
                "text.delta",
                serde_json::json!({"turnId": "t", "delta": text}),
            ),
            2 => (
                "reasoning.delta",
                serde_json::json!({"turnId": "t", "delta": text}),
            ),
            3 => (
                "tool_call.delta",
                serde_json::json!({"turnId": "t", "toolCallId": "a", "delta": text}),
            ),
            4 => (
                "tool_call.delta",
                serde_json::json!({"turnId": "t", "toolCallId": "b", "delta": text}),
            ),
            _ => (
                "tool_call.started",
                serde_json::json!({"turnId": "t", "toolCallId": text}),
            ),
        }
    }

    /// `events` as runs of one stream each (type and tool call; an event
    /// without text is its own run, named by its index), consecutive runs of
    /// one stream merged: what a subscriber can tell apart.
    fn runs<'a>(
        events: impl Iterator<Item = (u64, &'static str, &'a Value)>,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (index, event_type, data) in events {
            let call = data.get("toolCallId").and_then(Value::as_str).unwrap_or("");
            let Some(delta) = data.get("delta").and_then(Value::as_str) else {
                out.push((format!("{index} {event_type} {call}"), String::new()));
                continue;
            };
            match out.last_mut() {
                Some((key, text))
                    if key.starts_with(event_type) && key[event_type.len()..] == *call =>
                {
                    text.push_str(delta);
                }
                _ => out.push((format!("{event_type}{call}"), delta.to_owned())),
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        #[test]
        fn since_k_is_the_exact_suffix_after_k(
            max_events in 16usize..48,
            pushes in proptest::collection::vec((0u8..6, "[a-z]{0,3}"), 0..160),
            after_seq_bumps in proptest::collection::vec(0usize..160, 0..3),
        ) {
            let turns = LiveTurns::new(max_events, usize::MAX / 4);
            let turn = turns.start("c", "t", 3, 4);
            let mut all: Vec<(u64, &'static str, Value)> = Vec::new();
            for (i, (choice, text)) in pushes.iter().enumerate() {
                if after_seq_bumps.contains(&i) {
                    turn.note_seq(5 + i as i64);
                }
                let (event_type, data) = pushed(*choice, text);
                let event = turn.push(event_type, data.clone());
                all.push((event.index, event_type, data));
            }
            let n = all.len() as u64;
            for k in 0..=n + 1 {
                let got = turn.since(k);
                proptest::prop_assert!(got.iter().all(|e| e.index > k));
                proptest::prop_assert!(got.windows(2).all(|w| w[0].index < w[1].index));
                if n > k {
                    proptest::prop_assert_eq!(got.last().map(|e| e.index), Some(n));
                }
                let expected = runs(
                    all.iter()
                        .filter(|(i, _, _)| *i > k)
                        .map(|(i, t, d)| (*i, *t, d)),
                );
                let got = runs(got.iter().map(|e| (e.index, e.event_type, &e.data)));
                proptest::prop_assert_eq!(got, expected);
            }
        }
    }
}
