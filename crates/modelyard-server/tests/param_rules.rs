//! A provider's `set_params`, `strip_params` and `headers` reach the
//! upstream on every LLM call path, not only `/v1/chat/completions`: a
//! conversation turn, an advisor consultation, a title and a compaction
//! (the mock upstream records each request).

#![allow(clippy::unwrap_used)]

mod common;

use common::conv::*;
use common::TestServer;
use modelyard_testkit::RecordedRequest;
use serde_json::{json, Value};

/// One provider `mock` with rules: `temperature` and `seed` set, `top_p`
/// stripped, an `X-Title` header on every request.
const RULED_PROVIDER: &str = r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock}"
set_params = { temperature = 0.3, seed = 7 }
strip_params = ["top_p"]
headers = { "X-Title" = "modelyard-test" }
"#;

async fn server() -> TestServer {
    TestServer::builder()
        .providers(RULED_PROVIDER)
        .listed(&["mock-model", "echo", "tool-call:advisor"])
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .start()
        .await
}

/// A user LLM config for `model` whose options the rules change
/// (`temperature` 0.9 → 0.3, `topP` stripped); returns its id.
async fn config(server: &TestServer, model: &str) -> String {
    let (status, body) = send(
        server,
        "POST",
        "/v1/llms",
        Some(json!({
            "displayName": format!("ruled {model}"),
            "model": model,
            "providerOptions": {"temperature": 0.9, "topP": 0.5},
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The chat requests the mock received for upstream model `model`.
fn requests_for(server: &TestServer, model: &str) -> Vec<(RecordedRequest, Value)> {
    server
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| {
            let json = r.json()?;
            (json["model"] == model).then_some((r, json))
        })
        .collect()
}

/// Asserts the rules shaped `request`.
fn assert_ruled(what: &str, request: &RecordedRequest, body: &Value) {
    assert_eq!(
        request.header("x-title"),
        Some("modelyard-test"),
        "{what}: provider header"
    );
    assert_eq!(body["temperature"], 0.3, "{what}: set_params wins: {body}");
    assert_eq!(body["seed"], 7, "{what}: set_params adds: {body}");
    assert!(
        body.get("top_p").is_none(),
        "{what}: top_p stripped: {body}"
    );
}

#[tokio::test]
async fn a_turn_sends_the_provider_rules_and_headers() {
    let server = server().await;
    let cfg = config(&server, "mock/mock-model").await;
    let conv = create(&server, json!({"llmId": cfg})).await;

    let (_, turn) = run_turn(&server, &conv, json!({"content": "hello"})).await;
    assert_eq!(turn["status"], "completed", "{turn}");

    let sent = requests_for(&server, "mock-model");
    assert_eq!(sent.len(), 1, "one chat step");
    let (request, body) = &sent[0];
    assert_ruled("turn", request, body);
    assert_eq!(body["stream"], true, "routing's own fields stay: {body}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_advisor_call_sends_the_provider_rules_and_headers() {
    let server = server().await;
    let advisor = config(&server, "mock/echo").await;
    let conv = create(
        &server,
        json!({"advisor": true, "llmOverrides": {"advisor": advisor}}),
    )
    .await;

    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "How should I sort names?", "model": "mock/tool-call:advisor"}),
    )
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");

    let sent = requests_for(&server, "echo");
    assert_eq!(sent.len(), 1, "one advisor consultation");
    let (request, body) = &sent[0];
    assert_ruled("advisor", request, body);
    // The chat steps too.
    for (request, body) in requests_for(&server, "tool-call:advisor") {
        assert_eq!(request.header("x-title"), Some("modelyard-test"));
        assert_eq!(body["seed"], 7, "{body}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_title_sends_the_provider_rules_and_headers() {
    let server = server().await;
    let cfg = config(&server, "mock/echo").await;
    let conv = create(&server, json!({"llmOverrides": {"title": cfg}})).await;
    run_turn(
        &server,
        &conv,
        json!({"content": "Planning a trip to Lisbon"}),
    )
    .await;

    let (status, answer) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/title"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let sent = requests_for(&server, "echo");
    assert_eq!(sent.len(), 1, "one title call");
    let (request, body) = &sent[0];
    assert_ruled("title", request, body);
    assert_eq!(body["stream"], false, "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_compaction_sends_the_provider_rules_and_headers() {
    let server = server().await;
    let cfg = config(&server, "mock/echo").await;
    let conv = create(&server, json!({"llmOverrides": {"compaction": cfg}})).await;
    run_turn(
        &server,
        &conv,
        json!({"content": "Planning a trip to Lisbon"}),
    )
    .await;

    let (status, answer) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/compact"),
        Some(json!({"keepLast": 0})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let sent = requests_for(&server, "echo");
    assert_eq!(sent.len(), 1, "one compaction call");
    let (request, body) = &sent[0];
    assert_ruled("compaction", request, body);
    server.shutdown().await;
}
