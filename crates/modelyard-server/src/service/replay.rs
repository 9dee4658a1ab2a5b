//! The events feed of a conversation, without HTTP: where a subscriber
//! resumes ([`Position`], [`resume_position`]), then what it is sent
//! ([`feed`]): the store's events after the position, interleaved with the
//! running turn's transient events as they went out live, a
//! [`FeedItem::CaughtUp`] marker, then the live tail from the bus, without
//! gaps or duplicates. The HTTP side turns [`FeedItem`]s into SSE frames.

use std::sync::Arc;

use modelyard_core::conversation::{ConversationRecord, Event, EventPayload};
use modelyard_store::{ProjectId, Store};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::error::ServiceError;
use crate::clock::rfc3339;
use crate::conversations::bus::{BusMessage, TransientEvent};
use crate::conversations::live::LiveTurns;

/// Events read from the store per query.
const REPLAY_PAGE: u32 = 1000;

/// Where a subscriber is: last persisted seq seen, and within the running
/// turn `(turn_seq, index)` of the last transient event seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Last persisted event seen (0: none).
    pub seq: i64,
    /// `(turn_seq, index)` of the last transient event seen, if any.
    pub transient: Option<(i64, u64)>,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position {
        seq: 0,
        transient: None,
    };

    /// Right after persisted event `seq`.
    pub fn after(seq: i64) -> Position {
        Position {
            seq,
            transient: None,
        }
    }
}

/// Parses an SSE id: `seq` for persisted events, `seq.turnSeq.index` for
/// transient ones. Numbers are plain decimal digits that fit (`seq` and
/// `turnSeq` in an `i64`, `index` in a `u64`); a turn's start comes at or
/// before the position (`turnSeq <= seq`). Anything else is `None` (a 400).
pub fn parse_position(text: &str) -> Option<Position> {
    fn number<T: std::str::FromStr>(part: &str) -> Option<T> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    }
    let mut parts = text.split('.');
    let seq: i64 = number(parts.next()?)?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => Some(Position {
            seq,
            transient: None,
        }),
        (Some(turn_seq), Some(index), None) => {
            let turn_seq: i64 = number(turn_seq)?;
            (turn_seq >= 1 && turn_seq <= seq).then_some(())?;
            Some(Position {
                seq,
                transient: Some((turn_seq, number(index)?)),
            })
        }
        _ => None,
    }
}

/// The position a subscriber of `conversation` resumes from: `resume`
/// (`Last-Event-ID` or `?after=`), or the start.
///
/// # Errors
/// `invalid_position` (400) for an id that does not parse or lies past the
/// conversation's last event.
pub fn resume_position(
    conversation: &ConversationRecord,
    resume: Option<&str>,
) -> Result<Position, ServiceError> {
    match resume.map(|text| (text, parse_position(text))) {
        None => Ok(Position::START),
        Some((_, Some(p))) if p.seq <= conversation.last_seq => Ok(p),
        Some((text, Some(p))) => Err(ServiceError::bad_request(
            "invalid_position",
            format!(
                "cannot resume from {:?}: event {} is past the conversation's last event {}",
                Some(text),
                p.seq,
                conversation.last_seq
            ),
        )),
        Some((text, None)) => Err(ServiceError::bad_request(
            "invalid_position",
            format!(
                "cannot resume from {:?}: expected an event id like 12 or 12.10.3",
                Some(text)
            ),
        )),
    }
}

/// A persisted event as the feed sends it: `{type, ...payload, seq, at,
/// conversationId}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDto<'a> {
    /// The dotted `type` and the payload's fields.
    #[serde(flatten)]
    pub payload: &'a EventPayload,
    /// Position in the conversation's log.
    pub seq: i64,
    /// When it was appended (RFC 3339).
    pub at: String,
    /// The conversation.
    pub conversation_id: &'a str,
}

impl<'a> From<&'a Event> for EventDto<'a> {
    fn from(e: &'a Event) -> Self {
        EventDto {
            payload: &e.payload,
            seq: e.seq,
            at: rfc3339(e.at_ms),
            conversation_id: &e.conversation_id,
        }
    }
}

/// The data of the `caught-up` marker.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CaughtUpDto {
    /// The last persisted seq replayed.
    last_seq: i64,
}

/// `value` as JSON text (`null` if it cannot be serialized).
fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// One item of the feed.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// A persisted event; `running` is the subscriber's place in a turn run
    /// still running (its transient events sent so far), if any.
    Persisted {
        /// The event.
        event: Arc<Event>,
        /// `(turn_seq, index)` within a running turn run.
        running: Option<(i64, u64)>,
    },
    /// A transient event of the running turn, after persisted event `seq`.
    Transient {
        /// The last persisted seq sent before it.
        seq: i64,
        /// The event.
        event: Arc<TransientEvent>,
    },
    /// The replay is done; live events follow.
    CaughtUp {
        /// The last persisted seq replayed.
        last_seq: i64,
    },
}

