//! Conversations: the event log and its materialized tables. Every test runs
//! on SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, on PostgreSQL
//! (see `common`).

mod common;

use common::{test_dbs, TestDb};
use modelyard_core::conversation::{
    self, ConversationRecord, Event, EventPayload, MessageRecord, MessageRole, Part, ResolvedFrom,
    SelectionSource, TokenUsage, TurnRecord, TurnStatus,
};
use modelyard_store::{
    Backend, CallFilter, ConversationFilter, NewLlmCall, NewLlmSession, ProjectId, RecordedSession,
    Store, StoreError, UsageRow,
};
use serde_json::{json, Value};

// ---------------------------------------------------------------- fixtures

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn created(title: &str) -> EventPayload {
    EventPayload::ConversationCreated {
        advisor: false,
        title: Some(title.to_owned()),
        parent_id: None,
        model: None,
        cwd: None,
        reasoning_effort: None,
        metadata: Value::Null,
        llm_id: None,
        llm_overrides: Default::default(),
    }
}

fn created_child(parent_id: &str) -> EventPayload {
    EventPayload::ConversationCreated {
        advisor: false,
        title: None,
        parent_id: Some(parent_id.to_owned()),
        model: Some("openai/gpt-4o".to_owned()),
        cwd: None,
        reasoning_effort: None,
        metadata: json!({}),
        llm_id: None,
        llm_overrides: Default::default(),
    }
}

fn updated(title: &str) -> EventPayload {
    EventPayload::ConversationUpdated {
        title: Some(title.to_owned()),
        metadata: None,
    }
}

fn turn_started(turn_id: &str) -> EventPayload {
    EventPayload::TurnStarted {
        client_tools: None,
        turn_id: turn_id.to_owned(),
        operation: "chat".to_owned(),
        model_id: "local/llama".to_owned(),
        resolved_from: ResolvedFrom::Conversation,
        llm_config_id: None,
    }
}

fn user_message(turn_id: &str, content: Value) -> EventPayload {
    EventPayload::UserMessage {
        message_id: new_id(),
        turn_id: turn_id.to_owned(),
        content,
    }
}

fn assistant_message(turn_id: &str, text: &str, usage: TokenUsage) -> EventPayload {
    EventPayload::AssistantMessage {
        message_id: new_id(),
        turn_id: turn_id.to_owned(),
        parts: vec![Part::Text {
            text: text.to_owned(),
        }],
        model_id: "local/llama".to_owned(),
        usage,
        finish_reason: Some("stop".to_owned()),
    }
}

fn turn_completed(turn_id: &str) -> EventPayload {
    EventPayload::TurnCompleted {
        turn_id: turn_id.to_owned(),
    }
}

/// The scripted log of [`the_tables_equal_the_fold_of_the_log`], in append
/// batches with their times.
fn scripted_batches() -> Vec<(i64, Vec<EventPayload>)> {
    let (t1, t2) = (new_id(), new_id());
    vec![
        (
            1_000,
            vec![EventPayload::ConversationCreated {
                advisor: false,
                title: Some("Grüß dich 🌍".to_owned()),
                parent_id: None,
                model: Some("openai/gpt-4o".to_owned()),
                cwd: Some("/home/u/project".to_owned()),
                reasoning_effort: None,
                metadata: json!({"k": 1, "nested": {"ü": [1.5, null, "x"]}, "b": true}),
                llm_id: None,
                llm_overrides: Default::default(),
            }],
        ),
        (
            1_001,
            vec![EventPayload::ModelSelected {
                model: "local/llama".to_owned(),
                previous: Some("openai/gpt-4o".to_owned()),
                source: SelectionSource::Api,
                verified: None,
            }],
        ),
        (
            1_002,
            vec![
                EventPayload::TurnStarted {
                    client_tools: None,
                    turn_id: t1.clone(),
                    operation: "chat".to_owned(),
                    model_id: "local/llama".to_owned(),
                    resolved_from: ResolvedFrom::Conversation,
                    llm_config_id: None,
                },
                user_message(&t1, json!("Hello, \"world\" ✓\n")),
            ],
        ),
        (
            1_003,
            vec![EventPayload::AssistantMessage {
                message_id: new_id(),
                turn_id: t1.clone(),
                parts: vec![
                    Part::Reasoning {
                        text: "thinking… ∑".to_owned(),
                    },
                    Part::Text {
                        text: "Hi! ".to_owned(),
                    },
                    Part::ToolCall {
                        id: "call_1".to_owned(),
                        name: "read_file".to_owned(),
                        arguments: r#"{"path":"a.txt"}"#.to_owned(),
                    },
                    Part::Text {
                        text: "Done.".to_owned(),
                    },
                ],
                model_id: "local/llama".to_owned(),
                usage: TokenUsage {
                    prompt_tokens: Some(120),
                    completion_tokens: Some(30),
                    reasoning_tokens: Some(10),
                    cached_prompt_tokens: Some(100),
                    total_tokens: Some(150),
                    // A priced call: the turn's and the conversation's cost
                    // totals (migration 0014) must equal the fold's.
                    cost_nusd: Some(2_500),
                },
                finish_reason: Some("tool_calls".to_owned()),
            }],
        ),
        (1_004, vec![turn_completed(&t1)]),
        (
            1_005,
            vec![
                EventPayload::TurnStarted {
                    client_tools: None,
                    turn_id: t2.clone(),
                    operation: "chat".to_owned(),
                    model_id: "openai/gpt-4o".to_owned(),
                    resolved_from: ResolvedFrom::Request,
                    llm_config_id: Some("cfg-1".to_owned()),
                },
                user_message(
                    &t2,
                    json!([{"type": "text", "text": "again"},
                           {"type": "image_url", "image_url": {"url": "data:x"}}]),
                ),
                EventPayload::ModelSelected {
                    model: "openai/gpt-4o".to_owned(),
                    previous: Some("local/llama".to_owned()),
                    source: SelectionSource::TurnOverride,
                    verified: None,
                },
            ],
        ),
        (
            1_006,
            vec![assistant_message(
                &t2,
                "partial",
                TokenUsage {
                    prompt_tokens: Some(7),
                    completion_tokens: Some(5),
                    cost_nusd: Some(40),
                    ..TokenUsage::default()
                },
            )],
        ),
        (
            1_007,
            vec![EventPayload::TurnFailed {
                turn_id: t2.clone(),
                error: "upstream answered 500".to_owned(),
            }],
        ),
        (
            1_008,
            vec![EventPayload::SettingsChanged {
                advisor: None,
                cwd: Some(None),
                reasoning_effort: Some(Some("high".to_owned())),
            }],
        ),
        (
            1_009,
            vec![
                EventPayload::ConversationUpdated {
                    title: Some("renamed".to_owned()),
                    metadata: Some(json!({"tags": ["a", "b"]})),
                },
                EventPayload::ModelCleared {
                    previous: Some("openai/gpt-4o".to_owned()),
                    source: SelectionSource::Api,
                },
            ],
        ),
        (1_010, vec![EventPayload::ConversationDeleted {}]),
    ]
}

