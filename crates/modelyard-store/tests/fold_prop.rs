//! Property test: for random sequences of event batches — fitting ones and
//! ones the fold refuses (a turn event for a turn that is not running, a
//! second `turn.started`, events after a delete, token counts above
//! `i64::MAX`...) — the materialized tables always equal the fold of the
//! stored log, `seq` is gap-free, and a refused batch writes nothing. Runs
//! on SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::test_dbs;
use modelyard_core::conversation::{
    self, EventPayload, ImportedMessage, Part, ResolvedFrom, SelectionSource, TokenUsage,
    ToolCallRef,
};
use modelyard_store::{Backend, ProjectId, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

/// Which turn an event names.
#[derive(Debug, Clone, Copy)]
enum TurnRef {
    /// The last one started.
    Last,
    /// The one before it.
    Older,
    /// One that never existed.
    Unknown,
}

/// An event, with its ids chosen when it is appended.
#[derive(Debug, Clone)]
enum Op {
    Updated(Option<String>),
    Deleted,
    Compacted(i64),
    LlmChanged(Option<Option<String>>),
    ModelSelected(String),
    ModelCleared,
    Settings(Option<Option<String>>, Option<bool>),
    Started,
    User(TurnRef, String),
    Assistant(TurnRef, String, Option<u64>, bool),
    Tool(TurnRef, String),
    RequiresAction(TurnRef),
    Resumed(TurnRef),
    Imported(usize),
    Completed(TurnRef),
    Failed(TurnRef),
    Cancelled(TurnRef),
    Interrupted(TurnRef, Option<String>),
}

fn turn_ref() -> impl Strategy<Value = TurnRef> {
    prop_oneof![
        8 => Just(TurnRef::Last),
        1 => Just(TurnRef::Older),
        1 => Just(TurnRef::Unknown),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "[a-z ]{0,12}"
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => proptest::option::of(text()).prop_map(Op::Updated),
        1 => Just(Op::Deleted),
        1 => (0i64..30).prop_map(Op::Compacted),
        1 => proptest::option::of(proptest::option::of("llm-[a-c]")).prop_map(Op::LlmChanged),
        1 => "p/m[1-3]".prop_map(Op::ModelSelected),
        1 => Just(Op::ModelCleared),
        1 => (
            proptest::option::of(proptest::option::of("/tmp/[a-c]")),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(cwd, advisor)| Op::Settings(cwd, advisor)),
        6 => Just(Op::Started),
        4 => (turn_ref(), text()).prop_map(|(t, s)| Op::User(t, s)),
        4 => (
            turn_ref(),
            text(),
            // Huge counts (up to u64::MAX, as a hostile upstream may report)
            // must saturate in the fold, never overflow or fail the append.
            proptest::option::of(prop_oneof![
                9 => 0u64..10_000,
                1 => Just(i64::MAX as u64 / 4),
                1 => Just(u64::MAX)
            ]),
            any::<bool>()
        )
            .prop_map(|(t, s, n, calls)| Op::Assistant(t, s, n, calls)),
        2 => (turn_ref(), text()).prop_map(|(t, s)| Op::Tool(t, s)),
        1 => turn_ref().prop_map(Op::RequiresAction),
        1 => turn_ref().prop_map(Op::Resumed),
        1 => (0usize..3).prop_map(Op::Imported),
        3 => turn_ref().prop_map(Op::Completed),
        1 => turn_ref().prop_map(Op::Failed),
        1 => turn_ref().prop_map(Op::Cancelled),
        1 => (turn_ref(), proptest::option::of(text())).prop_map(|(t, p)| Op::Interrupted(t, p)),
    ]
}

/// Batches of one to three events.
fn batches() -> impl Strategy<Value = Vec<Vec<Op>>> {
    proptest::collection::vec(proptest::collection::vec(op(), 1..=3), 1..=24)
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Turn ids started so far; the payload of an op.
struct Ids {
    turns: Vec<String>,
}

impl Ids {
    fn turn(&self, r: TurnRef) -> String {
        let n = self.turns.len();
        match r {
            TurnRef::Last if n > 0 => self.turns[n - 1].clone(),
            TurnRef::Older if n > 1 => self.turns[n - 2].clone(),
            _ => format!("unknown-{}", new_id()),
        }
    }

    fn payload(&mut self, op: &Op) -> EventPayload {
        match op.clone() {
            Op::Updated(title) => EventPayload::ConversationUpdated {
                title,
                metadata: Some(json!({"k": 1})),
            },
            Op::Deleted => EventPayload::ConversationDeleted {},
            Op::Compacted(up_to_seq) => EventPayload::ConversationCompacted {
                summary_message_id: new_id(),
                summary: "summary".into(),
                up_to_seq,
                model_id: "p/m1".into(),
            },
            Op::LlmChanged(llm_id) => EventPayload::LlmChanged {
                llm_id,
                llm_overrides: None,
            },
            Op::ModelSelected(model) => EventPayload::ModelSelected {
                model,
                previous: None,
                source: SelectionSource::Api,
                verified: None,
            },
            Op::ModelCleared => EventPayload::ModelCleared {
                previous: None,
                source: SelectionSource::Api,
            },
            Op::Settings(cwd, advisor) => EventPayload::SettingsChanged {
                cwd,
                reasoning_effort: None,
                advisor,
            },
            Op::Started => {
                let id = new_id();
                self.turns.push(id.clone());
                EventPayload::TurnStarted {
                    turn_id: id,
                    operation: "chat".into(),
                    model_id: "p/m1".into(),
                    resolved_from: ResolvedFrom::Conversation,
                    llm_config_id: None,
                    client_tools: None,
                }
            }
            Op::User(t, s) => EventPayload::UserMessage {
                message_id: new_id(),
                turn_id: self.turn(t),
                content: Value::String(s),
            },
            Op::Assistant(t, s, tokens, calls) => {
                let mut parts = vec![Part::Text { text: s }];
                if calls {
                    parts.push(Part::ToolCall {
                        id: "call_1".into(),
                        name: "advisor".into(),
                        arguments: "{}".into(),
                    });
                }
                EventPayload::AssistantMessage {
                    message_id: new_id(),
                    turn_id: self.turn(t),
                    parts,
                    model_id: "p/m1".into(),
                    usage: TokenUsage {
                        prompt_tokens: tokens,
                        completion_tokens: tokens.map(|n| n / 2),
                        total_tokens: tokens,
                        ..TokenUsage::default()
                    },
                    finish_reason: Some("stop".into()),
                }
            }
            Op::Tool(t, s) => EventPayload::ToolMessage {
                message_id: new_id(),
                turn_id: self.turn(t),
                tool_call_id: "call_1".into(),
                name: "advisor".into(),
                content: s,
                is_error: false,
                model_id: None,
                usage: None,
            },
            Op::RequiresAction(t) => EventPayload::TurnRequiresAction {
                turn_id: self.turn(t),
                tool_calls: vec![ToolCallRef {
                    id: "call_2".into(),
                    name: "client".into(),
                    arguments: "{}".into(),
                }],
            },
            Op::Resumed(t) => EventPayload::TurnResumed {
                turn_id: self.turn(t),
            },
            Op::Imported(n) => EventPayload::MessagesImported {
                import_id: new_id(),
                messages: (0..n)
                    .map(|i| ImportedMessage {
                        message_id: new_id(),
                        role: if i % 2 == 0 {
                            modelyard_core::conversation::MessageRole::User
                        } else {
                            modelyard_core::conversation::MessageRole::Assistant
                        },
                        content: json!(format!("imported {i}")),
                        parts: Vec::new(),
                    })
                    .collect(),
            },
            Op::Completed(t) => EventPayload::TurnCompleted {
                turn_id: self.turn(t),
            },
            Op::Failed(t) => EventPayload::TurnFailed {
                turn_id: self.turn(t),
                error: "boom".into(),
            },
            Op::Cancelled(t) => EventPayload::TurnCancelled {
                turn_id: self.turn(t),
            },
            Op::Interrupted(t, partial_text) => EventPayload::TurnInterrupted {
                turn_id: self.turn(t),
                partial_text,
            },
        }
    }
}

/// Asserts the rows equal the fold of the log (and `seq` is 1..n); the log's length.
async fn check(store: &Store, project: &ProjectId, cid: &str) -> Result<usize, TestCaseError> {
    let events = store
        .events_after(project, cid, 0, 10_000)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    prop_assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let (conversation, turns, messages) =
        conversation::fold(&events).map_err(|e| TestCaseError::fail(format!("fold: {e:?}")))?;
    let stored = store.get_conversation(project, cid).await.unwrap();
    prop_assert_eq!(stored, conversation, "conversation row = fold");
    prop_assert_eq!(
        store.list_turns(project, cid).await.unwrap(),
        turns,
        "turn rows = fold"
    );
    prop_assert_eq!(
        store.list_messages(project, cid).await.unwrap(),
        messages,
        "message rows = fold"
    );
    Ok(events.len())
}

/// One case: a new conversation, then the batches, checked after each.
async fn run_case(store: &Store, batches: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let project = ProjectId::default_project();
    let cid = new_id();
    let created = EventPayload::ConversationCreated {
        title: Some("prop".into()),
        parent_id: None,
        model: Some("p/m1".into()),
        cwd: None,
        reasoning_effort: None,
        advisor: false,
        metadata: Value::Null,
        llm_id: None,
        llm_overrides: Default::default(),
    };
    store
        .append_events(&project, &cid, &[created], 1)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut ids = Ids { turns: Vec::new() };
    let mut len = check(store, &project, &cid).await?;
    for (i, batch) in batches.iter().enumerate() {
        let payloads: Vec<EventPayload> = batch.iter().map(|op| ids.payload(op)).collect();
        let appended = store
            .append_events(&project, &cid, &payloads, 10 + i as i64)
            .await;
        let after = check(store, &project, &cid).await?;
        match appended {
            Ok(events) => prop_assert_eq!(after, len + events.len()),
            // A refused batch writes nothing.
            Err(_) => prop_assert_eq!(after, len),
        }
        len = after;
    }
    Ok(())
}

#[test]
fn the_tables_equal_the_fold_for_random_event_sequences() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dbs = rt.block_on(test_dbs());
    for db in &dbs {
        // PostgreSQL round trips cost more: fewer cases keep it under ~30 s.
        let cases = match db.store.backend() {
            Backend::Sqlite => 1024,
            Backend::Postgres => 256,
        };
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let started = std::time::Instant::now();
        let result = runner.run(&batches(), |batches| {
            rt.block_on(run_case(&db.store, &batches))
        });
        eprintln!(
            "{:?}: {cases} cases in {:?}",
            db.store.backend(),
            started.elapsed()
        );
        if let Err(err) = result {
            panic!("{:?}: {err}", db.store.backend());
        }
    }
    for db in dbs {
        rt.block_on(db.finish());
    }
}
