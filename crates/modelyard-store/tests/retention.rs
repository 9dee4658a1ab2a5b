//! Tests of the call-log retention (`prune_calls`). Every test runs on
//! SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, also on
//! PostgreSQL; see `common`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;

use common::test_dbs;
use modelyard_store::{
    CallFilter, NewLlmCall, NewLlmSession, ProjectId, RecordedSession, SessionFilter, Store,
    UsageRow,
};

/// 2024-01-01T00:00:00Z in unix milliseconds.
const JAN_1: i64 = 1_704_067_200_000;
const DAY: i64 = 86_400_000;

/// A fresh UUIDv7 id strictly greater than every id returned before.
fn next_id() -> String {
    static LAST: Mutex<String> = Mutex::new(String::new());
    let mut last = LAST.lock().unwrap();
    loop {
        let id = uuid::Uuid::now_v7().to_string();
        if id > *last {
            last.clone_from(&id);
            return id;
        }
    }
}

fn session(created_at_ms: i64) -> NewLlmSession {
    NewLlmSession {
        id: next_id(),
        operation: "gateway".to_owned(),
        parent_session_id: None,
        conversation_id: None,
        turn_id: None,
        created_at_ms,
        request_id: None,
        key_id: None,
        config: None,
    }
}

fn call(session: &NewLlmSession, sent_at_ms: i64) -> NewLlmCall {
    NewLlmCall {
        id: next_id(),
        session_id: session.id.clone(),
        model_id: "p/m".to_owned(),
        provider: "p".to_owned(),
        upstream_model: "m".to_owned(),
        stream: false,
        request_json: "{}".to_owned(),
        response_text: None,
        reasoning_text: None,
        tool_calls_json: None,
        finish_reason: None,
        usage: UsageRow::default(),
        sent_at_ms,
        first_token_at_ms: None,
        completed_at_ms: Some(sent_at_ms + 500),
        http_status: Some(200),
        error: None,
        attempt: 1,
        route: None,
        cost: Default::default(),
    }
}

/// Records `session` with calls sent at `days` (days after JAN_1); returns
/// the session id and the call ids.
async fn record(
    store: &Store,
    project: &ProjectId,
    created_day: i64,
    days: &[i64],
) -> (String, Vec<String>) {
    let s = session(JAN_1 + created_day * DAY);
    let calls: Vec<NewLlmCall> = days.iter().map(|d| call(&s, JAN_1 + d * DAY)).collect();
    let ids = calls.iter().map(|c| c.id.clone()).collect();
    let id = s.id.clone();
    store
        .record_sessions(project, &[RecordedSession { session: s, calls }])
        .await
        .expect("record");
    (id, ids)
}

async fn call_ids(store: &Store, project: &ProjectId) -> Vec<String> {
    let filter = CallFilter {
        limit: 500,
        ..CallFilter::default()
    };
    let mut ids: Vec<String> = store
        .list_calls(project, &filter)
        .await
        .expect("list calls")
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

async fn session_ids(store: &Store, project: &ProjectId) -> Vec<String> {
    let filter = SessionFilter {
        limit: 500,
        ..SessionFilter::default()
    };
    let mut ids: Vec<String> = store
        .list_sessions(project, &filter)
        .await
        .expect("list sessions")
        .into_iter()
        .map(|s| s.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn prune_by_age_and_count_across_projects() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        let b = store.create_project("other").await.expect("project");
        let cutoff = JAN_1 + 10 * DAY;

        // Project a, in time order.
        let (old_session, _) = record(store, &a, 0, &[1, 2]).await; // all old: gone
        let (empty_old, _) = record(store, &a, 0, &[]).await; // no calls, old: gone
        let (mixed, mixed_calls) = record(store, &a, 5, &[5, 11]).await; // old + 4th newest
        let (recent, recent_calls) = record(store, &a, 12, &[12, 13, 14]).await; // kept
        let (empty_new, _) = record(store, &a, 20, &[]).await; // no calls, recent: kept
                                                               // Project b: same rule.
        let (b_old, _) = record(store, &b, 1, &[1]).await;
        let (b_session, b_calls) = record(store, &b, 11, &[11, 12, 13, 14]).await;

        let deleted = store
            .prune_calls(Some(cutoff), Some(3))
            .await
            .expect("prune");
        // a: 2 + 1 (age) + 1 (count); b: 1 (age) + 1 (count).
        assert_eq!(deleted, 6);
        assert_eq!(call_ids(store, &a).await, sorted(recent_calls.clone()));
        assert_eq!(call_ids(store, &b).await, sorted(b_calls[1..].to_vec()));
        assert_eq!(
            session_ids(store, &a).await,
            sorted(vec![recent.clone(), empty_new.clone()])
        );
        assert_eq!(session_ids(store, &b).await, vec![b_session.clone()]);
        for gone in [&old_session, &empty_old, &mixed] {
            assert!(store.get_session(&a, gone).await.unwrap().is_none());
        }
        assert!(store.get_session(&b, &b_old).await.unwrap().is_none());
        assert!(!mixed_calls.is_empty());

        // Idempotent.
        assert_eq!(store.prune_calls(Some(cutoff), Some(3)).await.unwrap(), 0);
        assert_eq!(call_ids(store, &a).await, sorted(recent_calls));
        db.finish().await;
    }
}

#[tokio::test]
async fn prune_by_count_only_keeps_unrelated_empty_sessions() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        let (empty_old, _) = record(store, &a, 0, &[]).await;
        let (first, _) = record(store, &a, 1, &[1, 2]).await;
        let (second, second_calls) = record(store, &a, 3, &[3, 4]).await;

        assert_eq!(store.prune_calls(None, Some(1)).await.unwrap(), 3);
        assert_eq!(call_ids(store, &a).await, vec![second_calls[1].clone()]);
        // `first` lost its calls; the empty session was never touched.
        assert_eq!(
            session_ids(store, &a).await,
            sorted(vec![empty_old.clone(), second.clone()])
        );
        assert!(store.get_session(&a, &first).await.unwrap().is_none());
        assert_eq!(store.prune_calls(None, Some(1)).await.unwrap(), 0);
        assert_eq!(store.prune_calls(None, None).await.unwrap(), 0);
        db.finish().await;
    }
}

#[tokio::test]
async fn prune_by_age_only_spans_more_than_one_batch() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        // 5 001 old calls in 41 sessions, and one recent call.
        let mut batch = Vec::new();
        for _ in 0..41 {
            let s = session(JAN_1);
            let calls = (0..122).map(|_| call(&s, JAN_1)).collect();
            batch.push(RecordedSession { session: s, calls });
        }
        store.record_sessions(&a, &batch).await.expect("record");
        let (recent, recent_calls) = record(store, &a, 30, &[30]).await;

        let deleted = store
            .prune_calls(Some(JAN_1 + 10 * DAY), None)
            .await
            .expect("prune");
        assert_eq!(deleted, 41 * 122);
        assert_eq!(call_ids(store, &a).await, recent_calls);
        assert_eq!(session_ids(store, &a).await, vec![recent]);
        db.finish().await;
    }
}