/// Asserts that the materialized rows equal the fold of the stored log, and
/// returns the log.
async fn assert_tables_equal_fold(store: &Store, project: &ProjectId, cid: &str) -> Vec<Event> {
    let events = store
        .events_after(project, cid, 0, 0)
        .await
        .expect("events");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    let (conversation, turns, messages) = conversation::fold(&events).expect("fold");
    let stored = store.get_conversation(project, cid).await.expect("get");
    assert_eq!(stored, conversation, "conversation row = fold");
    let stored_turns = store.list_turns(project, cid).await.expect("turns");
    assert_eq!(stored_turns, turns, "turn rows = fold");
    let stored_messages = store.list_messages(project, cid).await.expect("messages");
    assert_eq!(stored_messages, messages, "message rows = fold");
    for turn in &turns {
        assert_eq!(
            store.get_turn(project, &turn.id).await.expect("get turn"),
            Some(turn.clone())
        );
    }
    events
}

async fn event_count(store: &Store, project: &ProjectId, cid: &str) -> usize {
    store
        .events_after(project, cid, 0, 0)
        .await
        .expect("events")
        .len()
}

/// `(event_type, version, payload)` of the stored events, read with plain SQL.
async fn raw_events(db: &TestDb, cid: &str) -> Vec<(String, i32, String)> {
    const SQL: &str = "SELECT event_type, version, payload FROM conversation_events \
                       WHERE conversation_id = $1 ORDER BY seq";
    match db.store.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url)
                .await
                .expect("raw sqlite");
            let rows = sqlx::query_as(SQL)
                .bind(cid)
                .fetch_all(&pool)
                .await
                .expect("raw");
            pool.close().await;
            rows
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("raw postgres");
            let rows = sqlx::query_as(SQL)
                .bind(cid)
                .fetch_all(&pool)
                .await
                .expect("raw");
            pool.close().await;
            rows
        }
    }
}

