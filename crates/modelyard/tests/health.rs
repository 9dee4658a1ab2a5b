//! `GET /health` (store state, call-log counters, readiness), the call
//! log's retry of a batch that failed to write, and the sweeper that closes
//! turns running nowhere — against the built binary on SQLite.

mod common;

use std::time::Duration;

use common::{conversation_usable, create_conversation, Dir, Options, Server, LIMIT};
use modelyard_core::conversation::{EventPayload, ResolvedFrom};
use modelyard_store::{ProjectId, Store};
use modelyard_testkit::{eventually, MockUpstream};
use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::time::Instant;

async fn health(server: &Server, query: &str) -> (u16, Value) {
    server
        .send(reqwest::Method::GET, &format!("/health{query}"), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_store_and_the_call_log_counters() {
    let mock = MockUpstream::start().await;
    let dir = Dir::new("health");
    let server = Server::start(&dir, &mock).await;
    let (status, body) = health(&server, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "store": "ok",
               "callLog": {"queued": 0, "queuedBytes": 0, "dropped": 0, "failed": 0},
               "events": "in-process"})
    );
    let (status, body) = health(&server, "?ready=1").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_log_batch_is_retried_after_a_transient_write_failure() {
    let mock = MockUpstream::start().await;
    let dir = Dir::new("calllog-retry");
    let server = Server::start(&dir, &mock).await;
    // Given the database's write lock held by another connection for 6 s,
    // longer than one write waits for it (5 s)...
    let mut blocker = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.db())
        .connect()
        .await
        .expect("open the database");
    blocker
        .execute("BEGIN IMMEDIATE")
        .await
        .expect("take the write lock");
    let locked_at = Instant::now();
    // ...when a call is proxied meanwhile (no database on its path)...
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            "/v1/chat/completions",
            Some(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, during) = health(&server, "").await;
    assert_eq!(during["callLog"]["queued"], 1, "{during}");
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(locked_at.elapsed())).await;
    blocker
        .execute("COMMIT")
        .await
        .expect("release the write lock");
    let _ = blocker.close().await;
    // ...then its record is written by a later try, and nothing was lost.
    eventually(LIMIT, "the call is recorded", || async {
        let calls = server.get("/v1/calls").await;
        (calls["data"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    let (_, body) = health(&server, "").await;
    assert_eq!(
        body["callLog"],
        json!({"queued": 0, "queuedBytes": 0, "dropped": 0, "failed": 0}),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_closes_a_turn_that_runs_nowhere() {
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["echo".into(), "slow:200".into()]));
    let dir = Dir::new("sweeper");
    let options = Options {
        extra: "[turns]\nsweep_interval_ms = 300\n".into(),
        ..Options::default()
    };
    let server = Server::start_with(&dir, &mock, &options).await;
    let conv = create_conversation(&server, "mock/echo").await;
    // Given a turn `running` in the store that no process runs (as left by
    // a run that died, or a request that vanished after the commit)...
    let store = Store::connect(&format!("sqlite://{}", dir.db().display()))
        .await
        .expect("open the store");
    let turn_id = uuid::Uuid::now_v7().to_string();
    store
        .append_events(
            &ProjectId::default_project(),
            &conv,
            &[
                EventPayload::TurnStarted {
                    turn_id: turn_id.clone(),
                    operation: "chat".into(),
                    model_id: "mock/echo".into(),
                    resolved_from: ResolvedFrom::Conversation,
                    llm_config_id: None,
                    client_tools: None,
                },
                EventPayload::UserMessage {
                    message_id: uuid::Uuid::now_v7().to_string(),
                    turn_id: turn_id.clone(),
                    content: json!("hello?"),
                },
            ],
            1,
        )
        .await
        .expect("append a running turn");
    store.close().await;
    // ...the sweeper closes it as interrupted, without a restart...
    let turn = server.wait_turn(&conv, &turn_id).await;
    assert_eq!(turn["status"], "interrupted", "{turn}");
    // ...and the conversation is usable again.
    conversation_usable(&server, &conv).await;
}
