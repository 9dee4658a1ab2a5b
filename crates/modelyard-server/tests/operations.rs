//! Title and compaction: each is its own LLM session of its operation, its
//! model resolves like a turn's (through `llmOverrides.title` /
//! `llmOverrides.compaction`), and a compaction's summary replaces the
//! covered messages in later turns' upstream requests.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

async fn created(server: &TestServer, path: &str, body: Value) -> String {
    let (status, value) = server.post(path, body.clone()).await;
    assert_eq!(status, 201, "POST {path} {body}: {value}");
    value["id"].as_str().unwrap().to_owned()
}

async fn run_turn(server: &TestServer, conv: &str, content: &str) {
    let (status, started) = server
        .post(
            &format!("/v1/conversations/{conv}/turns"),
            json!({"content": content}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let turn_id = turn_id.as_str();
    let turn = eventually(LIMIT, "turn not running", || async move {
        let turns = server
            .get_json(&format!("/v1/conversations/{conv}/turns"))
            .await;
        let turn = turns["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == turn_id)
            .cloned()
            .unwrap();
        if turn["status"] != "running" {
            Ok(turn)
        } else {
            Err(turn)
        }
    })
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");
}

/// The call of session `session_id`, full view.
async fn session_call(server: &TestServer, session_id: &str) -> Value {
    let id = eventually(
        LIMIT,
        &format!("session {session_id} recorded"),
        || async move {
            let calls = server.calls().await;
            calls
                .iter()
                .find(|c| c["sessionId"] == session_id)
                .map(|call| call["id"].as_str().unwrap().to_owned())
                .ok_or(calls)
        },
    )
    .await;
    server.call(&id).await
}

async fn server() -> TestServer {
    TestServer::builder()
        .listed(&["mock-model", "echo"])
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .start()
        .await
}

#[tokio::test]
async fn title_uses_the_title_operation_and_records_its_session() {
    let server = server().await;
    let title_cfg = created(
        &server,
        "/v1/llms",
        json!({"model": "echo", "systemPrompt": "TITLE IT"}),
    )
    .await;
    let conv = created(
        &server,
        "/v1/conversations",
        json!({"llmOverrides": {"title": title_cfg}}),
    )
    .await;
    // No messages yet: nothing to title.
    let (status, problem) = server
        .post(&format!("/v1/conversations/{conv}/title"), json!({}))
        .await;
    assert_eq!(status, 422, "{problem}");

    run_turn(&server, &conv, "Planning a trip to Lisbon").await;
    let (status, answer) = server
        .post(&format!("/v1/conversations/{conv}/title"), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["conversationId"], conv.as_str());
    assert_eq!(answer["modelId"], "mock/echo");
    assert_eq!(answer["resolvedFrom"], "operationConfig");
    assert_eq!(answer["llmId"], title_cfg.as_str());
    // The mock echoes the last user message: the transcript's first line.
    assert_eq!(answer["title"], "echo: user: Planning a trip to Lisbon");
    let shown = server.get_json(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(shown["title"], answer["title"]);
    // The model selection is untouched.
    assert_eq!(shown["model"], Value::Null);

    let request = server.mock_chats().last().cloned().unwrap();
    assert_eq!(request["model"], "echo");
    assert_eq!(request["stream"], false);
    assert_eq!(request["messages"][0]["content"], "TITLE IT");

    let call = session_call(&server, answer["sessionId"].as_str().unwrap()).await;
    assert_eq!(call["operation"], "title");
    assert_eq!(call["conversationId"], conv.as_str());
    assert_eq!(call["turnId"], Value::Null);
    assert_eq!(call["modelId"], "mock/echo");
    assert!(call["usage"]["totalTokens"].as_u64().unwrap() > 0, "{call}");

    // A per-call model override wins and is not persisted.
    let (status, answer) = server
        .post(
            &format!("/v1/conversations/{conv}/title"),
            json!({"model": "mock/mock-model"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["modelId"], "mock/mock-model");
    assert_eq!(answer["resolvedFrom"], "request");
    let shown = server.get_json(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(shown["model"], Value::Null);
    // Unknown fields are refused.
    let (status, _) = server
        .post(
            &format!("/v1/conversations/{conv}/title"),
            json!({"modle": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn compaction_summarizes_and_later_turns_send_the_summary() {
    let server = server().await;
    let compaction_cfg = created(&server, "/v1/llms", json!({"model": "echo"})).await;
    let conv = created(
        &server,
        "/v1/conversations",
        json!({"llmOverrides": {"compaction": compaction_cfg}}),
    )
    .await;
    let path = format!("/v1/conversations/{conv}/compact");
    // Nothing to compact yet.
    let (status, problem) = server.post(&path, json!({})).await;
    assert_eq!(status, 422, "{problem}");

    run_turn(&server, &conv, "FIRST-MARKER question").await;
    run_turn(&server, &conv, "second question").await;
    let (status, answer) = server.post(&path, json!({"keepLast": 2})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["modelId"], "mock/echo");
    assert_eq!(answer["resolvedFrom"], "operationConfig");
    let summary = answer["summary"].as_str().unwrap().to_owned();
    assert!(summary.contains("FIRST-MARKER"), "{summary}");
    // It covers the first turn's two messages.
    let messages = server
        .get_json(&format!("/v1/conversations/{conv}/messages"))
        .await;
    let messages = messages["data"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 4);
    assert_eq!(answer["upToSeq"], messages[1]["seq"]);
    let call = session_call(&server, answer["sessionId"].as_str().unwrap()).await;
    assert_eq!(call["operation"], "compaction");
    assert_eq!(call["conversationId"], conv.as_str());
    assert_eq!(call["modelId"], "mock/echo");
    // Compacting again with the same split: nothing new.
    let (status, _) = server.post(&path, json!({"keepLast": 2})).await;
    assert_eq!(status, 422);

    // The next turn sends the summary instead of the covered messages.
    run_turn(&server, &conv, "third question").await;
    let request = server.mock_chats().last().cloned().unwrap();
    let sent = request["messages"].as_array().unwrap();
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(
        sent[0]["content"],
        format!("Summary of the earlier conversation: {summary}")
    );
    assert!(
        !request.to_string().contains("\"FIRST-MARKER question\""),
        "{request}"
    );
    let contents: Vec<&str> = sent[1..]
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents[0], "second question");
    assert_eq!(contents.last(), Some(&"third question"));
    assert_eq!(contents.len(), 3);
    server.shutdown().await;
}
