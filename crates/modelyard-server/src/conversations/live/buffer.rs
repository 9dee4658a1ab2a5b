//! A running turn's buffer of transient events: coalescing runs of deltas
//! and capping each tool call's delta text (see the [module docs](super)).

use std::sync::Arc;

use serde_json::Value;

use super::TransientEvent;

#[derive(Debug, Default)]
pub(super) struct Buffer {
    pub(super) entries: Vec<Entry>,
    pub(super) next_index: u64,
    pub(super) max_events: usize,
    /// Coalesce when more entries than this are buffered: `max_events`, or
    /// more when coalescing could not shrink the buffer enough (many
    /// interleaved streams), so each push costs O(1) amortized.
    pub(super) coalesce_at: usize,
    /// Buffered delta bytes per (event type, tool call id); a turn has few
    /// tool calls, so a list (no key allocation per delta).
    pub(super) call_bytes: Vec<(&'static str, String, usize)>,
    pub(super) max_call_bytes: usize,
}

/// One buffered item: an event as pushed, or consecutive deltas of one
/// stream joined.
#[derive(Debug, Clone)]
pub(super) enum Entry {
    One(Arc<TransientEvent>),
    Joined(Arc<Joined>),
}

/// Consecutive deltas of one stream (event type, tool call, model,
/// `after_seq`) joined into one text that remembers where each part ends, so
/// "everything after index k" stays exact inside it.
#[derive(Debug, Clone)]
pub(super) struct Joined {
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
    pub(super) fn index(&self) -> u64 {
        match self {
            Self::One(event) => event.index,
            Self::Joined(joined) => joined.parts.last().map_or(joined.first.index, |p| p.0),
        }
    }

    /// The event that gives type, ids and fields.
    pub(super) fn head(&self) -> &TransientEvent {
        match self {
            Self::One(event) => event,
            Self::Joined(joined) => &joined.first,
        }
    }

    /// Bytes of delta text.
    pub(super) fn delta_len(&self) -> Option<usize> {
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
    /// omission markers) of the same stream (event type, tool call, and
    /// `model` for an arena run's several models), pushed after the same
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
            && a.data.get("model") == b.data.get("model")
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
    pub(super) fn since(&self, after: u64) -> Arc<TransientEvent> {
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

/// The tool call and delta length of an event that carries a tool call's
/// delta text.
pub(super) fn call_delta_len(event: &TransientEvent) -> Option<(&str, usize)> {
    let call = event.data.get("toolCallId")?.as_str()?;
    let delta = event.data.get("delta")?.as_str()?;
    Some((call, delta.len()))
}

/// Drops the oldest `event_type` deltas of tool call `call` until at most
/// `target` bytes of them are left (`bytes` holds the current count and is
/// updated); one marker event with `omittedBytes` takes the place of the
/// last one dropped (an earlier marker is folded into it).
pub(super) fn omit_oldest(
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
/// deltas of one type, tool call and model) into one entry each; linear in
/// the entries moved and the text appended.
pub(super) fn coalesce(entries: &mut Vec<Entry>) {
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
