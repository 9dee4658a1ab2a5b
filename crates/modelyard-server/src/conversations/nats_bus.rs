//! The event bus between replicas ([cluster] `nats_url`, the `async-nats`
//! crate): every message is delivered in process first, as by
//! [`InProcessBus`], then announced on NATS for the other replicas.
//!
//! - A persisted event travels as its seq only (`announced`): a subscriber
//!   elsewhere reads it from the store, which stays the truth.
//! - A transient event (delta, advisor output) travels whole, with its turn
//!   position, so subscribers on every replica see a running turn's tokens.
//!   Each replica also keeps what arrives in a mirror of the turn's buffer
//!   ([`Mirrors`]), so a subscriber that resumes mid-turn on a replica
//!   other than the one running the turn gets no gap and no duplicate.
//! - A persisted event that ends a turn's run also names the turn
//!   (`endsTurn`), so other replicas drop its mirror.
//!
//! Subject: `modelyard.<project id>.conv.<conversation id>` (so NATS
//! permissions and monitoring can tell projects apart); payload: JSON
//! ([`Wire`]), with the sending replica's id so it ignores its own. Sending
//! never waits: messages go through a bounded queue to one task; a full
//! queue, or NATS being down, drops live messages — subscribers then learn
//! of persisted events by reading the store (docs/design.md#replicas), so
//! NATS down costs latency, never data. The client reconnects by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use modelyard_core::conversation::EventPayload;
use modelyard_store::ProjectId;

use super::bus::{BusMessage, EventBus, InProcessBus, TransientEvent};
use super::live::Mirrors;

/// Messages waiting to be sent to NATS before new ones are dropped.
const QUEUE: usize = 8_192;
/// First token of every subject.
const ROOT: &str = "modelyard";
/// What a replica subscribes to: every project's conversations.
const EVERY_CONVERSATION: &str = "modelyard.*.conv.*";

/// The subject of a conversation's messages; `None` when an id is not a
/// single NATS subject token (empty, or holding `.`, `*`, `>` or
/// whitespace). Ids are UUIDs (and the project `default`), so that does
/// not happen; such a message then stays in this process.
fn subject(project: &str, conversation_id: &str) -> Option<String> {
    let token = |t: &str| {
        !t.is_empty()
            && !t
                .bytes()
                .any(|b| matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace())
    };
    (token(project) && token(conversation_id))
        .then(|| format!("{ROOT}.{project}.conv.{conversation_id}"))
}

/// The project and conversation a subject names (the inverse of
/// [`subject`]).
fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    let mut tokens = subject.split('.');
    match (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) {
        (Some(ROOT), Some(project), Some("conv"), Some(conversation), None) => {
            Some((project, conversation))
        }
        _ => None,
    }
}

/// One bus message on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    /// The sending replica.
    origin: String,
    /// `persisted` or `transient`.
    kind: String,
    /// Persisted: the event's seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    /// Persisted: the turn whose run the event ends, if it ends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ends_turn: Option<String>,
    /// Transient: the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    turn_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    turn_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

/// The transient event types a replica accepts from another (the types
/// the engine publishes).
fn known_type(name: &str) -> Option<&'static str> {
    [
        "text.delta",
        "reasoning.delta",
        "tool_call.started",
        "tool_call.delta",
        "advisor.phase",
        "advisor.output",
        "model.loading",
        "arena.delta",
        "arena.completed",
        "arena.failed",
    ]
    .into_iter()
    .find(|t| *t == name)
}

/// The in-process bus plus NATS between replicas (see the module docs).
#[derive(Debug)]
pub struct NatsBus {
    local: Arc<InProcessBus>,
    replica: String,
    outgoing: mpsc::Sender<(String, Vec<u8>)>,
    connected: Arc<AtomicBool>,
}

