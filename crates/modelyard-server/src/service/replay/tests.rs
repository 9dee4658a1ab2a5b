use super::*;
use serde_json::json;

#[test]
fn positions_parse() {
    assert_eq!(parse_position("12"), Some(Position::after(12)));
    assert_eq!(
        parse_position("12.10.3"),
        Some(Position {
            seq: 12,
            transient: Some((10, 3))
        })
    );
    assert_eq!(parse_position("x"), None);
    assert_eq!(parse_position("1.2"), None);
    assert_eq!(parse_position("1.2.3.4"), None);
    // Client-supplied: no sign, no overflow, a turn that starts before
    // the position.
    for bad in [
        "",
        "-1",
        "+1",
        " 1",
        "9223372036854775808",
        "99999999999999999999999",
        "12.-1.3",
        "12.0.3",
        "12.13.3",
        "12.10.-3",
        "12.10.18446744073709551616",
        "12..3",
        "12.10.",
    ] {
        assert_eq!(parse_position(bad), None, "{bad:?}");
    }
    assert_eq!(
        parse_position("9223372036854775807.9223372036854775807.18446744073709551615"),
        Some(Position {
            seq: i64::MAX,
            transient: Some((i64::MAX, u64::MAX))
        })
    );
}

#[test]
fn a_persisted_event_is_its_payload_with_seq_time_and_conversation() {
    let at_ms = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let event = |payload: EventPayload| {
        Arc::new(Event {
            conversation_id: "c1".into(),
            seq: 7,
            at_ms,
            payload,
        })
    };
    let data = |payload: EventPayload| -> Value {
        let item = FeedItem::Persisted {
            event: event(payload),
            running: None,
        };
        serde_json::from_str(&item.data()).expect("JSON")
    };
    let started = EventPayload::TurnStarted {
        turn_id: "t1".into(),
        operation: "chat".into(),
        model_id: "a/x".into(),
        resolved_from: modelyard_core::conversation::ResolvedFrom::OperationConfig,
        llm_config_id: Some("cfg".into()),
        client_tools: None,
    };
    assert_eq!(
        data(started),
        json!({"type": "turn.started", "turnId": "t1", "operation": "chat", "modelId": "a/x",
               "resolvedFrom": "operationConfig", "llmId": "cfg",
               "seq": 7, "at": "2026-01-01T00:00:00.000Z", "conversationId": "c1"})
    );
    assert_eq!(
        data(EventPayload::ConversationDeleted {}),
        json!({"type": "conversation.deleted", "seq": 7, "at": "2026-01-01T00:00:00.000Z",
               "conversationId": "c1"})
    );
    let cleared = EventPayload::SettingsChanged {
        cwd: Some(None),
        reasoning_effort: None,
        advisor: Some(true),
    };
    assert_eq!(
        data(cleared),
        json!({"type": "settings.changed", "cwd": null, "advisor": true, "seq": 7,
               "at": "2026-01-01T00:00:00.000Z", "conversationId": "c1"})
    );
    let caught_up = FeedItem::CaughtUp { last_seq: 7 };
    assert_eq!(caught_up.data(), r#"{"lastSeq":7}"#);
}

// ---------------------------------------------------------------------------
// The feed against an in-memory store and the in-process bus.

use std::collections::BTreeMap;

use modelyard_core::conversation::ResolvedFrom;

use crate::conversations::bus::{EventBus, InProcessBus};

const C: &str = "c1";
const TURN: &str = "t1";

/// A conversation with a turn, written the way the engine writes it.
struct Fixture {
    store: Store,
    project: ProjectId,
    live: LiveTurns,
    bus: InProcessBus,
}

/// What a subscriber saw of one item: its id and its type.
type Seen = (Option<String>, &'static str);

fn seen(item: &FeedItem) -> Seen {
    (item.id(), item.event_type())
}

impl Fixture {
    async fn new() -> Self {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        let fixture = Fixture {
            store,
            project: ProjectId::default_project(),
            live: LiveTurns::new(1000, 1 << 20),
            bus: InProcessBus::default(),
        };
        fixture
            .append(vec![EventPayload::ConversationCreated {
                title: None,
                parent_id: None,
                model: None,
                cwd: None,
                reasoning_effort: None,
                advisor: false,
                metadata: json!({}),
                llm_id: None,
                llm_overrides: BTreeMap::new(),
            }])
            .await;
        fixture
    }

    fn source(&self) -> Source<'_> {
        Source {
            store: &self.store,
            project: &self.project,
            live: &self.live,
            poll: None,
        }
    }

    /// Appends and publishes, as `AppState::append_and_publish` does.
    async fn append(&self, payloads: Vec<EventPayload>) -> Vec<Event> {
        let events = self
            .store
            .append_events(&self.project, C, &payloads, 1_000)
            .await
            .expect("append");
        if let Some(live) = self.live.get(TURN) {
            live.note_seq(events.last().map_or(0, |e| e.seq));
        }
        for e in &events {
            self.bus
                .publish(&self.project, C, BusMessage::Persisted(Arc::new(e.clone())));
        }
        events
    }

    /// Starts the turn: `turn.started` and the user's message (seqs 2, 3).
    async fn start_turn(&self) {
        let events = self
            .store
            .append_events(
                &self.project,
                C,
                &[
                    EventPayload::TurnStarted {
                        turn_id: TURN.into(),
                        operation: "chat".into(),
                        model_id: "mock/m".into(),
                        resolved_from: ResolvedFrom::Request,
                        llm_config_id: None,
                        client_tools: None,
                    },
                    EventPayload::UserMessage {
                        message_id: "m1".into(),
                        turn_id: TURN.into(),
                        content: json!("hi"),
                    },
                ],
                1_000,
            )
            .await
            .expect("append");
        self.live.start(C, TURN, events[0].seq, events[1].seq);
        for e in &events {
            self.bus
                .publish(&self.project, C, BusMessage::Persisted(Arc::new(e.clone())));
        }
    }

    /// A text delta of the running turn, buffered and published.
    fn delta(&self, text: &str) -> Arc<TransientEvent> {
        let live = self.live.get(TURN).expect("running");
        let event = live.push("text.delta", json!({"turnId": TURN, "delta": text}));
        self.bus
            .publish(&self.project, C, BusMessage::Transient(Arc::clone(&event)));
        event
    }

    /// A persisted event in the middle of the run (a tool step's message).
    async fn step(&self) {
        self.append(vec![EventPayload::ConversationUpdated {
            title: Some("step".into()),
            metadata: None,
        }])
        .await;
    }

    async fn complete(&self) {
        self.append(vec![EventPayload::TurnCompleted {
            turn_id: TURN.into(),
        }])
        .await;
        self.live.finish(TURN);
    }

    /// A running turn: started, two deltas, a step, two more deltas.
    async fn running() -> Self {
        let fixture = Fixture::new().await;
        fixture.start_turn().await;
        fixture.delta("a");
        fixture.delta("b");
        fixture.step().await;
        fixture.delta("c");
        fixture.delta("d");
        fixture
    }

    /// What a new subscriber at `from` is sent up to the caught-up marker.
    async fn replay(&self, from: Position) -> Vec<Seen> {
        let (tx, mut items) = mpsc::channel(1024);
        let feed = feed(self.source(), C, from, self.bus.subscribe(C), tx, None);
        tokio::pin!(feed);
        let mut out = Vec::new();
        loop {
            tokio::select! {
                () = &mut feed => panic!("the feed ended before catching up: {out:?}"),
                item = items.recv() => {
                    let item = item.expect("an item");
                    out.push(seen(&item));
                    if matches!(item, FeedItem::CaughtUp { .. }) {
                        return out;
                    }
                }
            }
        }
    }
}

fn ids(items: &[Seen]) -> Vec<&str> {
    items
        .iter()
        .map(|(id, kind)| id.as_deref().unwrap_or(kind))
        .collect()
}

#[tokio::test]
async fn a_running_turn_replays_its_deltas_where_they_went_out_live() {
    // Given a turn that streamed two deltas, took a tool step, then two more
    let fixture = Fixture::running().await;

    // When a subscriber replays from the start
    let items = fixture.replay(Position::START).await;

    // Then the deltas come between the persisted events as they went out,
    // and the step's id carries the position inside the run.
    assert_eq!(
        ids(&items),
        [
            "1",
            "2",
            "3",
            "3.2.1",
            "3.2.2",
            "4.2.2",
            "4.2.3",
            "4.2.4",
            "caught-up"
        ]
    );
    assert_eq!(items[3].1, "text.delta");
    assert_eq!(items[5].1, "conversation.updated");
}

#[tokio::test]
async fn a_resume_from_every_position_of_a_running_turn_yields_exactly_the_rest() {
    // Given the feed of a running turn
    let fixture = Fixture::running().await;
    let all = fixture.replay(Position::START).await;

    // When a subscriber resumes from the id of each item
    for (i, (id, _)) in all.iter().enumerate() {
        let Some(id) = id else { continue };
        let from = parse_position(id).expect("an id parses");
        let rest = fixture.replay(from).await;

        // Then it gets exactly what came after that item
        assert_eq!(rest, all[i + 1..], "resumed from {id}");
    }
}

#[tokio::test]
async fn a_resume_from_every_position_of_a_finished_turn_yields_exactly_the_rest() {
    // Given a finished turn (its deltas are in the log's messages now)
    let fixture = Fixture::running().await;
    fixture.complete().await;
    let all = fixture.replay(Position::START).await;
    assert_eq!(ids(&all), ["1", "2", "3", "4", "5", "caught-up"]);

    // When a subscriber resumes after each event (and from an id a live
    // subscriber was given inside the run)
    for seq in 0..=5 {
        let rest = fixture.replay(Position::after(seq)).await;
        // Then it gets exactly the events after it
        assert_eq!(rest, all[seq as usize..], "resumed after {seq}");
    }
    let rest = fixture
        .replay(parse_position("4.2.3").expect("parses"))
        .await;
    assert_eq!(ids(&rest), ["5", "caught-up"]);
}

#[tokio::test]
async fn live_events_follow_the_replay_once_each() {
    // Given a subscriber caught up with a running turn
    let fixture = Fixture::running().await;
    let (tx, mut items) = mpsc::channel(1024);
    let feed = feed(
        fixture.source(),
        C,
        Position::START,
        fixture.bus.subscribe(C),
        tx,
        Some(TURN),
    );
    tokio::pin!(feed);
    let mut out = Vec::new();
    let mut acted = false;
    loop {
        tokio::select! {
            () = &mut feed => break,
            Some(item) = items.recv() => {
                out.push(seen(&item));
                if matches!(item, FeedItem::CaughtUp { .. }) && !acted {
                    acted = true;
                    // When the bus repeats what it already sent (the step,
                    // the last delta), then new deltas and the end follow
                    let step = fixture
                        .store
                        .events_after(&fixture.project, C, 3, 1)
                        .await
                        .expect("read");
                    fixture.bus.publish(&fixture.project, C, BusMessage::Persisted(Arc::new(step[0].clone())));
                    let last = fixture.live.get(TURN).expect("running").since(3);
                    fixture.bus.publish(&fixture.project, C, BusMessage::Transient(Arc::clone(&last[0])));
                    fixture.delta("e");
                    fixture.delta("f");
                    fixture.complete().await;
                }
            }
        }
    }
    while let Ok(item) = items.try_recv() {
        out.push(seen(&item));
    }

    // Then each event arrives once, in order, and the feed ends with the turn
    assert_eq!(
        ids(&out),
        [
            "1",
            "2",
            "3",
            "3.2.1",
            "3.2.2",
            "4.2.2",
            "4.2.3",
            "4.2.4",
            "caught-up",
            "4.2.5",
            "4.2.6",
            "5"
        ]
    );
}

#[tokio::test]
async fn a_lagging_or_gapped_live_tail_is_filled_from_the_store() {
    // Given a subscriber caught up with an idle conversation
    let fixture = Fixture::new().await;
    let (tx, mut items) = mpsc::channel(1024);
    let feed = feed(
        fixture.source(),
        C,
        Position::START,
        fixture.bus.subscribe(C),
        tx,
        Some(TURN),
    );
    tokio::pin!(feed);
    let mut out = Vec::new();
    let mut acted = false;
    loop {
        tokio::select! {
            () = &mut feed => break,
            Some(item) = items.recv() => {
                out.push(seen(&item));
                if matches!(item, FeedItem::CaughtUp { .. }) && !acted {
                    acted = true;
                    // When events are appended without being published (a
                    // bus that lost them), then one is published
                    fixture
                        .store
                        .append_events(&fixture.project, C, &[EventPayload::TurnStarted {
                            turn_id: TURN.into(),
                            operation: "chat".into(),
                            model_id: "mock/m".into(),
                            resolved_from: ResolvedFrom::Request,
                            llm_config_id: None,
                            client_tools: None,
                        }], 1_000)
                        .await
                        .expect("append");
                    fixture.complete().await;
                }
            }
        }
    }
    while let Ok(item) = items.try_recv() {
        out.push(seen(&item));
    }

    // Then the missing event is read from the store, in order, once
    assert_eq!(ids(&out), ["1", "caught-up", "2", "3"]);
}

#[tokio::test]
async fn a_delta_pushed_after_an_unread_step_waits_for_it() {
    // Given a running turn, and a subscriber whose store read ends before
    // the turn's next step (seq 5) is appended while the turn buffer
    // already holds the delta pushed after that step: the step is on the
    // bus, not in what the store returned (a second store with the same
    // history makes the step's event)
    let fixture = Fixture::running().await;
    let other = Fixture::running().await;
    let step = other
        .append(vec![EventPayload::ConversationUpdated {
            title: Some("next step".into()),
            metadata: None,
        }])
        .await;
    let (tx, mut items) = mpsc::channel(1024);
    let feed = feed(
        fixture.source(),
        C,
        Position::START,
        fixture.bus.subscribe(C),
        tx,
        None,
    );
    tokio::pin!(feed);
    let live = fixture.live.get(TURN).expect("running");
    live.note_seq(step[0].seq);
    fixture.bus.publish(
        &fixture.project,
        C,
        BusMessage::Persisted(Arc::new(step[0].clone())),
    );
    fixture.delta("e");

    // When the subscriber replays and goes live
    let mut out = Vec::new();
    while out.len() < 11 {
        tokio::select! {
            () = &mut feed => panic!("the feed ended: {out:?}"),
            item = items.recv() => out.push(seen(&item.expect("an item"))),
        }
    }

    // Then the delta comes after the step, as it went out live
    assert_eq!(
        ids(&out),
        [
            "1",
            "2",
            "3",
            "3.2.1",
            "3.2.2",
            "4.2.2",
            "4.2.3",
            "4.2.4",
            "caught-up",
            "5.2.4",
            "5.2.5"
        ]
    );
}
