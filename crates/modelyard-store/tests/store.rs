//! Behaviour tests of the store. Every test runs on SQLite (a fresh temp
//! file) and, when `MODELYARD_TEST_POSTGRES_URL` is set, also on PostgreSQL
//! (a fresh database on that server, dropped afterwards); see `common`.

mod common;

use common::test_dbs;
use modelyard_store::{
    Backend, CallFilter, FavoriteRow, LlmCallRow, NewLlmCall, NewLlmSession, ProjectId,
    RecordedSession, Store, StoreError, UsageRow,
};

// ---------------------------------------------------------------- fixtures

/// `n` UUIDv7 ids in ascending (= time) order.
fn ordered_ids(n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    ids
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn session(id: &str, operation: &str) -> NewLlmSession {
    NewLlmSession {
        id: id.to_owned(),
        operation: operation.to_owned(),
        parent_session_id: None,
        conversation_id: None,
        turn_id: None,
        created_at_ms: 1_700_000_000_000,
        request_id: None,
        key_id: None,
        config: None,
    }
}

/// A call with every optional field `None`.
fn bare_call(id: &str, session_id: &str, model_id: &str) -> NewLlmCall {
    let (provider, model) = model_id.split_once('/').unwrap_or(("p", model_id));
    NewLlmCall {
        id: id.to_owned(),
        session_id: session_id.to_owned(),
        model_id: model_id.to_owned(),
        provider: provider.to_owned(),
        upstream_model: model.to_owned(),
        stream: false,
        request_json: r#"{"messages":[]}"#.to_owned(),
        response_text: None,
        reasoning_text: None,
        tool_calls_json: None,
        finish_reason: None,
        usage: UsageRow::default(),
        sent_at_ms: 1_700_000_000_123,
        first_token_at_ms: None,
        completed_at_ms: None,
        http_status: None,
        error: None,
        attempt: 1,
        route: None,
        cost: Default::default(),
    }
}

/// A call with every optional field set, unicode included.
fn full_call(id: &str, session_id: &str) -> NewLlmCall {
    NewLlmCall {
        id: id.to_owned(),
        session_id: session_id.to_owned(),
        model_id: "openai/gpt-4o-mini".to_owned(),
        provider: "openai".to_owned(),
        upstream_model: "gpt-4o-mini-2024-07-18".to_owned(),
        stream: true,
        request_json: r#"{"messages":[{"role":"user","content":"Grüß dich, 世界 🌍 \"quoted\"\n"}],"temperature":0.2}"#.to_owned(),
        response_text: Some("Привет! こんにちは 👋\ttab\nnewline 'single' \"double\" \\ backslash".to_owned()),
        reasoning_text: Some("thinking… ∑ ≠ ∞".to_owned()),
        tool_calls_json: Some(r#"[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":\"é\"}"}}]"#.to_owned()),
        finish_reason: Some("tool_calls".to_owned()),
        usage: UsageRow {
            prompt_tokens: Some(1_234),
            completion_tokens: Some(5_678),
            reasoning_tokens: Some(42),
            cached_prompt_tokens: Some(0),
            cache_creation_tokens: None,
            total_tokens: Some(6_912_000_000_000), // larger than i32
        },
        sent_at_ms: 1_733_000_000_001,
        first_token_at_ms: Some(1_733_000_000_250),
        completed_at_ms: Some(1_733_000_001_999),
        http_status: Some(200),
        error: Some("upstream closed the stream — partial".to_owned()),
        attempt: 2,
        route: Some("a-route".into()),
        cost: Default::default(),
    }
}

/// What reading `call` back under `project`, in a session of `operation`
/// without conversation and turn, must give.
fn expected(project: &ProjectId, operation: &str, call: &NewLlmCall) -> LlmCallRow {
    LlmCallRow {
        id: call.id.clone(),
        project_id: project.as_str().to_owned(),
        session_id: call.session_id.clone(),
        operation: operation.to_owned(),
        conversation_id: None,
        turn_id: None,
        model_id: call.model_id.clone(),
        provider: call.provider.clone(),
        upstream_model: call.upstream_model.clone(),
        stream: call.stream,
        request_json: call.request_json.clone(),
        response_text: call.response_text.clone(),
        reasoning_text: call.reasoning_text.clone(),
        tool_calls_json: call.tool_calls_json.clone(),
        finish_reason: call.finish_reason.clone(),
        usage: call.usage.clone(),
        sent_at_ms: call.sent_at_ms,
        first_token_at_ms: call.first_token_at_ms,
        completed_at_ms: call.completed_at_ms,
        http_status: call.http_status,
        error: call.error.clone(),
        attempt: call.attempt,
        route: call.route.clone(),
        request_id: None,
        cost: Default::default(),
    }
}

fn ids_of(rows: &[LlmCallRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

/// Records one session holding one bare call per id (all with `model_id`).
async fn record_bare(
    store: &Store,
    project: &ProjectId,
    operation: &str,
    model_id: &str,
    call_ids: &[String],
) -> String {
    let sid = new_id();
    let calls = call_ids
        .iter()
        .map(|id| bare_call(id, &sid, model_id))
        .collect();
    store
        .record_sessions(
            project,
            &[RecordedSession {
                session: session(&sid, operation),
                calls,
            }],
        )
        .await
        .expect("record");
    sid
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn round_trips_every_field() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let sid = new_id();
        let ids = ordered_ids(2);
        let full = full_call(&ids[0], &sid);
        let bare = bare_call(&ids[1], &sid, "local/llama-3.1-8b");
        let mut sess = session(&sid, "chat");
        sess.parent_session_id = Some(new_id());
        sess.conversation_id = Some("conv-ü".to_owned());
        sess.turn_id = Some(new_id());
        store
            .record_sessions(
                &project,
                &[RecordedSession {
                    session: sess.clone(),
                    calls: vec![full.clone(), bare.clone()],
                }],
            )
            .await
            .expect("record");
        let expected = |project: &ProjectId, operation: &str, call: &NewLlmCall| LlmCallRow {
            conversation_id: sess.conversation_id.clone(),
            turn_id: sess.turn_id.clone(),
            ..expected(project, operation, call)
        };

        let got_full = store.get_call(&project, &full.id).await.expect("get full");
        assert_eq!(got_full, Some(expected(&project, "chat", &full)));
        let got_bare = store.get_call(&project, &bare.id).await.expect("get bare");
        assert_eq!(got_bare, Some(expected(&project, "chat", &bare)));

        // Oldest first within the session.
        let in_session = store.session_calls(&project, &sid).await.expect("session");
        assert_eq!(
            in_session,
            vec![
                expected(&project, "chat", &full),
                expected(&project, "chat", &bare)
            ]
        );
        // Newest first in the listing, identical rows.
        let listed = store
            .list_calls(&project, &CallFilter::default())
            .await
            .expect("list");
        assert_eq!(
            listed,
            vec![
                expected(&project, "chat", &bare),
                expected(&project, "chat", &full)
            ]
        );

        assert_eq!(
            store.get_call(&project, &new_id()).await.expect("get"),
            None
        );
        assert!(store
            .session_calls(&project, &new_id())
            .await
            .expect("session")
            .is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn lists_newest_first_and_pages_with_before_id() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let ids = ordered_ids(7);
        // Record in scrambled order across two batches: order must come from ids.
        let scrambled: Vec<String> = [3, 0, 6, 1, 5, 2, 4]
            .iter()
            .map(|&i| ids[i].clone())
            .collect();
        record_bare(store, &project, "gateway", "a/m", &scrambled[..4]).await;
        record_bare(store, &project, "gateway", "a/m", &scrambled[4..]).await;

        let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
        let all = store
            .list_calls(&project, &CallFilter::default())
            .await
            .expect("list");
        assert_eq!(ids_of(&all), newest_first);

        let mut filter = CallFilter {
            limit: 3,
            ..CallFilter::default()
        };
        let mut pages = Vec::new();
        loop {
            let page = store.list_calls(&project, &filter).await.expect("page");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            filter.before_id = page.last().map(|r| r.id.clone());
            pages.push(
                ids_of(&page)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        assert_eq!(pages.concat(), newest_first);

        // before_id is strict and need not name an existing call.
        let before_oldest = store
            .list_calls(
                &project,
                &CallFilter {
                    before_id: Some(ids[0].clone()),
                    ..CallFilter::default()
                },
            )
            .await
            .expect("list");
        assert!(before_oldest.is_empty());
        let before_4 = store
            .list_calls(
                &project,
                &CallFilter {
                    before_id: Some(ids[4].clone()),
                    ..CallFilter::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(
            ids_of(&before_4),
            vec![
                ids[3].as_str(),
                ids[2].as_str(),
                ids[1].as_str(),
                ids[0].as_str()
            ]
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn limit_defaults_to_50_and_is_capped_at_500() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let ids = ordered_ids(510);
        record_bare(store, &project, "gateway", "a/m", &ids).await;

        let count = |limit: u32| {
            let project = project.clone();
            async move {
                store
                    .list_calls(
                        &project,
                        &CallFilter {
                            limit,
                            ..CallFilter::default()
                        },
                    )
                    .await
                    .expect("list")
                    .len()
            }
        };
        assert_eq!(count(0).await, 50);
        assert_eq!(count(1).await, 1);
        assert_eq!(count(499).await, 499);
        assert_eq!(count(500).await, 500);
        assert_eq!(count(501).await, 500);
        assert_eq!(count(u32::MAX).await, 500);

        let first = store
            .list_calls(&project, &CallFilter::default())
            .await
            .expect("list");
        assert_eq!(first[0].id, ids[509]);
        assert_eq!(first[49].id, ids[460]);
        db.finish().await;
    }
}

#[tokio::test]
async fn filters_by_model_and_operation() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let ids = ordered_ids(6);
        record_bare(store, &project, "gateway", "openai/gpt", &ids[0..2]).await;
        record_bare(store, &project, "chat", "openai/gpt", &ids[2..3]).await;
        record_bare(store, &project, "chat", "local/llama", &ids[3..5]).await;
        record_bare(store, &project, "gateway", "local/llama", &ids[5..6]).await;

        let list = |model_id: Option<&str>, operation: Option<&str>, before: Option<&str>| {
            let filter = CallFilter {
                limit: 0,
                before_id: before.map(str::to_owned),
                model_id: model_id.map(str::to_owned),
                operation: operation.map(str::to_owned),
                conversation_id: None,
                request_id: None,
            };
            let project = project.clone();
            async move {
                store
                    .list_calls(&project, &filter)
                    .await
                    .expect("list")
                    .into_iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
            }
        };
        let pick = |is: &[usize]| is.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>();

        assert_eq!(list(Some("openai/gpt"), None, None).await, pick(&[2, 1, 0]));
        assert_eq!(
            list(Some("local/llama"), None, None).await,
            pick(&[5, 4, 3])
        );
        assert_eq!(list(None, Some("chat"), None).await, pick(&[4, 3, 2]));
        assert_eq!(list(None, Some("gateway"), None).await, pick(&[5, 1, 0]));
        assert_eq!(
            list(Some("local/llama"), Some("chat"), None).await,
            pick(&[4, 3])
        );
        assert_eq!(
            list(Some("openai/gpt"), Some("gateway"), Some(&ids[1])).await,
            pick(&[0])
        );
        assert_eq!(list(Some("nope/none"), None, None).await, pick(&[]));
        assert_eq!(list(None, Some("embed"), None).await, pick(&[]));
        // Model filter is exact, not a prefix match.
        assert_eq!(list(Some("openai"), None, None).await, pick(&[]));

        let rows = store
            .list_calls(
                &project,
                &CallFilter {
                    operation: Some("chat".to_owned()),
                    ..CallFilter::default()
                },
            )
            .await
            .expect("list");
        assert!(rows.iter().all(|r| r.operation == "chat"));
        db.finish().await;
    }
}

#[tokio::test]
async fn projects_are_isolated() {
    for db in test_dbs().await {
        let store = &db.store;
        let default = ProjectId::default_project();
        assert_eq!(default.as_str(), "default");
        assert_eq!(
            store.project_by_name("default").await.expect("lookup"),
            Some(default.clone())
        );

        let other = store.create_project("other").await.expect("create project");
        assert_ne!(other, default);
        assert_eq!(
            store.project_by_name("other").await.expect("lookup"),
            Some(other.clone())
        );
        assert_eq!(
            store.project_by_name("missing").await.expect("lookup"),
            None
        );
        let dup = store.create_project("other").await;
        assert!(
            matches!(dup, Err(StoreError::Duplicate { .. })),
            "duplicate project name: {dup:?}"
        );

        let ids = ordered_ids(2);
        let default_sid = record_bare(store, &default, "gateway", "a/m", &ids[..1]).await;
        let other_sid = record_bare(store, &other, "gateway", "a/m", &ids[1..]).await;

        // Each project sees exactly its own call.
        let in_default = store
            .list_calls(&default, &CallFilter::default())
            .await
            .expect("list");
        assert_eq!(ids_of(&in_default), vec![ids[0].as_str()]);
        assert_eq!(in_default[0].project_id, "default");
        let in_other = store
            .list_calls(&other, &CallFilter::default())
            .await
            .expect("list");
        assert_eq!(ids_of(&in_other), vec![ids[1].as_str()]);
        assert_eq!(in_other[0].project_id, other.as_str());

        // Direct lookups across projects find nothing.
        assert_eq!(store.get_call(&other, &ids[0]).await.expect("get"), None);
        assert_eq!(store.get_call(&default, &ids[1]).await.expect("get"), None);
        assert!(store
            .session_calls(&other, &default_sid)
            .await
            .expect("session")
            .is_empty());
        assert!(store
            .session_calls(&default, &other_sid)
            .await
            .expect("session")
            .is_empty());
        // Filters do not leak either.
        let filtered = store
            .list_calls(
                &other,
                &CallFilter {
                    model_id: Some("a/m".to_owned()),
                    operation: Some("gateway".to_owned()),
                    ..CallFilter::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(ids_of(&filtered), vec![ids[1].as_str()]);

        // An unknown project id sees nothing and cannot be written to.
        let ghost = ProjectId::new("no-such-project".to_owned());
        assert!(store
            .list_calls(&ghost, &CallFilter::default())
            .await
            .expect("list")
            .is_empty());
        let sid = new_id();
        let res = store
            .record_sessions(
                &ghost,
                &[RecordedSession {
                    session: session(&sid, "gateway"),
                    calls: vec![bare_call(&new_id(), &sid, "a/m")],
                }],
            )
            .await;
        assert!(
            matches!(res, Err(StoreError::MissingReference { .. })),
            "unknown project: {res:?}"
        );

        // A call cannot be attached to a session of another project.
        let res = store
            .record_sessions(
                &other,
                &[RecordedSession {
                    session: session(&new_id(), "gateway"),
                    calls: vec![bare_call(&new_id(), &default_sid, "a/m")],
                }],
            )
            .await;
        assert!(
            matches!(res, Err(StoreError::MissingReference { .. })),
            "cross-project session: {res:?}"
        );
        assert_eq!(
            store
                .list_calls(&other, &CallFilter::default())
                .await
                .expect("list")
                .len(),
            1
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn a_failing_batch_writes_nothing() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let existing = ordered_ids(1);
        record_bare(store, &project, "gateway", "a/m", &existing).await;

        // Duplicate call id inside the batch (second session repeats it).
        let (s1, s2) = (new_id(), new_id());
        let dup = new_id();
        let batch = vec![
            RecordedSession {
                session: session(&s1, "gateway"),
                calls: vec![
                    bare_call(&new_id(), &s1, "a/m"),
                    bare_call(&dup, &s1, "a/m"),
                ],
            },
            RecordedSession {
                session: session(&s2, "gateway"),
                calls: vec![bare_call(&dup, &s2, "a/m")],
            },
        ];
        let res = store.record_sessions(&project, &batch).await;
        assert!(
            matches!(res, Err(StoreError::Duplicate { .. })),
            "in-batch duplicate: {res:?}"
        );

        // Duplicate of an already stored call id, placed last in the batch.
        let s3 = new_id();
        let batch = vec![RecordedSession {
            session: session(&s3, "chat"),
            calls: vec![
                bare_call(&new_id(), &s3, "b/m"),
                bare_call(&existing[0], &s3, "b/m"),
            ],
        }];
        let res = store.record_sessions(&project, &batch).await;
        assert!(
            matches!(res, Err(StoreError::Duplicate { .. })),
            "stored duplicate: {res:?}"
        );

        // Only the pre-existing call is there; no session of the failed
        // batches was kept (their ids can be recorded now).
        let all = store
            .list_calls(&project, &CallFilter::default())
            .await
            .expect("list");
        assert_eq!(ids_of(&all), vec![existing[0].as_str()]);
        for sid in [&s1, &s2, &s3] {
            assert!(store
                .session_calls(&project, sid)
                .await
                .expect("session")
                .is_empty());
        }
        store
            .record_sessions(
                &project,
                &[
                    RecordedSession {
                        session: session(&s1, "gateway"),
                        calls: vec![bare_call(&dup, &s1, "a/m")],
                    },
                    RecordedSession {
                        session: session(&s2, "gateway"),
                        calls: vec![],
                    },
                    RecordedSession {
                        session: session(&s3, "gateway"),
                        calls: vec![],
                    },
                ],
            )
            .await
            .expect("the same ids record fine once the failed batches are gone");
        assert_eq!(
            store
                .list_calls(&project, &CallFilter::default())
                .await
                .expect("list")
                .len(),
            2
        );

        // An empty batch is a no-op.
        store.record_sessions(&project, &[]).await.expect("empty");
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_batches_all_land() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = db.store.clone();
            let project = project.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let ids = ordered_ids(3);
                    record_bare(&store, &project, "gateway", "a/m", &ids).await;
                    // Read while others write.
                    store
                        .list_calls(&project, &CallFilter::default())
                        .await
                        .expect("list");
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let all = db
            .store
            .list_calls(
                &project,
                &CallFilter {
                    limit: 500,
                    ..CallFilter::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(all.len(), 8 * 5 * 3);
        db.finish().await;
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let ids = ordered_ids(1);
        record_bare(&db.store, &project, "gateway", "a/m", &ids).await;

        // Connect again to the same database, while the first store is open
        // and after it is closed: migrations are not re-applied, data stays.
        for close_first in [false, true] {
            if close_first {
                db.store.close().await;
            }
            let again = Store::connect(&db.url).await.expect("reconnect");
            let rows = again
                .list_calls(&project, &CallFilter::default())
                .await
                .expect("list");
            assert_eq!(ids_of(&rows), vec![ids[0].as_str()]);
            assert_eq!(
                again.project_by_name("default").await.expect("lookup"),
                Some(project.clone())
            );
            again.close().await;
        }
        db.finish().await;
    }
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let store = Store::connect("sqlite::memory:").await.expect("connect");
    assert_eq!(store.backend(), Backend::Sqlite);
    let project = ProjectId::default_project();
    let sid = new_id();
    let call = full_call(&new_id(), &sid);
    store
        .record_sessions(
            &project,
            &[RecordedSession {
                session: session(&sid, "gateway"),
                calls: vec![call.clone()],
            }],
        )
        .await
        .expect("record");
    assert_eq!(
        store.get_call(&project, &call.id).await.expect("get"),
        Some(expected(&project, "gateway", &call))
    );
    store.close().await;
}

#[tokio::test]
async fn bad_urls_are_invalid_url_errors() {
    for url in [
        "",
        "nonsense",
        "mysql://root@localhost/db",
        "http://example.com/db",
        "sqlite:x.db?mode=bogus",
        "postgres://user:hunter2@host:notaport/db",
    ] {
        match Store::connect(url).await {
            Err(StoreError::InvalidUrl { url: shown, .. }) => {
                assert!(!shown.contains("hunter2"), "password leaked: {shown}");
            }
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_postgres_is_a_connect_error() {
    // Port 1 on localhost: nothing listens there.
    let res = Store::connect("postgres://nobody@127.0.0.1:1/db?connect_timeout=2").await;
    assert!(
        matches!(
            res,
            Err(StoreError::Connect {
                backend: Backend::Postgres,
                ..
            })
        ),
        "{res:?}"
    );
}

// ---------------------------------------------------------------- favorites

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|&id| id.to_owned()).collect()
}

/// Model ids of `rows`, after checking their positions are exactly `0..n`.
fn favorite_ids(rows: &[FavoriteRow]) -> Vec<&str> {
    let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
    let expected: Vec<i64> = (0..).take(rows.len()).collect();
    assert_eq!(positions, expected, "positions not contiguous: {rows:?}");
    rows.iter().map(|r| r.model_id.as_str()).collect()
}

async fn listed_favorites(store: &Store, project: &ProjectId) -> Vec<FavoriteRow> {
    store.list_favorites(project).await.expect("list favorites")
}

#[tokio::test]
async fn favorites_keep_order_and_replace_is_atomic() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        assert!(listed_favorites(store, &project).await.is_empty());

        let first = strings(&["zeta/z", "alpha/a", "mid"]);
        let returned = store
            .replace_favorites(&project, &first, 100)
            .await
            .expect("replace");
        assert_eq!(
            returned,
            vec![
                FavoriteRow {
                    model_id: "zeta/z".to_owned(),
                    position: 0,
                    created_at_ms: 100
                },
                FavoriteRow {
                    model_id: "alpha/a".to_owned(),
                    position: 1,
                    created_at_ms: 100
                },
                FavoriteRow {
                    model_id: "mid".to_owned(),
                    position: 2,
                    created_at_ms: 100
                },
            ]
        );
        // Order is the given one, not alphabetical or insertion order.
        assert_eq!(listed_favorites(store, &project).await, returned);

        // Reorder, drop one, add one: kept ids keep created_at_ms.
        let second = strings(&["mid", "new/n", "zeta/z"]);
        let returned = store
            .replace_favorites(&project, &second, 200)
            .await
            .expect("replace");
        assert_eq!(favorite_ids(&returned), vec!["mid", "new/n", "zeta/z"]);
        let created: Vec<i64> = returned.iter().map(|r| r.created_at_ms).collect();
        assert_eq!(created, vec![100, 200, 100]);
        assert_eq!(listed_favorites(store, &project).await, returned);

        // Invalid lists are rejected and change nothing.
        for bad in [
            strings(&["a/x", "b/y", "a/x"]),
            strings(&["mid", "mid"]),
            strings(&["a/x", ""]),
            strings(&["a/x", "nul\0byte"]),
        ] {
            let res = store.replace_favorites(&project, &bad, 300).await;
            assert!(
                matches!(res, Err(StoreError::InvalidInput { .. })),
                "{bad:?}: {res:?}"
            );
            assert_eq!(listed_favorites(store, &project).await, returned);
        }

        // An empty list clears the favorites.
        assert!(store
            .replace_favorites(&project, &[], 400)
            .await
            .expect("clear")
            .is_empty());
        assert!(listed_favorites(store, &project).await.is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn add_favorite_appends_and_is_idempotent() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();

        let (rows, added) = store
            .add_favorite(&project, "local/smollm2", 10)
            .await
            .expect("add");
        assert!(added);
        assert_eq!(
            rows,
            vec![FavoriteRow {
                model_id: "local/smollm2".to_owned(),
                position: 0,
                created_at_ms: 10
            }]
        );
        let (rows, added) = store
            .add_favorite(&project, "openai/gpt-4o", 20)
            .await
            .expect("add");
        assert!(added);
        assert_eq!(favorite_ids(&rows), vec!["local/smollm2", "openai/gpt-4o"]);

        // Adding again changes nothing: same position, same created_at_ms.
        let (again, added) = store
            .add_favorite(&project, "local/smollm2", 30)
            .await
            .expect("add again");
        assert!(!added);
        assert_eq!(again, rows);
        assert_eq!(listed_favorites(store, &project).await, rows);

        // Appends after a replace too.
        store
            .replace_favorites(&project, &strings(&["b", "a"]), 40)
            .await
            .expect("replace");
        let (rows, added) = store.add_favorite(&project, "c", 50).await.expect("add");
        assert!(added);
        assert_eq!(favorite_ids(&rows), vec!["b", "a", "c"]);
        assert_eq!(rows[2].created_at_ms, 50);

        for bad in ["", "x\0y"] {
            let res = store.add_favorite(&project, bad, 60).await;
            assert!(
                matches!(res, Err(StoreError::InvalidInput { .. })),
                "{bad:?}: {res:?}"
            );
        }
        assert_eq!(listed_favorites(store, &project).await, rows);
        db.finish().await;
    }
}

#[tokio::test]
async fn remove_favorite_closes_the_gap() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        store
            .replace_favorites(&project, &strings(&["a", "b", "c", "d", "e"]), 1)
            .await
            .expect("replace");

        assert!(store.remove_favorite(&project, "b").await.expect("remove"));
        let rows = listed_favorites(store, &project).await;
        assert_eq!(favorite_ids(&rows), vec!["a", "c", "d", "e"]);
        assert!(rows.iter().all(|r| r.created_at_ms == 1));

        assert!(!store
            .remove_favorite(&project, "b")
            .await
            .expect("remove again"));
        assert!(!store
            .remove_favorite(&project, "never/there")
            .await
            .expect("remove unknown"));
        assert!(store.remove_favorite(&project, "e").await.expect("last"));
        assert!(store.remove_favorite(&project, "a").await.expect("first"));
        let rows = listed_favorites(store, &project).await;
        assert_eq!(favorite_ids(&rows), vec!["c", "d"]);

        // The next add goes right after the last one.
        let (rows, _) = store.add_favorite(&project, "f", 2).await.expect("add");
        assert_eq!(favorite_ids(&rows), vec!["c", "d", "f"]);

        for id in ["c", "d", "f"] {
            assert!(store.remove_favorite(&project, id).await.expect("remove"));
        }
        assert!(listed_favorites(store, &project).await.is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn favorites_are_per_project() {
    for db in test_dbs().await {
        let store = &db.store;
        let default = ProjectId::default_project();
        let other = store.create_project("other").await.expect("create project");

        store
            .replace_favorites(&default, &strings(&["shared/m", "only/default"]), 1)
            .await
            .expect("replace default");
        let before = listed_favorites(store, &default).await;

        // The same id is independent per project.
        let (rows, added) = store
            .add_favorite(&other, "shared/m", 2)
            .await
            .expect("add other");
        assert!(added);
        assert_eq!(favorite_ids(&rows), vec!["shared/m"]);
        assert_eq!(rows[0].created_at_ms, 2);
        store
            .replace_favorites(&other, &strings(&["only/other", "shared/m"]), 3)
            .await
            .expect("replace other");
        assert!(store
            .remove_favorite(&other, "shared/m")
            .await
            .expect("remove other"));
        assert!(!store
            .remove_favorite(&other, "only/default")
            .await
            .expect("remove foreign"));

        assert_eq!(
            favorite_ids(&listed_favorites(store, &other).await),
            vec!["only/other"]
        );
        assert_eq!(listed_favorites(store, &default).await, before);

        // Clearing one project leaves the other alone.
        store
            .replace_favorites(&default, &[], 4)
            .await
            .expect("clear");
        assert_eq!(
            favorite_ids(&listed_favorites(store, &other).await),
            vec!["only/other"]
        );

        // An unknown project has no favorites and cannot get any.
        let ghost = ProjectId::new("no-such-project".to_owned());
        assert!(listed_favorites(store, &ghost).await.is_empty());
        let res = store.add_favorite(&ghost, "a/m", 5).await;
        assert!(
            matches!(res, Err(StoreError::MissingReference { .. })),
            "add to unknown project: {res:?}"
        );
        let res = store.replace_favorites(&ghost, &strings(&["a/m"]), 5).await;
        assert!(
            matches!(res, Err(StoreError::MissingReference { .. })),
            "replace in unknown project: {res:?}"
        );
        assert!(!store.remove_favorite(&ghost, "a/m").await.expect("remove"));
        assert!(listed_favorites(store, &ghost).await.is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn favorite_ids_are_stored_verbatim() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let ids = strings(&[
            "vllm/meta-llama/Llama-3-8B",
            "local/smollm2",
            "gpt-4o",
            "a/b/c/d/e/",
            "/leading-slash",
            "ollama/qwen2.5:7b-instruct-q4_K_M",
            "lmstudio/Grüß/模型-🌍",
            "Local/SmolLM2",
            "caf\u{e9}/m",
            "cafe\u{301}/m",
            " spaced id ",
            "quote'\"back\\slash%_",
        ]);
        let rows = store
            .replace_favorites(&project, &ids, 7)
            .await
            .expect("replace");
        let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(favorite_ids(&rows), expected);
        assert_eq!(
            favorite_ids(&listed_favorites(store, &project).await),
            expected
        );

        // Exact matching: adding any of them again is a no-op, a case or
        // normalization variant is a different id.
        for id in &ids {
            let (_, added) = store.add_favorite(&project, id, 8).await.expect("re-add");
            assert!(!added, "{id:?} re-added");
        }
        let (rows, added) = store
            .add_favorite(&project, "vllm/meta-llama/llama-3-8b", 9)
            .await
            .expect("add variant");
        assert!(added);
        assert_eq!(rows.len(), ids.len() + 1);
        assert!(store
            .remove_favorite(&project, "lmstudio/Grüß/模型-🌍")
            .await
            .expect("remove unicode"));
        assert!(!store
            .remove_favorite(&project, "lmstudio")
            .await
            .expect("remove prefix"));
        let rows = listed_favorites(store, &project).await;
        assert_eq!(rows.len(), ids.len());
        assert!(rows.iter().all(|r| r.model_id != "lmstudio/Grüß/模型-🌍"));
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_favorite_writes_keep_positions_contiguous() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();

        // 20 distinct ids, each added by two tasks at once.
        let ids: Vec<String> = (0..20).map(|i| format!("prov/model-{i:02}")).collect();
        let mut tasks = Vec::new();
        for id in ids.iter().chain(ids.iter()) {
            let store = db.store.clone();
            let project = project.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let (rows, added) = store.add_favorite(&project, &id, 1).await.expect("add");
                assert!(rows.iter().any(|r| r.model_id == id));
                favorite_ids(&rows);
                added
            }));
        }
        let mut added = 0;
        for task in tasks {
            if task.await.expect("task") {
                added += 1;
            }
        }
        assert_eq!(added, 20, "each id is added exactly once");
        let rows = listed_favorites(&db.store, &project).await;
        let mut got: Vec<&str> = favorite_ids(&rows);
        assert_eq!(got.len(), 20);
        got.sort_unstable();
        assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());

        // Removes and adds racing each other.
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = db.store.clone();
            let project = project.clone();
            tasks.push(tokio::spawn(async move {
                let removed = store
                    .remove_favorite(&project, &format!("prov/model-{:02}", i * 2))
                    .await
                    .expect("remove");
                assert!(removed);
                store
                    .add_favorite(&project, &format!("late/model-{i}"), 2)
                    .await
                    .expect("add");
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let rows = listed_favorites(&db.store, &project).await;
        let mut got = favorite_ids(&rows);
        got.sort_unstable();
        let mut want: Vec<String> = (0..10)
            .map(|i| format!("prov/model-{:02}", i * 2 + 1))
            .chain((0..10).map(|i| format!("late/model-{i}")))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
        db.finish().await;
    }
}

#[tokio::test]
async fn favorites_survive_reconnect() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let ids = strings(&["vllm/meta-llama/Llama-3-8B", "local/smollm2", "gpt-4o"]);
        let written = db
            .store
            .replace_favorites(&project, &ids, 42)
            .await
            .expect("replace");
        db.store.close().await;

        let again = Store::connect(&db.url).await.expect("reconnect");
        assert_eq!(listed_favorites(&again, &project).await, written);
        let (rows, added) = again
            .add_favorite(&project, "late/one", 43)
            .await
            .expect("add after reconnect");
        assert!(added);
        assert_eq!(
            favorite_ids(&rows),
            vec![
                "vllm/meta-llama/Llama-3-8B",
                "local/smollm2",
                "gpt-4o",
                "late/one"
            ]
        );
        again.close().await;
        db.finish().await;
    }
}

#[test]
fn project_id_basics() {
    let p = ProjectId::default_project();
    assert_eq!(p.as_str(), "default");
    assert_eq!(p.to_string(), "default");
    assert_eq!(ProjectId::new("x".to_owned()).as_str(), "x");
    assert_eq!(
        CallFilter {
            limit: 0,
            ..CallFilter::default()
        }
        .effective_limit(),
        50
    );
    assert_eq!(
        CallFilter {
            limit: 10_000,
            ..CallFilter::default()
        }
        .effective_limit(),
        500
    );
}
