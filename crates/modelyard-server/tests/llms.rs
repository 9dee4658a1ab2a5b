//! End-to-end tests of LLM configs (`/v1/llms`): CRUD and validation, the
//! no-secrets rules, system defaults materialized from presets, conversations
//! naming configs (validated before anything is written), delete protection,
//! and turn resolution through configs reaching the upstream request.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TempDir, TestServer};
use modelyard_testkit::eventually;
use serde_json::{json, Value};
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(15);

const LISTED: &[&str] = &["mock-model", "echo"];

/// Presets: `default` (every operation) and `title`.
fn presets(default_version: u32, default_model: &str) -> String {
    format!(
        r#"
[defaults.presets.default]
version = {default_version}
model = "{default_model}"
system_prompt = "DEFAULT PROMPT v{default_version}"
provider_options = {{ temperature = 0.5 }}

[defaults.presets.title]
version = 1
model = "mock/echo"
display_name = "Titles"
system_prompt = "TITLE PROMPT"
provider_options = {{ temperature = 0.1, max_tokens = 20 }}
"#
    )
}

async fn server_with(extra: &str, dir: Option<TempDir>) -> TestServer {
    let mut builder = TestServer::builder().listed(LISTED).extra(extra);
    if let Some(dir) = dir {
        builder = builder.dir(dir);
    }
    builder.start().await
}

async fn preset_server() -> TestServer {
    server_with(&presets(1, "mock/mock-model"), None).await
}

// ------------------------------------------------------------------ HTTP