impl FeedItem {
    /// The item's id (the position a resume from it continues at): `seq`,
    /// or `seq.turnSeq.index` inside a running turn run; none for the
    /// caught-up marker.
    pub fn id(&self) -> Option<String> {
        match self {
            FeedItem::Persisted {
                event,
                running: Some((turn_seq, index)),
            } => Some(format!("{}.{turn_seq}.{index}", event.seq)),
            FeedItem::Persisted { event, .. } => Some(event.seq.to_string()),
            FeedItem::Transient { seq, event } => {
                Some(format!("{seq}.{}.{}", event.turn_seq, event.index))
            }
            FeedItem::CaughtUp { .. } => None,
        }
    }

    /// The event type (`caught-up` for the marker).
    pub fn event_type(&self) -> &'static str {
        match self {
            FeedItem::Persisted { event, .. } => event.payload.event_type(),
            FeedItem::Transient { event, .. } => event.event_type,
            FeedItem::CaughtUp { .. } => "caught-up",
        }
    }

    /// The item's data as JSON text.
    pub fn data(&self) -> String {
        match self {
            FeedItem::Persisted { event, .. } => json_text(&EventDto::from(&**event)),
            FeedItem::Transient { event, .. } => {
                let mut data = event.data.clone();
                data["index"] = Value::from(event.index);
                data.to_string()
            }
            FeedItem::CaughtUp { last_seq } => json_text(&CaughtUpDto {
                last_seq: *last_seq,
            }),
        }
    }
}

/// How often an events feed reads the store for other replicas' events.
pub const CLUSTER_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// What a feed reads: the project's store and this process's running turns.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The store.
    pub store: &'a Store,
    /// The subscriber's project.
    pub project: &'a ProjectId,
    /// Running turns (their buffers of transient events).
    pub live: &'a LiveTurns,
    /// With `[cluster]`: how often the live tail also reads the store, so
    /// events appended by other replicas arrive (their deltas do not: the
    /// final message carries the text).
    pub poll: Option<std::time::Duration>,
}

/// The subscriber's position in a turn run that is still running (its
/// transient events sent so far), if any.
fn running_position(
    live: &LiveTurns,
    conversation_id: &str,
    transient: Option<(i64, u64)>,
    last_end_seq: i64,
) -> Option<(i64, u64)> {
    transient.filter(|(turn_seq, _)| {
        *turn_seq > last_end_seq
            && live
                .of_conversation(conversation_id)
                .is_some_and(|live| live.turn_seq == *turn_seq)
    })
}

/// Whether `e` ends the turn's run (`turn.requires_action` too: the client
/// has to act before it goes on).
fn ends_turn(e: &Event, turn_id: &str) -> bool {
    matches!(&e.payload,
        EventPayload::TurnCompleted { turn_id: t }
        | EventPayload::TurnRequiresAction { turn_id: t, .. }
        | EventPayload::TurnFailed { turn_id: t, .. }
        | EventPayload::TurnCancelled { turn_id: t }
        | EventPayload::TurnInterrupted { turn_id: t, .. } if t == turn_id)
}

fn ends_any_turn(e: &Event) -> bool {
    matches!(
        e.payload,
        EventPayload::TurnCompleted { .. }
            | EventPayload::TurnRequiresAction { .. }
            | EventPayload::TurnFailed { .. }
            | EventPayload::TurnCancelled { .. }
            | EventPayload::TurnInterrupted { .. }
    )
}