impl NatsBus {
    /// Starts the bus: connects to `url` in the background (retrying; the
    /// server starts even while NATS is down) and relays other replicas'
    /// messages to this process's subscribers.
    pub fn start(url: &str, replica: &str, mirrors: Arc<Mirrors>) -> NatsBus {
        let local = Arc::new(InProcessBus::default());
        let connected = Arc::new(AtomicBool::new(false));
        let (outgoing, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(
            url.to_owned(),
            replica.to_owned(),
            Relay {
                local: Arc::clone(&local),
                mirrors,
            },
            Arc::clone(&connected),
            queue,
        ));
        NatsBus {
            local,
            replica: replica.to_owned(),
            outgoing,
            connected,
        }
    }

    /// Whether the NATS connection is up now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn wire(&self, message: &BusMessage) -> Option<Wire> {
        let mut wire = Wire {
            origin: self.replica.clone(),
            kind: String::new(),
            seq: None,
            ends_turn: None,
            turn_id: None,
            turn_seq: None,
            index: None,
            after_seq: None,
            event_type: None,
            data: None,
        };
        match message {
            BusMessage::Persisted(event) => {
                wire.kind = "persisted".into();
                wire.seq = Some(event.seq);
                wire.ends_turn = match &event.payload {
                    EventPayload::TurnCompleted { turn_id }
                    | EventPayload::TurnRequiresAction { turn_id, .. }
                    | EventPayload::TurnFailed { turn_id, .. }
                    | EventPayload::TurnCancelled { turn_id }
                    | EventPayload::TurnInterrupted { turn_id, .. } => Some(turn_id.clone()),
                    _ => None,
                };
            }
            BusMessage::Transient(t) => {
                wire.kind = "transient".into();
                wire.turn_id = Some(t.turn_id.clone());
                wire.turn_seq = Some(t.turn_seq);
                wire.index = Some(t.index);
                wire.after_seq = Some(t.after_seq);
                wire.event_type = Some(t.event_type.to_owned());
                wire.data = Some(t.data.clone());
            }
            // Announcements are what arrives from NATS; never sent on.
            BusMessage::Announced(_) => return None,
        }
        Some(wire)
    }
}

impl EventBus for NatsBus {
    fn publish(&self, project: &ProjectId, conversation_id: &str, message: BusMessage) {
        if let (Some(wire), Some(subject)) = (
            self.wire(&message),
            subject(project.as_str(), conversation_id),
        ) {
            if let Ok(bytes) = serde_json::to_vec(&wire) {
                // Full or closed: dropped (see the module docs).
                let _ = self.outgoing.try_send((subject, bytes));
            }
        }
        self.local.publish(project, conversation_id, message);
    }

    fn subscribe(&self, conversation_id: &str) -> broadcast::Receiver<BusMessage> {
        self.local.subscribe(conversation_id)
    }

    fn mode(&self) -> &'static str {
        if self.connected() {
            "nats"
        } else {
            "nats-disconnected"
        }
    }
}