fn conflict(result: Result<Vec<Event>, StoreError>) -> String {
    match result {
        Err(StoreError::Conflict { reason }) => reason,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn the_tables_equal_the_fold_of_the_log() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let cid = new_id();
        let mut next_seq = 1;
        for (at_ms, batch) in scripted_batches() {
            let events = store
                .append_events(&project, &cid, &batch, at_ms)
                .await
                .expect("append");
            assert_eq!(events.len(), batch.len());
            for (event, payload) in events.iter().zip(&batch) {
                assert_eq!(event.seq, next_seq);
                assert_eq!(event.at_ms, at_ms);
                assert_eq!(event.conversation_id, cid);
                assert_eq!(&event.payload, payload);
                next_seq += 1;
            }
            // The invariant holds after every append, not just at the end.
            assert_tables_equal_fold(store, &project, &cid).await;
        }

        let events = assert_tables_equal_fold(store, &project, &cid).await;
        let payloads: Vec<EventPayload> = scripted_batches()
            .into_iter()
            .flat_map(|(_, batch)| batch)
            .collect();
        assert_eq!(events.len(), payloads.len());
        assert_eq!(events.len(), 15);

        // Spot checks of the materialized state.
        let c = store
            .get_conversation(&project, &cid)
            .await
            .expect("get")
            .expect("exists");
        assert!(c.deleted);
        assert_eq!(c.title.as_deref(), Some("renamed"));
        assert_eq!(c.model, None);
        assert_eq!(c.cwd, None);
        assert_eq!(c.reasoning_effort.map(|e| e.as_str()), Some("high"));
        assert_eq!(c.metadata, json!({"tags": ["a", "b"]}));
        assert_eq!(c.latest_model_id.as_deref(), Some("local/llama"));
        assert_eq!(c.running_turn_id, None);
        assert_eq!(
            (
                c.totals.prompt_tokens,
                c.totals.completion_tokens,
                c.totals.total_tokens,
            ),
            (127, 35, 162)
        );
        assert_eq!(c.totals.cost_nusd, Some(2_540), "read back from cost_nusd");
        let costs: Vec<Option<i64>> = store
            .list_turns(&project, &cid)
            .await
            .expect("turns")
            .iter()
            .map(|t| t.totals.cost_nusd)
            .collect();
        assert_eq!(costs, [Some(2_500), Some(40)]);
        assert_eq!(
            (c.last_seq, c.created_at_ms, c.updated_at_ms),
            (15, 1_000, 1_010)
        );
        let turns = store.list_turns(&project, &cid).await.expect("turns");
        let statuses: Vec<TurnStatus> = turns.iter().map(|t| t.status).collect();
        assert_eq!(statuses, vec![TurnStatus::Completed, TurnStatus::Failed]);
        assert_eq!(turns[1].error.as_deref(), Some("upstream answered 500"));
        assert_eq!(turns[1].resolved_from, ResolvedFrom::Request);
        assert_eq!(turns[1].llm_config_id.as_deref(), Some("cfg-1"));
        assert_eq!(turns[0].ended_at_ms, Some(1_004));
        let messages = store.list_messages(&project, &cid).await.expect("messages");
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, vec!["user", "assistant", "user", "assistant"]);
        assert_eq!(messages[1].content, json!("Hi! Done."));

        // events_after pages.
        let page = store
            .events_after(&project, &cid, 3, 4)
            .await
            .expect("page");
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        assert_eq!(page, events[3..7].to_vec());
        assert!(store
            .events_after(&project, &cid, 15, 0)
            .await
            .expect("tail")
            .is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn the_folded_record_returned_by_an_append_equals_a_fresh_read() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let cid = new_id();
        for (at_ms, batch) in scripted_batches() {
            let appended = store
                .append_events_folded(&project, &cid, &batch, at_ms)
                .await
                .expect("append");
            assert_eq!(appended.events.len(), batch.len());
            let fresh = store
                .get_conversation(&project, &cid)
                .await
                .expect("get")
                .expect("exists");
            assert_eq!(appended.conversation, Some(fresh));
            // The inserted messages are the stored ones, as a fresh list reads them.
            let listed = store
                .list_messages(&project, &cid)
                .await
                .expect("list messages");
            let tail = &listed[listed.len() - appended.messages.len()..];
            assert_eq!(appended.messages.as_slice(), tail);
            assert_eq!(
                appended.events.last().map(|e| e.seq),
                appended.conversation.as_ref().map(|c| c.last_seq)
            );
        }
        // An empty batch writes nothing and returns no record.
        let empty = store
            .append_events_folded(&project, &cid, &[], 5_000)
            .await
            .expect("empty append");
        assert!(empty.events.is_empty());
        assert_eq!(empty.conversation, None);
        assert!(empty.messages.is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn payloads_are_stored_as_json_with_the_dotted_type() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let cid = new_id();
        let turn = new_id();
        store
            .append_events(
                &project,
                &cid,
                &[
                    created("t"),
                    turn_started(&turn),
                    EventPayload::SettingsChanged {
                        advisor: None,
                        cwd: Some(None),
                        reasoning_effort: None,
                    },
                ],
                5,
            )
            .await
            .expect("append");
        let raw = raw_events(&db, &cid).await;
        let types: Vec<&str> = raw.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            types,
            vec!["conversation.created", "turn.started", "settings.changed"]
        );
        for (event_type, version, payload) in &raw {
            assert_eq!(*version, 1);
            let value: Value = serde_json::from_str(payload).expect("payload is JSON");
            assert_eq!(value["type"], json!(event_type));
        }
        let started: Value = serde_json::from_str(&raw[1].2).expect("json");
        assert_eq!(started["turnId"], json!(turn));
        assert_eq!(started["resolvedFrom"], json!("conversation"));
        // `Some(None)` is stored as an explicit null, `None` is left out.
        let settings: Value = serde_json::from_str(&raw[2].2).expect("json");
        assert_eq!(settings, json!({"type": "settings.changed", "cwd": null}));
        db.finish().await;
    }
}