/// Sends what the subscriber at `from` missed, then forwards live events
/// from `rx`, without gaps or duplicates: persisted events are ordered by
/// seq (a gap is filled from the store), transient ones by (turn, index). A
/// lagging subscriber re-reads from the store and the turn buffer. Returns
/// when `tx` is closed, the bus closes, the store fails, or (with
/// `until_turn`) that turn's run ends.
///
/// A turn's transient events are sent only while the subscriber is inside
/// that turn (its `turn.started` sent, its end not yet), as one run without
/// holes: from the turn buffer, then live. A turn that ends while the
/// subscriber replays is caught either way: its buffer is taken before the
/// store is read (it outlives the turn), and once its end has been sent its
/// late deltas are dropped (the log holds the text).
pub async fn feed(
    src: Source<'_>,
    conversation_id: &str,
    from: Position,
    mut rx: broadcast::Receiver<BusMessage>,
    tx: mpsc::Sender<FeedItem>,
    until_turn: Option<&str>,
) {
    let mut seq = from.seq;
    let mut transient = from.transient;
    // Seq of the last turn end sent: transient events of turns started
    // before it are stale.
    let mut last_end_seq = 0;
    let mut caught_up_sent = false;
    // Transient events wait for a persisted event not yet sent (see below).
    let mut held_back;
    loop {
        // The running turn before the store is read: if it ends during the
        // replay, its buffer still holds the deltas up to its end.
        let running_before = src.live.of_conversation(conversation_id);
        // Replay persisted events from the store.
        loop {
            let events = match src
                .store
                .events_after(src.project, conversation_id, seq, REPLAY_PAGE)
                .await
            {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(conversation = %conversation_id, error = %err, "event replay failed");
                    return;
                }
            };
            let done = events.len() < REPLAY_PAGE as usize;
            for e in events {
                // The running turn's deltas that went out live before this
                // event go before it in the replay too.
                if let Some(live) = running_before
                    .as_ref()
                    .filter(|live| live.turn_seq <= seq && live.turn_seq > last_end_seq)
                {
                    let after = match transient {
                        Some((turn_seq, index)) if turn_seq == live.turn_seq => index,
                        _ => 0,
                    };
                    for t in live
                        .since(after)
                        .into_iter()
                        .filter(|t| t.after_seq < e.seq)
                    {
                        transient = Some((t.turn_seq, t.index));
                        if tx
                            .send(FeedItem::Transient { seq, event: t })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                seq = e.seq;
                if ends_any_turn(&e) {
                    last_end_seq = e.seq;
                }
                let ends = until_turn.is_some_and(|t| ends_turn(&e, t));
                let running = running_position(src.live, conversation_id, transient, last_end_seq);
                let item = FeedItem::Persisted {
                    event: Arc::new(e),
                    running,
                };
                if tx.send(item).await.is_err() || ends {
                    return;
                }
            }
            if done {
                break;
            }
        }
        // Replay the running turn's partial output: a turn whose start was
        // sent and whose end was not.
        let live = [src.live.of_conversation(conversation_id), running_before]
            .into_iter()
            .flatten()
            .find(|live| live.turn_seq <= seq && live.turn_seq >= last_end_seq);
        // A transient event pushed after a persisted event this replay has
        // not sent (the store was read just before that event was
        // appended, the buffer just after) waits for it: live, it went out
        // after that event, and the live tail sends it once that event is.
        held_back = false;
        if let Some(live) = live {
            let after = match transient {
                Some((turn_seq, index)) if turn_seq == live.turn_seq => index,
                _ => 0,
            };
            for t in live.since(after) {
                if t.after_seq > seq {
                    held_back = true;
                    break;
                }
                transient = Some((t.turn_seq, t.index));
                if tx
                    .send(FeedItem::Transient { seq, event: t })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if !caught_up_sent {
            caught_up_sent = true;
            if tx.send(FeedItem::CaughtUp { last_seq: seq }).await.is_err() {
                return;
            }
        }
        // Live (and, across replicas, a look at the store now and then).
        let mut poll = src.poll.map(|every| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let received = match poll.as_mut() {
                None => rx.recv().await,
                Some(ticks) => tokio::select! {
                    received = rx.recv() => received,
                    _ = ticks.tick() => break, // read the store from `seq`
                },
            };
            match received {
                Ok(BusMessage::Persisted(e)) => {
                    if e.seq <= seq {
                        continue;
                    }
                    if e.seq > seq.saturating_add(1) {
                        break; // a gap: fill it from the store
                    }
                    seq = e.seq;
                    if ends_any_turn(&e) {
                        last_end_seq = e.seq;
                    }
                    let ends = until_turn.is_some_and(|t| ends_turn(&e, t));
                    let running =
                        running_position(src.live, conversation_id, transient, last_end_seq);
                    let item = FeedItem::Persisted { event: e, running };
                    if tx.send(item).await.is_err() || ends {
                        return;
                    }
                    if held_back {
                        break; // the turn buffer's events that waited for it
                    }
                }
                Ok(BusMessage::Announced(announced)) => {
                    if announced > seq {
                        break; // committed on another replica: read the store
                    }
                }
                Ok(BusMessage::Transient(t)) => {
                    if t.turn_seq < last_end_seq {
                        continue; // its turn ended: the log holds the text
                    }
                    let next = match transient {
                        Some((turn_seq, index)) if turn_seq == t.turn_seq => {
                            index.saturating_add(1)
                        }
                        _ => 1,
                    };
                    if t.index < next {
                        continue; // already sent
                    }
                    if t.turn_seq > seq {
                        // A turn whose start was not sent: read the store.
                        break;
                    }
                    if t.index > next {
                        // A hole: fill it from the turn buffer (on another
                        // replica than the one running the turn, its
                        // mirror; without one, deltas go on from here and
                        // the final message carries the whole text).
                        let local = src
                            .live
                            .of_conversation(conversation_id)
                            .is_some_and(|live| live.turn_seq == t.turn_seq);
                        if local {
                            break;
                        }
                    }
                    transient = Some((t.turn_seq, t.index));
                    if tx
                        .send(FeedItem::Transient { seq, event: t })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
