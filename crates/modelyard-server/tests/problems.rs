//! Every problem document of the API carries a stable machine-readable
//! `code` beside its text; store errors the client caused are 4xx. One
//! scenario per code.

mod common;

use common::conv::*;
use common::TestServer;
use serde_json::json;

async fn server() -> TestServer {
    TestServer::builder()
        .listed(&["mock-model", "hang"])
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .start()
        .await
}

#[tokio::test]
async fn an_unknown_conversation_is_conversation_not_found() {
    let server = server().await;
    server
        .problem(
            "GET",
            "/v1/conversations/nope",
            None,
            404,
            "conversation_not_found",
        )
        .await;
}

#[tokio::test]
async fn an_unknown_turn_is_turn_not_found() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/turns/nope/cancel");
    server
        .problem("POST", &path, None, 404, "turn_not_found")
        .await;
}

#[tokio::test]
async fn a_second_turn_while_one_runs_is_turn_running() {
    let server = server().await;
    let conv = create(&server, json!({"model": "mock/hang"})).await;
    start_turn(&server, &conv, json!({"content": "wait"})).await;
    let path = format!("/v1/conversations/{conv}/turns");
    server
        .problem(
            "POST",
            &path,
            Some(json!({"content": "again"})),
            409,
            "turn_running",
        )
        .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_invalid_json() {
    let server = server().await;
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "invalid_json", "{body}");
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_invalid_body() {
    let server = server().await;
    server
        .problem(
            "POST",
            "/v1/conversations",
            Some(json!({"unknownField": 1})),
            400,
            "invalid_body",
        )
        .await;
}

#[tokio::test]
async fn a_body_that_is_an_array_is_invalid_body_and_changes_nothing() {
    // serde reads a struct from an array too: `[null, null]` was a PATCH
    // that set nothing and answered 200 (found by Schemathesis).
    let server = server().await;
    let conv = create(&server, json!({"title": "kept"})).await;
    let path = format!("/v1/conversations/{conv}");
    server
        .problem(
            "PATCH",
            &path,
            Some(json!([null, null])),
            400,
            "invalid_body",
        )
        .await;
    server
        .problem(
            "POST",
            "/v1/conversations",
            Some(json!([])),
            400,
            "invalid_body",
        )
        .await;
    // The optional bodies of operations too.
    let title = format!("/v1/conversations/{conv}/title");
    server
        .problem(
            "POST",
            &title,
            Some(json!(["mock/mock-model"])),
            400,
            "invalid_body",
        )
        .await;
    assert_eq!(server.get_ok(&path).await["title"], "kept");
}

#[tokio::test]
async fn a_method_a_route_does_not_have_is_method_not_allowed_with_allow() {
    // Was 403 "this route has no access rule", logged as an error (found by
    // Schemathesis: `TRACE /health`).
    let server = server().await;
    let problem = server
        .problem("TRACE", "/health", None, 405, "method_not_allowed")
        .await;
    assert_eq!(problem["status"], 405);
    let response = server
        .http
        .put(server.url("/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, POST");
    // OpenAI's envelope on an OpenAI path.
    let response = server
        .http
        .get(server.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_unsupported_media_type() {
    let server = server().await;
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .body("{}")
        .send()
        .await
        .expect("send");
    // The guard refuses it before any handler (a cross-site form post).
    assert_eq!(response.status(), 415);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "unsupported_media_type", "{body}");
}

#[tokio::test]
async fn a_bad_field_is_invalid_field_and_names_it() {
    let server = server().await;
    let body = server
        .problem(
            "POST",
            "/v1/conversations",
            Some(json!({"metadata": [1]})),
            422,
            "invalid_field",
        )
        .await;
    assert_eq!(body["field"], "metadata", "{body}");
}

#[tokio::test]
async fn a_model_no_provider_serves_is_model_not_found_with_suggestions() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/turns");
    let body = server
        .problem(
            "POST",
            &path,
            Some(json!({"content": "hi", "model": "mock/mock-modle"})),
            422,
            "model_not_found",
        )
        .await;
    assert!(body["suggestions"].is_array(), "{body}");
}

#[tokio::test]
async fn a_malformed_model_selection_is_invalid_model_id_with_suggestions() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/model");
    let body = server
        .problem(
            "PUT",
            &path,
            Some(json!({"model": "mock/mock modle"})),
            422,
            "invalid_model_id",
        )
        .await;
    assert!(body["suggestions"].is_array(), "{body}");
}

#[tokio::test]
async fn a_resume_past_the_log_is_invalid_position() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/events?after=99");
    server
        .problem("GET", &path, None, 400, "invalid_position")
        .await;
}

#[tokio::test]
async fn a_bad_query_is_invalid_query() {
    let server = server().await;
    server
        .problem(
            "GET",
            "/v1/conversations?limit=0",
            None,
            400,
            "invalid_query",
        )
        .await;
    server
        .problem(
            "GET",
            "/v1/conversations?bogus=1",
            None,
            400,
            "invalid_query",
        )
        .await;
}