/// Runs `sql` on the test database with plain SQL, binding `binds` as text.
async fn raw_execute(db: &TestDb, sql: &str, binds: &[&str]) {
    match db.store.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url)
                .await
                .expect("raw sqlite");
            let mut query = sqlx::query(sql);
            for b in binds {
                query = query.bind(*b);
            }
            query.execute(&pool).await.expect("raw");
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("raw postgres");
            let mut query = sqlx::query(sql);
            for b in binds {
                query = query.bind(*b);
            }
            query.execute(&pool).await.expect("raw");
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn turn_started_stored_with_the_old_config_name_still_reads() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let cid = new_id();
        let turn = new_id();
        let started = EventPayload::TurnStarted {
            client_tools: None,
            turn_id: turn.clone(),
            operation: "chat".to_owned(),
            model_id: "local/llama".to_owned(),
            resolved_from: ResolvedFrom::ConversationConfig,
            llm_config_id: Some("cfg-1".to_owned()),
        };
        store
            .append_events(&project, &cid, &[created("t"), started.clone()], 5)
            .await
            .expect("append");
        // New events name the config `llmId`.
        let raw = raw_events(&db, &cid).await;
        let stored: Value = serde_json::from_str(&raw[1].2).expect("json");
        assert_eq!(stored["llmId"], "cfg-1", "{stored}");
        assert!(stored.get("llmConfigId").is_none(), "{stored}");
        // A database written before the rename holds `llmConfigId`.
        let old = json!({
            "type": "turn.started", "turnId": turn, "operation": "chat",
            "modelId": "local/llama", "resolvedFrom": "conversationConfig",
            "llmConfigId": "cfg-1",
        })
        .to_string();
        raw_execute(
            &db,
            "UPDATE conversation_events SET payload = $1 WHERE conversation_id = $2 AND seq = 2",
            &[&old, &cid],
        )
        .await;
        assert_eq!(raw_events(&db, &cid).await[1].2, old);
        let events = assert_tables_equal_fold(store, &project, &cid).await;
        assert_eq!(events[1].payload, started);
        let turns = store.list_turns(&project, &cid).await.expect("turns");
        assert_eq!(turns[0].llm_config_id.as_deref(), Some("cfg-1"));
        db.finish().await;
    }
}