/// Connects (retrying every second until it works), then sends the queue
/// and relays what other replicas send.
async fn run(
    url: String,
    replica: String,
    relay: Relay,
    connected: Arc<AtomicBool>,
    mut queue: mpsc::Receiver<(String, Vec<u8>)>,
) {
    let client = loop {
        let flag = Arc::clone(&connected);
        let options = async_nats::ConnectOptions::new()
            .name(format!("modelyard {replica}"))
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let flag = Arc::clone(&flag);
                async move {
                    match event {
                        async_nats::Event::Connected => flag.store(true, Ordering::Relaxed),
                        async_nats::Event::Disconnected => {
                            flag.store(false, Ordering::Relaxed);
                            tracing::warn!("NATS disconnected; events between replicas go through the store until it is back");
                        }
                        _ => {}
                    }
                }
            });
        match options.connect(url.as_str()).await {
            Ok(client) => break client,
            Err(err) => {
                tracing::warn!(error = %err, "cannot connect to NATS; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut inbox = loop {
        match client.subscribe(EVERY_CONVERSATION).await {
            Ok(inbox) => break inbox,
            Err(err) => {
                tracing::warn!(error = %err, "cannot subscribe on NATS; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        tokio::select! {
            out = queue.recv() => {
                let Some((subject, bytes)) = out else { return };
                if let Err(err) = client.publish(subject, bytes.into()).await {
                    tracing::debug!(error = %err, "NATS publish failed");
                }
            }
            message = inbox.next() => {
                let Some(message) = message else { return };
                let Some((project, conversation_id)) = parse_subject(message.subject.as_str()) else {
                    continue;
                };
                let Ok(wire) = serde_json::from_slice::<Wire>(&message.payload) else {
                    continue;
                };
                if wire.origin == replica {
                    continue;
                }
                relay.deliver(project, conversation_id, wire);
            }
        }
    }
}

/// Where other replicas' messages go: this process's subscribers and the
/// mirrors of remote turns.
struct Relay {
    local: Arc<InProcessBus>,
    mirrors: Arc<Mirrors>,
}

impl Relay {
    /// Delivers another replica's message: a transient event is recorded in
    /// its turn's mirror before subscribers get it (so one that finds a hole
    /// finds the event in the mirror); an announced turn end drops the
    /// mirror.
    fn deliver(&self, project: &str, conversation_id: &str, wire: Wire) {
        let ends_turn = wire.ends_turn.clone();
        if let Some(message) = relayed(wire) {
            if let BusMessage::Transient(event) = &message {
                self.mirrors.record(conversation_id, event);
            }
            self.local.publish(
                &ProjectId::new(project.to_owned()),
                conversation_id,
                message,
            );
        }
        if let Some(turn_id) = ends_turn {
            self.mirrors.finish(&turn_id);
        }
    }
}

/// What another replica's message means here.
fn relayed(wire: Wire) -> Option<BusMessage> {
    match wire.kind.as_str() {
        "persisted" => Some(BusMessage::Announced(wire.seq?)),
        "transient" => Some(BusMessage::Transient(Arc::new(TransientEvent {
            turn_id: wire.turn_id?,
            turn_seq: wire.turn_seq?,
            index: wire.index?,
            after_seq: wire.after_seq?,
            event_type: known_type(wire.event_type.as_deref()?)?,
            data: wire.data?,
        }))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_subject, relayed, subject, BusMessage, Wire};

    #[test]
    fn a_subject_names_the_project_and_the_conversation() {
        let s = subject("default", "0193a1b2-c3d4").expect("subject");
        assert_eq!(s, "modelyard.default.conv.0193a1b2-c3d4");
        assert_eq!(parse_subject(&s), Some(("default", "0193a1b2-c3d4")));
    }

    #[test]
    fn ids_that_are_not_one_subject_token_have_no_subject() {
        for (project, conversation) in [
            ("", "c"),
            ("p", ""),
            ("a.b", "c"),
            ("p", "c.d"),
            ("*", "c"),
            ("p", ">"),
            ("p q", "c"),
        ] {
            assert_eq!(
                subject(project, conversation),
                None,
                "{project:?} {conversation:?}"
            );
        }
    }

    #[test]
    fn other_subjects_are_not_conversations() {
        for other in [
            "modelyard.conv.c",
            "modelyard.p.conv.c.extra",
            "other.p.conv.c",
            "modelyard.p.keys.c",
        ] {
            assert_eq!(parse_subject(other), None, "{other}");
        }
    }

    #[test]
    fn an_arenas_progress_is_relayed_and_unknown_types_are_not() {
        let wire = |event_type: &str| Wire {
            origin: "r1".into(),
            kind: "transient".into(),
            seq: None,
            ends_turn: None,
            turn_id: Some("t".into()),
            turn_seq: Some(2),
            index: Some(7),
            after_seq: Some(4),
            event_type: Some(event_type.into()),
            data: Some(serde_json::json!({"turnId": "t", "model": "a/x", "delta": "hi"})),
        };
        for event_type in [
            "text.delta",
            "arena.delta",
            "arena.completed",
            "arena.failed",
        ] {
            match relayed(wire(event_type)) {
                Some(BusMessage::Transient(t)) => {
                    assert_eq!((t.event_type, t.index), (event_type, 7));
                    assert_eq!(t.data["model"], "a/x");
                }
                other => panic!("{event_type}: {other:?}"),
            }
        }
        assert!(relayed(wire("arena.sneaky")).is_none());
    }
}