async fn create_llm(server: &TestServer, body: Value) -> Value {
    let (status, llm) = server.post("/v1/llms", body.clone()).await;
    assert_eq!(status, 201, "create {body}: {llm}");
    llm
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

async fn llms(server: &TestServer) -> Vec<Value> {
    server.get_ok("/v1/llms?limit=200").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// The `user` configs (the listing also shows the server default).
async fn user_llms(server: &TestServer) -> Vec<Value> {
    llms(server)
        .await
        .into_iter()
        .filter(|l| l["source"] == "user")
        .collect()
}

async fn conversations(server: &TestServer) -> Vec<Value> {
    server.get_ok("/v1/conversations?limit=200").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Asserts a 422 whose `field` is `field` and whose detail starts with it.
fn assert_invalid(status: u16, problem: &Value, field: &str) {
    assert_eq!(status, 422, "{field}: {problem}");
    assert_eq!(problem["field"], field, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("{field}: ")), "{detail}");
}

async fn start_turn(server: &TestServer, conv: &str, body: Value) -> Value {
    let (status, turn) = server
        .post(&format!("/v1/conversations/{conv}/turns"), body.clone())
        .await;
    assert_eq!(status, 202, "start turn {body}: {turn}");
    turn
}

async fn wait_turn(server: &TestServer, conv: &str, turn_id: &str) -> Value {
    let turn = eventually(
        LIMIT,
        &format!("turn {turn_id} not running"),
        || async move {
            let turns = server
                .get_ok(&format!("/v1/conversations/{conv}/turns"))
                .await;
            let turn = turns["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == turn_id)
                .cloned()
                .unwrap_or_else(|| panic!("turn {turn_id} listed: {turns}"));
            if turn["status"] != "running" {
                Ok(turn)
            } else {
                Err(turn)
            }
        },
    )
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");
    turn
}

/// Runs a turn to its end; returns the turn (with `llmId`) and the
/// upstream request the mock received for it.
async fn run_turn(server: &TestServer, conv: &str, body: Value) -> (Value, Value) {
    let before = server.mock_chats().len();
    let started = start_turn(server, conv, body).await;
    let turn = wait_turn(server, conv, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn["resolvedFrom"], started["resolvedFrom"]);
    let requests = server.mock_chats();
    assert_eq!(requests.len(), before + 1, "one upstream request per turn");
    (turn, requests.last().cloned().unwrap())
}

/// The persisted events of a conversation (replayed over SSE up to `caught-up`).
async fn events(server: &TestServer, conv: &str) -> Vec<Value> {
    let mut response = server
        .http
        .get(server.url(&format!("/v1/conversations/{conv}/events")))
        .send()
        .await
        .expect("open events");
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let deadline = Instant::now() + LIMIT;
    while !text.contains("event: caught-up") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
            other => panic!("events replay did not finish: {other:?}; {text:?}"),
        }
    }
    text.split("\n\n")
        .filter(|frame| frame.lines().any(|l| l.starts_with("id: ")))
        .map(|frame| {
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data line");
            serde_json::from_str(data).expect("event JSON")
        })
        .collect()
}

// ------------------------------------------------------------------ CRUD

/// A config body with every field set.
fn full_body() -> Value {
    json!({
        "displayName": "Careful",
        "model": "mock/mock-model",
        "systemPrompt": "Think first.",
        "providerOptions": {"temperature": 0.2, "topP": 0.9, "maxTokens": 64,
            "reasoningEffort": "low", "stop": ["END"], "seed": 42, "extra": {"min_p": 0.05}},
    })
}

#[tokio::test]
async fn a_minimal_config_is_named_by_its_model() {
    let server = server_with("", None).await;

    // Minimal: the model names it.
    let minimal = create_llm(&server, json!({"model": "echo"})).await;
    assert_eq!(minimal["model"], "mock/echo", "stored in composite form");
    assert_eq!(minimal["displayName"], "echo");
    assert_eq!(minimal["source"], "user");
    assert_eq!(minimal["projectId"], "default");
    assert_eq!(minimal["systemPrompt"], Value::Null);
    assert_eq!(minimal["baseUrl"], Value::Null);
    assert_eq!(minimal["presetVersion"], Value::Null);
    assert_eq!(
        minimal["providerOptions"],
        json!({"temperature": null, "topP": null, "maxTokens": null,
               "reasoningEffort": null, "stop": null, "seed": null, "extra": null})
    );
    assert!(minimal["createdAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_full_config_reads_back_as_created() {
    let server = server_with("", None).await;

    // Full.
    let full_body = full_body();
    let full = create_llm(&server, full_body.clone()).await;
    for key in ["displayName", "model", "systemPrompt", "providerOptions"] {
        assert_eq!(full[key], full_body[key], "{key}");
    }
    assert_eq!(
        server.get_ok(&format!("/v1/llms/{}", id(&full))).await,
        full
    );
}

#[tokio::test]
async fn configs_list_newest_first_in_pages() {
    let server = server_with("", None).await;
    // Given a minimal config, then a full one.
    let minimal = create_llm(&server, json!({"model": "echo"})).await;
    let full = create_llm(&server, full_body()).await;

    // List: newest first, paged.
    let page = server.get_ok("/v1/llms?limit=1").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["id"], full["id"]);
    let next = page["nextBefore"].as_str().expect("nextBefore");
    let page = server
        .get_ok(&format!("/v1/llms?limit=1&before={next}"))
        .await;
    assert_eq!(page["data"][0]["id"], minimal["id"]);
    let (status, _) = server.send("GET", "/v1/llms?before=nonsense", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn patch_keeps_absent_fields_merges_options_and_null_clears() {
    let server = server_with("", None).await;
    // Given a full config.
    let full = create_llm(&server, full_body()).await;

    // PATCH: absent fields stay, options merge key by key, null clears.
    let (status, patched) = server
        .patch(
            &format!("/v1/llms/{}", id(&full)),
            json!({"displayName": "Careful 2", "systemPrompt": null,
               "providerOptions": {"temperature": 1.5, "maxTokens": null}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["displayName"], "Careful 2");
    assert_eq!(patched["systemPrompt"], Value::Null);
    assert_eq!(patched["model"], "mock/mock-model");
    assert_eq!(patched["providerOptions"]["temperature"], 1.5);
    assert_eq!(patched["providerOptions"]["maxTokens"], Value::Null);
    assert_eq!(patched["providerOptions"]["topP"], 0.9);
    assert_eq!(patched["providerOptions"]["stop"], json!(["END"]));
    assert_eq!(patched["createdAt"], full["createdAt"]);
}

#[tokio::test]
async fn each_validation_error_names_its_field_and_writes_nothing() {
    let server = server_with("", None).await;
    // Given a full config.
    let full = create_llm(&server, full_body()).await;
    let before = server.get_ok(&format!("/v1/llms/{}", id(&full))).await;

    // Each validation error names its field, on create and on patch.
    let count = llms(&server).await.len();
    let cases = [
        (json!({}), "model"),
        (json!({"model": "nope/x"}), "model"),
        (json!({"model": "mock/not-served"}), "model"),
        (json!({"model": "echo", "displayName": " "}), "displayName"),
        (json!({"model": "echo", "systemPrompt": ""}), "systemPrompt"),
        (
            json!({"model": "echo", "providerOptions": {"temperature": 2.01}}),
            "providerOptions.temperature",
        ),
        (
            json!({"model": "echo", "providerOptions": {"temperature": -1}}),
            "providerOptions.temperature",
        ),
        (
            json!({"model": "echo", "providerOptions": {"topP": 1.5}}),
            "providerOptions.topP",
        ),
        (
            json!({"model": "echo", "providerOptions": {"maxTokens": 0}}),
            "providerOptions.maxTokens",
        ),
        (
            json!({"model": "echo", "providerOptions": {"reasoningEffort": "max"}}),
            "providerOptions.reasoningEffort",
        ),
        (
            json!({"model": "echo", "providerOptions": {"stop": ["a", "b", "c", "d", "e"]}}),
            "providerOptions.stop",
        ),
        (
            json!({"model": "echo", "providerOptions": {"extra": [1]}}),
            "providerOptions.extra",
        ),
        (
            json!({"model": "echo", "providerOptions": {"extra": {"model": "x"}}}),
            "providerOptions.extra",
        ),
        (
            json!({"model": "echo", "providerOptions": {"extra": {"api_key": "sk-x"}}}),
            "providerOptions.extra",
        ),
        (
            json!({"model": "echo", "baseUrl": "http://evil.example/v1"}),
            "baseUrl",
        ),
    ];
    for (body, field) in &cases {
        let (status, problem) = server.post("/v1/llms", body.clone()).await;
        assert_invalid(status, &problem, field);
    }
    let (status, problem) = server
        .post("/v1/llms", json!({"model": "mock/not-served"}))
        .await;
    assert_invalid(status, &problem, "model");
    assert!(problem["suggestions"].is_array(), "{problem}");
    for (body, field) in cases.iter().skip(1) {
        let (status, problem) = server
            .patch(&format!("/v1/llms/{}", id(&full)), body.clone())
            .await;
        assert_invalid(status, &problem, field);
    }
    let (status, problem) = server
        .post(
            "/v1/llms",
            json!({"model": "echo", "baseUrl": "http://evil.example/v1"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not the base URL of a configured provider"),
        "{problem}"
    );
    assert_eq!(llms(&server).await.len(), count, "nothing created");
    assert_eq!(
        server.get_ok(&format!("/v1/llms/{}", id(&full))).await,
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_configured_providers_base_url_is_accepted() {
    let server = server_with("", None).await;

    // baseUrl: a configured provider's base URL is fine (trailing slash or not).
    let mock_url = server.mock.base_url();
    for url in [mock_url.clone(), format!("{mock_url}/")] {
        let llm = create_llm(&server, json!({"model": "echo", "baseUrl": url})).await;
        assert_eq!(llm["baseUrl"], mock_url);
    }
}

#[tokio::test]
async fn secrets_are_refused_and_never_echoed() {
    let server = server_with("", None).await;
    // Given a full config.
    let full = create_llm(&server, full_body()).await;

    // Never secrets: unknown fields are 400, and the value is not echoed.
    let count = llms(&server).await.len();
    for body in [
        json!({"model": "echo", "apiKey": "sk-secret-123"}),
        json!({"model": "echo", "providerOptions": {"apiKey": "sk-secret-123"}}),
        json!({"model": "echo", "headers": {"Authorization": "Bearer sk-secret-123"}}),
    ] {
        let (status, problem) = server.post("/v1/llms", body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert!(!problem.to_string().contains("sk-secret-123"), "{problem}");
    }
    for body in [
        json!({"apiKey": "sk-secret-123"}),
        json!({"providerOptions": {"apiKey": "sk-secret-123"}}),
    ] {
        let (status, problem) = server.patch(&format!("/v1/llms/{}", id(&full)), body).await;
        assert_eq!(status, 400, "{problem}");
    }
    assert_eq!(llms(&server).await.len(), count);
}

#[tokio::test]
async fn a_deleted_config_is_gone() {
    let server = server_with("", None).await;
    // Given a minimal config.
    let minimal = create_llm(&server, json!({"model": "echo"})).await;

    // Delete: 204, then gone.
    let (status, _) = server
        .send("DELETE", &format!("/v1/llms/{}", id(&minimal)), None)
        .await;
    assert_eq!(status, 204);
    for method in ["GET", "DELETE"] {
        let (status, _) = server
            .send(method, &format!("/v1/llms/{}", id(&minimal)), None)
            .await;
        assert_eq!(status, 404, "{method} after delete");
    }
    let (status, _) = server
        .patch(
            &format!("/v1/llms/{}", id(&minimal)),
            json!({"displayName": "x"}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(llms(&server).await.iter().all(|l| l["id"] != minimal["id"]));
    let (status, _) = server.send("GET", "/v1/llms/nope", None).await;
    assert_eq!(status, 404);
}

// ------------------------------------------------------------------ system defaults

/// Given a first turn of a new conversation on the preset server: the
/// conversation, the system default it materialized and that default's row.
async fn first_default_turn(server: &TestServer) -> (String, String, Value) {
    let a = server.create_conversation(json!({})).await;
    let (turn, _) = run_turn(server, &a, json!({"content": "one"})).await;
    let default_v1 = turn["llmId"].as_str().expect("config id").to_owned();
    let row = llms(server)
        .await
        .into_iter()
        .next()
        .expect("the system default");
    (a, default_v1, row)
}

#[tokio::test]
async fn simultaneous_first_turns_materialize_one_system_default_and_later_turns_reuse_it() {
    let server = preset_server().await;

    // Two conversations created at once (creation materializes the server
    // default each names), then their simultaneous first turns: one system
    // default.
    let (a, b) = tokio::join!(
        server.create_conversation(json!({})),
        server.create_conversation(json!({})),
    );
    let (ta, tb) = tokio::join!(
        start_turn(&server, &a, json!({"content": "one"})),
        start_turn(&server, &b, json!({"content": "two"})),
    );
    let ta = wait_turn(&server, &a, ta["turnId"].as_str().unwrap()).await;
    let tb = wait_turn(&server, &b, tb["turnId"].as_str().unwrap()).await;
    assert_eq!(ta["resolvedFrom"], "serverDefault");
    assert_eq!(ta["modelId"], "mock/mock-model");
    assert_eq!(ta["llmId"], tb["llmId"]);
    let default_v1 = ta["llmId"].as_str().expect("config id").to_owned();
    let listed = llms(&server).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let row = &listed[0];
    assert_eq!(row["id"], default_v1);
    assert_eq!(row["source"], "system-default");
    assert_eq!(row["presetName"], "default");
    assert_eq!(row["presetVersion"], 1);
    assert_eq!(row["model"], "mock/mock-model");
    assert_eq!(row["systemPrompt"], "DEFAULT PROMPT v1");
    assert_eq!(row["providerOptions"]["temperature"], 0.5);

    // More turns reuse it.
    let (turn, _) = run_turn(&server, &a, json!({"content": "again"})).await;
    assert_eq!(turn["llmId"], default_v1);
    assert_eq!(llms(&server).await.len(), 1);
}

#[tokio::test]
async fn system_defaults_are_read_only_and_point_at_copy() {
    let server = preset_server().await;
    let (_, default_v1, row) = first_default_turn(&server).await;
    let row = &row;

    // System defaults are read-only: 409 pointing at copy.
    for (method, body) in [
        ("PATCH", Some(json!({"displayName": "mine"}))),
        ("DELETE", None),
    ] {
        let (status, problem) = server
            .send(method, &format!("/v1/llms/{default_v1}"), body)
            .await;
        assert_eq!(status, 409, "{method}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("copy it"), "{detail}");
        assert!(
            detail.contains(&format!("POST /v1/llms/{default_v1}/copy")),
            "{detail}"
        );
    }
    assert_eq!(&llms(&server).await[0], row, "unchanged");
}

#[tokio::test]
async fn a_copied_system_default_is_an_editable_user_config() {
    let server = preset_server().await;
    let (_, default_v1, row) = first_default_turn(&server).await;
    let row = &row;

    // Copy: a user config saying the same, editable.
    let (status, copy) = server
        .post(&format!("/v1/llms/{default_v1}/copy"), json!({}))
        .await;
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["source"], "user");
    assert_ne!(copy["id"], default_v1);
    assert_eq!(copy["presetVersion"], Value::Null);
    for key in ["model", "systemPrompt", "providerOptions"] {
        assert_eq!(copy[key], row[key], "{key}");
    }
    assert!(copy["displayName"].as_str().unwrap().ends_with("(copy)"));
    let (status, edited) = server
        .patch(
            &format!("/v1/llms/{}", id(&copy)),
            json!({"providerOptions": {"temperature": 0.9}}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    let (status, _) = server.post("/v1/llms/nope/copy", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_new_preset_version_is_a_new_row_and_old_turns_keep_the_old_one() {
    let server = preset_server().await;
    let (a, default_v1, row) = first_default_turn(&server).await;
    let row = &row;
    // Given two turns on the v1 default and a copy of it.
    run_turn(&server, &a, json!({"content": "again"})).await;
    let (status, copy) = server
        .post(&format!("/v1/llms/{default_v1}/copy"), json!({}))
        .await;
    assert_eq!(status, 201, "{copy}");

    // A new preset version: a new row; old turns keep the old id.
    let dir = server.shutdown().await;
    let server = server_with(&presets(2, "mock/echo"), Some(dir)).await;
    let (turn, request) = run_turn(&server, &a, json!({"content": "v2"})).await;
    let default_v2 = turn["llmId"].as_str().unwrap().to_owned();
    assert_ne!(default_v2, default_v1);
    assert_eq!(turn["modelId"], "mock/echo");
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(request["messages"][0]["content"], "DEFAULT PROMPT v2");
    let turns = server.get_ok(&format!("/v1/conversations/{a}/turns")).await;
    let ids: Vec<&str> = turns["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["llmId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            default_v1.as_str(),
            default_v1.as_str(),
            default_v2.as_str()
        ]
    );
    let listed = llms(&server).await;
    assert_eq!(listed.len(), 3, "v1, its copy and v2: {listed:#?}");
    let v1 = server.get_ok(&format!("/v1/llms/{default_v1}")).await;
    assert_eq!(&v1, row, "the old version stays as it was");
    let v2 = server.get_ok(&format!("/v1/llms/{default_v2}")).await;
    assert_eq!(v2["presetVersion"], 2);
    assert_eq!(v2["model"], "mock/echo");
}

// ------------------------------------------------------------------ conversations

/// Given two configs (`echo`, `mock/mock-model`) and the id of a deleted
/// one: `(g1, g2, gone)`.
async fn two_configs_and_a_deleted_one(server: &TestServer) -> (String, String, String) {
    let g1 = id(&create_llm(server, json!({"model": "echo"})).await);
    let g2 = id(&create_llm(server, json!({"model": "mock/mock-model"})).await);
    let gone = id(&create_llm(server, json!({"model": "echo"})).await);
    let (status, _) = server
        .send("DELETE", &format!("/v1/llms/{gone}"), None)
        .await;
    assert_eq!(status, 204);
    (g1, g2, gone)
}

#[tokio::test]
async fn a_conversation_naming_a_bad_config_id_is_422_and_writes_nothing() {
    let server = preset_server().await;
    let (g1, g2, gone) = two_configs_and_a_deleted_one(&server).await;

    // Creation: every id is checked before anything is written.
    let bad_creates = [
        (json!({"llmId": "bogus"}), "llmId"),
        (json!({"llmId": gone}), "llmId"),
        (
            json!({"llmId": g1, "llmOverrides": {"chat": g2, "title": "bogus"}}),
            "llmOverrides.title",
        ),
        (
            json!({"title": "x", "llmOverrides": {"title": gone}}),
            "llmOverrides.title",
        ),
        (json!({"llmOverrides": {"Bad Op": g1}}), "llmOverrides"),
        (json!({"llmOverrides": {"": g1}}), "llmOverrides"),
    ];
    for (body, field) in &bad_creates {
        let (status, problem) = server.post("/v1/conversations", body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["field"], *field, "{problem}");
        if *field != "llmOverrides" {
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.starts_with(&format!("{field}: no LLM config with id")),
                "{detail}"
            );
        }
    }
    assert!(
        conversations(&server).await.is_empty(),
        "no conversation row"
    );
    assert_eq!(user_llms(&server).await.len(), 2, "no config row");
}

#[tokio::test]
async fn a_conversation_names_its_configs_in_its_created_event() {
    let server = preset_server().await;
    let (g1, g2, _) = two_configs_and_a_deleted_one(&server).await;

    let conv = server
        .create_conversation(json!({"llmId": g1, "llmOverrides": {"title": g2}}))
        .await;
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["llmId"], g1);
    assert_eq!(c["llmOverrides"], json!({"title": g2}));
    let log = events(&server, &conv).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["type"], "conversation.created");
    assert_eq!(log[0]["llmId"], g1);
    assert_eq!(log[0]["llmOverrides"], json!({"title": g2}));
}

#[tokio::test]
async fn a_bad_llm_patch_changes_nothing_not_even_its_valid_parts() {
    let server = preset_server().await;
    let (g1, g2, gone) = two_configs_and_a_deleted_one(&server).await;
    let conv = server
        .create_conversation(json!({"llmId": g1, "llmOverrides": {"title": g2}}))
        .await;
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;

    // A bad PATCH changes nothing, not even the valid parts of it.
    let bad_patches = [
        (
            json!({"title": "new", "llmId": g2, "llmOverrides": {"chat": "bogus"}}),
            "llmOverrides.chat",
        ),
        (json!({"title": "new", "llmId": "bogus"}), "llmId"),
        (
            json!({"llmOverrides": {"chat": g1, "Nope": g2}}),
            "llmOverrides",
        ),
        (
            json!({"metadata": {"a": 1}, "llmOverrides": {"chat": gone}}),
            "llmOverrides.chat",
        ),
    ];
    for (body, field) in &bad_patches {
        let (status, problem) = server
            .patch(&format!("/v1/conversations/{conv}"), body.clone())
            .await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["field"], *field, "{problem}");
    }
    assert_eq!(server.get_ok(&format!("/v1/conversations/{conv}")).await, c);
    assert_eq!(events(&server, &conv).await.len(), 1, "no event");
    assert_eq!(user_llms(&server).await.len(), 2);
    assert_eq!(conversations(&server).await.len(), 1);
}

#[tokio::test]
async fn llm_patches_merge_overrides_per_operation_and_append_only_changes() {
    let server = preset_server().await;
    let (g1, g2, _) = two_configs_and_a_deleted_one(&server).await;
    let conv = server
        .create_conversation(json!({"llmId": g1, "llmOverrides": {"title": g2}}))
        .await;

    // Overrides merge per operation; null removes one.
    let (status, c) = server
        .patch(
            &format!("/v1/conversations/{conv}"),
            json!({"title": "named", "llmOverrides": {"chat": g2, "title": null}}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["title"], "named");
    assert_eq!(c["llmId"], g1);
    assert_eq!(c["llmOverrides"], json!({"chat": g2}));
    let log = events(&server, &conv).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[1]["type"], "conversation.updated");
    assert_eq!(log[2]["type"], "llm.changed");
    assert_eq!(log[2]["llmOverrides"], json!({"chat": g2}));
    assert!(
        log[2].get("llmId").is_none(),
        "llmId did not change: {}",
        log[2]
    );

    // null clears llmId; the same values again append nothing.
    let (status, c) = server
        .patch(&format!("/v1/conversations/{conv}"), json!({"llmId": null}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(c["llmId"], Value::Null);
    let log = events(&server, &conv).await;
    assert_eq!(log.len(), 4);
    assert_eq!(log[3]["type"], "llm.changed");
    assert_eq!(log[3]["llmId"], Value::Null);
    assert!(log[3].get("llmOverrides").is_none());
    let (status, _) = server
        .patch(
            &format!("/v1/conversations/{conv}"),
            json!({"llmId": null, "llmOverrides": {"chat": g2}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(events(&server, &conv).await.len(), 4, "no change, no event");
    let (status, c) = server
        .patch(
            &format!("/v1/conversations/{conv}"),
            json!({"llmOverrides": null}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(c["llmOverrides"], json!({}));
}

#[tokio::test]
async fn deleting_a_referenced_config_names_the_conversations() {
    let server = server_with("", None).await;
    let a = id(&create_llm(&server, json!({"model": "echo"})).await);
    let by_default = server.create_conversation(json!({"llmId": a})).await;
    let by_override = server
        .create_conversation(json!({"llmOverrides": {"title": a}}))
        .await;
    let _unrelated = server.create_conversation(json!({})).await;

    let (status, problem) = server.send("DELETE", &format!("/v1/llms/{a}"), None).await;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&by_default) && detail.contains(&by_override),
        "{detail}"
    );
    let mut want = vec![by_default.clone(), by_override.clone()];
    want.sort();
    assert_eq!(problem["conversations"], json!(want));
    assert_eq!(server.get_ok(&format!("/v1/llms/{a}")).await["id"], a);

    // Once nothing names it, it can go.
    let (status, _) = server
        .patch(
            &format!("/v1/conversations/{by_default}"),
            json!({"llmId": null}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, problem) = server.send("DELETE", &format!("/v1/llms/{a}"), None).await;
    assert_eq!(status, 409);
    assert_eq!(problem["conversations"], json!([by_override]));
    let (status, _) = server
        .send("DELETE", &format!("/v1/conversations/{by_override}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server.send("DELETE", &format!("/v1/llms/{a}"), None).await;
    assert_eq!(status, 204);
}

// ------------------------------------------------------------------ resolution

fn system_prompt(request: &Value) -> Option<&str> {
    let first = &request["messages"][0];
    (first["role"] == "system").then(|| first["content"].as_str().unwrap())
}

/// Given two user configs with their own prompts and options: `(op_cfg,
/// conv_cfg)` (`echo`, `OP PROMPT`; `mock/mock-model`, `CONV PROMPT`).
async fn two_configs_with_prompts(server: &TestServer) -> (String, String) {
    let op_cfg = id(&create_llm(
        server,
        json!({"model": "echo", "systemPrompt": "OP PROMPT",
               "providerOptions": {"temperature": 0.7, "extra": {"min_p": 0.2}}}),
    )
    .await);
    let conv_cfg = id(&create_llm(
        server,
        json!({"model": "mock/mock-model", "systemPrompt": "CONV PROMPT",
               "providerOptions": {"temperature": 0.3, "maxTokens": 50}}),
    )
    .await);
    (op_cfg, conv_cfg)
}

/// Whether `system` holds no system default but the `default` preset's
/// (which `GET /v1/llms` materializes: a server with a default model never
/// lists no config).
fn only_the_server_default(system: &[Value]) -> bool {
    system.len() == 1 && system[0]["presetName"] == "default"
}

/// The system defaults materialized so far.
async fn system_defaults(server: &TestServer) -> Vec<Value> {
    llms(server)
        .await
        .into_iter()
        .filter(|l| l["source"] == "system-default")
        .collect()
}

#[tokio::test]
async fn chat_resolves_through_the_operation_config_and_sends_its_options() {
    let server = preset_server().await;
    let (op_cfg, conv_cfg) = two_configs_with_prompts(&server).await;

    // chat: operationConfig.
    let c = server
        .create_conversation(json!({"llmId": conv_cfg, "llmOverrides": {"chat": op_cfg}}))
        .await;
    let (turn, request) = run_turn(&server, &c, json!({"content": "hi"})).await;
    assert_eq!(turn["resolvedFrom"], "operationConfig");
    assert_eq!(turn["llmId"], op_cfg);
    assert_eq!(turn["modelId"], "mock/echo");
    assert_eq!(request["model"], "echo");
    assert_eq!(system_prompt(&request), Some("OP PROMPT"));
    assert_eq!(request["temperature"], 0.7);
    assert_eq!(request["min_p"], 0.2);
    assert_eq!(
        request["messages"][1],
        json!({"role": "user", "content": "hi"})
    );
    assert_eq!(request["stream"], true);

    // A config-resolved turn materializes no system default (the listing
    // shows the server default, which it materializes itself).
    let system = system_defaults(&server).await;
    assert!(only_the_server_default(&system), "{system:#?}");
}

#[tokio::test]
async fn chat_resolves_through_the_conversation_config_then_the_request_then_the_selection() {
    let server = preset_server().await;
    let (_, conv_cfg) = two_configs_with_prompts(&server).await;

    // chat: conversationConfig.
    let c = server.create_conversation(json!({"llmId": conv_cfg})).await;
    let (turn, request) = run_turn(&server, &c, json!({"content": "hi"})).await;
    assert_eq!(turn["resolvedFrom"], "conversationConfig");
    assert_eq!(turn["llmId"], conv_cfg);
    assert_eq!(turn["modelId"], "mock/mock-model");
    assert_eq!(system_prompt(&request), Some("CONV PROMPT"));
    assert_eq!(request["temperature"], 0.3);
    assert_eq!(request["max_tokens"], 50);

    // chat: request (options still from the conversation's config) ...
    let (turn, request) =
        run_turn(&server, &c, json!({"content": "x", "model": "mock/echo"})).await;
    assert_eq!(turn["resolvedFrom"], "request");
    assert_eq!(turn["llmId"], conv_cfg);
    assert_eq!(request["model"], "echo");
    assert_eq!(system_prompt(&request), Some("CONV PROMPT"));
    assert_eq!(request["temperature"], 0.3);
    // ... then conversation (the persisted selection).
    let (turn, request) = run_turn(&server, &c, json!({"content": "y"})).await;
    assert_eq!(turn["resolvedFrom"], "conversation");
    assert_eq!(turn["llmId"], conv_cfg);
    assert_eq!(request["model"], "echo");
    assert_eq!(system_prompt(&request), Some("CONV PROMPT"));

    // A config-resolved turn materializes no system default (the listing
    // shows the server default, which it materializes itself).
    let system = system_defaults(&server).await;
    assert!(only_the_server_default(&system), "{system:#?}");
}

#[tokio::test]
async fn server_defaults_come_from_each_operations_preset() {
    let server = preset_server().await;

    // chat: serverDefault (the `default` preset).
    let plain = server.create_conversation(json!({})).await;
    let (turn, request) = run_turn(&server, &plain, json!({"content": "hi"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["modelId"], "mock/mock-model");
    let default_id = turn["llmId"].as_str().unwrap().to_owned();
    assert_eq!(system_prompt(&request), Some("DEFAULT PROMPT v1"));
    assert_eq!(request["temperature"], 0.5);

    // title: serverDefault from the `title` preset, not `default`.
    let (turn, request) = run_turn(
        &server,
        &plain,
        json!({"content": "t", "operation": "title"}),
    )
    .await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["operation"], "title");
    assert_eq!(turn["modelId"], "mock/echo");
    let title_id = turn["llmId"].as_str().unwrap().to_owned();
    assert_ne!(title_id, default_id);
    assert_eq!(system_prompt(&request), Some("TITLE PROMPT"));
    assert_eq!(request["temperature"], 0.1);
    assert_eq!(request["max_tokens"], 20);
    let title_row = server.get_ok(&format!("/v1/llms/{title_id}")).await;
    assert_eq!(title_row["presetName"], "title");
    assert_eq!(title_row["displayName"], "Titles");

    // Only the two presets' system defaults were materialized.
    let system = system_defaults(&server).await;
    assert_eq!(system.len(), 2, "{system:#?}");
}

#[tokio::test]
async fn title_resolves_through_its_own_override_not_another_operations() {
    let server = preset_server().await;
    let (op_cfg, conv_cfg) = two_configs_with_prompts(&server).await;

    // title: operationConfig, conversationConfig, request.
    let c = server
        .create_conversation(json!({"llmId": conv_cfg, "llmOverrides": {"title": op_cfg}}))
        .await;
    let (turn, request) =
        run_turn(&server, &c, json!({"content": "t", "operation": "title"})).await;
    assert_eq!(turn["resolvedFrom"], "operationConfig");
    assert_eq!(turn["llmId"], op_cfg);
    assert_eq!(system_prompt(&request), Some("OP PROMPT"));
    assert_eq!(request["temperature"], 0.7);
    // The chat override of another conversation does not apply to title.
    let c2 = server
        .create_conversation(json!({"llmId": conv_cfg, "llmOverrides": {"chat": op_cfg}}))
        .await;
    let (turn, request) =
        run_turn(&server, &c2, json!({"content": "t", "operation": "title"})).await;
    assert_eq!(turn["resolvedFrom"], "conversationConfig");
    assert_eq!(turn["llmId"], conv_cfg);
    assert_eq!(system_prompt(&request), Some("CONV PROMPT"));
    let (turn, request) = run_turn(
        &server,
        &c2,
        json!({"content": "t", "operation": "title", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(turn["resolvedFrom"], "request");
    assert_eq!(turn["llmId"], conv_cfg);
    assert_eq!(request["model"], "echo");
    assert_eq!(request["temperature"], 0.3);

    // turn.started records the config too.
    let log = events(&server, &c2).await;
    let started: Vec<&Value> = log.iter().filter(|e| e["type"] == "turn.started").collect();
    assert_eq!(started.len(), 2);
    assert!(started.iter().all(|e| e["llmId"] == conv_cfg.as_str()));
    assert_eq!(started[1]["resolvedFrom"], "request");

    // A config-resolved turn materializes no system default (the listing
    // shows the server default, which it materializes itself).
    let system = system_defaults(&server).await;
    assert!(only_the_server_default(&system), "{system:#?}");
}

#[tokio::test]
async fn defaults_model_without_presets_is_a_system_default_config_too() {
    let server = server_with("[defaults]\nmodel = \"mock/mock-model\"\n", None).await;
    let c = server.create_conversation(json!({})).await;
    let (turn, request) = run_turn(&server, &c, json!({"content": "hi"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    // Materialized as a system default without prompt or options.
    let listed = llms(&server).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["source"], "system-default");
    assert_eq!(listed[0]["presetName"], "defaults.model");
    assert_eq!(listed[0]["model"], "mock/mock-model");
    assert_eq!(turn["llmId"], listed[0]["id"]);
    assert_eq!(system_prompt(&request), None);
    assert!(request.get("temperature").is_none());
}

// ------------------------------------------------------------------ created without llmId

const DEFAULTS_MODEL: &str = "[defaults]\nmodel = \"mock/mock-model\"\n";

/// Creates a conversation without `llmId`; its id and the config it names.
async fn created_without_llm_id(server: &TestServer) -> (String, Value) {
    let conv = server.create_conversation(json!({})).await;
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    let llm_id = c["llmId"].as_str().expect("llmId is set").to_owned();
    let config = server.get_ok(&format!("/v1/llms/{llm_id}")).await;
    (conv, config)
}

#[tokio::test]
async fn a_conversation_created_without_llm_id_names_the_server_default_and_follows_it() {
    let server = server_with(DEFAULTS_MODEL, None).await;

    // Created without llmId: it names the server default, readable over the API.
    let (conv, v1) = created_without_llm_id(&server).await;
    assert_eq!(v1["source"], "system-default", "{v1}");
    assert_eq!(v1["presetName"], "defaults.model", "{v1}");
    assert_eq!(v1["presetVersion"], 1, "{v1}");
    assert_eq!(v1["model"], "mock/mock-model", "{v1}");
    let log = events(&server, &conv).await;
    assert_eq!(log[0]["type"], "conversation.created");
    assert_eq!(log[0]["llmId"], v1["id"]);

    // A turn resolves from the server default and records its config.
    let (turn, request) = run_turn(&server, &conv, json!({"content": "hi"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["llmId"], v1["id"]);
    assert_eq!(request["model"], "mock-model");
    assert_eq!(llms(&server).await.len(), 1, "one server default");

    // A changed defaults.model: turns follow it (its next version), the
    // conversation still names the default it was created under.
    let dir = server.shutdown().await;
    let server = server_with("[defaults]\nmodel = \"mock/echo\"\n", Some(dir)).await;
    let (turn, request) = run_turn(&server, &conv, json!({"content": "again"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["modelId"], "mock/echo");
    assert_eq!(request["model"], "echo");
    let v2 = server
        .get_ok(&format!("/v1/llms/{}", turn["llmId"].as_str().unwrap()))
        .await;
    assert_eq!(v2["presetName"], "defaults.model", "{v2}");
    assert_eq!(v2["presetVersion"], 2, "{v2}");
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["llmId"], v1["id"]);
    let (_, newer) = created_without_llm_id(&server).await;
    assert_eq!(
        newer["id"], v2["id"],
        "a new conversation names the new default"
    );

    // With no default any more, the one it was created under still serves.
    let dir = server.shutdown().await;
    let server = server_with("", Some(dir)).await;
    let (turn, request) = run_turn(&server, &conv, json!({"content": "still"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["llmId"], v1["id"]);
    assert_eq!(request["model"], "mock-model");
}

#[tokio::test]
async fn the_server_default_as_llm_id_leaves_operation_presets_in_force() {
    let server = preset_server().await;
    let (conv, default) = created_without_llm_id(&server).await;
    assert_eq!(default["source"], "system-default", "{default}");
    assert_eq!(default["presetName"], "default", "{default}");

    // chat: the default preset, as the server default.
    let (turn, request) = run_turn(&server, &conv, json!({"content": "hi"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["llmId"], default["id"]);
    assert_eq!(system_prompt(&request), Some("DEFAULT PROMPT v1"));
    let log = events(&server, &conv).await;
    let started = log.iter().find(|e| e["type"] == "turn.started").unwrap();
    assert_eq!(started["resolvedFrom"], "serverDefault", "{started}");
    assert_eq!(started["llmId"], default["id"], "{started}");

    // title: still the title preset, not the conversation's llmId.
    let (status, titled) = server
        .post(&format!("/v1/conversations/{conv}/title"), json!({}))
        .await;
    assert_eq!(status, 200, "{titled}");
    assert_eq!(titled["resolvedFrom"], "serverDefault", "{titled}");
    assert_eq!(titled["modelId"], "mock/echo", "{titled}");
    let title_cfg = server
        .get_ok(&format!("/v1/llms/{}", titled["llmId"].as_str().unwrap()))
        .await;
    assert_eq!(title_cfg["presetName"], "title", "{title_cfg}");
    let request = server.mock_chats().last().cloned().unwrap();
    assert_eq!(system_prompt(&request), Some("TITLE PROMPT"));

    // Another preset's config named as llmId is a choice (step 4).
    let (status, _) = server
        .patch(
            &format!("/v1/conversations/{conv}"),
            json!({"llmId": title_cfg["id"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (turn, request) = run_turn(&server, &conv, json!({"content": "x"})).await;
    assert_eq!(turn["resolvedFrom"], "conversationConfig");
    assert_eq!(turn["llmId"], title_cfg["id"]);
    assert_eq!(system_prompt(&request), Some("TITLE PROMPT"));

    // Cleared: null, and turns resolve from the server default as before.
    let (status, c) = server
        .patch(&format!("/v1/conversations/{conv}"), json!({"llmId": null}))
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["llmId"], Value::Null);
    let (turn, _) = run_turn(&server, &conv, json!({"content": "y"})).await;
    assert_eq!(turn["resolvedFrom"], "serverDefault");
    assert_eq!(turn["llmId"], default["id"]);

    // A user config as llmId is unchanged: step 4.
    let (_, conv_cfg) = two_configs_with_prompts(&server).await;
    let mine = server.create_conversation(json!({"llmId": conv_cfg})).await;
    let (turn, _) = run_turn(&server, &mine, json!({"content": "z"})).await;
    assert_eq!(turn["resolvedFrom"], "conversationConfig");
    assert_eq!(turn["llmId"], conv_cfg);
}

#[tokio::test]
async fn without_a_server_default_a_new_conversation_names_no_config() {
    let server = server_with("", None).await;
    let conv = server.create_conversation(json!({})).await;
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["llmId"], Value::Null, "{c}");
    assert!(llms(&server).await.is_empty());
}