#[tokio::test]
async fn a_conflicting_append_writes_nothing() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let cid = new_id();
        let (t1, t2) = (new_id(), new_id());
        store
            .append_events(&project, &cid, &[created("c"), turn_started(&t1)], 10)
            .await
            .expect("append");
        let before = store.get_conversation(&project, &cid).await.expect("get");

        // A second turn while one runs.
        let reason = conflict(
            store
                .append_events(&project, &cid, &[turn_started(&t2)], 11)
                .await,
        );
        assert!(reason.contains(&t1), "{reason}");
        // A batch whose later event conflicts: none of it is written.
        conflict(
            store
                .append_events(
                    &project,
                    &cid,
                    &[
                        updated("would be lost"),
                        user_message(&t1, json!("hi")),
                        turn_started(&t2),
                    ],
                    12,
                )
                .await,
        );
        // Turn events for a turn that is not running.
        conflict(
            store
                .append_events(&project, &cid, &[turn_completed(&t2)], 13)
                .await,
        );
        // Creating it again.
        conflict(
            store
                .append_events(&project, &cid, &[created("again")], 14)
                .await,
        );
        assert_eq!(event_count(store, &project, &cid).await, 2);
        assert_eq!(
            store.get_conversation(&project, &cid).await.expect("get"),
            before
        );
        assert!(store
            .list_messages(&project, &cid)
            .await
            .expect("messages")
            .is_empty());
        assert_eq!(store.get_turn(&project, &t2).await.expect("turn"), None);

        // Unknown conversation: NotFound, nothing written.
        let unknown = new_id();
        match store
            .append_events(&project, &unknown, &[updated("x")], 15)
            .await
        {
            Err(StoreError::NotFound { kind, id }) => {
                assert_eq!(kind, "conversation");
                assert_eq!(id, unknown);
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert_eq!(event_count(store, &project, &unknown).await, 0);
        assert_eq!(
            store
                .get_conversation(&project, &unknown)
                .await
                .expect("get"),
            None
        );

        // An empty batch is a no-op.
        assert!(store
            .append_events(&project, &cid, &[], 16)
            .await
            .expect("empty")
            .is_empty());

        // The turn still works afterwards, and the tables still equal the fold.
        store
            .append_events(&project, &cid, &[turn_completed(&t1)], 17)
            .await
            .expect("complete");
        // A reused turn id is refused (Duplicate), nothing written.
        let result = store
            .append_events(&project, &cid, &[updated("x"), turn_started(&t1)], 18)
            .await;
        assert!(
            matches!(result, Err(StoreError::Duplicate { .. })),
            "{result:?}"
        );
        assert_eq!(event_count(store, &project, &cid).await, 3);
        assert_tables_equal_fold(store, &project, &cid).await;
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_appends_serialize_without_gaps() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let cid = new_id();
        db.store
            .append_events(&project, &cid, &[created("c")], 1)
            .await
            .expect("create");
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = db.store.clone();
            let project = project.clone();
            let cid = cid.clone();
            tasks.push(tokio::spawn(async move {
                let events = store
                    .append_events(&project, &cid, &[updated(&format!("t{i}"))], 2 + i)
                    .await
                    .expect("append");
                assert_eq!(events.len(), 1);
                events[0].seq
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (2..=11).collect::<Vec<i64>>());
        let events = assert_tables_equal_fold(&db.store, &project, &cid).await;
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<i64>>()
        );
        let c = db
            .store
            .get_conversation(&project, &cid)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(c.last_seq, 11);
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_creations_let_exactly_one_win() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let cid = new_id();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let store = db.store.clone();
            let project = project.clone();
            let cid = cid.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append_events(
                        &project,
                        &cid,
                        &[created(&format!("c{i}")), updated(&format!("u{i}"))],
                        i,
                    )
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(events) => {
                    won += 1;
                    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("expected Conflict, got {other:?}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(event_count(&db.store, &project, &cid).await, 2);
        assert_tables_equal_fold(&db.store, &project, &cid).await;
        db.finish().await;
    }
}

#[tokio::test]
async fn conversations_are_isolated_by_project_and_id() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        let b = store.create_project("other").await.expect("project");
        let (ca, cb) = (new_id(), new_id());
        let turn_a = new_id();
        store
            .append_events(
                &a,
                &ca,
                &[
                    created("a"),
                    turn_started(&turn_a),
                    user_message(&turn_a, json!("in a")),
                ],
                1,
            )
            .await
            .expect("a");
        store
            .append_events(&a, &cb, &[created("b"), updated("b2")], 2)
            .await
            .expect("b");

        // Events of A never appear for B (same project).
        let events_b = store.events_after(&a, &cb, 0, 0).await.expect("events");
        assert_eq!(events_b.len(), 2);
        assert!(events_b.iter().all(|e| e.conversation_id == cb));
        assert!(store
            .list_messages(&a, &cb)
            .await
            .expect("messages")
            .is_empty());
        assert!(store.list_turns(&a, &cb).await.expect("turns").is_empty());
        assert_eq!(store.list_messages(&a, &ca).await.expect("m").len(), 1);

        // Nothing of project a is visible from project b.
        assert_eq!(store.get_conversation(&b, &ca).await.expect("get"), None);
        assert!(store
            .events_after(&b, &ca, 0, 0)
            .await
            .expect("e")
            .is_empty());
        assert!(store.list_turns(&b, &ca).await.expect("t").is_empty());
        assert!(store.list_messages(&b, &ca).await.expect("m").is_empty());
        assert_eq!(store.get_turn(&b, &turn_a).await.expect("turn"), None);
        assert_eq!(store.turn_partial_text(&b, &turn_a).await.expect("p"), None);
        assert!(store
            .list_conversations(&b, &ConversationFilter::default())
            .await
            .expect("list")
            .is_empty());
        assert!(matches!(
            store.checkpoint_turn(&b, &turn_a, "x", 3).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.append_events(&b, &ca, &[updated("hijack")], 3).await,
            Err(StoreError::NotFound { .. })
        ));
        // Ids are global: b cannot create a conversation with a's id.
        conflict(store.append_events(&b, &ca, &[created("dup")], 3).await);
        assert_eq!(event_count(store, &a, &ca).await, 3);

        // b has its own conversations.
        let cc = new_id();
        store
            .append_events(&b, &cc, &[created("in b")], 4)
            .await
            .expect("b create");
        let listed_b = store
            .list_conversations(&b, &ConversationFilter::default())
            .await
            .expect("list");
        assert_eq!(listed_b.len(), 1);
        assert_eq!(listed_b[0].id, cc);
        let listed_a = store
            .list_conversations(&a, &ConversationFilter::default())
            .await
            .expect("list");
        let mut ids_a: Vec<&str> = listed_a.iter().map(|c| c.id.as_str()).collect();
        ids_a.sort_unstable();
        let mut want = vec![ca.as_str(), cb.as_str()];
        want.sort_unstable();
        assert_eq!(ids_a, want);

        // An unknown project cannot create conversations.
        let ghost = ProjectId::new("no-such-project".to_owned());
        let result = store
            .append_events(&ghost, &new_id(), &[created("x")], 5)
            .await;
        assert!(
            matches!(result, Err(StoreError::MissingReference { .. })),
            "{result:?}"
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn list_conversations_pages_newest_first() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        // 7 conversations; two pairs share an updated_at_ms (ties by id desc).
        let mut ids: Vec<String> = (0..7).map(|_| new_id()).collect();
        ids.sort();
        let times = [100, 200, 200, 300, 400, 400, 500];
        for (id, at) in ids.iter().zip(times) {
            store
                .append_events(&project, id, &[created(id)], at)
                .await
                .expect("create");
        }
        // Touching ids[0] makes it the newest.
        store
            .append_events(&project, &ids[0], &[updated("newest")], 900)
            .await
            .expect("touch");
        // ids[3] is deleted.
        store
            .append_events(
                &project,
                &ids[3],
                &[EventPayload::ConversationDeleted {}],
                950,
            )
            .await
            .expect("delete");

        let page = |before: Option<(i64, String)>, include_deleted: bool| {
            let filter = ConversationFilter {
                limit: 3,
                before,
                include_deleted,
                parent_id: None,
            };
            let project = project.clone();
            async move {
                store
                    .list_conversations(&project, &filter)
                    .await
                    .expect("list")
            }
        };
        let collect_all = |include_deleted: bool| async move {
            let mut all = Vec::new();
            let mut before = None;
            loop {
                let rows = page(before.clone(), include_deleted).await;
                assert!(rows.len() <= 3);
                let full = rows.len() == 3;
                if let Some(last) = rows.last() {
                    before = Some((last.updated_at_ms, last.id.clone()));
                }
                all.extend(rows.into_iter().map(|c| c.id));
                if !full {
                    break;
                }
            }
            all
        };
        let want_all: Vec<String> = [3, 0, 6, 5, 4, 2, 1]
            .iter()
            .map(|&i| ids[i].clone())
            .collect();
        assert_eq!(collect_all(true).await, want_all);
        let want_live: Vec<String> = want_all
            .iter()
            .filter(|id| **id != ids[3])
            .cloned()
            .collect();
        assert_eq!(collect_all(false).await, want_live);

        // Default limit and parent filter.
        let parent = &ids[6];
        let mut children: Vec<String> = (0..3).map(|_| new_id()).collect();
        for (i, child) in children.iter().enumerate() {
            store
                .append_events(&project, child, &[created_child(parent)], 1_000 + i as i64)
                .await
                .expect("child");
        }
        children.reverse();
        let listed: Vec<String> = store
            .list_conversations(
                &project,
                &ConversationFilter {
                    parent_id: Some(parent.clone()),
                    ..ConversationFilter::default()
                },
            )
            .await
            .expect("children")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, children);
        let all = store
            .list_conversations(&project, &ConversationFilter::default())
            .await
            .expect("all");
        assert_eq!(all.len(), 9);
        let child = &all[0];
        assert_eq!(child.parent_id.as_deref(), Some(parent.as_str()));
        assert_eq!(child.model.as_deref(), Some("openai/gpt-4o"));
        db.finish().await;
    }
}

#[tokio::test]
async fn running_turns_and_checkpoints() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        let b = store.create_project("second").await.expect("project");
        let (ca, cb, cc) = (new_id(), new_id(), new_id());
        let (ta, tb, tc) = (new_id(), new_id(), new_id());
        store
            .append_events(&a, &ca, &[created("a"), turn_started(&ta)], 10)
            .await
            .expect("a");
        store
            .append_events(&b, &cb, &[created("b"), turn_started(&tb)], 20)
            .await
            .expect("b");
        store
            .append_events(
                &a,
                &cc,
                &[created("c"), turn_started(&tc), turn_completed(&tc)],
                30,
            )
            .await
            .expect("c");

        let running = store.running_turns().await.expect("running");
        let mut found: Vec<(String, String)> = running
            .iter()
            .map(|(p, t)| (p.as_str().to_owned(), t.id.clone()))
            .collect();
        found.sort();
        let mut want = vec![
            (a.as_str().to_owned(), ta.clone()),
            (b.as_str().to_owned(), tb.clone()),
        ];
        want.sort();
        assert_eq!(found, want);
        let (_, turn_b) = running
            .iter()
            .find(|(p, _)| *p == b)
            .expect("b's turn")
            .clone();
        assert_eq!(store.get_turn(&b, &tb).await.expect("get"), Some(turn_b));

        // Checkpoints: none, then the latest one.
        assert_eq!(store.turn_partial_text(&a, &ta).await.expect("p"), None);
        store
            .checkpoint_turn(&a, &ta, "Hel", 11)
            .await
            .expect("checkpoint");
        store
            .checkpoint_turn(&a, &ta, "Hello, wörld 🌍", 12)
            .await
            .expect("checkpoint");
        assert_eq!(
            store
                .turn_partial_text(&a, &ta)
                .await
                .expect("p")
                .as_deref(),
            Some("Hello, wörld 🌍")
        );
        // An append touching the turn keeps the checkpoint; the fold is intact.
        store
            .append_events(
                &a,
                &ca,
                &[assistant_message(&ta, "Hello", TokenUsage::default())],
                13,
            )
            .await
            .expect("assistant");
        assert_eq!(
            store
                .turn_partial_text(&a, &ta)
                .await
                .expect("p")
                .as_deref(),
            Some("Hello, wörld 🌍")
        );
        assert_tables_equal_fold(store, &a, &ca).await;

        // Recovery: interrupt with the checkpointed text.
        let partial = store.turn_partial_text(&a, &ta).await.expect("p");
        store
            .append_events(
                &a,
                &ca,
                &[EventPayload::TurnInterrupted {
                    turn_id: ta.clone(),
                    partial_text: partial,
                }],
                14,
            )
            .await
            .expect("interrupt");
        let turn = store.get_turn(&a, &ta).await.expect("get").expect("turn");
        assert_eq!(turn.status, TurnStatus::Interrupted);
        assert_eq!(turn.ended_at_ms, Some(14));
        assert_tables_equal_fold(store, &a, &ca).await;
        let running: Vec<String> = store
            .running_turns()
            .await
            .expect("running")
            .into_iter()
            .map(|(_, t)| t.id)
            .collect();
        assert_eq!(running, vec![tb.clone()]);

        // No checkpoint for ended or unknown turns.
        for turn in [&ta, &tc, &new_id()] {
            match store.checkpoint_turn(&a, turn, "late", 15).await {
                Err(StoreError::NotFound { kind, id }) => {
                    assert_eq!(kind, "running turn");
                    assert_eq!(&id, turn);
                }
                other => panic!("expected NotFound, got {other:?}"),
            }
        }
        assert_eq!(
            store
                .turn_partial_text(&a, &ta)
                .await
                .expect("p")
                .as_deref(),
            Some("Hello, wörld 🌍")
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn calls_carry_their_conversation_and_turn() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let (cid, turn) = (new_id(), new_id());
        let session =
            |id: &str, conversation_id: Option<&str>, turn_id: Option<&str>| NewLlmSession {
                id: id.to_owned(),
                operation: "chat".to_owned(),
                parent_session_id: None,
                conversation_id: conversation_id.map(str::to_owned),
                turn_id: turn_id.map(str::to_owned),
                created_at_ms: 1,
                request_id: None,
                key_id: None,
                config: None,
            };
        let call = |id: &str, session_id: &str| NewLlmCall {
            id: id.to_owned(),
            session_id: session_id.to_owned(),
            model_id: "local/llama".to_owned(),
            provider: "local".to_owned(),
            upstream_model: "llama".to_owned(),
            stream: true,
            request_json: "{}".to_owned(),
            response_text: None,
            reasoning_text: None,
            tool_calls_json: None,
            finish_reason: None,
            usage: UsageRow::default(),
            sent_at_ms: 1,
            first_token_at_ms: None,
            completed_at_ms: None,
            http_status: None,
            error: None,
            attempt: 1,
            route: None,
            cost: Default::default(),
        };
        let (s1, s2) = (new_id(), new_id());
        let (c1, c2) = (new_id(), new_id());
        store
            .record_sessions(
                &project,
                &[
                    RecordedSession {
                        session: session(&s1, Some(&cid), Some(&turn)),
                        calls: vec![call(&c1, &s1)],
                    },
                    RecordedSession {
                        session: session(&s2, None, None),
                        calls: vec![call(&c2, &s2)],
                    },
                ],
            )
            .await
            .expect("record");
        let rows = store
            .list_calls(
                &project,
                &CallFilter {
                    conversation_id: Some(cid.clone()),
                    ..CallFilter::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, c1);
        assert_eq!(rows[0].conversation_id.as_deref(), Some(cid.as_str()));
        assert_eq!(rows[0].turn_id.as_deref(), Some(turn.as_str()));
        let other = store
            .get_call(&project, &c2)
            .await
            .expect("get")
            .expect("row");
        assert_eq!((other.conversation_id, other.turn_id), (None, None));
        assert_eq!(
            store
                .list_calls(&project, &CallFilter::default())
                .await
                .expect("all")
                .len(),
            2
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn stored_records_decode_like_the_fold_after_reconnect() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let cid = new_id();
        for (at_ms, batch) in scripted_batches() {
            db.store
                .append_events(&project, &cid, &batch, at_ms)
                .await
                .expect("append");
        }
        let before: (
            Option<ConversationRecord>,
            Vec<TurnRecord>,
            Vec<MessageRecord>,
        ) = (
            db.store.get_conversation(&project, &cid).await.expect("c"),
            db.store.list_turns(&project, &cid).await.expect("t"),
            db.store.list_messages(&project, &cid).await.expect("m"),
        );
        db.store.close().await;
        let again = Store::connect(&db.url).await.expect("reconnect");
        assert_tables_equal_fold(&again, &project, &cid).await;
        assert_eq!(
            again.get_conversation(&project, &cid).await.expect("c"),
            before.0
        );
        assert_eq!(again.list_turns(&project, &cid).await.expect("t"), before.1);
        assert_eq!(
            again.list_messages(&project, &cid).await.expect("m"),
            before.2
        );
        again.close().await;
        db.finish().await;
    }
}

#[tokio::test]
async fn tool_steps_imports_and_waiting_turns_are_stored_like_the_fold() {
    use modelyard_core::conversation::{ImportedMessage, ToolCallRef};
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let cid = new_id();
        let turn = new_id();
        let import = new_id();
        let call = |id: &str, name: &str| Part::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: "{\"question\":\"q\"}".into(),
        };
        let tool = |id: &str, name: &str, model: Option<&str>| EventPayload::ToolMessage {
            message_id: new_id(),
            turn_id: turn.clone(),
            tool_call_id: id.into(),
            name: name.into(),
            content: "{\"type\":\"advice\",\"advice\":\"ä\"}".into(),
            is_error: model.is_none(),
            model_id: model.map(str::to_owned),
            usage: model.map(|_| TokenUsage {
                prompt_tokens: Some(30),
                completion_tokens: Some(4),
                total_tokens: Some(34),
                ..Default::default()
            }),
        };
        let mut created = created("tools");
        if let EventPayload::ConversationCreated { advisor, .. } = &mut created {
            *advisor = true;
        }
        let batches: Vec<Vec<EventPayload>> = vec![
            vec![created],
            vec![EventPayload::MessagesImported {
                import_id: import.clone(),
                messages: vec![
                    ImportedMessage {
                        message_id: format!("{import}-0000"),
                        role: MessageRole::User,
                        content: json!("example"),
                        parts: Vec::new(),
                    },
                    ImportedMessage {
                        message_id: format!("{import}-0001"),
                        role: MessageRole::Assistant,
                        content: json!(""),
                        parts: vec![call("c0", "advisor")],
                    },
                    ImportedMessage {
                        message_id: format!("{import}-0002"),
                        role: MessageRole::Tool,
                        content: json!("r"),
                        parts: vec![Part::ToolResult {
                            tool_call_id: "c0".into(),
                            name: "advisor".into(),
                            is_error: false,
                        }],
                    },
                ],
            }],
            vec![
                EventPayload::TurnStarted {
                    turn_id: turn.clone(),
                    operation: "chat".into(),
                    model_id: "a/x".into(),
                    resolved_from: ResolvedFrom::Request,
                    llm_config_id: None,
                    client_tools: Some(json!([{"type": "function",
                        "function": {"name": "get_weather"}}])),
                },
                user_message(&turn, json!("go")),
            ],
            vec![EventPayload::AssistantMessage {
                message_id: new_id(),
                turn_id: turn.clone(),
                parts: vec![call("c1", "advisor"), call("c2", "get_weather")],
                model_id: "a/x".into(),
                usage: TokenUsage {
                    prompt_tokens: Some(10),
                    completion_tokens: Some(2),
                    ..Default::default()
                },
                finish_reason: Some("tool_calls".into()),
            }],
            vec![tool("c1", "advisor", Some("b/advisor"))],
            vec![EventPayload::TurnRequiresAction {
                turn_id: turn.clone(),
                tool_calls: vec![ToolCallRef {
                    id: "c2".into(),
                    name: "get_weather".into(),
                    arguments: "{}".into(),
                }],
            }],
        ];
        for (i, batch) in batches.iter().enumerate() {
            store
                .append_events(&project, &cid, batch, 2_000 + i as i64)
                .await
                .expect("append");
            assert_tables_equal_fold(store, &project, &cid).await;
        }
        let waiting = store.get_turn(&project, &turn).await.unwrap().unwrap();
        assert_eq!(waiting.status, TurnStatus::RequiresAction);
        assert_eq!(waiting.totals.prompt_tokens, 40, "chat step + advisor");
        let pending: Vec<(&str, &str)> = waiting
            .pending_tool_calls
            .iter()
            .map(|p| (p.id.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(
            pending,
            [("c2", "get_weather")],
            "the advisor's call is answered"
        );
        assert_eq!(waiting.client_tools.len(), 1);
        // A row written before migration 0017 (no tool facts) is filled from
        // the log at the next connect.
        raw_execute(
            &db,
            "UPDATE turns SET client_tools_json = NULL, pending_tool_calls_json = NULL WHERE id = $1",
            &[turn.as_str()],
        )
        .await;
        let legacy = store.get_turn(&project, &turn).await.unwrap().unwrap();
        assert!(legacy.pending_tool_calls.is_empty() && legacy.client_tools.is_empty());
        let again = Store::connect(&db.url).await.expect("reconnect");
        assert_eq!(
            again.get_turn(&project, &turn).await.unwrap().unwrap(),
            waiting,
            "refilled from the log"
        );
        again.close().await;
        // A waiting turn is not an interrupted one after a restart.
        let running = store.running_turns().await.unwrap();
        assert!(running.iter().all(|(_, t)| t.id != turn));
        let c = store
            .get_conversation(&project, &cid)
            .await
            .unwrap()
            .unwrap();
        assert!(c.advisor);
        assert_eq!(c.running_turn_id.as_deref(), Some(turn.as_str()));
        let messages = store.list_messages(&project, &cid).await.unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "user", "assistant", "tool"],
            "imported messages keep their order"
        );
        for batch in [
            vec![
                EventPayload::TurnResumed {
                    turn_id: turn.clone(),
                },
                tool("c2", "get_weather", None),
            ],
            vec![
                assistant_message(&turn, "done", TokenUsage::default()),
                turn_completed(&turn),
            ],
            vec![EventPayload::SettingsChanged {
                cwd: None,
                reasoning_effort: None,
                advisor: Some(false),
            }],
        ] {
            store
                .append_events(&project, &cid, &batch, 3_000)
                .await
                .expect("append");
            assert_tables_equal_fold(store, &project, &cid).await;
        }
        let c = store
            .get_conversation(&project, &cid)
            .await
            .unwrap()
            .unwrap();
        assert!(!c.advisor);
        assert_eq!(c.running_turn_id, None);
    }
}
